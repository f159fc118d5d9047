"""What the widget service does, independent of how it is called (gRPC, workers).

Definitions are stored beside routing's, through routing's own definition plumbing, so they
share its revisions, its configuration version and its in-use checks. A widget's answer is
computed from the compiled ``Catalog`` at one version and kept in a ``WidgetCache`` stamped
with that version; ``precompute`` fills the cache ahead of the widgets' calls.

The answer for a known customer is kept as the bytes the caller encodes it to (``encode``),
so serving a cached answer is one cache read and nothing recomputed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from services.core.errors import FailedPrecondition, FieldViolation, NotFound, Unavailable
from services.core.validation import actor_problems, raise_if, required
from services.profiles.logic import EXTERNAL_SYSTEM_PATTERN, validate_customer_id
from services.routing.app import Routing
from services.routing.business_hours import is_open, next_change_time
from services.routing.config import Config, stamps
from services.routing.domain import Channel, Decision, Handover, RouteRequest, TargetClock
from services.routing.lifecycle import ConversationState, EventKind
from services.routing.logic import conversation_id_problems
from services.routing.repository import check_revision
from services.segments.logic import rule_attributes
from services.widgets import documents
from services.widgets.cache import CacheDown, Entry, WidgetCache, entry_name
from services.widgets.domain import (
    BotTurn,
    EscalationPolicy,
    Offer,
    Persona,
    Verdict,
    Visitor,
    WidgetConfig,
    WidgetPolicies,
)
from services.widgets.logic import (
    bot_turn_problems,
    choose,
    escalation_problems,
    escalation_references,
    evaluate_escalation,
    expectation,
    handover_offer,
    offer,
    persona_problems,
    policies_problems,
    policies_references,
    promised_target,
    render_greeting,
)

log = logging.getLogger("switchboard.widgets")

# How a handover reaches people on each offer.
_HANDOVER_CHANNEL = {
    Offer.LIVE_CHAT: Channel.CHAT,
    Offer.EMAIL: Channel.EMAIL,
    Offer.CALLBACK: Channel.PHONE,
}


@dataclass(frozen=True)
class Catalog:
    """Every widget definition and the routing configuration at one version."""

    version: int
    personas: Mapping[str, Persona]
    escalations: Mapping[str, EscalationPolicy]
    policies: WidgetPolicies | None
    routing: Config


@dataclass(frozen=True)
class Answer:
    """A widget configuration in the form ``encode`` gives it, as the cache keeps it."""

    encoded: bytes
    cached: bool


@dataclass(frozen=True)
class EscalationAnswer:
    verdict: Verdict
    queue_id: str
    handover_offer: Offer
    expectation: str
    # Set when the conversation was routed (or escalated) by this call.
    decision: Decision | None


class CacheMetrics:
    """How widget answers were found: hit, miss, or the cache was down (answered anyway)."""

    def __init__(self) -> None:
        self.lookups = Counter(
            "switchboard_widget_cache_lookups",
            "GetWidgetConfig cache lookups by result (hit, miss, down)",
            ("result",),
            registry=None,
        )

        self._by_result = {
            result: self.lookups.labels(result) for result in ("hit", "miss", "down")
        }

    def count(self, result: str) -> None:
        self._by_result[result].inc()


def greeting_values(attributes: Mapping[str, Any]) -> dict[str, str]:
    """What a greeting may say about a customer: a first name and the company's name."""
    display_name = str(attributes.get("display_name", "")).split()
    return {
        "first_name": display_name[0] if display_name else "",
        "company_name": str(attributes.get("company_name", "")),
    }


def visitor_problems(visitor: Visitor) -> list[FieldViolation]:
    """Ids that cannot name anyone; an id that names nobody is answered as anonymous."""
    problems: list[FieldViolation] = []
    if visitor.customer_id:
        problems += validate_customer_id(visitor.customer_id, "visitor.customer_id")
    if visitor.external_system and not EXTERNAL_SYSTEM_PATTERN.match(visitor.external_system):
        problems.append(FieldViolation("visitor.external_id", "not a valid system name"))
    return problems


