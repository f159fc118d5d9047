"""What a console key may touch: its own agent, and the conversations that agent holds.

The role check (which RPCs) happens before the handler; these checks need the request, so
the servicer makes them. A conversation that does not exist is "not yours" too, so a
console learns nothing about other agents' work.
"""

from __future__ import annotations

from services.access.domain import Role, current_caller
from services.core.errors import PermissionDenied


def console_agent() -> str | None:
    """The agent the calling console key acts for; None for any other caller."""
    caller = current_caller.get()
    if caller is None or caller.role is not Role.CONSOLE:
        return None
    return caller.agent_id


def require_own_agent(agent_id: str) -> None:
    agent = console_agent()
    if agent is not None and agent_id != agent:
        raise PermissionDenied(
            f"this console key acts for agent {agent!r} only", reason="NOT_YOUR_AGENT"
        )


def require_held(holder: str | None) -> None:
    """Refuse a console whose agent does not hold the conversation (``holder`` is None when
    it does not exist)."""
    agent = console_agent()
    if agent is not None and holder != agent:
        raise PermissionDenied(
            "this console's agent does not hold that conversation", reason="NOT_YOUR_CONVERSATION"
        )
