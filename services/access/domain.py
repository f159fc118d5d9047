"""Roles, callers and audit entries: the vocabulary of access control."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    """What a key may do; each key carries exactly one."""

    # Public chat widgets: persona and escalation only, never PII.
    WIDGET = "widget"
    # Agent consoles: their own agent's assignments and the conversations it holds.
    CONSOLE = "console"
    # Backend jobs: profile writes, usage events.
    SYNC = "sync"
    # Everything, including segments, rules, policies and keys.
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """The key behind the current call."""

    key_id: str
    name: str
    role: Role
    # Console keys act for one agent; empty for every other role.
    agent_id: str = ""


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: everything but the secret, which is stored only as a hash."""

    key_id: str
    name: str
    role: Role
    agent_id: str
    create_time: datetime
    rotate_time: datetime | None
    revoke_time: datetime | None

    @property
    def active(self) -> bool:
        return self.revoke_time is None


@dataclass(frozen=True)
class AuditEntry:
    """One write (or refused attempt) and the key that made it."""

    time: datetime
    key_id: str
    key_name: str
    role: str
    method: str
    code: str
    request_id: str
    peer: str


# The caller of the RPC this thread is serving; None outside a call or on an open server.
current_caller: ContextVar[Caller | None] = ContextVar("current_caller", default=None)

# Set by a handler whose call wrote something, for calls that write only sometimes.
_call_wrote: ContextVar[bool] = ContextVar("call_wrote", default=False)


def note_write(wrote: bool = True) -> None:
    """Say whether the call being served changed something: it is audited if so."""
    _call_wrote.set(wrote)


def call_wrote() -> bool:
    return _call_wrote.get()


def start_call() -> None:
    _call_wrote.set(False)