def compose(
    catalog: Catalog, segment_ids: frozenset[str], values: Mapping[str, str], now: datetime
) -> tuple[WidgetConfig, datetime | None]:
    """The configuration for a customer in ``segment_ids``, and when it stops being true
    (the handover queue's calendar opens or closes; None when it never does)."""
    policies = catalog.policies
    if policies is None:
        raise FailedPrecondition(
            "no widget policies yet: set them with UpdateWidgetPolicies",
            reason="WIDGETS_NOT_CONFIGURED",
        )
    choice = choose(policies, segment_ids)
    persona = catalog.personas[choice.persona_id]
    escalation = catalog.escalations[choice.escalation_policy_id]
    queue_open, changes_at = _queue_hours(catalog.routing, escalation.queue_id, now)
    now_offered = offer(escalation, queue_open)
    handover = handover_offer(escalation, queue_open)
    config = WidgetConfig(
        persona=replace(persona, greeting=render_greeting(persona.greeting, values)),
        escalation=escalation,
        offer=now_offered,
        handover_offer=handover,
        expectation=_promise(catalog.routing, escalation, queue_open, now_offered, handover),
        queue_open=queue_open,
        policies_revision=policies.revision,
    )
    return config, changes_at


def _queue_hours(routing: Config, queue_id: str, now: datetime) -> tuple[bool, datetime | None]:
    queue = routing.queues.get(queue_id)
    calendar = routing.calendars.get(queue.calendar_id) if queue else None
    if calendar is None:
        # Saving refuses a missing queue; one deleted since is treated as always open.
        return True, None
    return is_open(calendar.hours, now), next_change_time(calendar.hours, now)


def _promise(
    routing: Config, escalation: EscalationPolicy, queue_open: bool, now: Offer, handover: Offer
) -> str:
    policy = routing.policies.get(promised_target(escalation, queue_open))
    target = policy.first_response if policy else None
    business_hours = False
    if policy is not None and target is not None:
        has_calendar = bool(policy.calendar_id) or bool(
            (queue := routing.queues.get(escalation.queue_id)) and queue.calendar_id
        )
        business_hours = target.clock != TargetClock.CALENDAR_TIME and has_calendar
    return expectation(now, handover, target, business_hours)


