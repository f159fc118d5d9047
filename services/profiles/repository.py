"""Storage of customers, their external ids, tags, usage events and the change log.

Every write that changes a customer appends to the change log in the same transaction, so
a consumer of the log can never see a change that was rolled back, or miss one that was
committed. On PostgreSQL, writers take one advisory lock before appending: sequence numbers
are then committed in order, and a reader that has seen sequence N will never later find a
smaller one appear.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import BindParameter
from sqlmodel import Session

from services.core.db import (
    UTCDateTime,
    bulk_insert,
    in_chunks,
    insert_columns,
    is_postgresql,
    read_session,
    write_transaction,
)
from services.core.errors import AlreadyExists, Conflict, FieldViolation, InvalidArgument, NotFound
from services.profiles.domain import (
    API_SOURCE,
    SCALAR_FIELDS,
    ChangeKind,
    Customer,
    CustomerChange,
    ExternalIdKey,
    FieldSourceDocument,
    SyncChunkResult,
    SyncRecord,
    SyncRejection,
    UsageEvent,
    field_sources_from_document,
    new_field_source_document,
    refresh_stamp,
    refreshed_document,
)
from services.profiles.logic import MetricWindows, trait_window_bounds, traits_from_windows
from services.profiles.models import (
    CustomerChangeRow,
    CustomerRow,
    ExternalIdRow,
    TagRow,
    UsageEventRow,
)

customers: Table = CustomerRow.__table__  # type: ignore[attr-defined]
external_ids: Table = ExternalIdRow.__table__  # type: ignore[attr-defined]
tags: Table = TagRow.__table__  # type: ignore[attr-defined]
usage_events: Table = UsageEventRow.__table__  # type: ignore[attr-defined]
changes: Table = CustomerChangeRow.__table__  # type: ignore[attr-defined]

# Arbitrary constant naming the change-log lock for pg_advisory_xact_lock.
_CHANGE_LOG_LOCK = 0x5B0C_0001


def new_customer_id(now: datetime) -> str:
    """Time-ordered ids, so that listing by id roughly follows creation order."""
    return new_customer_ids(now, 1)[0]


def new_customer_ids(now: datetime, count: int) -> list[str]:
    """``count`` fresh ids for one moment, their random parts from one read of the OS's
    random source rather than one per id."""
    prefix = f"cu_{int(now.timestamp() * 1000):012x}"
    random = secrets.token_hex(5 * count)
    return [prefix + random[start : start + 10] for start in range(0, 10 * count, 10)]


@dataclass(frozen=True)
class CustomerFilter:
    plan: str = ""
    tag: str = ""
    updated_since: datetime | None = None


@dataclass(frozen=True)
class UpsertRecord:
    """A validated record of an upsert batch, with its position in the request."""

    index: int
    values: Mapping[str, Any]
    customer_id: str = ""


@dataclass
class UpsertOutcome:
    index: int
    outcome: str  # "created" | "updated" | "unchanged" | "rejected"
    customer_id: str = ""
    violations: list[FieldViolation] = field(default_factory=list)


@dataclass(frozen=True)
class UsageRecordResult:
    recorded: int
    duplicates: int


@dataclass(frozen=True)
class FieldFreshness:
    """How fresh one source's values of one field are."""

    source: str
    field: str
    customers: int
    stale_customers: int
    oldest_refresh_time: datetime


class CustomerRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- reads -------------------------------------------------------------------------

    def get(self, *, customer_id: str, now: datetime) -> Customer:
        with read_session(self.engine) as session:
            found = _load(session, [customer_id], now)
        if customer_id not in found:
            raise NotFound("customer", customer_id)
        return found[customer_id]

    def get_by_external_id(self, *, key: ExternalIdKey, now: datetime) -> Customer:
        with read_session(self.engine) as session:
            customer_id = session.execute(
                select(external_ids.c.customer_id).where(
                    external_ids.c.system == key.system,
                    external_ids.c.external_id == key.external_id,
                )
            ).scalar_one_or_none()
            found = _load(session, [customer_id], now) if customer_id else {}
        if not customer_id or customer_id not in found:
            raise NotFound("customer", f"{key.system}:{key.external_id}")
        return found[customer_id]

    def batch_get(self, *, customer_ids: Sequence[str], now: datetime) -> list[Customer]:
        with read_session(self.engine) as session:
            found = _load(session, customer_ids, now)
        for customer_id in customer_ids:
            if customer_id not in found:
                raise NotFound("customer", customer_id)
        return [found[customer_id] for customer_id in customer_ids]

    def list_page(
        self, *, where: CustomerFilter, after_id: str, limit: int, now: datetime
    ) -> tuple[list[Customer], str]:
        """A page of customers ordered by id, and the last id when more may follow."""
        query = select(customers.c.customer_id).order_by(customers.c.customer_id).limit(limit + 1)
        if after_id:
            query = query.where(customers.c.customer_id > after_id)
        if where.plan:
            query = query.where(customers.c.plan == where.plan)
        if where.updated_since:
            query = query.where(customers.c.update_time >= where.updated_since)
        if where.tag:
            query = query.where(
                customers.c.customer_id.in_(
                    select(tags.c.customer_id).where(tags.c.tag == where.tag)
                )
            )
        with read_session(self.engine) as session:
            ids = list(session.execute(query).scalars())
            more = len(ids) > limit
            ids = ids[:limit]
            found = _load(session, ids, now)
        return [found[i] for i in ids if i in found], (ids[-1] if more and ids else "")

    def list_changes(self, *, after_sequence: int, limit: int) -> list[CustomerChange]:
        query = (
            select(changes)
            .where(changes.c.sequence > after_sequence)
            .order_by(changes.c.sequence)
            .limit(limit)
        )
        with read_session(self.engine) as session:
            rows = session.execute(query).all()
        return [
            CustomerChange(
                sequence=row.sequence,
                customer_id=row.customer_id,
                kind=ChangeKind(row.kind),
                changed_fields=tuple(row.changed_fields or ()),
                change_time=row.change_time,
            )
            for row in rows
        ]

    # ---- writes ------------------------------------------------------------------------

    def create(self, *, customer_id: str, values: Mapping[str, Any], now: datetime) -> Customer:
        customer_id = customer_id or new_customer_id(now)
        try:
            with write_transaction(self.engine) as session:
                _lock_change_log(session)
                exists = session.execute(
                    select(customers.c.customer_id).where(customers.c.customer_id == customer_id)
                ).first()
                if exists:
                    raise AlreadyExists("customer", customer_id)
                _ensure_external_ids_free(session, {customer_id: values.get("external_ids", {})})
                document = new_field_source_document(
                    _source_fields({}, values),
                    source=API_SOURCE,
                    stamp=refresh_stamp(now),
                    run_id="",
                )
                _insert_customers(session, [(customer_id, values, document)], now)
                _append_changes(session, [(customer_id, ChangeKind.CREATED, sorted(values))], now)
        except IntegrityError as error:
            raise _conflict_from(error, customer_id) from error
        return self.get(customer_id=customer_id, now=now)

    def update(
        self,
        *,
        customer_id: str,
        values: Mapping[str, Any],
        attribute_patch: Mapping[str, Any],
        removed_attributes: Collection[str],
        expected_etag: str,
        now: datetime,
    ) -> Customer:
        """Write the given fields; ``attribute_patch`` sets and ``removed_attributes`` drops
        single custom fields (from update_mask paths such as ``attributes.contract_type``)."""
        try:
            with write_transaction(self.engine) as session:
                _lock_change_log(session)
                stored = _load_for_update(session, customer_id, now)
                _check_etag(stored, expected_etag)
                incoming = dict(values)
                if attribute_patch or removed_attributes:
                    merged = dict(incoming.get("attributes", stored.attributes))
                    merged.update(attribute_patch)
                    for key in removed_attributes:
                        merged.pop(key, None)
                    incoming["attributes"] = merged
                changed = _changed_fields(stored, incoming)
                if changed:
                    if "external_ids" in changed:
                        _ensure_external_ids_free(session, {customer_id: incoming["external_ids"]})
                    _write_changes(session, stored, incoming, changed, now, replace=True)
                    _append_changes(session, [(customer_id, ChangeKind.UPDATED, changed)], now)
                    _refresh_field_sources(
                        session,
                        [(customer_id, _source_fields(stored.attributes, incoming, changed))],
                        source=API_SOURCE,
                        run_id="",
                        now=now,
                    )
        except IntegrityError as error:
            raise _conflict_from(error, customer_id) from error
        return self.get(customer_id=customer_id, now=now)

    def delete(self, *, customer_id: str, expected_etag: str, now: datetime) -> None:
        with write_transaction(self.engine) as session:
            _lock_change_log(session)
            stored = _load_for_update(session, customer_id, now)
            _check_etag(stored, expected_etag)
            for table in (usage_events, tags, external_ids, customers):
                session.execute(delete(table).where(table.c.customer_id == customer_id))
            _append_changes(session, [(customer_id, ChangeKind.DELETED, [])], now)

    def change_tags(
        self, *, customer_id: str, add: Iterable[str], remove: Iterable[str], now: datetime
    ) -> Customer:
        with write_transaction(self.engine) as session:
            _lock_change_log(session)
            stored = _load_for_update(session, customer_id, now)
            wanted = (set(stored.tags) | set(add)) - set(remove)
            if wanted != set(stored.tags):
                incoming = {"tags": tuple(sorted(wanted))}
                _write_changes(session, stored, incoming, ["tags"], now, replace=True)
                _append_changes(session, [(customer_id, ChangeKind.TAGS_CHANGED, ["tags"])], now)
        return self.get(customer_id=customer_id, now=now)

    def upsert(
        self, *, system: str, records: Sequence[UpsertRecord], now: datetime
    ) -> list[UpsertOutcome]:
        """Create or update records keyed by their ``system`` external id, all in one
        transaction. Only the fields present in a record are compared and written."""
        try:
            with write_transaction(self.engine) as session:
                _lock_change_log(session)
                outcomes = _upsert(session, system, records, now)
        except IntegrityError as error:
            # A concurrent writer created one of these keys after we looked; the caller
            # retries the batch, which then sees the customer as existing.
            raise Conflict(
                "a concurrent write touched the same customers; retry the batch",
                reason="CONCURRENT_UPSERT",
            ) from error
        if any(outcome.outcome == "created" for outcome in outcomes):
            _analyze_if_grown(self.engine)
        return outcomes

    def apply_sync_chunk(
        self,
        *,
        source: str,
        system: str,
        records: Sequence[SyncRecord],
        run_id: str,
        now: datetime,
        also: Callable[[Session, SyncChunkResult], None],
    ) -> SyncChunkResult:
        """Write one chunk of a sync keyed by ``system`` ids, in one transaction with
        whatever ``also`` writes (the run's progress), so a chunk is stored whole or not at
        all. Rows apply in order (a key seen twice: the later row wins). Only the fields a
        row delivers are written; tags, other systems' ids and custom fields the source does
        not deliver are kept. Every delivered field's source is refreshed, changed or not."""
        with write_transaction(self.engine) as session:
            _lock_change_log(session)
            result = _apply_sync_chunk(session, source, system, records, run_id, now)
            also(session, result)
        if result.created:
            _analyze_if_grown(self.engine)
        return result

    def record_usage(self, *, events: Sequence[UsageEvent], now: datetime) -> UsageRecordResult:
        with write_transaction(self.engine) as session:
            _lock_change_log(session)
            customer_ids = sorted({event.customer_id for event in events})
            known = set(_select_in(session, customers.c.customer_id, customer_ids))
            for event in events:
                if event.customer_id not in known:
                    raise NotFound("customer", event.customer_id)
            keyed = [(e.customer_id, e.event_id) for e in events if e.event_id]
            seen = {
                (row.customer_id, row.event_id)
                for chunk in in_chunks(keyed)
                for row in session.execute(
                    select(usage_events.c.customer_id, usage_events.c.event_id).where(
                        tuple_(usage_events.c.customer_id, usage_events.c.event_id).in_(chunk)
                    )
                )
            }
            fresh = []
            for event in events:
                key = (event.customer_id, event.event_id)
                if event.event_id and key in seen:
                    continue
                if event.event_id:
                    seen.add(key)
                fresh.append(event)
            if fresh:
                bulk_insert(
                    session,
                    usage_events,
                    [
                        {
                            "customer_id": e.customer_id,
                            "metric": e.metric,
                            "value": e.value,
                            "occur_time": e.occur_time,
                            "event_id": e.event_id,
                        }
                        for e in fresh
                    ],
                )
                touched = sorted({e.customer_id for e in fresh})
                _append_changes(
                    session, [(c, ChangeKind.USAGE_RECORDED, ["traits"]) for c in touched], now
                )
        return UsageRecordResult(recorded=len(fresh), duplicates=len(events) - len(fresh))

    def prune_usage_events(self, *, older_than: datetime) -> int:
        """Drop raw events no trait window can reach any more; returns how many."""
        with write_transaction(self.engine) as session:
            result = session.execute(
                delete(usage_events).where(usage_events.c.occur_time < older_than)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def field_freshness(self, *, stale_before: datetime, source: str) -> list[FieldFreshness]:
        """Per source and field: customers, those refreshed before ``stale_before`` and the
        oldest refresh, ordered by source then field; only ``source`` when given, else
        every source but the API's (its values are written, not synced)."""
        # Each customer's document unnested into (group, field) pairs; stamps compare as
        # text (see ``refresh_stamp``).
        if is_postgresql(self.engine):
            origin, stamp = "grp.value ->> 'source'", "grp.value ->> 'refresh_time'"
            pairs = (
                "jsonb_array_elements(customers.field_sources) AS grp(value), "
                "jsonb_array_elements_text(grp.value -> 'fields') AS fld(value)"
            )
        else:
            origin, stamp = (
                "json_extract(grp.value, '$.source')",
                "json_extract(grp.value, '$.refresh_time')",
            )
            pairs = (
                "json_each(customers.field_sources) AS grp, json_each(grp.value, '$.fields') AS fld"
            )
        query = text(
            f"SELECT {origin} AS source, fld.value AS field, count(*) AS customer_count, "
            f"sum(CASE WHEN {stamp} < :stale_before THEN 1 ELSE 0 END) AS stale, "
            f"min({stamp}) AS oldest "
            f"FROM customers, {pairs} "
            f"WHERE {origin} {'=' if source else '<>'} :source "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        parameters = {"stale_before": refresh_stamp(stale_before), "source": source or API_SOURCE}
        with read_session(self.engine) as session:
            rows = session.execute(query, parameters).all()
        return [
            FieldFreshness(
                origin, field, int(customers), int(stale_count), datetime.fromisoformat(oldest)
            )
            for origin, field, customers, stale_count, oldest in rows
        ]


# ---- page tokens ---------------------------------------------------------------------------


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode()


def decode_page_token(token: str) -> str:
    if not token:
        return ""
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidArgument.field("page_token", "not a token from a previous page") from error
    if not isinstance(after, str):
        raise InvalidArgument.field("page_token", "not a token from a previous page")
    return after


# ---- helpers -------------------------------------------------------------------------------


def _select_in(session: Session, column: Any, values: Sequence[Any]) -> list[Any]:
    found: list[Any] = []
    for chunk in in_chunks(values):
        found.extend(session.execute(select(column).where(column.in_(chunk))).scalars())
    return found


def _analyze_if_grown(engine: Engine) -> None:
    """Refresh PostgreSQL's statistics of the tables a bulk write grows (customers and
    their external ids) once one has more than doubled on disk since they were taken.

    Autovacuum analyzes a table after 10% of it changed, at most once a minute (and never
    where it is switched off), so while a bulk load fills a fresh table the planner
    believes it holds a few dozen rows. It then looked up each batch's keys by reading
    every id of the system (22 ms per 500 keys at 100,000 ids, growing with the table)
    rather than through the primary key (under 1 ms). The table's size on disk is current
    at once, unlike the activity counters; doubling means a handful of analyses per load,
    each a few tens of ms."""
    if not is_postgresql(engine):
        return
    with engine.connect() as connection:
        grown = connection.execute(
            text(
                "SELECT c.relname FROM pg_class c "
                "WHERE c.oid = ANY(CAST(:tables AS regclass[])) "
                "AND pg_relation_size(c.oid) / current_setting('block_size')::int "
                "> 2 * greatest(c.relpages, 0) + 16"
            ),
            {"tables": [customers.name, external_ids.name]},
        ).scalars()
        for table in list(grown):
            connection.exec_driver_sql(f'ANALYZE "{table}"')
        connection.commit()


def _lock_change_log(session: Session) -> None:
    if is_postgresql(session.get_bind()):  # type: ignore[arg-type]
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHANGE_LOG_LOCK})


