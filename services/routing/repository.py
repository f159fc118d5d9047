"""Storage of the routing service.

Every write happens inside ``RoutingRepository.write()``, one transaction handed to the app as
a ``Store``: routing a conversation reads the agents, inserts the conversation and assigns it
atomically. On SQLite writers are serialized (``BEGIN IMMEDIATE``); on PostgreSQL the rows a
decision depends on are locked: the agent's presence row for anything that changes what they
hold, a waiting conversation with ``SKIP LOCKED`` when a console pulls it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from services.core.db import in_chunks, is_postgresql, read_session, write_transaction
from services.core.errors import AlreadyExists, Conflict, NotFound
from services.outreach import outbox
from services.routing.domain import AgentStatus
from services.routing.lifecycle import ConversationEvent, ConversationState, EventKind
from services.routing.models import (
    AgentPresenceRow,
    ConfigVersionRow,
    ConversationEventRow,
    ConversationFactsRow,
    ConversationFigures,
    ConversationRow,
    ConversationSegmentRow,
    DefinitionRevisionRow,
    DefinitionRow,
    QueueCursorRow,
)

definitions = DefinitionRow.__table__  # type: ignore[attr-defined]
definition_revisions = DefinitionRevisionRow.__table__  # type: ignore[attr-defined]
config_version = ConfigVersionRow.__table__  # type: ignore[attr-defined]
presence = AgentPresenceRow.__table__  # type: ignore[attr-defined]
queue_cursors = QueueCursorRow.__table__  # type: ignore[attr-defined]
conversations = ConversationRow.__table__  # type: ignore[attr-defined]
events = ConversationEventRow.__table__  # type: ignore[attr-defined]
conversation_facts = ConversationFactsRow.__table__  # type: ignore[attr-defined]
conversation_segments = ConversationSegmentRow.__table__  # type: ignore[attr-defined]

# The figures a conversation's facts row and each of its segment rows both carry.
FIGURES = tuple(ConversationFigures.model_fields)
# Arbitrary constant naming the customers' locks (with the customer's hash) for
# pg_advisory_xact_lock; its two-key space is apart from the one-key locks elsewhere.
_CUSTOMER_LOCKS = 0x5B0C_0002


def _figures_update(table: Table) -> Any:
    """Executemany: one conversation's figures (``new_<name>``) on its rows of ``table``."""
    return (
        update(table)
        .where(table.c.conversation_id == bindparam("new_conversation_id"))
        .values({name: bindparam(f"new_{name}") for name in FIGURES})
    )


def _links(table: Table, chain: Sequence[str]) -> tuple[Any, Any]:
    """Executemany: put the conversation ``link_conversation_id`` in its chain of ``table``
    rows, the rows with its values of ``chain`` in (route_time, conversation_id) order.
    First its rows learn when the one before them was routed; then every later row of the
    chain has one at least this recent before it (only the next one's changes: those after
    it already have a later one)."""
    conversation = bindparam("link_conversation_id", type_=table.c.conversation_id.type)
    earlier = table.alias("earlier")
    previous = (
        select(func.max(earlier.c.route_time))
        .where(*(earlier.c[name] == table.c[name] for name in chain), _before(earlier, table))
        .scalar_subquery()
    )
    placed = table.alias("placed")
    return (
        update(table)
        .where(table.c.conversation_id == conversation)
        .values(previous_route_time=previous),
        update(table)
        .where(
            placed.c.conversation_id == conversation,
            *(table.c[name] == placed.c[name] for name in chain),
            _before(placed, table),
            or_(
                table.c.previous_route_time.is_(None),
                table.c.previous_route_time < placed.c.route_time,
            ),
        )
        .values(previous_route_time=placed.c.route_time),
    )


def _before(first: Any, then: Any) -> ColumnElement[bool]:
    """Whether row ``first`` comes before row ``then`` in (route_time, conversation_id)."""
    return or_(
        first.c.route_time < then.c.route_time,
        and_(
            first.c.route_time == then.c.route_time,
            first.c.conversation_id < then.c.conversation_id,
        ),
    )


_FACTS_FIGURES = _figures_update(conversation_facts)
_SEGMENT_FIGURES = _figures_update(conversation_segments)
_LINKS = (
    *_links(conversation_facts, ["customer_id"]),
    *_links(conversation_segments, ["customer_id", "segment_id"]),
)

OPEN_STATES = tuple(s.value for s in ConversationState if s != ConversationState.RESOLVED)
# Conversations an agent holds: everything open that names them.
HELD_STATES = (
    ConversationState.ASSIGNED.value,
    ConversationState.WAITING_ON_CUSTOMER.value,
)


@dataclass(frozen=True)
class StoredDefinition:
    kind: str
    key: str
    document: dict[str, Any]
    revision: int
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class StoredRevision:
    document: dict[str, Any]
    revision: int
    actor: str
    action: str
    restored_revision: int
    revise_time: datetime


@dataclass(frozen=True)
class Presence:
    agent_id: str
    status: str
    status_time: datetime
    last_assign_time: datetime | None


