"""Which persona and escalation a customer gets, when the bot hands over, and what the visitor
is offered and promised."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.routing.domain import Channel, SlaTarget
from services.widgets.domain import (
    AfterHours,
    BotTurn,
    Choice,
    EscalationPolicy,
    HandoverReason,
    Offer,
    WidgetAssignment,
    WidgetPolicies,
)
from services.widgets.logic import (
    choose,
    evaluate_escalation,
    expectation,
    handover_offer,
    offer,
    promised_target,
)

POLICIES = WidgetPolicies(
    assignments=(
        WidgetAssignment("at-risk", escalation_policy_id="save-desk"),
        WidgetAssignment("enterprise", persona_id="concierge", escalation_policy_id="enterprise"),
        WidgetAssignment("pro", persona_id="expert", escalation_policy_id="pro"),
        WidgetAssignment("german", persona_id="berater"),
    ),
    default_persona_id="helper",
    default_escalation_policy_id="standard",
)

# ---- choosing -------------------------------------------------------------------------------


def test_anonymous_visitors_get_the_defaults() -> None:
    assert choose(POLICIES, frozenset()) == Choice("helper", "standard", "", "")


def test_customers_matching_no_line_get_the_defaults() -> None:
    assert choose(POLICIES, frozenset({"trial", "smb"})) == Choice("helper", "standard")


def test_enterprise_customers_get_the_enterprise_persona_and_escalation() -> None:
    assert choose(POLICIES, frozenset({"enterprise"})) == Choice(
        "concierge", "enterprise", "enterprise", "enterprise"
    )


def test_at_risk_overlay_overrides_the_tier_escalation_but_keeps_its_persona() -> None:
    assert choose(POLICIES, frozenset({"enterprise", "at-risk"})) == Choice(
        "concierge", "save-desk", "enterprise", "at-risk"
    )


def test_the_earlier_line_wins_when_a_customer_is_in_two_tiers() -> None:
    assert choose(POLICIES, frozenset({"pro", "enterprise"})) == Choice(
        "concierge", "enterprise", "enterprise", "enterprise"
    )


def test_a_persona_only_line_leaves_the_escalation_to_the_default() -> None:
    assert choose(POLICIES, frozenset({"german"})) == Choice("berater", "standard", "german", "")


def test_an_overlay_alone_changes_only_the_escalation() -> None:
    assert choose(POLICIES, frozenset({"at-risk"})) == Choice("helper", "save-desk", "", "at-risk")


# ---- escalation -----------------------------------------------------------------------------

QUIET = EscalationPolicy("quiet", queue_id="tier1", on_human_request=False)
CALM_TURN = BotTurn(turn_count=1, sentiment=0.5, confidence=0.9, message="how do I export?")


def test_nothing_fires_when_the_conversation_goes_well() -> None:
    policy = replace(
        QUIET, max_bot_turns=3, min_sentiment=-0.3, min_confidence=0.5, keywords=("refund",)
    )
    verdict = evaluate_escalation(replace(policy, on_human_request=True), CALM_TURN)
    assert not verdict.hand_over
    assert verdict.reasons == ()
    assert verdict.explanation == "no trigger fired"


@pytest.mark.parametrize(
    ("policy", "turn", "reason", "explanation"),
    [
        (
            replace(QUIET, immediately=True),
            CALM_TURN,
            HandoverReason.IMMEDIATE,
            "the policy hands over immediately",
        ),
        (
            replace(QUIET, max_bot_turns=3),
            replace(CALM_TURN, turn_count=3),
            HandoverReason.BOT_TURNS,
            "the bot took 3 turns without resolving it (the limit is 3)",
        ),
        (
            replace(QUIET, max_bot_turns=1),
            replace(CALM_TURN, turn_count=1),
            HandoverReason.BOT_TURNS,
            "the bot took 1 turn without resolving it (the limit is 1)",
        ),
        (
            replace(QUIET, min_sentiment=-0.3),
            replace(CALM_TURN, sentiment=-0.6),
            HandoverReason.LOW_SENTIMENT,
            "the visitor's sentiment -0.6 is below -0.3",
        ),
        (
            replace(QUIET, min_confidence=0.5),
            replace(CALM_TURN, confidence=0.2),
            HandoverReason.LOW_CONFIDENCE,
            "the bot's confidence 0.2 is below 0.5",
        ),
        (
            replace(QUIET, keywords=("cancel", "refund")),
            replace(CALM_TURN, message="I want a refund"),
            HandoverReason.KEYWORD,
            "the visitor wrote 'refund'",
        ),
        (
            replace(QUIET, on_human_request=True),
            replace(CALM_TURN, asked_for_human=True),
            HandoverReason.ASKED_FOR_HUMAN,
            "the visitor asked for a human",
        ),
    ],
)
def test_each_trigger_hands_over_on_its_own(
    policy: EscalationPolicy, turn: BotTurn, reason: HandoverReason, explanation: str
) -> None:
    verdict = evaluate_escalation(policy, turn)
    assert verdict.hand_over
    assert verdict.reasons == (reason,)
    assert verdict.explanation == explanation


@pytest.mark.parametrize(
    ("policy", "turn"),
    [
        (replace(QUIET, max_bot_turns=3), replace(CALM_TURN, turn_count=2)),
        (replace(QUIET, max_bot_turns=0), replace(CALM_TURN, turn_count=10_000)),
        (replace(QUIET, min_sentiment=-0.3), replace(CALM_TURN, sentiment=-0.3)),
        (replace(QUIET, min_sentiment=-0.3), replace(CALM_TURN, sentiment=None)),
        (QUIET, replace(CALM_TURN, sentiment=-1.0)),
        (replace(QUIET, min_confidence=0.5), replace(CALM_TURN, confidence=0.5)),
        (replace(QUIET, min_confidence=0.5), replace(CALM_TURN, confidence=None)),
        (QUIET, replace(CALM_TURN, confidence=0.0)),
        (QUIET, replace(CALM_TURN, asked_for_human=True)),
        (replace(QUIET, keywords=("refund",)), replace(CALM_TURN, message="")),
    ],
    ids=[
        "below the turn limit",
        "no turn limit",
        "sentiment at the threshold",
        "sentiment unknown",
        "no sentiment threshold",
        "confidence at the threshold",
        "confidence unknown",
        "no confidence threshold",
        "human requests ignored",
        "empty message",
    ],
)
def test_a_trigger_that_is_not_met_keeps_the_bot_talking(
    policy: EscalationPolicy, turn: BotTurn
) -> None:
    assert not evaluate_escalation(policy, turn).hand_over


def test_every_trigger_that_fired_is_listed_in_order() -> None:
    policy = EscalationPolicy(
        "strict",
        queue_id="tier1",
        immediately=True,
        max_bot_turns=2,
        min_sentiment=0.0,
        min_confidence=0.5,
        keywords=("refund",),
    )
    turn = BotTurn(
        turn_count=5, sentiment=-0.5, confidence=0.1, message="Refund!", asked_for_human=True
    )
    verdict = evaluate_escalation(policy, turn)
    assert verdict.reasons == tuple(HandoverReason)
    assert verdict.explanation == (
        "the policy hands over immediately; "
        "the bot took 5 turns without resolving it (the limit is 2); "
        "the visitor's sentiment -0.5 is below 0; "
        "the bot's confidence 0.1 is below 0.5; "
        "the visitor wrote 'refund'; "
        "the visitor asked for a human"
    )


def test_a_visitor_asking_for_a_human_about_a_refund_gives_both_reasons() -> None:
    policy = EscalationPolicy("standard", queue_id="tier1", keywords=("refund",))
    turn = BotTurn(
        turn_count=1, message="let me talk to a person about my refund", asked_for_human=True
    )
    verdict = evaluate_escalation(policy, turn)
    assert verdict.reasons == (HandoverReason.KEYWORD, HandoverReason.ASKED_FOR_HUMAN)
    assert verdict.explanation == "the visitor wrote 'refund'; the visitor asked for a human"


def test_several_keywords_are_all_named_in_the_policy_order() -> None:
    policy = replace(QUIET, keywords=("Legal", "cancel", "refund"))
    turn = replace(CALM_TURN, message="Refund or I cancel and call LEGAL")
    assert evaluate_escalation(policy, turn).explanation == (
        "the visitor wrote 'Legal', 'cancel' and 'refund'"
    )


@pytest.mark.parametrize(
    ("keyword", "message", "matches"),
    [
        ("cancel", "I want to CANCEL.", True),
        ("cancel", "cancel my plan", True),
        ("cancel", "Cancel", True),
        ("cancel", "(cancel)", True),
        ("cancel", "I'd like a cancellation", False),
        ("cancel", "the order was uncancelled", False),
        ("cancel", "cancel_request", False),
        ("money back", "I want my money back!", True),
        ("money back", "money\n  back please", True),
        ("money back", "moneyback", False),
        ("money back", "money backing", False),
        (" refund ", "refund", True),
        ("c++", "is this written in C++?", True),
        ("straße", "STRASSE closed", True),
        ("outage", "Störung? outage!", True),
        ("outage", "outages", False),
    ],
)
def test_keywords_match_whole_words_and_phrases_in_any_case(
    keyword: str, message: str, matches: bool
) -> None:
    policy = replace(QUIET, keywords=(keyword,))
    verdict = evaluate_escalation(policy, replace(CALM_TURN, message=message))
    assert verdict.hand_over is matches


def test_a_longer_phrase_is_named_over_the_word_it_starts_with() -> None:
    policy = replace(QUIET, keywords=("cancel", "cancel my plan"))
    verdict = evaluate_escalation(policy, replace(CALM_TURN, message="please cancel my plan"))
    assert verdict.explanation == "the visitor wrote 'cancel my plan'"


KEYWORD_TEXT = st.text(alphabet=st.sampled_from("abcAB +ßS\n."), max_size=12)


def written_on_its_own(keyword: str, message: str) -> bool:
    words = keyword.casefold().split()
    phrase = r"\s+".join(re.escape(word) for word in words)
    return bool(words) and re.search(rf"(?<!\w){phrase}(?!\w)", message.casefold()) is not None


@given(st.lists(KEYWORD_TEXT, max_size=6), st.text(alphabet=st.sampled_from("abcAB +ßS\n.")))
def test_keywords_together_find_what_each_finds_alone(keywords: list[str], message: str) -> None:
    policy = replace(QUIET, keywords=tuple(keywords))
    verdict = evaluate_escalation(policy, replace(CALM_TURN, message=message))
    alone = {keyword.strip() for keyword in keywords if written_on_its_own(keyword, message)}
    assert verdict.hand_over is bool(alone)
    named = set(re.findall(r"'([^']*)'", verdict.explanation))
    assert named <= alone
    assert bool(named) is bool(alone)


# ---- offers and promises --------------------------------------------------------------------

CHAT = EscalationPolicy(
    "chat", queue_id="tier1", sla_policy_id="gold", after_hours_sla_policy_id="gold-night"
)
EMAIL = replace(CHAT, handover_channel=Channel.EMAIL)


@pytest.mark.parametrize(
    ("policy", "queue_open", "at_start", "on_handover"),
    [
        (replace(CHAT, immediately=True), True, Offer.LIVE_CHAT, Offer.LIVE_CHAT),
        (replace(CHAT, immediately=True), False, Offer.EMAIL, Offer.EMAIL),
        (
            replace(CHAT, immediately=True, after_hours=AfterHours.CALLBACK),
            False,
            Offer.CALLBACK,
            Offer.CALLBACK,
        ),
        (replace(EMAIL, immediately=True), True, Offer.EMAIL, Offer.EMAIL),
        (replace(EMAIL, immediately=True), False, Offer.EMAIL, Offer.EMAIL),
        (CHAT, True, Offer.BOT_FIRST, Offer.LIVE_CHAT),
        (CHAT, False, Offer.BOT_FIRST, Offer.EMAIL),
        (replace(CHAT, after_hours=AfterHours.CALLBACK), False, Offer.BOT_FIRST, Offer.CALLBACK),
        (EMAIL, True, Offer.BOT_FIRST, Offer.EMAIL),
        (replace(EMAIL, after_hours=AfterHours.CALLBACK), False, Offer.BOT_FIRST, Offer.EMAIL),
    ],
)
def test_what_the_visitor_is_offered_follows_the_channel_and_the_hours(
    policy: EscalationPolicy, queue_open: bool, at_start: Offer, on_handover: Offer
) -> None:
    assert offer(policy, queue_open) == at_start
    assert handover_offer(policy, queue_open) == on_handover


def test_the_after_hours_promise_applies_only_when_the_chat_queue_is_closed() -> None:
    assert promised_target(CHAT, queue_open=True) == "gold"
    assert promised_target(CHAT, queue_open=False) == "gold-night"
    assert promised_target(replace(CHAT, after_hours_sla_policy_id=""), False) == "gold"
    assert (
        promised_target(replace(CHAT, sla_policy_id="", after_hours_sla_policy_id=""), False) == ""
    )
    assert promised_target(EMAIL, queue_open=False) == "gold"


def target(**duration: float) -> SlaTarget:
    return SlaTarget(timedelta(**duration))


@pytest.mark.parametrize(
    ("duration", "business_hours", "words"),
    [
        (target(minutes=1), False, "1 minute"),
        (target(minutes=45), False, "45 minutes"),
        (target(minutes=45), True, "45 minutes"),
        (target(seconds=90), False, "2 minutes"),
        (target(seconds=10), False, "1 minute"),
        (target(hours=1), False, "1 hour"),
        (target(hours=4), False, "4 hours"),
        (target(hours=48), False, "48 hours"),
        (target(minutes=90), False, "1 hour 30 minutes"),
        (target(minutes=121), False, "2 hours 1 minute"),
        (target(minutes=59, seconds=30), False, "1 hour"),
        (target(hours=1), True, "1 business hour"),
        (target(hours=24), True, "24 business hours"),
        (target(minutes=150), True, "2 business hours 30 minutes"),
    ],
)
def test_a_specialist_promise_states_the_target_in_words(
    duration: SlaTarget, business_hours: bool, words: str
) -> None:
    sentence = expectation(Offer.LIVE_CHAT, Offer.LIVE_CHAT, duration, business_hours)
    assert sentence == f"a specialist usually replies within {words}"


@pytest.mark.parametrize(
    ("handover", "within", "as_soon_as_possible"),
    [
        (
            Offer.LIVE_CHAT,
            "a specialist usually replies within 30 minutes",
            "a specialist will reply as soon as they can",
        ),
        (Offer.EMAIL, "we will email you within 30 minutes", "we will email you as soon as we can"),
        (
            Offer.CALLBACK,
            "we will call you back within 30 minutes",
            "we will call you back as soon as we can",
        ),
    ],
)
def test_each_handover_has_its_own_wording(
    handover: Offer, within: str, as_soon_as_possible: str
) -> None:
    assert expectation(handover, handover, target(minutes=30), False) == within
    assert expectation(handover, handover, None, False) == as_soon_as_possible


def test_a_bot_first_widget_says_the_assistant_answers_first() -> None:
    assert expectation(Offer.BOT_FIRST, Offer.EMAIL, target(hours=24), True) == (
        "our assistant answers right away; if you need more, "
        "we will email you within 24 business hours"
    )
    assert expectation(Offer.BOT_FIRST, Offer.LIVE_CHAT, None, False) == (
        "our assistant answers right away; if you need more, "
        "a specialist will reply as soon as they can"
    )


def test_a_handover_to_the_bot_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="bot_first"):
        expectation(Offer.BOT_FIRST, Offer.BOT_FIRST, None, False)
