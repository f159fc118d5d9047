"""What the routing service does, independent of how it is called (gRPC, workers, CLI).

Configuration is validated completely before anything is stored and every problem is
reported at once. Conversations move only through ``lifecycle.advance``, so the state kept
in the table and the history the SLA clocks replay never disagree.

``Routing`` is the surface callers use: it checks requests, opens transactions, caches the
compiled configuration and wakes watching consoles. Where a conversation goes and who gets
it is decided in ``placement``; what callers see of it is built in ``views``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from switchboard.profiles.v1 import profiles_pb2

from services.core.clock import Clock, utc_now
from services.core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.core.validation import actor_problems, page_limit, raise_if, required
from services.routing import documents, placement, views, watch
from services.routing.config import Config, load_config, stamps
from services.routing.customers import CustomerDirectory
from services.routing.domain import (
    Agent,
    AgentStatus,
    Assignment,
    AssignmentChange,
    Calendar,
    Channel,
    Conversation,
    Decision,
    Queue,
    RevisionAction,
    RouteRequest,
    RoutingAction,
    RoutingRules,
    RulesRevision,
    SlaPolicy,
)
from services.routing.facts import conversation_facts
from services.routing.lifecycle import (
    ConversationEvent,
    ConversationState,
    EventKind,
    InvalidTransition,
    Situation,
    advance,
)
from services.routing.logic import (
    agent_id_problems,
    agent_problems,
    calendar_definition_problems,
    can_serve,
    clock_policy,
    conversation_id_problems,
    match,
    policy_problems,
    queue_problems,
    resource_id_problems,
    route_request_problems,
    rules_problems,
    rules_references,
)
from services.routing.repository import (
    PlacementStore,
    PreviewStore,
    RoutingRepository,
    Store,
    StoredDefinition,
    StoredRevision,
    check_revision,
    resource_name,
)
from services.routing.sla import Alert, Metric, PolicyPeriod, first_response_due, sla_report
from services.routing.sla import SlaPolicy as ClockPolicy
from services.segments.logic import token_position, token_text
from services.segments.repository import decode_token, encode_token
from services.segments.rules import documents_within

RECORDABLE = frozenset(
    {
        EventKind.AGENT_REPLY,
        EventKind.BOT_REPLY,
        EventKind.CUSTOMER_REPLY,
        EventKind.WAITING_ON_CUSTOMER,
        EventKind.TRANSFERRED,
        EventKind.ESCALATED,
        EventKind.RESOLVED,
        EventKind.REOPENED,
        EventKind.CSAT_RATED,
    }
)
# JSON bytes of the rules documents on one page of revisions: a page ends early past it,
# so that a client receiving gRPC's default 4 MiB can always read one.
MAX_PAGE_RULES_BYTES = 524_288
_WATCH_POLL_SECONDS = 0.5
_TIMER_BATCH = 200
_SLA_BATCH = 200


class Routing:
    def __init__(
        self, repository: RoutingRepository, customers: CustomerDirectory, clock: Clock = utc_now
    ) -> None:
        self.repository = repository
        self.customers = customers
        self.clock = clock
        self._config: Config | None = None
        self._config_lock = threading.Lock()
        # Wakes consoles watching in this process as soon as an assignment changes; other
        # processes' changes reach them by polling.
        self._assignments_changed = threading.Condition()
        repository.before_commit.append(self._record_facts)

    # ---- configuration ----------------------------------------------------------------------

    def config(self, store: Store) -> Config:
        """The configuration in force, compiled again only when a definition changed."""
        return self._config_at(store, store.config_version())

    def _config_at(self, store: Store, version: int) -> Config:
        cached = self._config
        if cached is not None and cached.version == version:
            return cached
        with self._config_lock:
            loaded = load_config(store, version)
            self._config = loaded
        return loaded

    def create_calendar(self, *, calendar: Calendar) -> Calendar:
        raise_if(calendar_definition_problems(calendar))
        with self.repository.write() as store:
            stored = store.create_definition(
                "calendar",
                calendar.calendar_id,
                documents.calendar_document(calendar),
                self.clock(),
            )
        return documents.calendar_from(stored.key, stored.document, **stamps(stored))

    def get_calendar(self, *, calendar_id: str) -> Calendar:
        stored = self.get_definition("calendar", calendar_id, "calendar_id")
        return documents.calendar_from(stored.key, stored.document, **stamps(stored))

    def list_calendars(self, *, page_size: int, page_token: str) -> tuple[list[Calendar], str]:
        page, token = self.definition_page("calendar", page_size, page_token)
        return [documents.calendar_from(s.key, s.document, **stamps(s)) for s in page], token

    def update_calendar(self, *, calendar: Calendar) -> Calendar:
        raise_if(calendar_definition_problems(calendar))
        # Any clock may count on this calendar, through its policy or its queue.
        stored = self.replace_definition(
            "calendar",
            calendar.calendar_id,
            documents.calendar_document(calendar),
            calendar.revision,
            then=lambda store: store.recheck_sla(self.clock()),
        )
        return documents.calendar_from(stored.key, stored.document, **stamps(stored))

    def delete_calendar(self, *, calendar_id: str, revision: int) -> None:
        def users(config: Config) -> list[str]:
            return [
                f"queue {q.queue_id!r}"
                for q in config.queues.values()
                if q.calendar_id == calendar_id
            ] + [
                f"SLA policy {p.policy_id!r}"
                for p in config.policies.values()
                if p.calendar_id == calendar_id
            ]

        self.delete_definition("calendar", calendar_id, revision, users)

    def create_policy(self, *, policy: SlaPolicy) -> SlaPolicy:
        raise_if(policy_problems(policy))
        with self.repository.write() as store:
            self.require_references(store, _policy_references(policy))
            _require_endpoints(store, policy)
            stored = store.create_definition(
                "policy", policy.policy_id, documents.policy_document(policy), self.clock()
            )
        return documents.policy_from(stored.key, stored.document, **stamps(stored))

    def get_policy(self, *, policy_id: str) -> SlaPolicy:
        stored = self.get_definition("policy", policy_id, "policy_id")
        return documents.policy_from(stored.key, stored.document, **stamps(stored))

    def list_policies(self, *, page_size: int, page_token: str) -> tuple[list[SlaPolicy], str]:
        page, token = self.definition_page("policy", page_size, page_token)
        return [documents.policy_from(s.key, s.document, **stamps(s)) for s in page], token

    def update_policy(self, *, policy: SlaPolicy) -> SlaPolicy:
        raise_if(policy_problems(policy))

        def check_and_recheck(store: Store) -> None:
            _require_endpoints(store, policy)
            store.recheck_sla(self.clock(), column="sla_policy_id", value=policy.policy_id)

        stored = self.replace_definition(
            "policy",
            policy.policy_id,
            documents.policy_document(policy),
            policy.revision,
            _policy_references(policy),
            then=check_and_recheck,
        )
        return documents.policy_from(stored.key, stored.document, **stamps(stored))

    def delete_policy(self, *, policy_id: str, revision: int) -> None:
        def users(config: Config) -> list[str]:
            return _rule_users(config, lambda action: action.sla_policy_id == policy_id)

        self.delete_definition(
            "policy", policy_id, revision, users, conversation_column="sla_policy_id"
        )

    def create_queue(self, *, queue: Queue) -> Queue:
        raise_if(queue_problems(queue))
        with self.repository.write() as store:
            self.require_references(store, _queue_references(queue))
            stored = store.create_definition(
                "queue", queue.queue_id, documents.queue_document(queue), self.clock()
            )
        return documents.queue_from(stored.key, stored.document, **stamps(stored))

    def get_queue(self, *, queue_id: str) -> Queue:
        stored = self.get_definition("queue", queue_id, "queue_id")
        return documents.queue_from(stored.key, stored.document, **stamps(stored))

    def list_queues(self, *, page_size: int, page_token: str) -> tuple[list[Queue], str]:
        page, token = self.definition_page("queue", page_size, page_token)
        return [documents.queue_from(s.key, s.document, **stamps(s)) for s in page], token

    def update_queue(self, *, queue: Queue) -> Queue:
        raise_if(queue_problems(queue))
        # Clocks of policies without a calendar count on their queue's.
        stored = self.replace_definition(
            "queue",
            queue.queue_id,
            documents.queue_document(queue),
            queue.revision,
            _queue_references(queue),
            then=lambda store: store.recheck_sla(
                self.clock(), column="queue_id", value=queue.queue_id
            ),
        )
        return documents.queue_from(stored.key, stored.document, **stamps(stored))

    def delete_queue(self, *, queue_id: str, revision: int) -> None:
        def users(config: Config) -> list[str]:
            overflowing = [
                f"queue {q.queue_id!r} (overflow)"
                for q in config.queues.values()
                if q.overflow is not None and q.overflow.queue_id == queue_id
            ]
            return overflowing + _rule_users(
                config,
                lambda action: (
                    action.queue_id == queue_id
                    or any(step.queue_id == queue_id for step in action.fallback_chain)
                ),
            )

        self.delete_definition("queue", queue_id, revision, users, conversation_column="queue_id")

    def create_agent(self, *, agent: Agent) -> Agent:
        raise_if(agent_problems(agent))
        now = self.clock()
        with self.repository.write() as store:
            stored = store.create_definition(
                "agent", agent.agent_id, documents.agent_document(agent), now
            )
            store.add_presence(agent.agent_id, AgentStatus.OFFLINE.value, now)
        return self._agent_view(stored, AgentStatus.OFFLINE, now, 0)

    def get_agent(self, *, agent_id: str) -> Agent:
        raise_if(required("agent_id", agent_id))
        with self.repository.read() as store:
            stored = store.definition("agent", agent_id)
            presence = store.presence(agent_id)
            held = sum(store.open_counts([agent_id]).get(agent_id, {}).values())
        return self._agent_view(stored, AgentStatus(presence.status), presence.status_time, held)

    def list_agents(self, *, page_size: int, page_token: str) -> tuple[list[Agent], str]:
        page, token = self.definition_page("agent", page_size, page_token)
        with self.repository.read() as store:
            presences = store.presences()
            counts = store.open_counts([s.key for s in page])
        agents = [
            self._agent_view(
                s,
                AgentStatus(presences[s.key].status),
                presences[s.key].status_time,
                sum(counts.get(s.key, {}).values()),
            )
            for s in page
        ]
        return agents, token

    def update_agent(self, *, agent: Agent) -> Agent:
        raise_if(agent_problems(agent))
        stored = self.replace_definition(
            "agent", agent.agent_id, documents.agent_document(agent), agent.revision
        )
        return self.get_agent(agent_id=stored.key)

    def set_agent_status(
        self, *, agent_id: str, status: AgentStatus | None
    ) -> tuple[Agent, list[str]]:
        problems = required("agent_id", agent_id)
        if status is None:
            problems.append(FieldViolation("status", "required: ONLINE, AWAY or OFFLINE"))
        raise_if(problems)
        assert status is not None
        now = self.clock()
        returned: list[str] = []
        with self.repository.write() as store:
            store.definition("agent", agent_id)
            store.presence(agent_id, lock=True)
            store.set_presence(agent_id, status.value, now)
            if status == AgentStatus.OFFLINE:
                for row in store.held_by(agent_id):
                    if row["agent_replied"] or row["state"] != ConversationState.ASSIGNED.value:
                        continue
                    placement.release(store, row, now, note=f"{agent_id} went offline")
                    returned.append(row["conversation_id"])
        if returned:
            self._notify()
        return self.get_agent(agent_id=agent_id), sorted(returned)

    def _agent_view(
        self, stored: StoredDefinition, status: AgentStatus, status_time: datetime, held: int
    ) -> Agent:
        agent = documents.agent_from(stored.key, stored.document, **stamps(stored))
        return replace(agent, status=status, status_time=status_time, open_conversations=held)

    # ---- routing rules ----------------------------------------------------------------------

    def get_rules(self, *, revision: int) -> RoutingRules:
        found = self.document_revision("rules", "rules", revision)
        if found is None:
            return RoutingRules()
        return documents.rules_from(found.document, found.revision, found.revise_time, found.actor)

    def update_rules(self, *, rules: RoutingRules, actor: str) -> RoutingRules:
        raise_if(rules_problems(rules) + actor_problems(actor))
        return self._save_rules(
            documents.rules_document(rules), rules, rules.revision, actor, RevisionAction.UPDATED, 0
        )

    def list_rule_revisions(
        self, *, page_size: int, page_token: str
    ) -> tuple[list[RulesRevision], str]:
        size = page_limit(page_size)
        before = _token_number(page_token)
        with self.repository.read() as store:
            found = store.revisions("rules", "rules", before_revision=before, limit=size + 1)
        size = min(size, documents_within([r.document for r in found[:size]], MAX_PAGE_RULES_BYTES))
        revisions = [
            RulesRevision(
                rules=documents.rules_from(r.document, r.revision, r.revise_time, r.actor),
                action=RevisionAction(r.action),
                restored_revision=r.restored_revision,
            )
            for r in found[:size]
        ]
        token = str(found[size - 1].revision) if len(found) > size else ""
        return revisions, token

    def rollback_rules(self, *, target_revision: int, revision: int, actor: str) -> RoutingRules:
        raise_if(actor_problems(actor))
        if target_revision <= 0:
            raise InvalidArgument.field("target_revision", "must be a revision number")
        target = self.get_rules(revision=target_revision)
        return self._save_rules(
            documents.rules_document(target),
            target,
            revision,
            actor,
            RevisionAction.ROLLED_BACK,
            target_revision,
        )

    def _save_rules(
        self,
        document: dict[str, Any],
        rules: RoutingRules,
        expected: int,
        actor: str,
        action: RevisionAction,
        restored: int,
    ) -> RoutingRules:
        now = self.clock()
        with self.repository.write() as store:
            self.require_references(store, rules_references(rules))
            current = store.find_definition("rules", "rules", lock=True)
            if current is None:
                if expected:
                    raise FailedPrecondition(
                        "there are no routing rules yet; create them with revision 0",
                        reason="STALE_REVISION",
                    )
                stored = store.create_definition(
                    "rules", "rules", document, now, actor=actor, action=action.value
                )
            else:
                check_revision(current, expected)
                stored = store.replace_definition(
                    current,
                    document,
                    now,
                    actor=actor,
                    action=action.value,
                    restored_revision=restored,
                )
        return documents.rules_from(stored.document, stored.revision, stored.update_time, actor)

    # ---- routing ------------------------------------------------------------------------------

    def route(self, *, request: RouteRequest) -> tuple[Decision, bool]:
        """Decide and store where a conversation goes; the stored decision when it was
        routed before (``True``). With ``validate_only`` the decision is made against a
        snapshot of the desk and nothing is locked or stored."""
        raise_if(route_request_problems(request))
        assert request.channel is not None
        if not request.validate_only:
            with self.repository.read() as store:
                stored = store.find_conversation(request.conversation_id)
            if stored is not None:
                return documents.decision_from(request.conversation_id, stored["decision"]), True
        now = request.time or self.clock()
        if request.customer_id:
            known = self.customers.lookup(request.customer_id, now)
            attributes, segment_ids = known.attributes, known.segment_ids
        else:
            attributes = dict(request.visitor_attributes)
            segment_ids = self.customers.segments_of(attributes, now)
        if request.validate_only:
            desk = self.repository.desk()
            config = self._config
            if config is None or config.version != desk.config_version:
                with self.repository.read() as store:
                    config = self.config(store)
            preview = PreviewStore(desk)
            return self._decide(preview, config, request, attributes, segment_ids, now), False
        try:
            with self.repository.write() as store:
                config = self.config(store)
                decision = self._decide(store, config, request, attributes, segment_ids, now)
                store.record_conversation_segments(
                    request.conversation_id, decision.segment_ids, now
                )
        except IntegrityError:
            # Routed concurrently by another call: that decision stands.
            with self.repository.read() as store:
                stored = store.conversation(request.conversation_id)
            return documents.decision_from(request.conversation_id, stored["decision"]), True
        if decision.agent_id:
            self._notify()
        return decision, False

    def _decide(
        self,
        store: PlacementStore,
        config: Config,
        request: RouteRequest,
        attributes: Mapping[str, Any],
        segment_ids: frozenset[str],
        now: datetime,
    ) -> Decision:
        assert request.channel is not None
        if config.rules is None:
            raise FailedPrecondition(
                "no routing rules yet: set them with UpdateRoutingRules",
                reason="ROUTING_NOT_CONFIGURED",
            )
        matched = match(
            config.rules,
            attributes,
            request,
            segment_ids,
            now,
            kept_record=bool(request.customer_id),
        )
        action = matched.action
        notes = [matched.explanation]
        if request.handover is not None:
            action = replace(
                action,
                queue_id=request.handover.queue_id,
                sla_policy_id=request.handover.sla_policy_id or action.sla_policy_id,
                bot_first=False,
                fallback_chain=(),
            )
            notes.append(request.handover.explanation)
        queue = config.queues[action.queue_id]
        policy = config.policies.get(action.sla_policy_id)
        clocks = self._clock_policy(config, policy, queue.calendar_id)
        first_due = resolution_due = None
        if clocks is not None and not action.bot_first:
            reports = sla_report(
                [ConversationEvent(EventKind.ROUTED, now, queue_id=queue.queue_id)],
                [PolicyPeriod(now, clocks)],
                now,
            )
            first_due = views.due_time(reports, Metric.FIRST_RESPONSE)
            resolution_due = views.due_time(reports, Metric.RESOLUTION)
        skills = tuple(sorted(set(queue.required_skills) | set(action.required_skills)))
        state = ConversationState.BOT if action.bot_first else ConversationState.QUEUED
        row: dict[str, Any] = {
            "conversation_id": request.conversation_id,
            "customer_id": request.customer_id,
            "channel": request.channel.value,
            "language": request.language,
            "topic": request.topic,
            "state": state.value,
            "queue_id": queue.queue_id,
            "agent_id": "",
            "reserved_agent_id": "",
            "priority": action.priority,
            "sla_policy_id": action.sla_policy_id,
            "required_skills": list(action.required_skills),
            "segment_ids": sorted(segment_ids),
            "order_due": first_due or placement.NO_DUE_TIME,
            "enqueue_time": now,
            "assign_time": None,
            "agent_replied": False,
            "pending_steps": [],
            "timer_time": None,
            "decision": {},
            "csat_rating": 0,
            "last_event_time": now,
        }
        store.insert_conversation(row)
        store.add_events(
            request.conversation_id,
            [
                ConversationEvent(
                    EventKind.ROUTED,
                    now,
                    queue_id=queue.queue_id,
                    policy_id=action.sla_policy_id,
                    to_bot=action.bot_first,
                )
            ],
        )
        if not action.bot_first:
            steps = [documents.step_document(step) for step in action.fallback_chain]
            notes += placement.enter(store, config, row, steps, attributes, now)
        decision = Decision(
            conversation_id=request.conversation_id,
            queue_id=row["queue_id"],
            priority=action.priority,
            sla_policy_id=action.sla_policy_id,
            first_response_due=first_due,
            resolution_due=resolution_due,
            agent_id=row["agent_id"],
            segment_ids=tuple(sorted(segment_ids)),
            rule_id=matched.rule.rule_id if matched.rule else "",
            rules_revision=config.rules.revision,
            explanation="; ".join(notes),
            bot_first=action.bot_first,
            required_skills=skills,
            route_time=now,
            reserved_agent_id=row["reserved_agent_id"],
        )
        store.update_conversation(
            request.conversation_id, decision=documents.decision_document(decision)
        )
        return decision

    def _clock_policy(
        self, config: Config, policy: SlaPolicy | None, queue_calendar_id: str
    ) -> ClockPolicy | None:
        if policy is None:
            return None
        return clock_policy(policy, config.calendars, queue_calendar_id)

    def _record_facts(self, store: Store) -> None:
        """Refold the report facts of every conversation this transaction added events
        to, so reports agree with the history the moment it commits."""
        if not store.touched:
            return
        conversation_ids = sorted(store.touched)
        store.touched.clear()
        rows = store.conversations_by_id(conversation_ids)
        events = store.events_of(conversation_ids)
        clocks = views.sla_reports(store, self.config(store), rows, events, now=None)
        facts = []
        for row in rows:
            history = [event for event, _ in events[row["conversation_id"]]]
            folded = conversation_facts(history, clocks[row["conversation_id"]])
            facts.append(
                {
                    "conversation_id": row["conversation_id"],
                    "customer_id": row["customer_id"],
                    **asdict(folded),
                }
            )
        store.save_facts(facts)

    # ---- timers: fallback steps and overflow --------------------------------------------------

    def advance_timers(self) -> int:
        """Move conversations whose fallback step or queue overflow timed out; how many."""
        now = self.clock()
        moved = 0
        with self.repository.read() as store:
            if not store.due_timers(now, 1):
                return 0
        with self.repository.write() as store:
            rows = store.due_timers(now, _TIMER_BATCH, lock=True)
            if not rows:
                return 0
            config = self.config(store)
            for row in rows:
                if placement.apply_timer(store, config, row, now, self._attributes_for_steps):
                    moved += 1
        if moved:
            self._notify()
        return moved

    # ---- the SLA watch ------------------------------------------------------------------------

    def watch_sla(self) -> list[tuple[str, Alert]]:
        """Record the SLA warnings and breaches reached by now and apply their policies'
        escalations; returns (conversation id, threshold) of each one recorded.

        Each conversation is looked at in its own transaction, locked (skipped when another
        watcher holds it), so several watchers may run at once and a run that dies halfway
        is simply run again: each threshold is recorded once."""
        now = self.clock()
        recorded: list[tuple[str, Alert]] = []
        after: tuple[datetime, str] | None = None
        while True:
            with self.repository.read() as store:
                due = store.due_sla_checks(now, after, _SLA_BATCH)
            for _, conversation_id in due:
                with self.repository.write() as store:
                    row = store.lock_sla_check(conversation_id, now)
                    if row is None:
                        continue
                    alerts = watch.check(store, self.config(store), row, now)
                recorded += [(conversation_id, alert) for alert in alerts]
            if len(due) < _SLA_BATCH:
                break
            after = due[-1]
        if recorded:
            # An escalation may have moved a conversation to an agent.
            self._notify()
        return recorded

    def _attributes_for_steps(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        # Later steps that name the account owner read the customer again.
        if not row["customer_id"]:
            return {}
        try:
            return self.customers.lookup(row["customer_id"], self.clock()).attributes
        except NotFound:
            return {}

    # ---- conversations --------------------------------------------------------------------

    def conversation_holder(self, *, conversation_id: str) -> str | None:
        """The agent holding the conversation ("" when nobody does); None when it does not
        exist."""
        raise_if(conversation_id_problems(conversation_id))
        with self.repository.read() as store:
            row = store.find_conversation(conversation_id)
            return None if row is None else str(row["agent_id"] or "")

    def conversation_customer(self, *, conversation_id: str) -> profiles_pb2.Customer:
        """The conversation's customer as the ProfileService has it now."""
        customer_id = self.get_conversation(conversation_id=conversation_id).customer_id
        if not customer_id:
            raise NotFound("customer of conversation", conversation_id)
        return self.customers.profiles.fetch(customer_id)

    def get_conversation(self, *, conversation_id: str) -> Conversation:
        raise_if(conversation_id_problems(conversation_id))
        self.advance_timers()
        with self.repository.read() as store:
            row = store.conversation(conversation_id)
            now = self.clock()
            return views.conversation_view(store, self.config(store), row, now)

    def record_event(
        self,
        *,
        conversation_id: str,
        kind: EventKind | None,
        time: datetime | None,
        agent_id: str,
        queue_id: str,
        sla_policy_id: str,
        csat_rating: int,
    ) -> Conversation:
        problems = conversation_id_problems(conversation_id)
        if kind is None or kind not in RECORDABLE:
            problems.append(
                FieldViolation(
                    "kind",
                    "one of AGENT_REPLY, BOT_REPLY, CUSTOMER_REPLY, WAITING_ON_CUSTOMER, "
                    "TRANSFER, ESCALATE, RESOLVE, REOPEN, CSAT",
                )
            )
        if agent_id:
            problems += agent_id_problems(agent_id, "agent_id")
        if queue_id:
            problems += resource_id_problems(queue_id, "queue_id")
        if sla_policy_id:
            problems += resource_id_problems(sla_policy_id, "sla_policy_id")
        if kind == EventKind.AGENT_REPLY and not agent_id:
            problems.append(FieldViolation("agent_id", "required: who replied"))
        if kind == EventKind.TRANSFERRED and bool(agent_id) == bool(queue_id):
            problems.append(FieldViolation("queue_id", "a transfer names a queue or an agent"))
        if kind == EventKind.CSAT_RATED and not 1 <= csat_rating <= 5:
            problems.append(FieldViolation("csat_rating", "must be 1-5"))
        raise_if(problems)
        assert kind is not None
        now = time or self.clock()
        with self.repository.write() as store:
            row = store.conversation(conversation_id, lock=True)
            config = self.config(store)
            situation = Situation(
                ConversationState(row["state"]), row["agent_id"], row["last_event_time"]
            )
            try:
                self._apply(
                    store,
                    config,
                    row,
                    situation,
                    kind,
                    now,
                    agent_id,
                    queue_id,
                    sla_policy_id,
                    csat_rating,
                )
            except InvalidTransition as error:
                raise FailedPrecondition(str(error), reason="INVALID_TRANSITION") from error
        self._notify()
        return self.get_conversation(conversation_id=conversation_id)

    def _apply(
        self,
        store: Store,
        config: Config,
        row: dict[str, Any],
        situation: Situation,
        kind: EventKind,
        now: datetime,
        agent_id: str,
        queue_id: str,
        sla_policy_id: str,
        csat_rating: int,
    ) -> None:
        conversation_id = row["conversation_id"]
        if agent_id and agent_id not in config.agents:
            raise NotFound("agent", agent_id)
        if queue_id and queue_id not in config.queues:
            raise NotFound("queue", queue_id)
        if sla_policy_id and sla_policy_id not in config.policies:
            raise NotFound("SLA policy", sla_policy_id)
        holder = row["agent_id"]
        event = ConversationEvent(
            kind,
            now,
            agent_id=agent_id if kind == EventKind.AGENT_REPLY else holder,
            queue_id=queue_id,
            rating=csat_rating,
        )
        if kind == EventKind.TRANSFERRED:
            self._transfer(store, config, row, situation, now, agent_id, queue_id, sla_policy_id)
            return
        after = advance(situation, event)
        store.add_events(conversation_id, [event])
        values: dict[str, Any] = {"state": after.state.value, "agent_id": after.agent_id}
        if kind == EventKind.AGENT_REPLY and agent_id == after.agent_id:
            values["agent_replied"] = True
        if kind == EventKind.CSAT_RATED:
            values["csat_rating"] = csat_rating
        if kind == EventKind.RESOLVED:
            values["timer_time"] = None
            values["pending_steps"] = []
        store.update_conversation(conversation_id, **values)
        row.update(values)
        if kind == EventKind.ESCALATED:
            self._after_escalation(store, config, row, now)
        elif kind == EventKind.REOPENED or (
            kind == EventKind.CUSTOMER_REPLY and situation.state == ConversationState.RESOLVED
        ):
            self._after_reopen(store, config, row, now)

    def _after_escalation(
        self, store: Store, config: Config, row: dict[str, Any], now: datetime
    ) -> None:
        queue = config.queues[row["queue_id"]]
        policy = config.policies.get(row["sla_policy_id"])
        clocks = self._clock_policy(config, policy, queue.calendar_id)
        due = None
        if clocks is not None:
            first = clocks.first_response
            if first is not None:
                due = first_response_due(clocks, now, to_bot=False)
        row["enqueue_time"] = now
        row["order_due"] = due or placement.NO_DUE_TIME
        store.update_conversation(
            row["conversation_id"], enqueue_time=now, order_due=row["order_due"]
        )
        placement.settle_in_queue(store, config, row, now)

    def _after_reopen(
        self, store: Store, config: Config, row: dict[str, Any], now: datetime
    ) -> None:
        """A reopened conversation goes back to its agent if they can take it, else queues."""
        holder = row["agent_id"]
        if not holder:
            row["enqueue_time"] = now
            store.update_conversation(row["conversation_id"], enqueue_time=now)
            placement.settle_in_queue(store, config, row, now)
            return
        agent = config.agents.get(holder)
        presence = store.presence(holder, lock=True)
        counts = store.open_counts([holder]).get(holder, {})
        # The conversation itself already counts as held again.
        in_channel = counts.get(row["channel"], 0) - 1
        if (
            agent is not None
            and presence.status == AgentStatus.ONLINE.value
            and in_channel < agent.capacity.get(Channel(row["channel"]), 0)
        ):
            store.add_events(
                row["conversation_id"],
                [ConversationEvent(EventKind.ASSIGNED, now, agent_id=holder)],
            )
            return
        placement.release(store, row, now, note=f"{holder} cannot take the reopened conversation")
        placement.settle_in_queue(store, config, row, now)

    def _transfer(
        self,
        store: Store,
        config: Config,
        row: dict[str, Any],
        situation: Situation,
        now: datetime,
        agent_id: str,
        queue_id: str,
        sla_policy_id: str,
    ) -> None:
        conversation_id = row["conversation_id"]
        if agent_id:
            agent = config.agents[agent_id]
            presence = store.presence(agent_id, lock=True)
            if presence.status != AgentStatus.ONLINE.value:
                raise FailedPrecondition(
                    f"agent {agent_id!r} is {presence.status}; transfer to an online agent",
                    reason="AGENT_NOT_ONLINE",
                )
            held = store.open_counts([agent_id]).get(agent_id, {}).get(row["channel"], 0)
            limit = agent.capacity.get(Channel(row["channel"]), 0)
            if held >= limit:
                raise FailedPrecondition(
                    f"agent {agent_id!r} holds {held} of {limit} {row['channel']} conversations",
                    reason="AGENT_AT_CAPACITY",
                )
        target_queue = queue_id or row["queue_id"]
        events: list[ConversationEvent] = []
        if row["agent_id"]:
            events.append(ConversationEvent(EventKind.UNASSIGNED, now, agent_id=row["agent_id"]))
        events.append(ConversationEvent(EventKind.TRANSFERRED, now, queue_id=target_queue))
        if sla_policy_id and sla_policy_id != row["sla_policy_id"]:
            events.append(ConversationEvent(EventKind.POLICY_CHANGED, now, policy_id=sla_policy_id))
        after = situation
        for event in events:
            after = advance(after, event)
        store.add_events(conversation_id, events)
        row.update(
            queue_id=target_queue,
            agent_id="",
            state=after.state.value,
            enqueue_time=now,
            agent_replied=False,
            sla_policy_id=sla_policy_id or row["sla_policy_id"],
        )
        store.update_conversation(
            conversation_id,
            queue_id=target_queue,
            agent_id="",
            state=after.state.value,
            enqueue_time=now,
            agent_replied=False,
            assign_time=None,
            sla_policy_id=row["sla_policy_id"],
            reserved_agent_id="",
            pending_steps=[],
            timer_time=None,
        )
        if agent_id:
            advance(after, ConversationEvent(EventKind.ASSIGNED, now, agent_id=agent_id))
            placement.claim(store, row, agent_id, now)
        else:
            placement.settle_in_queue(store, config, row, now)

    # ---- consoles -----------------------------------------------------------------------------

    def agent_assignments(self, *, agent_id: str) -> list[Assignment]:
        raise_if(agent_id_problems(agent_id, "agent_id"))
        self.advance_timers()
        with self.repository.read() as store:
            store.definition("agent", agent_id)
            rows = store.held_by(agent_id)
            found = self._assignments(store, rows, self.clock())
        return sorted(found, key=views.urgency)

    def assign_next(self, *, agent_id: str, queue_id: str) -> Assignment | None:
        problems = agent_id_problems(agent_id, "agent_id")
        if queue_id:
            problems += resource_id_problems(queue_id, "queue_id")
        raise_if(problems)
        self.advance_timers()
        now = self.clock()
        with self.repository.write() as store:
            config = self.config(store)
            agent = config.agents.get(agent_id)
            if agent is None:
                raise NotFound("agent", agent_id)
            if queue_id and queue_id not in config.queues:
                raise NotFound("queue", queue_id)
            presence = store.presence(agent_id, lock=True)
            if presence.status != AgentStatus.ONLINE.value:
                raise FailedPrecondition(
                    f"agent {agent_id!r} is {presence.status}; go ONLINE to take conversations",
                    reason="AGENT_NOT_ONLINE",
                )
            counts = store.open_counts([agent_id]).get(agent_id, {})
            open_channels = {
                channel
                for channel, limit in agent.capacity.items()
                if counts.get(channel.value, 0) < limit
            }
            if not open_channels:
                raise FailedPrecondition(
                    f"agent {agent_id!r} is at capacity on every channel",
                    reason="AGENT_AT_CAPACITY",
                )
            queues = [queue_id] if queue_id else sorted(config.queues)
            claimed = self._pull(store, config, agent, open_channels, queues, now)
            if claimed is None:
                return None
            found = self._assignments(store, [claimed], now)[0]
        self._notify()
        return found

    def _pull(
        self,
        store: Store,
        config: Config,
        agent: Agent,
        channels: set[Channel],
        queues: Sequence[str],
        now: datetime,
    ) -> dict[str, Any] | None:
        """The first waiting conversation in serving order this agent may take, claimed."""
        after = None
        while True:
            # Read unlocked, then lock one row at a time: locking a whole batch would hide
            # it from every other console until this one commits.
            batch = store.waiting(queue_ids=queues, after=after, limit=50, for_agent=agent.agent_id)
            for row in batch:
                need = placement.need_of(config, row)
                if (
                    need.channel in channels
                    and can_serve(agent, need)
                    and store.try_lock_waiting(row["conversation_id"])
                    and placement.claim(store, row, agent.agent_id, now)
                ):
                    return row
            if len(batch) < 50:
                return None
            last = batch[-1]
            after = (
                last["priority"],
                last["order_due"],
                last["enqueue_time"],
                last["conversation_id"],
            )

    def queue_conversations(
        self, *, queue_id: str, page_size: int, page_token: str
    ) -> tuple[list[Assignment], str]:
        raise_if(resource_id_problems(queue_id, "queue_id"))
        size = page_limit(page_size)
        after = _decode_position(page_token)
        self.advance_timers()
        with self.repository.read() as store:
            store.definition("queue", queue_id)
            rows = store.waiting(queue_ids=[queue_id], after=after, limit=size + 1)
            found = self._assignments(store, rows[:size], self.clock())
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _encode_position(
                (last["priority"], last["order_due"], last["enqueue_time"], last["conversation_id"])
            )
        return found, token

    def watch_assignments(
        self, *, agent_id: str, active: Callable[[], bool]
    ) -> Iterator[tuple[AssignmentChange, Assignment]]:
        """What the agent holds now, then every change as it happens, while ``active()``."""
        raise_if(agent_id_problems(agent_id, "agent_id"))
        with self.repository.read() as store:
            store.definition("agent", agent_id)
            seen = store.last_event_id()
            current = self._assignments(store, store.held_by(agent_id), self.clock())
        for assignment in sorted(current, key=views.urgency):
            yield AssignmentChange.CURRENT, assignment
        while active():
            with self.repository.read() as store:
                changes = store.agent_events_after(agent_id, seen)
                rows = {
                    key: store.conversation(key)
                    for key in {conversation_id for _, _, conversation_id in changes}
                }
                changed = {
                    view.conversation_id: view
                    for view in self._assignments(store, list(rows.values()), self.clock())
                }
            for event_id, kind, conversation_id in changes:
                seen = event_id
                change = (
                    AssignmentChange.ASSIGNED
                    if kind == EventKind.ASSIGNED.value
                    else AssignmentChange.RELEASED
                )
                yield change, changed[conversation_id]
            if not changes:
                with self._assignments_changed:
                    self._assignments_changed.wait(_WATCH_POLL_SECONDS)

    def _notify(self) -> None:
        with self._assignments_changed:
            self._assignments_changed.notify_all()

    def _assignments(
        self, store: Store, rows: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[Assignment]:
        # A console watching with nothing new polls here: it need not read the configuration.
        if not rows:
            return []
        return views.assignments(store, self.config(store), rows, now)

    # ---- plumbing shared by every definition kind, the widgets' too ------------------------

    def get_definition(self, kind: str, key: str, field: str) -> StoredDefinition:
        raise_if(required(field, key))
        with self.repository.read() as store:
            return store.definition(kind, key)

    def document_revision(self, kind: str, key: str, revision: int) -> StoredRevision | None:
        """A revision of a one-of-a-kind document (the rules, the widget policies); 0 is
        the one in force, None when it was never set."""
        if revision < 0:
            raise InvalidArgument.field("revision", "must be zero or more")
        what = f"{resource_name(kind)} revision"
        with self.repository.read() as store:
            current = store.find_definition(kind, key)
            if current is None:
                if revision:
                    raise NotFound(what, str(revision))
                return None
            wanted = revision or current.revision
            # None is newer than the one in force (and wanted + 1 must fit a BIGINT).
            if wanted > current.revision:
                raise NotFound(what, str(revision))
            found = [
                r
                for r in store.revisions(kind, key, before_revision=wanted + 1, limit=1)
                if r.revision == wanted
            ]
        if not found:
            raise NotFound(what, str(revision))
        return found[0]

    def definition_page(
        self, kind: str, page_size: int, page_token: str
    ) -> tuple[list[StoredDefinition], str]:
        size = page_limit(page_size)
        after = token_text(decode_token(page_token))
        with self.repository.read() as store:
            found = store.definition_page(kind, after, size + 1)
        token = found[size - 1].key if len(found) > size else ""
        return found[:size], _encode_position(token) if token else ""

    def replace_definition(
        self,
        kind: str,
        key: str,
        document: dict[str, Any],
        expected: int,
        references: Sequence[tuple[str, str, str]] = (),
        then: Callable[[Store], None] | None = None,
    ) -> StoredDefinition:
        """Store a new revision; ``then`` runs in the same transaction afterwards."""
        with self.repository.write() as store:
            self.require_references(store, references)
            stored = store.definition(kind, key, lock=True)
            check_revision(stored, expected)
            replaced = store.replace_definition(stored, document, self.clock())
            if then is not None:
                then(store)
            return replaced

    def delete_definition(
        self,
        kind: str,
        key: str,
        revision: int,
        users: Callable[[Config], list[str]],
        conversation_column: str = "",
    ) -> None:
        with self.repository.write() as store:
            stored = store.definition(kind, key, lock=True)
            check_revision(stored, revision)
            using = users(self.config(store))
            using += [
                f"{resource_name(other.kind)} {other.key!r}"
                for other in store.all_definitions()
                if [kind, key] in other.document.get("references", ())
            ]
            if conversation_column:
                open_count = store.uses(conversation_column, key)
                if open_count:
                    using.append(f"{open_count} open conversation(s)")
            if using:
                users_text = ", ".join(using)
                raise FailedPrecondition(
                    f"{resource_name(kind)} {key!r} is in use by {users_text}; change them first",
                    reason="IN_USE",
                )
            store.delete_definition(stored)

    def require_references(self, store: Store, references: Sequence[tuple[str, str, str]]) -> None:
        missing = []
        for kind in {kind for kind, key, _ in references if key}:
            keys = [key for k, key, _ in references if k == kind and key]
            present = store.existing_keys(kind, keys)
            missing += [
                f"{field} names {kind} {key!r}, which does not exist"
                for k, key, field in references
                if k == kind and key and key not in present
            ]
        if missing:
            raise FailedPrecondition("; ".join(sorted(missing)), reason="MISSING_REFERENCE")


# ---- helpers ---------------------------------------------------------------------------------


def _policy_references(policy: SlaPolicy) -> list[tuple[str, str, str]]:
    references = [("calendar", policy.calendar_id, "policy.calendar_id")]
    for name, escalation in (("on_warning", policy.on_warning), ("on_breach", policy.on_breach)):
        if escalation is not None:
            field = f"policy.{name}.move_to_queue_id"
            references.append(("queue", escalation.move_to_queue_id, field))
    return references


def _require_endpoints(store: Store, policy: SlaPolicy) -> None:
    """The outreach endpoints a policy's escalations notify must exist."""
    missing = [
        f"policy.{name}.notify_endpoint_id names outreach endpoint "
        f"{escalation.notify_endpoint_id!r}, which does not exist"
        for name, escalation in (("on_warning", policy.on_warning), ("on_breach", policy.on_breach))
        if escalation is not None
        and escalation.notify_endpoint_id
        and not store.outreach_endpoint_exists(escalation.notify_endpoint_id)
    ]
    if missing:
        raise FailedPrecondition("; ".join(missing), reason="MISSING_REFERENCE")


def _queue_references(queue: Queue) -> list[tuple[str, str, str]]:
    references = [("calendar", queue.calendar_id, "queue.calendar_id")]
    if queue.overflow is not None:
        references.append(("queue", queue.overflow.queue_id, "queue.overflow.queue_id"))
    return references


def _rule_users(config: Config, uses: Callable[[RoutingAction], bool]) -> list[str]:
    if config.rules is None:
        return []
    users = [f"rule {rule.rule_id!r}" for rule, _ in config.rules.rules if uses(rule.action)]
    if uses(config.rules.default_action):
        users.append("the default routing action")
    return users


def _encode_position(position: Any) -> str:
    if isinstance(position, tuple):
        position = [p.isoformat() if isinstance(p, datetime) else p for p in position]
    return encode_token(position)


def _decode_position(token: str) -> tuple[int, datetime, datetime, str] | None:
    position = token_position(decode_token(token), int, str, str, str)
    if position is None:
        return None
    priority, due, enqueued, key = position
    try:
        return priority, datetime.fromisoformat(due), datetime.fromisoformat(enqueued), key
    except ValueError as error:
        raise InvalidArgument.field("page_token", "not a token from a previous page") from error


def _token_number(token: str) -> int:
    if not token:
        return 0
    # Tokens are revision numbers: ASCII digits (isdigit alone admits "²") within a BIGINT.
    if not (token.isascii() and token.isdigit()) or int(token) >= 2**63:
        raise InvalidArgument.field("page_token", "not a token from a previous page")
    return int(token)