def _load(
    session: Session, customer_ids: Sequence[str], now: datetime, *, compared_only: bool = False
) -> dict[str, Customer]:
    """Full customers (with ids, tags, field sources and traits), a few queries per 500 ids.
    ``compared_only`` leaves out the field sources and traits, which no write compares."""
    if not customer_ids:
        return {}
    ids = list(dict.fromkeys(customer_ids))
    rows: list[Any] = []
    external: dict[str, dict[str, str]] = defaultdict(dict)
    tag_sets: dict[str, list[str]] = defaultdict(list)
    customer_query = _COMPARED_CUSTOMERS if compared_only else _FULL_CUSTOMERS
    for chunk in in_chunks(ids):
        wanted = {"ids": list(chunk)}
        rows.extend(session.execute(customer_query, wanted))
        for ext in session.execute(_EXTERNAL_IDS_OF, wanted):
            external[ext.customer_id][ext.system] = ext.external_id
        for tag in session.execute(_TAGS_OF, wanted):
            tag_sets[tag.customer_id].append(tag.tag)
    traits = {} if compared_only else _traits(session, ids, now)
    loaded = {}
    for row in rows:
        mapping = row._mapping
        loaded[row.customer_id] = Customer(
            customer_id=row.customer_id,
            create_time=row.create_time,
            update_time=row.update_time,
            version=row.version,
            external_ids=external.get(row.customer_id, {}),
            tags=tuple(tag_sets.get(row.customer_id, ())),
            attributes=dict(row.attributes or {}),
            traits=traits.get(row.customer_id, {}),
            field_sources={} if compared_only else field_sources_from_document(row.field_sources),
            values={
                name: mapping[name] for name in SCALAR_FIELDS if mapping[name] not in (None, "")
            },
        )
    return loaded


