"""API keys: made, listed, rotated and revoked in the store, and checked on every call.

A key reads ``sb_<key id>_<secret>``. The key id is public (it names the key in lists and
the audit log); the secret is shown once, when the key is made or rotated, and kept only as
its SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import col, select

from services.access.domain import ApiKey, AuditEntry, Caller, Role
from services.access.models import ApiKeyRow, AuditEntryRow
from services.core.clock import Clock, utc_now
from services.core.db import read_session, write_transaction
from services.core.errors import FieldViolation, NotFound, Unauthenticated
from services.core.validation import raise_if

TOKEN_PREFIX = "sb"
MAX_NAME_LENGTH = 200
MAX_AUDIT_PAGE = 1000


def make_token(key_id: str) -> str:
    return f"{TOKEN_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(token: str) -> str | None:
    """The key id inside a presented token, or None when it is not shaped like one."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_problems(name: str, role: str, agent_id: str) -> list[FieldViolation]:
    """What is wrong with a new key's description, every problem at once."""
    problems = []
    if not name.strip():
        problems.append(FieldViolation("name", "is required"))
    elif len(name) > MAX_NAME_LENGTH:
        problems.append(FieldViolation("name", f"at most {MAX_NAME_LENGTH} characters"))
    if role not in {r.value for r in Role}:
        problems.append(
            FieldViolation("role", f"must be one of {', '.join(r.value for r in Role)}")
        )
    elif role == Role.CONSOLE and not agent_id:
        problems.append(FieldViolation("agent_id", "a console key acts for one agent: name it"))
    elif role != Role.CONSOLE and agent_id:
        problems.append(FieldViolation("agent_id", "only console keys act for an agent"))
    if len(agent_id) > 64:
        problems.append(FieldViolation("agent_id", "at most 64 characters"))
    return problems


class KeyStore:
    """Keys and the audit log in the store."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.clock = clock

    def create(self, name: str, role: str, agent_id: str = "") -> tuple[ApiKey, str]:
        """A new key and its token, which is never shown again."""
        raise_if(key_problems(name, role, agent_id))
        key_id = secrets.token_hex(5)
        token = make_token(key_id)
        row = ApiKeyRow(
            key_id=key_id,
            name=name.strip(),
            role=role,
            agent_id=agent_id,
            secret_hash=hash_token(token),
            create_time=self.clock(),
        )
        with write_transaction(self.engine) as session:
            session.add(row)
            session.flush()
            return _key(row), token

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        with read_session(self.engine) as session:
            query = select(ApiKeyRow).order_by(col(ApiKeyRow.create_time), col(ApiKeyRow.key_id))
            if not include_revoked:
                query = query.where(col(ApiKeyRow.revoke_time).is_(None))
            return [_key(row) for row in session.exec(query)]

    def rotate(self, key_id: str) -> tuple[ApiKey, str]:
        """A new secret for the key; the old one stops working at once."""
        token = make_token(key_id)
        with write_transaction(self.engine) as session:
            row = _active_row(session.get(ApiKeyRow, key_id, with_for_update=True), key_id)
            row.secret_hash = hash_token(token)
            row.rotate_time = self.clock()
            session.add(row)
            session.flush()
            return _key(row), token

    def revoke(self, key_id: str) -> ApiKey:
        with write_transaction(self.engine) as session:
            row = _active_row(session.get(ApiKeyRow, key_id, with_for_update=True), key_id)
            row.revoke_time = self.clock()
            session.add(row)
            session.flush()
            return _key(row)

    def has_admin(self) -> bool:
        with read_session(self.engine) as session:
            query = select(ApiKeyRow.key_id).where(
                col(ApiKeyRow.role) == Role.ADMIN, col(ApiKeyRow.revoke_time).is_(None)
            )
            return session.exec(query.limit(1)).first() is not None

    def credentials(self, key_id: str | None = None) -> dict[str, tuple[str, Caller]]:
        """Secret hashes and callers of the active keys (of one key when ``key_id`` is set)."""
        with read_session(self.engine) as session:
            query = select(ApiKeyRow).where(col(ApiKeyRow.revoke_time).is_(None))
            if key_id is not None:
                query = query.where(col(ApiKeyRow.key_id) == key_id)
            return {
                row.key_id: (
                    row.secret_hash,
                    Caller(row.key_id, row.name, Role(row.role), row.agent_id),
                )
                for row in session.exec(query)
            }

    def record(self, entry: AuditEntry) -> None:
        with write_transaction(self.engine) as session:
            session.add(AuditEntryRow(**entry.__dict__))

    def audit(
        self, *, key_id: str = "", since: datetime | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The newest entries first, at most ``limit``."""
        with read_session(self.engine) as session:
            query = select(AuditEntryRow)
            if key_id:
                query = query.where(col(AuditEntryRow.key_id) == key_id)
            if since is not None:
                query = query.where(col(AuditEntryRow.time) >= since)
            query = query.order_by(col(AuditEntryRow.entry_id).desc()).limit(limit)
            return [_entry(row) for row in session.exec(query)]


class KeyCache:
    """Checks presented tokens against the store without a query per call.

    The active keys are re-read when the copy is older than ``refresh_seconds``, so a key
    revoked or rotated elsewhere stops working within that time; an unknown key id or a
    secret that does not match is looked up in the store at once, so a new key works on
    its first call.
    """

    def __init__(self, keys: KeyStore, refresh_seconds: float) -> None:
        self.keys = keys
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._known: dict[str, tuple[str, Caller]] = {}
        self._loaded_at = -float("inf")

    def caller(self, token: str) -> Caller:
        key_id = key_id_of(token)
        if key_id is None:
            raise Unauthenticated("the API key is malformed", reason="BAD_API_KEY")
        digest = hash_token(token)
        if self._stale():
            self._reload()
        known = self._known.get(key_id)
        if known is None or not hmac.compare_digest(known[0], digest):
            known = self.keys.credentials(key_id).get(key_id)
            if known is not None:
                self._known = {**self._known, key_id: known}
        if known is None or not hmac.compare_digest(known[0], digest):
            raise Unauthenticated("the API key is unknown or revoked", reason="BAD_API_KEY")
        return known[1]

    def remembered(self, token: str) -> Caller | None:
        """The caller of a key in a copy still fresh, without asking the store; None for
        anything else (``caller`` decides then)."""
        key_id = key_id_of(token)
        if key_id is None or self._stale():
            return None
        known = self._known.get(key_id)
        if known is None or not hmac.compare_digest(known[0], hash_token(token)):
            return None
        return known[1]

    def _stale(self) -> bool:
        return time.monotonic() - self._loaded_at > self.refresh_seconds

    def _reload(self) -> None:
        with self._lock:
            if time.monotonic() - self._loaded_at <= self.refresh_seconds:
                return
            self._known = self.keys.credentials()
            self._loaded_at = time.monotonic()


def _active_row(row: ApiKeyRow | None, key_id: str) -> ApiKeyRow:
    if row is None or row.revoke_time is not None:
        raise NotFound("api key", key_id)
    return row


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        name=row.name,
        role=Role(row.role),
        agent_id=row.agent_id,
        create_time=row.create_time,
        rotate_time=row.rotate_time,
        revoke_time=row.revoke_time,
    )


def _entry(row: AuditEntryRow) -> AuditEntry:
    return AuditEntry(
        time=row.time,
        key_id=row.key_id,
        key_name=row.key_name,
        role=row.role,
        method=row.method,
        code=row.code,
        request_id=row.request_id,
        peer=row.peer,
    )