@dataclass(frozen=True)
class Desk:
    """The agents' side of the desk at one moment, read in one statement: everything a
    decision that stores nothing (``validate_only``) reads."""

    config_version: int
    presences: Mapping[str, Presence]
    # Conversations each online agent holds, by channel.
    open_counts: Mapping[str, Mapping[str, int]]
    # Where ROUND_ROBIN stopped, by queue.
    queue_cursors: Mapping[str, str]


def claim_values(agent_id: str, queue_id: str, now: datetime) -> dict[str, Any]:
    """What a waiting conversation's columns become when ``agent_id`` takes it."""
    return {
        "queue_id": queue_id,
        "agent_id": agent_id,
        "state": ConversationState.ASSIGNED.value,
        "assign_time": now,
        "reserved_agent_id": "",
        "pending_steps": [],
        "timer_time": None,
    }


def _desk_query() -> Any:
    """One UNION so a preview costs one round trip: presence rows come first, so their
    column types (timestamps) decide how every row is read."""
    kind, nothing = literal_column, null()
    online = select(presence.c.agent_id).where(presence.c.status == AgentStatus.ONLINE.value)
    return union_all(
        select(
            kind("'presence'").label("kind"),
            presence.c.agent_id.label("key"),
            presence.c.status.label("value"),
            presence.c.status_time.label("since"),
            presence.c.last_assign_time.label("time"),
            kind("0").label("number"),
        ),
        select(
            kind("'open'"),
            conversations.c.agent_id,
            conversations.c.channel,
            nothing,
            nothing,
            func.count(),
        )
        .where(conversations.c.state.in_(HELD_STATES), conversations.c.agent_id.in_(online))
        .group_by(conversations.c.agent_id, conversations.c.channel),
        select(
            kind("'cursor'"),
            queue_cursors.c.queue_id,
            queue_cursors.c.last_agent_id,
            nothing,
            nothing,
            kind("0"),
        ),
        select(
            kind("'version'"),
            config_version.c.name,
            kind("''"),
            nothing,
            nothing,
            config_version.c.version,
        ).where(config_version.c.name == "config"),
    )


def _utc(value: datetime | str) -> datetime:
    # Straight from the driver: SQLite hands back text, PostgreSQL aware datetimes.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_desk(rows: Iterable[Any]) -> Desk:
    presences: dict[str, Presence] = {}
    counts: dict[str, dict[str, int]] = {}
    cursors: dict[str, str] = {}
    version = 0
    for kind, key, value, since, moment, number in rows:
        if kind == "presence":
            presences[key] = Presence(key, value, _utc(since), _utc(moment) if moment else None)
        elif kind == "open":
            counts.setdefault(key, {})[value] = int(number)
        elif kind == "cursor":
            cursors[key] = value
        else:
            version = int(number)
    return Desk(version, presences, counts, cursors)


_DESK_QUERY = _desk_query()


# Statements every route or replay runs, built once: building a select of the wide
# conversations table and computing its cache key took about twice as long as SQLite took to
# run it.
_CONFIG_VERSION = select(config_version.c.version).where(config_version.c.name == "config")
_CONVERSATION = select(conversations).where(
    conversations.c.conversation_id == bindparam("conversation_id")
)
_CONVERSATION_LOCKED = _CONVERSATION.with_for_update()


class PlacementStore(Protocol):
    """What placing a conversation reads and writes: a ``Store`` in a write transaction, or
    a ``PreviewStore`` that keeps every write to itself."""

    def presences(self) -> dict[str, Presence]: ...

    def presence(self, agent_id: str, *, lock: bool = False) -> Presence: ...

    def lock_agents(self, agent_ids: Sequence[str]) -> None: ...

    def open_counts(self, agent_ids: Sequence[str] | None = None) -> dict[str, dict[str, int]]: ...

    def queue_cursor(self, queue_id: str) -> str: ...

    def save_queue_cursor(self, queue_id: str, agent_id: str) -> None: ...

    def claim(
        self, conversation_id: str, agent_id: str, queue_id: str, now: datetime
    ) -> dict[str, Any] | None: ...

    def insert_conversation(self, values: Mapping[str, Any]) -> None: ...

    def update_conversation(self, conversation_id: str, **values: Any) -> None: ...

    def add_events(
        self, conversation_id: str, new_events: Sequence[ConversationEvent], note: str = ""
    ) -> None: ...