# The reads of ``_load`` and ``_traits``, built once: building and keying a statement cost
# more CPU than SQLite took to run it on a GetCustomer.
_WANTED_IDS: BindParameter[str] = bindparam("ids", expanding=True)
# What a write compares: everything but the field sources.
_COMPARED_COLUMNS = [column for column in customers.c if column.name != "field_sources"]
_FULL_CUSTOMERS = select(customers).where(customers.c.customer_id.in_(_WANTED_IDS))
_COMPARED_CUSTOMERS = select(*_COMPARED_COLUMNS).where(customers.c.customer_id.in_(_WANTED_IDS))
_EXTERNAL_IDS_OF = select(external_ids).where(external_ids.c.customer_id.in_(_WANTED_IDS))
_TAGS_OF = select(tags).where(tags.c.customer_id.in_(_WANTED_IDS)).order_by(tags.c.tag)


def _usage_windows_query() -> Any:
    """Per customer and metric, the sums of the last 7 days and of the 7 days before."""
    week_start = bindparam("week_start", type_=UTCDateTime)
    prev_start = bindparam("prev_start", type_=UTCDateTime)
    value, occurred = usage_events.c.value, usage_events.c.occur_time
    last_7d = func.sum(case((occurred > week_start, value), else_=0))
    prev_7d = func.sum(case((and_(occurred > prev_start, occurred <= week_start), value), else_=0))
    return (
        select(usage_events.c.customer_id, usage_events.c.metric, last_7d, prev_7d)
        .where(
            usage_events.c.customer_id.in_(_WANTED_IDS),
            occurred <= bindparam("now", type_=UTCDateTime),
        )
        .group_by(usage_events.c.customer_id, usage_events.c.metric)
    )


_USAGE_WINDOWS = _usage_windows_query()


def _traits(session: Session, ids: Sequence[str], now: datetime) -> dict[str, dict[str, float]]:
    prev_start, week_start = trait_window_bounds(now)
    bounds = {"week_start": week_start, "prev_start": prev_start, "now": now}
    windows: dict[str, list[MetricWindows]] = defaultdict(list)
    for chunk in in_chunks(ids):
        found = session.execute(_USAGE_WINDOWS, {"ids": list(chunk), **bounds})
        for customer_id, metric, last, prev in found:
            windows[customer_id].append(MetricWindows(metric, float(last or 0), float(prev or 0)))
    return {customer_id: traits_from_windows(w) for customer_id, w in windows.items()}


def _load_for_update(session: Session, customer_id: str, now: datetime) -> Customer:
    # Row lock on PostgreSQL; SQLite write transactions already hold the database lock.
    session.execute(
        select(customers.c.customer_id)
        .where(customers.c.customer_id == customer_id)
        .with_for_update()
    )
    found = _load(session, [customer_id], now, compared_only=True)
    if customer_id not in found:
        raise NotFound("customer", customer_id)
    return found[customer_id]


def _check_etag(stored: Customer, expected_etag: str) -> None:
    if expected_etag and expected_etag != stored.etag:
        raise Conflict(
            f"customer {stored.customer_id!r} changed since etag {expected_etag} was read "
            f"(now {stored.etag}); read it again and retry",
            reason="STALE_ETAG",
        )


def _stored_value(stored: Customer, name: str) -> Any:
    if name == "external_ids":
        return stored.external_ids
    if name == "tags":
        return stored.tags
    if name == "attributes":
        return stored.attributes
    return stored.values.get(name)


def _changed_fields(stored: Customer, incoming: Mapping[str, Any]) -> list[str]:
    changed = []
    for name, value in incoming.items():
        before = _stored_value(stored, name)
        empty = value in (None, "") and before in (None, "")
        if not empty and before != value:
            changed.append(name)
    return changed


