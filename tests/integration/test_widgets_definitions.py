"""Defining chat widgets through gRPC: personas, escalation policies and which segment gets
which, and what an admin (or a widget) is told when the input is wrong or a change would
break something."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial

import grpc
import pytest
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.routing.v1 import widgets_pb2 as wpb
from switchboard.routing.v1 import widgets_pb2_grpc

from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    Routing,
    Segments,
    create_policy,
    create_queue,
    create_segment,
    sla_policy,
    struct,
)
from tests.integration.widgets_setup import escalation, line, persona
from tests.support.rpc import call_error, error_info, field_violations, misses

Widgets = widgets_pb2_grpc.WidgetServiceStub


def create_persona(widgets: Widgets, message: wpb.Persona) -> wpb.Persona:
    return widgets.CreatePersona(wpb.CreatePersonaRequest(persona=message)).persona


def update_persona(widgets: Widgets, message: wpb.Persona) -> wpb.Persona:
    return widgets.UpdatePersona(wpb.UpdatePersonaRequest(persona=message)).persona


def get_persona(widgets: Widgets, persona_id: str) -> wpb.Persona:
    return widgets.GetPersona(wpb.GetPersonaRequest(persona_id=persona_id)).persona


def create_escalation(widgets: Widgets, policy: wpb.EscalationPolicy) -> wpb.EscalationPolicy:
    request = wpb.CreateEscalationPolicyRequest(policy=policy)
    return widgets.CreateEscalationPolicy(request).policy


def update_escalation(widgets: Widgets, policy: wpb.EscalationPolicy) -> wpb.EscalationPolicy:
    request = wpb.UpdateEscalationPolicyRequest(policy=policy)
    return widgets.UpdateEscalationPolicy(request).policy


def get_escalation(widgets: Widgets, policy_id: str) -> wpb.EscalationPolicy:
    return widgets.GetEscalationPolicy(wpb.GetEscalationPolicyRequest(policy_id=policy_id)).policy


def set_widget_policies(
    widgets: Widgets,
    assignments: Sequence[wpb.WidgetAssignment],
    default_persona_id: str,
    default_escalation_policy_id: str,
    *,
    revision: int = 0,
    actor: str = "lead@example.com",
) -> wpb.WidgetPolicies:
    policies = wpb.WidgetPolicies(
        assignments=assignments,
        default_persona_id=default_persona_id,
        default_escalation_policy_id=default_escalation_policy_id,
        revision=revision,
    )
    request = wpb.UpdateWidgetPoliciesRequest(policies=policies, actor=actor)
    return widgets.UpdateWidgetPolicies(request).policies


def get_widget_policies(widgets: Widgets, revision: int = 0) -> wpb.WidgetPolicies:
    return widgets.GetWidgetPolicies(wpb.GetWidgetPoliciesRequest(revision=revision)).policies


def widget_config(widgets: Widgets, visitor: wpb.Visitor) -> wpb.GetWidgetConfigResponse:
    return widgets.GetWidgetConfig(wpb.GetWidgetConfigRequest(visitor=visitor))


def refused_with(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error.details() or ""


# ---- personas ----------------------------------------------------------------------------------


def test_persona_is_created_read_listed_updated_and_deleted_under_revision_checks(
    widgets: Widgets, segments_clock: ManualClock
) -> None:
    created = [create_persona(widgets, persona(i)) for i in ("sam", "ada")]

    assert [p.revision for p in created] == [1, 1]
    assert all(p.HasField("create_time") and p.HasField("update_time") for p in created)
    assert created[0].greeting == "Hi {first_name}, how can we help?", "stored as a template"
    assert get_persona(widgets, "sam") == created[0]
    first = widgets.ListPersonas(wpb.ListPersonasRequest(page_size=1))
    rest = widgets.ListPersonas(
        wpb.ListPersonasRequest(page_size=1, page_token=first.next_page_token)
    )
    assert [p.persona_id for p in [*first.personas, *rest.personas]] == ["ada", "sam"]
    assert first.next_page_token != "" and rest.next_page_token == ""
    duplicate = call_error(lambda: create_persona(widgets, persona("sam")))
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS

    segments_clock.advance(timedelta(minutes=5))
    change = persona("sam", tone=wpb.TONE_FORMAL, greeting="Good day.", revision=1)
    updated = update_persona(widgets, change)
    assert (updated.revision, updated.tone, updated.greeting) == (2, wpb.TONE_FORMAL, "Good day.")
    assert updated.create_time == created[0].create_time
    assert updated.update_time.ToSeconds() - created[0].create_time.ToSeconds() == 300
    stale = call_error(lambda: update_persona(widgets, change))
    # ABORTED, as for every routing resource: read it again and retry (services/core/errors.py).
    assert stale.code() == grpc.StatusCode.ABORTED
    assert error_info(stale).reason == "STALE_REVISION"
    assert get_persona(widgets, "sam").greeting == "Good day."

    stale_delete = call_error(
        lambda: widgets.DeletePersona(wpb.DeletePersonaRequest(persona_id="sam", revision=1))
    )
    assert stale_delete.code() == grpc.StatusCode.ABORTED
    widgets.DeletePersona(wpb.DeletePersonaRequest(persona_id="sam", revision=2))
    assert call_error(lambda: get_persona(widgets, "sam")).code() == grpc.StatusCode.NOT_FOUND
    listed = widgets.ListPersonas(wpb.ListPersonasRequest()).personas
    assert [p.persona_id for p in listed] == ["ada"]


def test_bad_personas_are_refused_naming_the_field(widgets: Widgets) -> None:
    bad = {
        "id with capitals and punctuation": (persona("Ada!"), "persona.persona_id"),
        "unknown placeholder": (persona("ada", greeting="Hi {last_name}!"), "persona.greeting"),
        "unbalanced brace": (persona("ada", greeting="Hi {first_name"), "persona.greeting"),
        "tone from a newer client": (persona("ada", tone=7), "persona.tone"),
    }

    attempts = {name: (partial(create_persona, widgets, p), f) for name, (p, f) in bad.items()}
    assert misses(attempts) == {}
    assert list(widgets.ListPersonas(wpb.ListPersonasRequest()).personas) == []


def test_unknown_placeholder_is_named_so_the_author_can_fix_it(widgets: Widgets) -> None:
    error = call_error(lambda: create_persona(widgets, persona("ada", greeting="Hi {last_name}")))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "{last_name}" in field_violations(error)["persona.greeting"]


# ---- escalation policies -----------------------------------------------------------------------


@pytest.fixture
def billing(routing: Routing) -> pb.Queue:
    """The queue handovers go to, with a daytime and an after-hours promise."""
    create_policy(routing, sla_policy("one_hour", first_response=timedelta(hours=1)))
    create_policy(routing, sla_policy("next_day", first_response=timedelta(hours=24)))
    return create_queue(routing, "billing")


def test_escalation_policy_naming_a_missing_queue_or_sla_policy_is_not_saved(
    widgets: Widgets, billing: pb.Queue
) -> None:
    broken = {
        "ghost_queue": escalation("refunds", queue_id="ghost_queue"),
        "ghost_sla": escalation("refunds", sla_policy_id="ghost_sla"),
        "ghost_after_hours": escalation(
            "refunds", sla_policy_id="one_hour", after_hours_sla_policy_id="ghost_after_hours"
        ),
    }

    created = {
        missing: refused_with(call_error(partial(create_escalation, widgets, policy)))
        for missing, policy in broken.items()
    }
    assert list(widgets.ListEscalationPolicies(wpb.ListEscalationPoliciesRequest()).policies) == []

    saved = create_escalation(widgets, escalation("refunds", sla_policy_id="one_hour"))
    for policy in broken.values():
        policy.revision = saved.revision
    updated = {
        missing: refused_with(call_error(partial(update_escalation, widgets, policy)))
        for missing, policy in broken.items()
    }

    for answers in (created, updated):
        assert {m: code for m, (code, _) in answers.items()} == dict.fromkeys(
            broken, grpc.StatusCode.FAILED_PRECONDITION
        )
        assert [m for m, (_, details) in answers.items() if m not in details] == []
    assert get_escalation(widgets, "refunds") == saved


def test_escalation_policy_keeps_every_field_it_was_given(
    widgets: Widgets, billing: pb.Queue
) -> None:
    sent = escalation(
        "refunds",
        max_bot_turns=3,
        min_confidence=0.4,
        keywords=["refund", "cancel my plan", "legal"],
        handover_channel=pb.CHANNEL_EMAIL,
        sla_policy_id="one_hour",
        after_hours=wpb.AFTER_HOURS_CALLBACK,
        after_hours_sla_policy_id="next_day",
    )

    created = create_escalation(widgets, sent)
    read = get_escalation(widgets, "refunds")

    assert read == created
    assert read.revision == 1
    assert not read.HasField("min_sentiment"), "an unset threshold stays unset, not 0"
    assert read.HasField("min_confidence")
    as_sent = wpb.EscalationPolicy()
    as_sent.CopyFrom(read)
    for output_only in ("revision", "create_time", "update_time"):
        as_sent.ClearField(output_only)
    assert as_sent == sent

    change = wpb.EscalationPolicy()
    change.CopyFrom(sent)
    change.ClearField("min_confidence")
    change.min_sentiment = -0.5
    change.immediately = True
    change.revision = 1
    updated = update_escalation(widgets, change)
    assert (updated.revision, updated.min_sentiment, updated.immediately) == (2, -0.5, True)
    assert not get_escalation(widgets, "refunds").HasField("min_confidence")
    listed = widgets.ListEscalationPolicies(wpb.ListEscalationPoliciesRequest()).policies
    assert list(listed) == [updated]


def test_queue_and_sla_policies_an_escalation_policy_uses_cannot_be_deleted(
    widgets: Widgets, routing: Routing, billing: pb.Queue
) -> None:
    create_escalation(
        widgets,
        escalation("refunds", sla_policy_id="one_hour", after_hours_sla_policy_id="next_day"),
    )
    deletions: dict[str, Callable[[], object]] = {
        "queue": lambda: routing.DeleteQueue(pb.DeleteQueueRequest(queue_id="billing")),
        "sla policy": lambda: routing.DeleteSlaPolicy(
            pb.DeleteSlaPolicyRequest(policy_id="one_hour")
        ),
        "after-hours sla policy": lambda: routing.DeleteSlaPolicy(
            pb.DeleteSlaPolicyRequest(policy_id="next_day")
        ),
    }

    refusals = {name: refused_with(call_error(delete)) for name, delete in deletions.items()}

    assert {name: code for name, (code, _) in refusals.items()} == dict.fromkeys(
        deletions, grpc.StatusCode.FAILED_PRECONDITION
    )
    assert all("escalation policy 'refunds'" in details for _, details in refusals.values())
    assert routing.GetQueue(pb.GetQueueRequest(queue_id="billing")).queue.queue_id == "billing"

    widgets.DeleteEscalationPolicy(wpb.DeleteEscalationPolicyRequest(policy_id="refunds"))
    for delete in deletions.values():
        delete()
    assert list(routing.ListQueues(pb.ListQueuesRequest()).queues) == []


# ---- which segment gets which ------------------------------------------------------------------


@pytest.fixture
def definitions(widgets: Widgets, billing: pb.Queue, segments: Segments) -> Widgets:
    """Two personas, two escalation policies and an enterprise segment to assign them to."""
    create_segment(segments, "enterprise", {"seats": {"$gte": 50}})
    for persona_id in ("ada", "max"):
        create_persona(widgets, persona(persona_id))
    for policy_id in ("standard", "priority"):
        create_escalation(widgets, escalation(policy_id, sla_policy_id="one_hour"))
    return widgets


def test_widget_policies_are_empty_before_they_are_first_set(widgets: Widgets) -> None:
    policies = get_widget_policies(widgets)

    assert policies == wpb.WidgetPolicies(revision=0)
    assert not policies.HasField("update_time")


def test_widget_policies_naming_a_missing_definition_or_segment_are_not_saved(
    definitions: Widgets,
) -> None:
    broken = {
        "ghost_persona": ([line("enterprise", persona_id="ghost_persona")], "ada", "standard"),
        "ghost_escalation": ([], "ada", "ghost_escalation"),
        "ghost_segment": ([line("ghost_segment", persona_id="max")], "ada", "standard"),
    }

    refusals = {
        missing: refused_with(call_error(partial(set_widget_policies, definitions, *arguments)))
        for missing, arguments in broken.items()
    }

    assert {m: code for m, (code, _) in refusals.items()} == dict.fromkeys(
        broken, grpc.StatusCode.FAILED_PRECONDITION
    )
    assert [m for m, (_, details) in refusals.items() if m not in details] == []
    assert get_widget_policies(definitions).revision == 0


def test_widget_policies_without_defaults_or_listing_a_segment_twice_are_invalid(
    definitions: Widgets,
) -> None:
    twice = [line("enterprise", persona_id="max"), line("enterprise", "", "priority")]
    bad = {
        "no default persona": (([], "", "standard"), "policies.default_persona_id"),
        "no default escalation": (([], "ada", ""), "policies.default_escalation_policy_id"),
        "segment twice": ((twice, "ada", "standard"), "policies.assignments[1].segment_id"),
    }

    attempts = {
        name: (partial(set_widget_policies, definitions, *arguments), field)
        for name, (arguments, field) in bad.items()
    }
    assert misses(attempts) == {}
    assert get_widget_policies(definitions).revision == 0


def test_widget_policy_revisions_are_checked_and_earlier_ones_can_be_read(
    definitions: Widgets,
) -> None:
    enterprise_gets_max = [line("enterprise", "max", "priority")]
    first = set_widget_policies(definitions, enterprise_gets_max, "ada", "standard", actor="ada")

    assert (first.revision, first.actor) == (1, "ada")
    assert list(first.assignments) == enterprise_gets_max
    assert first.HasField("update_time")
    assert get_widget_policies(definitions) == first

    second = set_widget_policies(definitions, [], "max", "priority", revision=1, actor="bob")
    stale = call_error(
        partial(set_widget_policies, definitions, [], "ada", "standard", revision=1, actor="cy")
    )

    assert (second.revision, second.actor) == (2, "bob")
    assert stale.code() == grpc.StatusCode.ABORTED
    assert error_info(stale).reason == "STALE_REVISION"
    assert get_widget_policies(definitions) == second
    old = get_widget_policies(definitions, revision=1)
    assert (old.revision, old.actor, list(old.assignments)) == (1, "ada", enterprise_gets_max)
    assert (old.default_persona_id, old.default_escalation_policy_id) == ("ada", "standard")
    missing = call_error(lambda: get_widget_policies(definitions, revision=3))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def test_definitions_the_widget_policies_use_cannot_be_deleted_until_they_stop(
    definitions: Widgets,
) -> None:
    set_widget_policies(definitions, [line("enterprise", "max", "priority")], "ada", "standard")
    deletions: dict[str, Callable[[], object]] = {
        "line persona": lambda: definitions.DeletePersona(
            wpb.DeletePersonaRequest(persona_id="max")
        ),
        "default persona": lambda: definitions.DeletePersona(
            wpb.DeletePersonaRequest(persona_id="ada")
        ),
        "line escalation policy": lambda: definitions.DeleteEscalationPolicy(
            wpb.DeleteEscalationPolicyRequest(policy_id="priority")
        ),
        "default escalation policy": lambda: definitions.DeleteEscalationPolicy(
            wpb.DeleteEscalationPolicyRequest(policy_id="standard")
        ),
    }

    refusals = {name: refused_with(call_error(delete)) for name, delete in deletions.items()}

    assert {name: code for name, (code, _) in refusals.items()} == dict.fromkeys(
        deletions, grpc.StatusCode.FAILED_PRECONDITION
    )
    assert all("widget policies" in details for _, details in refusals.values())
    assert get_persona(definitions, "max").revision == 1

    set_widget_policies(definitions, [], "ada", "standard", revision=1)
    deletions["line persona"]()
    deletions["line escalation policy"]()
    assert call_error(lambda: get_persona(definitions, "max")).code() == grpc.StatusCode.NOT_FOUND
    gone = call_error(lambda: get_escalation(definitions, "priority"))
    assert gone.code() == grpc.StatusCode.NOT_FOUND


# ---- what widgets ask --------------------------------------------------------------------------


@pytest.fixture
def configured(definitions: Widgets) -> Widgets:
    set_widget_policies(definitions, [line("enterprise", "max", "priority")], "ada", "standard")
    return definitions


def test_widget_config_refuses_a_visitor_that_cannot_name_anyone(configured: Widgets) -> None:
    too_many = struct({f"attribute_{number}": number for number in range(51)})
    bad = {
        "malformed customer id": (wpb.Visitor(customer_id="bad id!"), "visitor.customer_id"),
        "external id without a system": (wpb.Visitor(external_id="nocolon"), "visitor.external_id"),
        "51 attributes": (wpb.Visitor(attributes=too_many), "visitor.attributes"),
        "greeting value for no placeholder": (
            wpb.Visitor(greeting_values={"last_name": "Silva"}),
            "visitor.greeting_values",
        ),
    }

    attempts = {name: (partial(widget_config, configured, v), f) for name, (v, f) in bad.items()}
    assert misses(attempts) == {}


def test_widget_config_answers_well_formed_visitors_it_does_not_know(configured: Widgets) -> None:
    fifty = struct({f"attribute_{number}": number for number in range(50)})
    visitors = [
        wpb.Visitor(customer_id="ghost-1"),
        wpb.Visitor(external_id="billing:cus_404"),
        wpb.Visitor(attributes=fifty, greeting_values={"first_name": "Ana"}),
    ]

    answers = [widget_config(configured, visitor).config for visitor in visitors]

    assert [a.persona.persona_id for a in answers] == ["ada", "ada", "ada"]
    assert answers[2].persona.greeting == "Hi Ana, how can we help?"


def test_widget_config_before_any_widget_policies_is_a_failed_precondition(
    definitions: Widgets,
) -> None:
    error = call_error(lambda: widget_config(definitions, wpb.Visitor()))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "WIDGETS_NOT_CONFIGURED"


def test_escalation_check_refuses_a_sentiment_outside_minus_one_to_one(
    configured: Widgets,
) -> None:
    def evaluate(sentiment: float) -> wpb.EvaluateEscalationResponse:
        turn = wpb.BotTurn(turn_count=1, sentiment=sentiment)
        request = wpb.EvaluateEscalationRequest(visitor=wpb.Visitor(), turn=turn)
        return configured.EvaluateEscalation(request)

    error = call_error(lambda: evaluate(5))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "turn.sentiment" in field_violations(error)
    assert evaluate(-1).hand_over is False, "the policy sets no sentiment threshold"