class Widgets:
    def __init__(
        self,
        routing: Routing,
        cache: WidgetCache,
        encode: Callable[[WidgetConfig], bytes],
        *,
        version_check_seconds: float = 1.0,
    ) -> None:
        self.routing = routing
        self.cache = cache
        self.encode = encode
        self.version_check_seconds = version_check_seconds
        self.metrics = CacheMetrics()
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._version_checked_at = -float("inf")
        self._cache_down = False
        routing.repository.config_listeners.append(self._publish_stored_version)
        routing.customers.change_listeners.append(self._forget_customers)
        routing.customers.plan_listeners.append(self._forget_everyone)

    # ---- personas ---------------------------------------------------------------------------

    def create_persona(self, *, persona: Persona) -> Persona:
        raise_if(persona_problems(persona))
        with self.routing.repository.write() as store:
            stored = store.create_definition(
                documents.PERSONA,
                persona.persona_id,
                documents.persona_document(persona),
                self.routing.clock(),
            )
        return documents.persona_from(stored.key, stored.document, **stamps(stored))

    def get_persona(self, *, persona_id: str) -> Persona:
        stored = self.routing.get_definition(documents.PERSONA, persona_id, "persona_id")
        return documents.persona_from(stored.key, stored.document, **stamps(stored))

    def list_personas(self, *, page_size: int, page_token: str) -> tuple[list[Persona], str]:
        page, token = self.routing.definition_page(documents.PERSONA, page_size, page_token)
        return [documents.persona_from(s.key, s.document, **stamps(s)) for s in page], token

    def update_persona(self, *, persona: Persona) -> Persona:
        raise_if(persona_problems(persona))
        stored = self.routing.replace_definition(
            documents.PERSONA,
            persona.persona_id,
            documents.persona_document(persona),
            persona.revision,
        )
        return documents.persona_from(stored.key, stored.document, **stamps(stored))

    def delete_persona(self, *, persona_id: str, revision: int) -> None:
        raise_if(required("persona_id", persona_id))
        self.routing.delete_definition(documents.PERSONA, persona_id, revision, _nobody)

    # ---- escalation policies ----------------------------------------------------------------

    def create_escalation(self, *, policy: EscalationPolicy) -> EscalationPolicy:
        raise_if(escalation_problems(policy))
        with self.routing.repository.write() as store:
            self.routing.require_references(
                store, documents.stored_references(escalation_references(policy))
            )
            stored = store.create_definition(
                documents.ESCALATION,
                policy.policy_id,
                documents.escalation_document(policy),
                self.routing.clock(),
            )
        return documents.escalation_from(stored.key, stored.document, **stamps(stored))

    def get_escalation(self, *, policy_id: str) -> EscalationPolicy:
        stored = self.routing.get_definition(documents.ESCALATION, policy_id, "policy_id")
        return documents.escalation_from(stored.key, stored.document, **stamps(stored))

    def list_escalations(
        self, *, page_size: int, page_token: str
    ) -> tuple[list[EscalationPolicy], str]:
        page, token = self.routing.definition_page(documents.ESCALATION, page_size, page_token)
        return [documents.escalation_from(s.key, s.document, **stamps(s)) for s in page], token

    def update_escalation(self, *, policy: EscalationPolicy) -> EscalationPolicy:
        raise_if(escalation_problems(policy))
        stored = self.routing.replace_definition(
            documents.ESCALATION,
            policy.policy_id,
            documents.escalation_document(policy),
            policy.revision,
            documents.stored_references(escalation_references(policy)),
        )
        return documents.escalation_from(stored.key, stored.document, **stamps(stored))

    def delete_escalation(self, *, policy_id: str, revision: int) -> None:
        raise_if(required("policy_id", policy_id))
        self.routing.delete_definition(documents.ESCALATION, policy_id, revision, _nobody)

    # ---- assignment to segments ---------------------------------------------------------------

    def get_policies(self, *, revision: int) -> WidgetPolicies:
        found = self.routing.document_revision(documents.POLICIES, documents.POLICIES_KEY, revision)
        if found is None:
            return WidgetPolicies()
        return documents.policies_from(
            found.document, found.revision, found.revise_time, found.actor
        )

    def update_policies(self, *, policies: WidgetPolicies, actor: str) -> WidgetPolicies:
        raise_if(policies_problems(policies) + actor_problems(actor))
        references = policies_references(policies)
        self._require_segments(references)
        document = documents.policies_document(policies)
        now = self.routing.clock()
        with self.routing.repository.write() as store:
            self.routing.require_references(store, documents.stored_references(references))
            current = store.find_definition(documents.POLICIES, documents.POLICIES_KEY, lock=True)
            if current is None:
                if policies.revision:
                    raise FailedPrecondition(
                        "there are no widget policies yet; create them with revision 0",
                        reason="STALE_REVISION",
                    )
                stored = store.create_definition(
                    documents.POLICIES,
                    documents.POLICIES_KEY,
                    document,
                    now,
                    actor=actor,
                    action="updated",
                )
            else:
                check_revision(current, policies.revision)
                stored = store.replace_definition(
                    current, document, now, actor=actor, action="updated"
                )
        return documents.policies_from(stored.document, stored.revision, stored.update_time, actor)

    def _require_segments(self, references: Sequence[tuple[str, str, str]]) -> None:
        wanted = [(key, field) for kind, key, field in references if kind == "segment"]
        if not wanted:
            return
        known = {segment.segment_id for segment in self.routing.customers.segments.all_segments()}
        missing = [
            f"{field} names segment {key!r}, which does not exist"
            for key, field in wanted
            if key not in known
        ]
        if missing:
            raise FailedPrecondition("; ".join(missing), reason="MISSING_REFERENCE")

    # ---- serving ------------------------------------------------------------------------------

    def widget_config(self, *, visitor: Visitor) -> Answer:
        """The visitor's configuration: from the cache when a known customer's is there,
        else computed (and kept). Never fails because the cache or a customer is missing."""
        raise_if(visitor_problems(visitor))
        self._check_version()
        self._notice_changes()
        named = self._customer_id(visitor)
        name = entry_name(named) if named else ""
        version = 0
        # Values the widget sends change the greeting, so such answers are not shared.
        if name and not visitor.greeting_values:
            found = None
            if self._cache_down:
                self.metrics.count("down")
            else:
                try:
                    version, found = self.cache.read(name)
                except CacheDown as error:
                    self._went_down(error)
                else:
                    self.metrics.count("hit" if found else "miss")
            if found is not None:
                return Answer(found, cached=True)
        now = self.routing.clock()
        catalog = self.catalog(at_least=version)
        customer_id, attributes, segment_ids = self._resolve(named, visitor, now)
        values = greeting_values(attributes) | {
            key: value for key, value in visitor.greeting_values.items() if value
        }
        config, changes_at = compose(catalog, segment_ids, values, now)
        encoded = self.encode(config)
        if customer_id and not visitor.greeting_values:
            entries = [Entry(entry_name(customer_id), encoded, changes_at)]
            self._keep(catalog.version, entries, publish=catalog.version > version)
        return Answer(encoded, cached=False)

    async def cached_widget_config(self, *, visitor: Visitor) -> Answer | None:
        """The answer ``widget_config`` would read from the cache, read without blocking
        an event loop; None when that call must answer (it has more to do than one cache
        read: a check or refresh due, a lookup, a miss, the cache down)."""
        customers = self.routing.customers
        if (
            not visitor.customer_id
            or visitor.external_system
            or visitor.greeting_values
            or self._cache_down
            or self._version_due()
            or customers.refresh_due()
            or visitor_problems(visitor)
        ):
            return None
        try:
            _version, found = await self.cache.read_async(entry_name(visitor.customer_id))
        except CacheDown as error:
            self._went_down(error)
            return None
        if found is None:
            return None
        self.metrics.count("hit")
        return Answer(found, cached=True)

    def evaluate_escalation(
        self, *, visitor: Visitor, turn: BotTurn, conversation_id: str
    ) -> EscalationAnswer:
        """Whether the bot hands over now; when it does and ``conversation_id`` is given, the
        conversation is routed to the policy's queue (or, routed to the bot before, escalated)."""
        problems = visitor_problems(visitor) + bot_turn_problems(turn)
        if conversation_id:
            problems += conversation_id_problems(conversation_id)
        raise_if(problems)
        now = self.routing.clock()
        catalog = self.catalog()
        customer_id, attributes, segment_ids = self._resolve(
            self._customer_id(visitor), visitor, now
        )
        config, _ = compose(catalog, segment_ids, {}, now)
        policy = config.escalation
        verdict = evaluate_escalation(policy, turn)
        decision = None
        if verdict.hand_over and conversation_id:
            decision = self._hand_over(
                conversation_id,
                customer_id,
                attributes if not customer_id else {},
                config,
                verdict,
                now,
            )
        return EscalationAnswer(
            verdict=verdict,
            queue_id=decision.queue_id if decision else policy.queue_id,
            handover_offer=config.handover_offer,
            expectation=config.expectation,
            decision=decision,
        )

    def _hand_over(
        self,
        conversation_id: str,
        customer_id: str,
        visitor_attributes: Mapping[str, Any],
        config: WidgetConfig,
        verdict: Verdict,
        now: datetime,
    ) -> Decision:
        """Routes the conversation to the policy's queue with the SLA promised now; one the
        widget routed to the bot when the chat began is escalated where it waits."""
        policy = config.escalation
        decision, replayed = self.routing.route(
            request=RouteRequest(
                conversation_id=conversation_id,
                channel=_HANDOVER_CHANNEL[config.handover_offer],
                customer_id=customer_id,
                visitor_attributes=visitor_attributes,
                topic="handover",
                time=now,
                handover=Handover(
                    policy.queue_id,
                    promised_target(policy, config.queue_open),
                    f"handed over by escalation policy {policy.policy_id!r}: {verdict.explanation}",
                ),
            )
        )
        if replayed:
            conversation = self.routing.get_conversation(conversation_id=conversation_id)
            if conversation.state == ConversationState.BOT:
                self.routing.record_event(
                    conversation_id=conversation_id,
                    kind=EventKind.ESCALATED,
                    time=now,
                    agent_id="",
                    queue_id="",
                    sla_policy_id="",
                    csat_rating=0,
                )
        return decision

    # ---- precomputation -----------------------------------------------------------------------

    def precompute(self, records: Iterable[Mapping[str, Any]], *, batch_size: int = 2000) -> int:
        """Compute and keep the configuration of every customer in ``records`` at the
        version in force; returns how many were written. Customers who share segments and
        greeting values share one computation."""
        catalog = self.catalog(at_least=self.stored_version())
        now = self.routing.clock()
        evaluate = self.routing.customers.plan().evaluator(now)
        computed: dict[tuple[frozenset[str], tuple[str, ...]], tuple[bytes, datetime | None]] = {}
        pending: list[Entry] = []
        count = 0
        for record in records:
            attributes = rule_attributes(record)
            segment_ids = evaluate(attributes)
            values = greeting_values(attributes)
            key = (segment_ids, tuple(values.values()))
            if key not in computed:
                config, changes_at = compose(catalog, segment_ids, values, now)
                computed[key] = (self.encode(config), changes_at)
            encoded, changes_at = computed[key]
            pending.append(Entry(entry_name(record["customer_id"]), encoded, changes_at))
            count += 1
            if len(pending) >= batch_size:
                self.cache.write(catalog.version, pending)
                pending = []
        if pending:
            self.cache.write(catalog.version, pending)
        self.cache.publish(catalog.version)
        return count

    # ---- catalog and cache versions ----------------------------------------------------------

    def catalog(self, *, at_least: int = 0) -> Catalog:
        """The compiled catalog, read again when the store has moved past it."""
        cached = self._catalog
        if cached is not None and cached.version >= at_least and not self._version_due():
            return cached
        with self._catalog_lock:
            with self.routing.repository.read() as store:
                version = store.config_version()
                cached = self._catalog
                if cached is None or cached.version != version:
                    cached = self._load(store, self.routing.config(store))
                    self._catalog = cached
            self._version_checked_at = time.monotonic()
        return cached

    def _load(self, store: Any, config: Config) -> Catalog:
        policies = None
        current = store.find_definition(documents.POLICIES, documents.POLICIES_KEY)
        if current is not None:
            actor = store.revisions(documents.POLICIES, documents.POLICIES_KEY, limit=1)[0].actor
            policies = documents.policies_from(
                current.document, current.revision, current.update_time, actor
            )
        return Catalog(
            version=config.version,
            personas={
                s.key: documents.persona_from(s.key, s.document, **stamps(s))
                for s in store.definitions(documents.PERSONA)
            },
            escalations={
                s.key: documents.escalation_from(s.key, s.document, **stamps(s))
                for s in store.definitions(documents.ESCALATION)
            },
            policies=policies,
            routing=config,
        )

    def _version_due(self) -> bool:
        return time.monotonic() - self._version_checked_at >= self.version_check_seconds

    def _check_version(self) -> None:
        """Now and then, make sure the cache's version is the store's: a write whose
        publication was lost (the cache was down) must not let old entries come back."""
        if self._version_due():
            self._publish_stored_version()

    def stored_version(self) -> int:
        with self.routing.repository.read() as store:
            return store.config_version()

    def _publish_stored_version(self) -> None:
        self._version_checked_at = time.monotonic()
        version = self.stored_version()
        try:
            self.cache.publish(version)
        except CacheDown as error:
            self._went_down(error)
            return
        if self._cache_down:
            log.warning("widget cache is back", extra={"version": version})
            self._cache_down = False

    def _went_down(self, error: CacheDown) -> None:
        """Answer without the cache until the version in force could be published again:
        entries read before that might come from a policy changed during the outage."""
        self.metrics.count("down")
        if not self._cache_down:
            log.warning("widget cache is down; answering without it: %s", error)
            self._cache_down = True

    def _notice_changes(self) -> None:
        """Let the customers' change log and segment definitions catch up (each at most
        every few seconds), so changed customers are not answered from old entries."""
        customers = self.routing.customers
        try:
            customers.catch_up()
            customers.plan()
        except Unavailable as error:
            log.warning("widget answers may lag customer changes: %s", error)

    def _forget_customers(self, customer_ids: Sequence[str]) -> None:
        try:
            self.cache.forget([entry_name(customer_id) for customer_id in customer_ids])
        except CacheDown as error:
            self._went_down(error)

    def _forget_everyone(self) -> None:
        try:
            self.cache.forget_all()
        except CacheDown as error:
            self._went_down(error)

    def _keep(self, version: int, entries: Sequence[Entry], *, publish: bool) -> None:
        """Store freshly computed entries; ``publish`` when the cache's version in force was
        seen to be older than the one they were computed at."""
        if self._cache_down:
            return
        try:
            self.cache.write(version, entries)
            if publish:
                self.cache.publish(version)
        except CacheDown as error:
            self._went_down(error)

    def _customer_id(self, visitor: Visitor) -> str:
        """The id of the customer the visitor names; "" when an external id names nobody
        (or profiles cannot tell now): the visitor is then anonymous."""
        if not visitor.external_system:
            return visitor.customer_id
        try:
            record = self.routing.customers.profiles.find_by_external_id(
                visitor.external_system, visitor.external_id
            )
        except Unavailable as error:
            log.warning("answering a widget as anonymous: %s", error)
            return ""
        return str(record["customer_id"]) if record else ""

    def _resolve(
        self, customer_id: str, visitor: Visitor, now: datetime
    ) -> tuple[str, Mapping[str, Any], frozenset[str]]:
        """(customer id or "" for anonymous, attributes, segments). An unknown customer, or
        one the profiles or segments service cannot tell about now, is anonymous."""
        customers = self.routing.customers
        try:
            if customer_id:
                try:
                    known = customers.lookup(customer_id, now)
                    return customer_id, known.attributes, known.segment_ids
                except NotFound:
                    pass
            return "", visitor.attributes, customers.segments_of(visitor.attributes, now)
        except Unavailable as error:
            log.warning("answering a widget without segments: %s", error)
            return "", visitor.attributes, frozenset()


def _nobody(_config: Config) -> list[str]:
    # Widget definitions are used only by other definitions, found by their references.
    return []