def _ensure_external_ids_free(session: Session, wanted: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse external ids that already belong to a different customer."""
    pairs = [(system, ext) for ids in wanted.values() for system, ext in ids.items()]
    owners = _external_id_owners(session, pairs)
    for customer_id, ids in wanted.items():
        for system, ext in ids.items():
            owner = owners.get((system, ext))
            if owner and owner != customer_id:
                raise AlreadyExists("external id", f"{system}:{ext}")


def _external_id_owners(
    session: Session, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The customer holding each of the (system, external id) pairs that are taken."""
    # One list per system rather than a row-value IN over (system, id) pairs, which
    # PostgreSQL plans as an OR chain of index probes (about 10x slower at 500 pairs).
    # Driver-level SQL: SQLAlchemy compiling a 500-value IN list cost about as much as
    # running it (6.5 ms against 3.4 ms for 500 ids on PostgreSQL).
    by_system: dict[str, list[str]] = defaultdict(list)
    for system, external_id in dict.fromkeys(pairs):
        by_system[system].append(external_id)
    connection = session.connection()
    query = f"SELECT external_id, customer_id FROM {external_ids.name} WHERE system = "
    postgresql = is_postgresql(session.get_bind())  # type: ignore[arg-type]
    owners: dict[tuple[str, str], str] = {}
    for system, ids in by_system.items():
        # PostgreSQL takes the whole list as one array; SQLite binds each id.
        for chunk in [ids] if postgresql else in_chunks(ids):
            if postgresql:
                statement = query + "%s AND external_id = ANY(%s)"
                parameters: tuple[Any, ...] = (system, chunk)
            else:
                statement = query + f"? AND external_id IN ({', '.join('?' * len(chunk))})"
                parameters = (system, *chunk)
            for external_id, customer_id in connection.exec_driver_sql(statement, parameters):
                owners[(system, external_id)] = customer_id
    return owners


def _insert_customers(
    session: Session,
    records: Sequence[tuple[str, Mapping[str, Any], FieldSourceDocument]],
    now: datetime,
) -> None:
    """New customers, each with its values and field-source document, and their external
    ids and tags, built column by column (cheaper than a dict per row for batches of
    thousands). Records sharing one document object have it JSON-encoded once."""
    if not records:
        return
    columns: dict[str, list[Any]] = {"customer_id": [customer_id for customer_id, _, _ in records]}
    for name, default in _EMPTY_ROW.items():
        columns[name] = [values.get(name, default) for _, values, _ in records]
    columns["attributes"] = [values.get("attributes", _NO_ATTRIBUTES) for _, values, _ in records]
    columns["field_sources"] = [document for _, _, document in records]
    columns["create_time"] = columns["update_time"] = [now] * len(records)
    columns["version"] = [1] * len(records)
    insert_columns(session, customers, columns)
    id_rows = [
        (customer_id, system, ext)
        for customer_id, values, _ in records
        for system, ext in values.get("external_ids", {}).items()
    ]
    if id_rows:
        owners, systems, ids = zip(*id_rows, strict=True)
        insert_columns(
            session, external_ids, {"customer_id": owners, "system": systems, "external_id": ids}
        )
    tag_rows = [
        (customer_id, tag) for customer_id, values, _ in records for tag in values.get("tags", ())
    ]
    if tag_rows:
        owners, names = zip(*tag_rows, strict=True)
        insert_columns(session, tags, {"customer_id": owners, "tag": names})


# What an unset field is stored as: NULL where the column allows it (numbers, times),
# "" in the NOT NULL text columns.
_EMPTY_ROW: dict[str, Any] = {
    name: None if customers.c[name].nullable else "" for name in SCALAR_FIELDS
}
# Shared by every new row without custom fields, so that it is JSON-encoded once.
_NO_ATTRIBUTES: Mapping[str, Any] = {}
_SCALARS = frozenset(SCALAR_FIELDS)


def _write_changes(
    session: Session,
    stored: Customer,
    incoming: Mapping[str, Any],
    changed: Sequence[str],
    now: datetime,
    *,
    replace: bool,
) -> None:
    """Write ``changed`` fields of ``incoming`` over ``stored``. With ``replace`` the
    external ids and tags given replace the stored ones; without, they are added."""
    customer_id = stored.customer_id
    columns: dict[str, Any] = {
        name: incoming[name] if incoming[name] is not None else _EMPTY_ROW[name]
        for name in changed
        if name in SCALAR_FIELDS
    }
    if "attributes" in changed:
        columns["attributes"] = dict(incoming["attributes"])
    session.execute(
        update(customers)
        .where(customers.c.customer_id == customer_id)
        .values(**columns, update_time=now, version=stored.version + 1)
    )
    if "external_ids" in changed:
        new_ids = dict(incoming["external_ids"])
        if replace:
            session.execute(delete(external_ids).where(external_ids.c.customer_id == customer_id))
            rows = new_ids
        else:
            rows = {s: e for s, e in new_ids.items() if stored.external_ids.get(s) != e}
            if rows:
                session.execute(
                    delete(external_ids).where(
                        external_ids.c.customer_id == customer_id,
                        external_ids.c.system.in_(list(rows)),
                    )
                )
        if rows:
            session.execute(
                insert(external_ids),
                [
                    {"customer_id": customer_id, "system": s, "external_id": e}
                    for s, e in rows.items()
                ],
            )
    if "tags" in changed:
        wanted = set(incoming["tags"])
        current = set(stored.tags)
        gone = current - wanted if replace else set()
        if gone:
            session.execute(
                delete(tags).where(tags.c.customer_id == customer_id, tags.c.tag.in_(sorted(gone)))
            )
        added = wanted - current
        if added:
            session.execute(
                insert(tags), [{"customer_id": customer_id, "tag": tag} for tag in sorted(added)]
            )


def _append_changes(
    session: Session, entries: Sequence[tuple[str, ChangeKind, Sequence[str]]], now: datetime
) -> None:
    """One change-log row per entry. Entries sharing one list of fields (records of one
    shape) have it JSON-encoded once."""
    insert_columns(
        session,
        changes,
        {
            "customer_id": [customer_id for customer_id, _, _ in entries],
            "kind": [kind.value for _, kind, _ in entries],
            "changed_fields": [fields for _, _, fields in entries],
            "change_time": [now] * len(entries),
        },
    )


def _source_fields(
    stored_attributes: Mapping[str, Any],
    incoming: Mapping[str, Any],
    changed: Iterable[str] | None = None,
) -> list[str]:
    """Field-source names of the fields written (all of ``incoming`` unless ``changed``
    names them): scalars by name, custom fields as ``attributes.KEY``."""
    names = incoming if changed is None else list(changed)
    fields = [name for name in names if name in _SCALARS]
    if "attributes" in names:
        after = incoming.get("attributes") or {}
        keys = set(stored_attributes) | set(after)
        fields += [
            f"attributes.{key}"
            for key in sorted(keys)
            if key not in stored_attributes
            or key not in after
            or stored_attributes[key] != after[key]
        ]
    return fields


def _refresh_field_sources(
    session: Session,
    refreshed: Sequence[tuple[str, Iterable[str]]],
    *,
    source: str,
    run_id: str,
    now: datetime,
    stored: Mapping[str, FieldSourceDocument] | None = None,
) -> None:
    """Record ``source`` as the origin of each (customer, fields) entry, refreshed now, in
    the stored documents of customers that exist: one read (none when the caller already
    holds them as ``stored``) and one write per call."""
    wanted = [(customer_id, names) for customer_id, names in refreshed if names]
    if not wanted:
        return
    postgresql = is_postgresql(session.get_bind())  # type: ignore[arg-type]
    connection = session.connection()
    if stored is None:
        owners = list(dict.fromkeys(customer_id for customer_id, _ in wanted))
        stored = _stored_documents(connection, owners, postgresql=postgresql)
    stamp = refresh_stamp(now)
    documents: dict[str, FieldSourceDocument] = {}
    for customer_id, names in wanted:
        documents[customer_id] = refreshed_document(
            documents.get(customer_id, stored[customer_id]),
            names,
            source=source,
            stamp=stamp,
            run_id=run_id,
        )
    if postgresql:
        # One JSON object of every document by customer: psycopg escapes text arrays item by
        # item in Python, which cost more than the update itself.
        connection.exec_driver_sql(
            "UPDATE customers SET field_sources = refreshed.value "
            "FROM jsonb_each(%s::jsonb) AS refreshed "
            "WHERE customers.customer_id = refreshed.key",
            (json.dumps(documents),),
        )
    else:
        connection.exec_driver_sql(
            "UPDATE customers SET field_sources = ? WHERE customer_id = ?",
            [(json.dumps(document), customer_id) for customer_id, document in documents.items()],
        )


def _stored_documents(
    connection: Connection, owners: Sequence[str], *, postgresql: bool
) -> dict[str, FieldSourceDocument]:
    """The field-source documents of these customers.

    Driver-level SQL: SQLAlchemy's compiling of IN lists costs more than the statement
    itself, and a write may refresh thousands of customers at once."""
    query = "SELECT customer_id, field_sources FROM customers WHERE customer_id "
    stored: dict[str, FieldSourceDocument] = {}
    if postgresql:
        # psycopg hands back a jsonb document decoded.
        for customer_id, document in connection.exec_driver_sql(query + "= ANY(%s)", (owners,)):
            stored[customer_id] = document
    else:
        for chunk in in_chunks(owners):
            marks = ", ".join("?" * len(chunk))
            for customer_id, text_document in connection.exec_driver_sql(
                query + f"IN ({marks})", tuple(chunk)
            ):
                stored[customer_id] = json.loads(text_document)
    return stored


@dataclass
class _SyncTarget:
    """A customer as a sync chunk sees it while applying rows in order."""

    customer_id: str
    version: int
    values: dict[str, Any]
    attributes: dict[str, Any]
    external_ids: dict[str, str]
    new: bool
    changed: set[str] = field(default_factory=set)
    added_ids: dict[str, str] = field(default_factory=dict)
    delivered: dict[str, None] = field(default_factory=dict)
    # The stored field-source document (none for a new customer), refreshed at the end.
    field_sources: FieldSourceDocument = field(default_factory=list)


def _load_sync_targets(session: Session, customer_ids: Sequence[str]) -> dict[str, _SyncTarget]:
    """Just what a sync compares (no tags, no traits), in two queries per IN-list chunk."""
    targets: dict[str, _SyncTarget] = {}
    for chunk in in_chunks(customer_ids):
        # Fetched whole and unpacked by position: row by row, SQLAlchemy's result machinery
        # cost more than the query.
        for customer_id, version, attributes, field_sources, *values in session.execute(
            _SYNC_TARGETS, {"customer_ids": chunk}
        ).all():
            targets[customer_id] = _SyncTarget(
                customer_id=customer_id,
                version=version,
                values=dict(zip(SCALAR_FIELDS, values, strict=True)),
                attributes=dict(attributes or {}),
                external_ids={},
                new=False,
                field_sources=field_sources,
            )
        for system, external_id, owner in session.execute(
            _SYNC_TARGET_IDS, {"customer_ids": chunk}
        ).all():
            targets[owner].external_ids[system] = external_id
    return targets


_SYNC_TARGETS = select(
    customers.c.customer_id,
    customers.c.version,
    customers.c.attributes,
    customers.c.field_sources,
    *[customers.c[name] for name in SCALAR_FIELDS],
).where(customers.c.customer_id.in_(bindparam("customer_ids", expanding=True)))
_SYNC_TARGET_IDS = select(
    external_ids.c.system, external_ids.c.external_id, external_ids.c.customer_id
).where(external_ids.c.customer_id.in_(bindparam("customer_ids", expanding=True)))


def _apply_sync_chunk(
    session: Session,
    source: str,
    system: str,
    records: Sequence[SyncRecord],
    run_id: str,
    now: datetime,
) -> SyncChunkResult:
    result = SyncChunkResult()
    owners = _external_id_owners(
        session,
        [(system, r.key) for r in records] + [p for r in records for p in r.links.items()],
    )
    targets = _load_sync_targets(session, sorted(set(owners.values())))
    for record in records:
        target_id, problem = _sync_target_of(record, system, owners, targets, now)
        if problem:
            result.rejections.append(SyncRejection(record.row_number, record.key, (problem,)))
            continue
        target = targets.get(target_id)
        created = target is None
        if target is None:
            target = targets[target_id] = _SyncTarget(
                target_id, 1, dict(_EMPTY_ROW), {}, {}, new=True
            )
        changed = _apply_record(target, record, system)
        for pair in target.added_ids.items():
            owners[pair] = target_id
        if created:
            result.created += 1
        elif changed:
            result.updated += 1
        else:
            result.unchanged += 1
    creates = [t for t in targets.values() if t.new]
    updates = [t for t in targets.values() if not t.new and t.changed]
    stamp = refresh_stamp(now)
    # One document object per set of delivered fields, so each is JSON-encoded once.
    documents: dict[tuple[str, ...], FieldSourceDocument] = {}
    for t in creates:
        delivered = tuple(t.delivered)
        if delivered not in documents:
            documents[delivered] = new_field_source_document(
                delivered, source=source, stamp=stamp, run_id=run_id
            )
    _insert_customers(
        session,
        [
            (
                t.customer_id,
                {**t.values, "attributes": t.attributes, "external_ids": t.added_ids},
                documents[tuple(t.delivered)],
            )
            for t in creates
        ],
        now,
    )
    _update_synced_customers(session, updates, now)
    new_ids = [
        {"customer_id": t.customer_id, "system": s, "external_id": e}
        for t in updates
        for s, e in t.added_ids.items()
    ]
    if new_ids:
        bulk_insert(session, external_ids, new_ids)
    _append_changes(
        session,
        [(t.customer_id, ChangeKind.CREATED, sorted(t.changed)) for t in creates]
        + [(t.customer_id, ChangeKind.UPDATED, sorted(t.changed)) for t in updates],
        now,
    )
    known = [t for t in targets.values() if not t.new]
    _refresh_field_sources(
        session,
        [(t.customer_id, t.delivered) for t in known],
        source=source,
        run_id=run_id,
        now=now,
        stored={t.customer_id: t.field_sources for t in known},
    )
    return result


def _sync_target_of(
    record: SyncRecord,
    system: str,
    owners: Mapping[tuple[str, str], str],
    targets: Mapping[str, _SyncTarget],
    now: datetime,
) -> tuple[str, str]:
    """The customer a row writes to (a new id when nobody has its key or linked ids), or
    why the row cannot be placed."""
    key_owner = owners.get((system, record.key))
    linked = {(s, e): owners[(s, e)] for s, e in record.links.items() if (s, e) in owners}
    if key_owner:
        for (s, e), owner in linked.items():
            if owner != key_owner:
                return "", f"external_ids[{s!r}]: {e!r} belongs to another customer"
        return key_owner, ""
    found = set(linked.values())
    if len(found) > 1:
        return "", "its linked ids belong to different customers: " + ", ".join(
            f"{s}:{e}" for s, e in sorted(linked)
        )
    if found:
        owner = found.pop()
        present = targets[owner].external_ids.get(system)
        if present and present != record.key:
            return "", (
                f"external_ids[{system!r}]: the customer linked by "
                f"{', '.join(f'{s}:{e}' for s, e in sorted(linked))} already has "
                f"{system} id {present!r}"
            )
        return owner, ""
    return new_customer_id(now), ""


def _apply_record(target: _SyncTarget, record: SyncRecord, system: str) -> bool:
    """Apply one row to ``target``; whether it changed anything."""
    changed = False
    for name, value in record.values.items():
        before = target.values.get(name)
        if before != value and not (before in (None, "") and value in (None, "")):
            target.values[name] = value
            target.changed.add(name)
            changed = True
    for key, value in record.attributes.items():
        if key not in target.attributes or target.attributes[key] != value:
            target.attributes[key] = value
            target.changed.add("attributes")
            changed = True
    for s, e in {system: record.key, **record.links}.items():
        if s not in target.external_ids:
            target.external_ids[s] = e
            target.added_ids[s] = e
            target.changed.add("external_ids")
            changed = True
    target.delivered.update(dict.fromkeys(record.delivered))
    return changed


def _update_synced_customers(
    session: Session, updates: Sequence[_SyncTarget], now: datetime
) -> None:
    """One executemany for the chunk's changed customers: every column any of them changed,
    from each one's merged state (so an unchanged column is rewritten with its own value)."""
    columns = sorted({name for t in updates for name in t.changed if name in SCALAR_FIELDS})
    if "attributes" in {name for t in updates for name in t.changed}:
        columns.append("attributes")
    rows = [
        {
            "b_customer_id": t.customer_id,
            "b_version": t.version + 1,
            **{
                f"b_{name}": t.attributes if name == "attributes" else t.values[name]
                for name in columns
            },
        }
        for t in updates
    ]
    if not rows:
        return
    session.execute(
        update(customers)
        .where(customers.c.customer_id == bindparam("b_customer_id"))
        .values(
            {name: bindparam(f"b_{name}") for name in columns}
            | {"update_time": now, "version": bindparam("b_version")}
        ),
        rows,
    )


def _conflict_from(error: IntegrityError, customer_id: str) -> Exception:
    """ALREADY_EXISTS for a unique-key race; any other integrity error is a bug and stays
    itself (so the caller sees INTERNAL, not a misleading "already exists")."""
    unique = getattr(error.orig, "sqlstate", None) == "23505" or "UNIQUE constraint" in str(
        error.orig
    )
    if not unique:
        return error
    message = str(error.orig).lower()
    if "external" in message:
        return AlreadyExists("external id", "(one of the customer's external ids)")
    return AlreadyExists("customer", customer_id)


def _upsert(
    session: Session, system: str, records: Sequence[UpsertRecord], now: datetime
) -> list[UpsertOutcome]:
    outcomes: dict[int, UpsertOutcome] = {}
    # Every accepted record carries the batch's key, so ``external_ids`` is always there.
    keys = [record.values["external_ids"][system] for record in records]
    owners = _external_id_owners(
        session, [pair for record in records for pair in record.values["external_ids"].items()]
    )
    existing_ids = [owners[(system, key)] for key in keys if (system, key) in owners]
    stored = _load(session, existing_ids, now, compared_only=True)
    explicit_ids = [r.customer_id for r in records if r.customer_id]
    taken_ids = set(_select_in(session, customers.c.customer_id, explicit_ids))
    fresh_ids = iter(new_customer_ids(now, len(records)))

    def reject(record: UpsertRecord, field_name: str, why: str) -> None:
        outcomes[record.index] = UpsertOutcome(
            record.index, "rejected", violations=[FieldViolation(field_name, why)]
        )

    creates: list[tuple[str, Mapping[str, Any], FieldSourceDocument]] = []
    log: list[tuple[str, ChangeKind, Sequence[str]]] = []
    refreshed_sources: list[tuple[str, list[str]]] = []
    stamp = refresh_stamp(now)
    # A created record's logged fields and field-source document, per shape (its fields
    # and custom fields): a batch repeats a few shapes, and a list or document shared by
    # the records of one shape is JSON-encoded once.
    created_fields: dict[tuple[tuple[str, ...], ...], tuple[list[str], FieldSourceDocument]] = {}
    seen_keys: set[str] = set()
    claimed: dict[tuple[str, str], str] = {}
    for record, key in zip(records, keys, strict=True):
        if key in seen_keys:
            reject(record, f"external_ids[{system!r}]", f"{key!r} appears twice in the batch")
            continue
        seen_keys.add(key)
        owner = owners.get((system, key))
        target = owner or record.customer_id or next(fresh_ids)
        if owner and record.customer_id and record.customer_id != owner:
            reject(record, "customer_id", f"{system}:{key} belongs to customer {owner!r}")
            continue
        if not owner and record.customer_id in taken_ids:
            reject(record, "customer_id", f"customer {record.customer_id!r} already exists")
            continue
        pairs = record.values["external_ids"].items()
        clash = _claimed_elsewhere(pairs, target, owners, claimed)
        if clash:
            reject(
                record, f"external_ids[{clash[0]!r}]", f"{clash[1]!r} belongs to another customer"
            )
            continue
        for pair in pairs:
            claimed[pair] = target
        if owner is None:
            shape = (tuple(record.values), tuple(record.values.get("attributes", ())))
            names = created_fields.get(shape)
            if names is None:
                names = created_fields[shape] = (
                    sorted(record.values),
                    new_field_source_document(
                        _source_fields({}, record.values), source=API_SOURCE, stamp=stamp, run_id=""
                    ),
                )
            creates.append((target, record.values, names[1]))
            log.append((target, ChangeKind.CREATED, names[0]))
            outcomes[record.index] = UpsertOutcome(record.index, "created", target)
            continue
        current = stored[owner]
        incoming = _merged_for_upsert(current, record.values)
        changed = _changed_fields(current, incoming)
        if changed:
            _write_changes(session, current, incoming, changed, now, replace=False)
            log.append((owner, ChangeKind.UPDATED, changed))
            refreshed_sources.append((owner, _source_fields(current.attributes, incoming, changed)))
            outcomes[record.index] = UpsertOutcome(record.index, "updated", owner)
        else:
            outcomes[record.index] = UpsertOutcome(record.index, "unchanged", owner)
    _insert_customers(session, creates, now)
    _append_changes(session, log, now)
    _refresh_field_sources(session, refreshed_sources, source=API_SOURCE, run_id="", now=now)
    return [outcomes[record.index] for record in records]


def _claimed_elsewhere(
    pairs: Iterable[tuple[str, str]],
    target: str,
    owners: Mapping[tuple[str, str], str],
    claimed: Mapping[tuple[str, str], str],
) -> tuple[str, str] | None:
    """The first (system, id) of a record that a stored customer or an earlier record of
    the batch holds for a customer other than ``target``."""
    for pair in pairs:
        if owners.get(pair, target) != target or claimed.get(pair, target) != target:
            return pair
    return None


def _merged_for_upsert(current: Customer, values: Mapping[str, Any]) -> dict[str, Any]:
    """Upserts add to maps and sets rather than replace them: a sync from one system
    must not drop another system's ids, the agents' tags or other custom fields."""
    incoming = dict(values)
    if "external_ids" in incoming:
        incoming["external_ids"] = {**current.external_ids, **incoming["external_ids"]}
    if "tags" in incoming:
        incoming["tags"] = tuple(sorted(set(current.tags) | set(incoming["tags"])))
    if "attributes" in incoming:
        incoming["attributes"] = {**current.attributes, **incoming["attributes"]}
    return incoming


__all__ = [
    "CustomerFilter",
    "CustomerRepository",
    "UpsertOutcome",
    "UpsertRecord",
    "UsageRecordResult",
    "decode_page_token",
    "encode_page_token",
    "new_customer_id",
]