class PreviewStore:
    """Placement against a ``Desk`` snapshot: it answers reads from the snapshot and forgets
    writes, so a dry run takes no lock and leaves nothing behind."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self._cursors = dict(desk.queue_cursors)

    def presences(self) -> dict[str, Presence]:
        return dict(self.desk.presences)

    def presence(self, agent_id: str, *, lock: bool = False) -> Presence:
        found = self.desk.presences.get(agent_id)
        if found is None:
            raise NotFound("agent", agent_id)
        return found

    def lock_agents(self, agent_ids: Sequence[str]) -> None:
        return None

    def open_counts(self, agent_ids: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        wanted = self.desk.open_counts.keys() if agent_ids is None else agent_ids
        counts = self.desk.open_counts
        return {agent_id: dict(counts[agent_id]) for agent_id in wanted if agent_id in counts}

    def queue_cursor(self, queue_id: str) -> str:
        return self._cursors.get(queue_id, "")

    def save_queue_cursor(self, queue_id: str, agent_id: str) -> None:
        self._cursors[queue_id] = agent_id

    def claim(
        self, conversation_id: str, agent_id: str, queue_id: str, now: datetime
    ) -> dict[str, Any] | None:
        # The conversation exists only in this preview, so nobody else can have taken it.
        return claim_values(agent_id, queue_id, now)

    def insert_conversation(self, values: Mapping[str, Any]) -> None:
        return None

    def update_conversation(self, conversation_id: str, **values: Any) -> None:
        return None

    def add_events(
        self, conversation_id: str, new_events: Sequence[ConversationEvent], note: str = ""
    ) -> None:
        return None


class Store:
    """One transaction's view of the routing tables."""

    def __init__(self, session: Session, locking: bool) -> None:
        self.session = session
        # PostgreSQL needs row locks; SQLite's single writer already serializes.
        self.locking = locking
        self.config_changed = False
        # Conversations whose history this transaction extended: their report facts are
        # refreshed before it commits.
        self.touched: set[str] = set()

    # ---- definitions ------------------------------------------------------------------------

    def config_version(self) -> int:
        return int(self.session.execute(_CONFIG_VERSION).scalar() or 0)

    def _bump_version(self) -> None:
        self.config_changed = True
        changed = self.session.execute(
            update(config_version)
            .where(config_version.c.name == "config")
            .values(version=config_version.c.version + 1)
        )
        if changed.rowcount == 0:  # type: ignore[attr-defined]
            self.session.execute(insert(config_version), [{"name": "config", "version": 1}])

    def definitions(self, kind: str) -> list[StoredDefinition]:
        rows = self.session.execute(
            select(definitions).where(definitions.c.kind == kind).order_by(definitions.c.key)
        ).all()
        return [_definition(row) for row in rows]

    def all_definitions(self) -> list[StoredDefinition]:
        rows = self.session.execute(select(definitions)).all()
        return [_definition(row) for row in rows]

    def definition_page(self, kind: str, after: str, limit: int) -> list[StoredDefinition]:
        query = select(definitions).where(definitions.c.kind == kind)
        if after:
            query = query.where(definitions.c.key > after)
        rows = self.session.execute(query.order_by(definitions.c.key).limit(limit)).all()
        return [_definition(row) for row in rows]

    def find_definition(
        self, kind: str, key: str, *, lock: bool = False
    ) -> StoredDefinition | None:
        query = select(definitions).where(definitions.c.kind == kind, definitions.c.key == key)
        if lock and self.locking:
            query = query.with_for_update()
        row = self.session.execute(query).first()
        return _definition(row) if row else None

    def definition(self, kind: str, key: str, *, lock: bool = False) -> StoredDefinition:
        found = self.find_definition(kind, key, lock=lock)
        if found is None:
            raise NotFound(_RESOURCE_NAMES.get(kind, kind), key)
        return found

    def existing_keys(self, kind: str, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in in_chunks(sorted(set(keys))):
            found.update(
                self.session.execute(
                    select(definitions.c.key).where(
                        definitions.c.kind == kind, definitions.c.key.in_(chunk)
                    )
                ).scalars()
            )
        return found

    def create_definition(
        self,
        kind: str,
        key: str,
        document: Mapping[str, Any],
        now: datetime,
        *,
        actor: str = "",
        action: str = "created",
    ) -> StoredDefinition:
        if self.find_definition(kind, key) is not None:
            raise AlreadyExists(_RESOURCE_NAMES.get(kind, kind), key)
        try:
            with self.session.begin_nested():
                self.session.execute(
                    insert(definitions),
                    [
                        {
                            "kind": kind,
                            "key": key,
                            "document": dict(document),
                            "revision": 1,
                            "create_time": now,
                            "update_time": now,
                        }
                    ],
                )
        except IntegrityError as error:
            raise AlreadyExists(_RESOURCE_NAMES.get(kind, kind), key) from error
        self._insert_revision(kind, key, document, 1, now, actor, action, 0)
        self._bump_version()
        return StoredDefinition(kind, key, dict(document), 1, now, now)

    def replace_definition(
        self,
        stored: StoredDefinition,
        document: Mapping[str, Any],
        now: datetime,
        *,
        actor: str = "",
        action: str = "updated",
        restored_revision: int = 0,
    ) -> StoredDefinition:
        """A new revision of ``stored`` (read with ``lock=True``); nothing when equal."""
        if dict(document) == stored.document and action == "updated":
            return stored
        revision = stored.revision + 1
        self.session.execute(
            update(definitions)
            .where(definitions.c.kind == stored.kind, definitions.c.key == stored.key)
            .values(document=dict(document), revision=revision, update_time=now)
        )
        self._insert_revision(
            stored.kind, stored.key, document, revision, now, actor, action, restored_revision
        )
        self._bump_version()
        return StoredDefinition(
            stored.kind, stored.key, dict(document), revision, stored.create_time, now
        )

    def delete_definition(self, stored: StoredDefinition) -> None:
        for table in (definitions, definition_revisions):
            self.session.execute(
                delete(table).where(table.c.kind == stored.kind, table.c.key == stored.key)
            )
        self._bump_version()

    def _insert_revision(
        self,
        kind: str,
        key: str,
        document: Mapping[str, Any],
        revision: int,
        now: datetime,
        actor: str,
        action: str,
        restored_revision: int,
    ) -> None:
        self.session.execute(
            insert(definition_revisions),
            [
                {
                    "kind": kind,
                    "key": key,
                    "revision": revision,
                    "document": dict(document),
                    "actor": actor,
                    "action": action,
                    "restored_revision": restored_revision,
                    "revise_time": now,
                }
            ],
        )

    def revisions(
        self, kind: str, key: str, *, before_revision: int = 0, limit: int | None = None
    ) -> list[StoredRevision]:
        """Revisions newest first."""
        query = (
            select(definition_revisions)
            .where(definition_revisions.c.kind == kind, definition_revisions.c.key == key)
            .order_by(definition_revisions.c.revision.desc())
        )
        if before_revision:
            query = query.where(definition_revisions.c.revision < before_revision)
        if limit is not None:
            query = query.limit(limit)
        return [
            StoredRevision(
                document=dict(row.document or {}),
                revision=row.revision,
                actor=row.actor,
                action=row.action,
                restored_revision=row.restored_revision,
                revise_time=row.revise_time,
            )
            for row in self.session.execute(query).all()
        ]

    def policy_histories(self, policy_ids: Sequence[str]) -> dict[str, list[StoredRevision]]:
        """Each policy's revisions, oldest first, for SLA clocks that span edits."""
        histories: dict[str, list[StoredRevision]] = {key: [] for key in policy_ids}
        for chunk in in_chunks(sorted(set(policy_ids))):
            rows = self.session.execute(
                select(definition_revisions)
                .where(
                    definition_revisions.c.kind == "policy",
                    definition_revisions.c.key.in_(chunk),
                )
                .order_by(definition_revisions.c.revision)
            ).all()
            for row in rows:
                histories[row.key].append(
                    StoredRevision(
                        dict(row.document or {}),
                        row.revision,
                        row.actor,
                        row.action,
                        row.restored_revision,
                        row.revise_time,
                    )
                )
        return histories

    # ---- agents' presence -------------------------------------------------------------------

    def presences(self) -> dict[str, Presence]:
        rows = self.session.execute(select(presence)).all()
        return {row.agent_id: _presence(row) for row in rows}

    def presence(self, agent_id: str, *, lock: bool = False) -> Presence:
        query = select(presence).where(presence.c.agent_id == agent_id)
        if lock and self.locking:
            query = query.with_for_update()
        row = self.session.execute(query).first()
        if row is None:
            raise NotFound("agent", agent_id)
        return _presence(row)

    def add_presence(self, agent_id: str, status: str, now: datetime) -> None:
        self.session.execute(
            insert(presence), [{"agent_id": agent_id, "status": status, "status_time": now}]
        )

    def set_presence(self, agent_id: str, status: str, now: datetime) -> None:
        self.session.execute(
            update(presence)
            .where(presence.c.agent_id == agent_id)
            .values(status=status, status_time=now)
        )

    def lock_agents(self, agent_ids: Sequence[str]) -> None:
        """Hold the presence rows of agents about to get work, in one order (no deadlocks)."""
        if self.locking and agent_ids:
            self.session.execute(
                select(presence.c.agent_id)
                .where(presence.c.agent_id.in_(sorted(agent_ids)))
                .order_by(presence.c.agent_id)
                .with_for_update()
            )

    def open_counts(self, agent_ids: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Conversations each agent holds, by channel."""
        query = (
            select(conversations.c.agent_id, conversations.c.channel, func.count())
            .where(conversations.c.agent_id != "", conversations.c.state.in_(HELD_STATES))
            .group_by(conversations.c.agent_id, conversations.c.channel)
        )
        if agent_ids is not None:
            query = query.where(conversations.c.agent_id.in_(list(agent_ids)))
        counts: dict[str, dict[str, int]] = {}
        for agent_id, channel, count in self.session.execute(query).all():
            counts.setdefault(agent_id, {})[channel] = count
        return counts

    def queue_cursor(self, queue_id: str) -> str:
        value = self.session.execute(
            select(queue_cursors.c.last_agent_id).where(queue_cursors.c.queue_id == queue_id)
        ).scalar()
        return str(value or "")

    def save_queue_cursor(self, queue_id: str, agent_id: str) -> None:
        changed = self.session.execute(
            update(queue_cursors)
            .where(queue_cursors.c.queue_id == queue_id)
            .values(last_agent_id=agent_id)
        )
        if changed.rowcount == 0:  # type: ignore[attr-defined]
            self.session.execute(
                insert(queue_cursors), [{"queue_id": queue_id, "last_agent_id": agent_id}]
            )

    # ---- conversations ----------------------------------------------------------------------

    def conversation(self, conversation_id: str, *, lock: bool = False) -> dict[str, Any]:
        found = self.find_conversation(conversation_id, lock=lock)
        if found is None:
            raise NotFound("conversation", conversation_id)
        return found

    def find_conversation(
        self, conversation_id: str, *, lock: bool = False
    ) -> dict[str, Any] | None:
        query = _CONVERSATION_LOCKED if lock and self.locking else _CONVERSATION
        row = self.session.execute(query, {"conversation_id": conversation_id}).first()
        return dict(row._mapping) if row else None

    def insert_conversation(self, values: Mapping[str, Any]) -> None:
        self.session.execute(insert(conversations), [dict(values)])

    def update_conversation(self, conversation_id: str, **values: Any) -> None:
        self.session.execute(
            update(conversations)
            .where(conversations.c.conversation_id == conversation_id)
            .values(**values)
        )

    def try_lock_waiting(self, conversation_id: str) -> bool:
        """Lock a conversation that still waits, unless another transaction holds it: a
        console skips what another console is taking instead of queueing behind it."""
        if not self.locking:
            return True
        locked = self.session.execute(
            select(conversations.c.conversation_id)
            .where(
                conversations.c.conversation_id == conversation_id,
                conversations.c.state == ConversationState.QUEUED.value,
                conversations.c.agent_id == "",
            )
            .with_for_update(skip_locked=True)
        ).first()
        return locked is not None

    def claim(
        self, conversation_id: str, agent_id: str, queue_id: str, now: datetime
    ) -> dict[str, Any] | None:
        """Give a waiting conversation in ``queue_id`` to ``agent_id``: the values it now has,
        or None if someone else got it first."""
        values = claim_values(agent_id, queue_id, now)
        claimed = self.session.execute(
            update(conversations)
            .where(
                conversations.c.conversation_id == conversation_id,
                conversations.c.state == ConversationState.QUEUED.value,
                conversations.c.agent_id == "",
            )
            .values(**values)
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            return None
        self.session.execute(
            update(presence).where(presence.c.agent_id == agent_id).values(last_assign_time=now)
        )
        return values

    def add_events(
        self, conversation_id: str, new_events: Sequence[ConversationEvent], note: str = ""
    ) -> None:
        """Append lifecycle events. Anything that happens may start, stop or pause an SLA
        clock, so the SLA watch is asked to look at the conversation again from then on."""
        if not new_events:
            return
        self.touched.add(conversation_id)
        self.session.execute(
            insert(events), [_event_values(conversation_id, event, note) for event in new_events]
        )
        last = max(event.time for event in new_events)
        self.session.execute(
            update(conversations)
            .where(conversations.c.conversation_id == conversation_id)
            .values(
                last_event_time=func.coalesce(last, conversations.c.last_event_time),
                sla_next_check_time=_earlier_check(last),
            )
        )

    def add_sla_event(self, conversation_id: str, event: ConversationEvent, note: str) -> None:
        """Record an SLA_WARNING or SLA_BREACHED at the moment the threshold was reached. It
        moves nothing, so the conversation's latest event time stays; a unique index refuses
        a second record of the same threshold and cycle."""
        self.touched.add(conversation_id)
        self.session.execute(insert(events), [_event_values(conversation_id, event, note)])

    def sla_events(self, conversation_id: str) -> list[ConversationEvent]:
        """The SLA events already recorded on a conversation."""
        rows = self.session.execute(
            select(events).where(
                events.c.conversation_id == conversation_id,
                events.c.kind.in_([EventKind.SLA_WARNING.value, EventKind.SLA_BREACHED.value]),
            )
        ).all()
        return [_event(row) for row in rows]

    def due_sla_checks(
        self, now: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[tuple[datetime, str]]:
        """(check time, conversation id) of conversations the SLA watch must look at by
        ``now``, in that order, after the position ``after``; read without locks."""
        check = conversations.c.sla_next_check_time
        query = select(check, conversations.c.conversation_id).where(check <= now)
        if after is not None:
            moment, key = after
            query = query.where(
                or_(check > moment, and_(check == moment, conversations.c.conversation_id > key))
            )
        query = query.order_by(check, conversations.c.conversation_id).limit(limit)
        return [(_utc(row[0]), row[1]) for row in self.session.execute(query).all()]

    def lock_sla_check(self, conversation_id: str, now: datetime) -> dict[str, Any] | None:
        """The conversation, locked, if the SLA watch still has to look at it by ``now``;
        None when another watcher holds it or has already looked."""
        query = select(conversations).where(
            conversations.c.conversation_id == conversation_id,
            conversations.c.sla_next_check_time <= now,
        )
        if self.locking:
            query = query.with_for_update(skip_locked=True)
        row = self.session.execute(query).first()
        return dict(row._mapping) if row else None

    def outreach_endpoint_exists(self, endpoint_id: str) -> bool:
        return outbox.endpoint_exists(self.session, endpoint_id)

    def enqueue_webhook(self, delivery: outbox.NewDelivery, now: datetime) -> bool:
        """Queue an outreach webhook in this transaction; False when its idempotency key
        was queued before."""
        return outbox.enqueue_deliveries(self.session, [delivery], now) > 0

    def recheck_sla(self, now: datetime, *, column: str = "", value: str = "") -> None:
        """Ask the SLA watch to look again at open conversations under an SLA policy (those
        whose ``column`` is ``value``, when given): their targets or calendars changed."""
        query = update(conversations).where(
            conversations.c.state.in_(OPEN_STATES), conversations.c.sla_policy_id != ""
        )
        if column:
            query = query.where(conversations.c[column] == value)
        self.session.execute(query.values(sla_next_check_time=_earlier_check(now)))

    def events_of(
        self, conversation_ids: Sequence[str]
    ) -> dict[str, list[tuple[ConversationEvent, str]]]:
        """Each conversation's events, oldest first, with the note the service left. SLA
        events are recorded after the fact, so the order is by time, then by recording."""
        found: dict[str, list[tuple[ConversationEvent, str]]] = {
            key: [] for key in conversation_ids
        }
        for chunk in in_chunks(list(conversation_ids)):
            rows = self.session.execute(
                select(events)
                .where(events.c.conversation_id.in_(chunk))
                .order_by(events.c.time, events.c.event_id)
            ).all()
            for row in rows:
                found[row.conversation_id].append((_event(row), row.note))
        return found

    def conversations_by_id(self, conversation_ids: Sequence[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for chunk in in_chunks(list(conversation_ids)):
            found = self.session.execute(
                select(conversations).where(conversations.c.conversation_id.in_(chunk))
            ).all()
            rows += [dict(row._mapping) for row in found]
        return rows

    def record_conversation_segments(
        self, conversation_id: str, segment_ids: Sequence[str], route_time: datetime
    ) -> None:
        """Remember the segments a conversation was routed in, for reports. Their figures
        are filled by ``save_facts``, which runs before the routing transaction commits."""
        if segment_ids:
            self.session.execute(
                insert(conversation_segments),
                [
                    {
                        "segment_id": segment_id,
                        "route_time": route_time,
                        "conversation_id": conversation_id,
                    }
                    for segment_id in segment_ids
                ],
            )

    def save_facts(self, facts: Sequence[Mapping[str, Any]]) -> None:
        """Replace the report facts of these conversations, on their facts rows and on the
        rows of the segments they were routed in. A conversation saved for the first time
        also takes its place among its customer's conversations: reports count a customer
        once in a range by the one whose previous conversation was routed before it."""
        if not facts:
            return
        saved: set[str] = set()
        for chunk in in_chunks([row["conversation_id"] for row in facts]):
            query = select(conversation_facts.c.conversation_id).where(
                conversation_facts.c.conversation_id.in_(chunk)
            )
            saved.update(self.session.scalars(query))
        first = [row for row in facts if row["conversation_id"] not in saved]
        placed = [row for row in first if row["customer_id"]]
        if placed and self.locking:
            # Two conversations of one customer placed at once would each miss the other.
            # Taken before any row is written, so no writer holds a row another one awaits.
            self.session.execute(
                text("SELECT pg_advisory_xact_lock(:locks, hashtext(:customer_id))"),
                [
                    {"locks": _CUSTOMER_LOCKS, "customer_id": customer_id}
                    for customer_id in sorted({row["customer_id"] for row in placed})
                ],
            )
        figures = [
            {f"new_{name}": row[name] for name in (*FIGURES, "conversation_id")} for row in facts
        ]
        if saved:
            again = [values for values in figures if values["new_conversation_id"] in saved]
            self.session.execute(_FACTS_FIGURES, again)
        if first:
            self.session.execute(insert(conversation_facts), [dict(row) for row in first])
        self.session.execute(_SEGMENT_FIGURES, figures)
        if placed:
            links = [{"link_conversation_id": row["conversation_id"]} for row in placed]
            for statement in _LINKS:
                self.session.execute(statement, links)

    def held_by(self, agent_id: str) -> list[dict[str, Any]]:
        rows = self.session.execute(
            select(conversations).where(
                conversations.c.agent_id == agent_id, conversations.c.state.in_(HELD_STATES)
            )
        ).all()
        return [dict(row._mapping) for row in rows]

    def waiting(
        self,
        *,
        queue_ids: Sequence[str] | None,
        after: tuple[int, datetime, datetime, str] | None,
        limit: int,
        for_agent: str = "",
    ) -> list[dict[str, Any]]:
        """Waiting conversations in serving order: priority, first-response due, arrival.
        With ``for_agent``, only those that agent may take (not held for someone else)."""
        query = select(conversations).where(
            conversations.c.state == ConversationState.QUEUED.value,
            conversations.c.agent_id == "",
        )
        if for_agent:
            query = query.where(conversations.c.reserved_agent_id.in_(["", for_agent]))
        if queue_ids is not None:
            query = query.where(conversations.c.queue_id.in_(list(queue_ids)))
        if after is not None:
            priority, due, enqueued, key = after
            query = query.where(
                or_(
                    conversations.c.priority < priority,
                    and_(conversations.c.priority == priority, conversations.c.order_due > due),
                    and_(
                        conversations.c.priority == priority,
                        conversations.c.order_due == due,
                        or_(
                            conversations.c.enqueue_time > enqueued,
                            and_(
                                conversations.c.enqueue_time == enqueued,
                                conversations.c.conversation_id > key,
                            ),
                        ),
                    ),
                )
            )
        query = query.order_by(
            conversations.c.priority.desc(),
            conversations.c.order_due,
            conversations.c.enqueue_time,
            conversations.c.conversation_id,
        ).limit(limit)
        return [dict(row._mapping) for row in self.session.execute(query).all()]

    def due_timers(self, now: datetime, limit: int, *, lock: bool = False) -> list[dict[str, Any]]:
        query = (
            select(conversations)
            .where(conversations.c.timer_time.is_not(None), conversations.c.timer_time <= now)
            .order_by(conversations.c.timer_time)
            .limit(limit)
        )
        if lock and self.locking:
            query = query.with_for_update(skip_locked=True)
        return [dict(row._mapping) for row in self.session.execute(query).all()]

    def uses(self, column: str, value: str) -> int:
        """Open conversations whose ``column`` is ``value`` (queue or policy in use)."""
        count = self.session.execute(
            select(func.count()).where(
                conversations.c[column] == value, conversations.c.state.in_(OPEN_STATES)
            )
        ).scalar()
        return int(count or 0)

    def agent_events_after(self, agent_id: str, event_id: int) -> list[tuple[int, str, str]]:
        """(event id, kind, conversation id) of assignment changes for the agent."""
        rows = self.session.execute(
            select(events.c.event_id, events.c.kind, events.c.conversation_id)
            .where(
                events.c.agent_id == agent_id,
                events.c.event_id > event_id,
                events.c.kind.in_(
                    [
                        EventKind.ASSIGNED.value,
                        EventKind.UNASSIGNED.value,
                        EventKind.RESOLVED.value,
                    ]
                ),
            )
            .order_by(events.c.event_id)
        ).all()
        return [(row.event_id, row.kind, row.conversation_id) for row in rows]

    def last_event_id(self) -> int:
        return int(self.session.execute(select(func.max(events.c.event_id))).scalar() or 0)


class _DeskReader:
    """Reads the desk for previews on one connection of its own, with SQL compiled once,
    and shares each read among the callers that asked while it was waited for.

    A preview is mostly this read, and at many concurrent calls the pool's checkout and
    the statement machinery cost several times the query itself (measured: 477 against
    78 us of CPU per read at 16 threads on SQLite), so one connection does every read. Taking
    turns on it made the read the routing server's bottleneck under load: callers queued for
    the connection while the query ran with the GIL released. So a caller that arrives while
    a read is running waits for the next read, and that one read answers everyone who waited:
    every caller gets a snapshot taken after it asked, as a read of its own would be.

    Even shared, the read and its hand-offs between threads cost a preview more than the
    decision itself under load, so a snapshot younger than ``max_age_seconds`` answers a
    preview too, unless this process committed a write since the read began (``wrote``).
    A preview thus always sees what this process wrote before it was asked, and what other
    processes (workers, other routing replicas) wrote at most ``max_age_seconds`` late;
    with 0, every preview reads. The connection runs in autocommit, as one statement is
    consistent by itself; after a failure it is replaced on the next read. Rows equal to the
    last read's give back the same ``Desk`` (nobody changes one).
    """

    def __init__(self, engine: Engine, max_age_seconds: float = 0.0) -> None:
        self.engine = engine
        self.max_age_seconds = max_age_seconds
        self.sql = str(
            _DESK_QUERY.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
        )
        self._turn = threading.Condition()
        # Reads started and finished so far: one is running while they differ.
        self._started = 0
        self._finished = 0
        self._outcome: Desk | BaseException | None = None
        # Writes this process committed; the count when the last outcome's read began, and
        # until when (monotonic) that outcome may answer.
        self._writes = 0
        self._outcome_writes = -1
        self._reusable_until = -math.inf
        self._connection: Any = None
        self._last_rows: list[Any] | None = None
        self._last_desk: Desk | None = None

    def wrote(self) -> None:
        """This process committed a write: no snapshot read before it answers again."""
        with self._turn:
            self._writes += 1

    def read(self) -> Desk:
        with self._turn:
            if (
                self._outcome_writes == self._writes
                and time.monotonic() < self._reusable_until
                and isinstance(self._outcome, Desk)
            ):
                return self._outcome
            # The first read to start after this call arrived answers it.
            wanted = self._started + 1
            while self._finished < wanted and self._started > self._finished:
                self._turn.wait()
            if self._finished < wanted:
                self._started += 1
                writes, began = self._writes, time.monotonic()
            else:
                return _desk_or_raise(self._outcome)
        outcome: Desk | BaseException
        try:
            outcome = self._desk_of(self._query())
        except BaseException as error:
            outcome = error
        with self._turn:
            self._outcome = outcome
            self._outcome_writes = writes
            self._reusable_until = began + self.max_age_seconds
            self._finished = self._started
            self._turn.notify_all()
        return _desk_or_raise(outcome)

    def _desk_of(self, rows: list[Any]) -> Desk:
        # Only the one running read gets here, so the last rows need no lock of their own.
        if rows != self._last_rows or self._last_desk is None:
            self._last_desk, self._last_rows = read_desk(rows), rows
        return self._last_desk

    def _query(self) -> list[Any]:
        if self._connection is None:
            self._connection = self.engine.raw_connection()
            if is_postgresql(self.engine):
                self._connection.driver_connection.autocommit = True
        try:
            cursor = self._connection.cursor()
            try:
                cursor.execute(self.sql)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except self.engine.dialect.loaded_dbapi.Error as error:
            self._connection.invalidate()
            self._connection = None
            raise DBAPIError.instance(
                self.sql, None, error, self.engine.dialect.loaded_dbapi.Error
            ) from error


def _desk_or_raise(outcome: Desk | BaseException | None) -> Desk:
    if isinstance(outcome, BaseException):
        raise outcome
    assert outcome is not None
    return outcome


class RoutingRepository:
    def __init__(self, engine: Engine, *, preview_desk_seconds: float = 0.0) -> None:
        self.engine = engine
        self.locking = is_postgresql(engine)
        self._desk = _DeskReader(engine, preview_desk_seconds)
        self.config_listeners: list[Callable[[], None]] = []
        # Run inside every write transaction just before it commits (the report facts).
        self.before_commit: list[Callable[[Store], None]] = []

    def desk(self) -> Desk:
        """The desk as one consistent snapshot, without locks or a transaction: taken after
        this process's last commit, and at most ``preview_desk_seconds`` old."""
        return self._desk.read()

    @contextmanager
    def write(self) -> Iterator[Store]:
        """A transaction; ``before_commit`` hooks run at its end, and after a commit that
        changed the configuration every ``config_listeners`` callable runs (the widget cache
        moves its version there)."""
        try:
            with write_transaction(self.engine) as session:
                store = Store(session, self.locking)
                yield store
                for hook in self.before_commit:
                    hook(store)
        finally:
            # Committed or not (a failed commit may still have landed), previews read again.
            self._desk.wrote()
        if store.config_changed:
            for listener in self.config_listeners:
                listener()

    @contextmanager
    def read(self) -> Iterator[Store]:
        with read_session(self.engine) as session:
            yield Store(session, locking=False)


_RESOURCE_NAMES = {
    "calendar": "calendar",
    "policy": "SLA policy",
    "queue": "queue",
    "agent": "agent",
    "rules": "routing rules",
    "persona": "persona",
    "escalation": "escalation policy",
    "widgets": "widget policies",
}


def resource_name(kind: str) -> str:
    """How messages name a definition kind ("policy" is an "SLA policy")."""
    return _RESOURCE_NAMES.get(kind, kind)


def _definition(row: Any) -> StoredDefinition:
    return StoredDefinition(
        row.kind, row.key, dict(row.document or {}), row.revision, row.create_time, row.update_time
    )


def _presence(row: Any) -> Presence:
    return Presence(row.agent_id, row.status, row.status_time, row.last_assign_time)


def _event(row: Any) -> ConversationEvent:
    return ConversationEvent(
        kind=EventKind(row.kind),
        time=row.time,
        agent_id=row.agent_id,
        queue_id=row.queue_id,
        policy_id=row.policy_id,
        to_bot=row.to_bot,
        rating=row.rating,
        sla_metric=row.sla_metric,
        sla_cycle=row.sla_cycle,
        raised_priority=row.raised_priority,
        moved_to_queue_id=row.moved_to_queue_id,
        notified_endpoint_id=row.notified_endpoint_id,
    )


def _event_values(conversation_id: str, event: ConversationEvent, note: str) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "kind": event.kind.value,
        "time": event.time,
        "agent_id": event.agent_id,
        "queue_id": event.queue_id,
        "policy_id": event.policy_id,
        "to_bot": event.to_bot,
        "rating": event.rating,
        "note": note,
        "sla_metric": event.sla_metric,
        "sla_cycle": event.sla_cycle,
        "raised_priority": event.raised_priority,
        "moved_to_queue_id": event.moved_to_queue_id,
        "notified_endpoint_id": event.notified_endpoint_id,
    }


def _earlier_check(moment: datetime) -> Any:
    """The SLA check time brought forward to ``moment`` (kept when it is already earlier)."""
    check = conversations.c.sla_next_check_time
    return case((check.is_(None), moment), (check > moment, moment), else_=check)


def check_revision(stored: StoredDefinition, expected: int) -> None:
    if expected and expected != stored.revision:
        raise Conflict(
            f"{_RESOURCE_NAMES.get(stored.kind, stored.kind)} {stored.key!r} is at revision "
            f"{stored.revision}, not {expected}; read it again and retry",
            reason="STALE_REVISION",
        )
