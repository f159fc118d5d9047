"""The routing configuration in force, read from storage and compiled once per version.

Placement, views and the service all decide against the same ``Config``; it lives apart from
the service so the modules that only read it do not depend on the service that caches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.routing import documents
from services.routing.domain import Agent, Calendar, Queue, SlaPolicy
from services.routing.logic import CompiledRules, Need, can_serve, compile_rules
from services.routing.repository import Store, StoredDefinition


@dataclass(frozen=True)
class Config:
    """Every definition at one configuration version, compiled for routing."""

    version: int
    calendars: Mapping[str, Calendar]
    policies: Mapping[str, SlaPolicy]
    queues: Mapping[str, Queue]
    agents: Mapping[str, Agent]
    rules: CompiledRules | None
    # Who can serve each need asked about so far: skills and languages are configuration.
    _able: dict[Need, tuple[Agent, ...]] = field(default_factory=dict, compare=False, repr=False)

    def able_agents(self, need: Need) -> tuple[Agent, ...]:
        """The agents whose skills and languages serve ``need``, online or not, in order."""
        found = self._able.get(need)
        if found is None:
            found = tuple(agent for agent in self.agents.values() if can_serve(agent, need))
            if len(self._able) >= NEEDS_REMEMBERED:
                self._able.clear()
            self._able[need] = found
        return found


# Distinct needs (channel, skills, language, queue languages) one configuration remembers.
NEEDS_REMEMBERED = 1024


def stamps(stored: StoredDefinition) -> dict[str, Any]:
    """The bookkeeping a stored definition carries in columns, as keyword arguments for
    the ``documents.*_from`` readers."""
    return {
        "revision": stored.revision,
        "create_time": stored.create_time,
        "update_time": stored.update_time,
    }


def load_config(store: Store, version: int) -> Config:
    """Read and compile every definition; ``version`` is the one the caller read first."""
    by_kind: dict[str, list[StoredDefinition]] = {}
    for stored in store.all_definitions():
        by_kind.setdefault(stored.kind, []).append(stored)
    rules = None
    for stored in by_kind.get("rules", []):
        revision = store.revisions("rules", "rules", limit=1)[0]
        rules = compile_rules(
            documents.rules_from(
                stored.document, stored.revision, stored.update_time, revision.actor
            )
        )
    return Config(
        version=version,
        calendars={
            s.key: documents.calendar_from(s.key, s.document, **stamps(s))
            for s in by_kind.get("calendar", [])
        },
        policies={
            s.key: documents.policy_from(s.key, s.document, **stamps(s))
            for s in by_kind.get("policy", [])
        },
        queues={
            s.key: documents.queue_from(s.key, s.document, **stamps(s))
            for s in by_kind.get("queue", [])
        },
        agents={
            s.key: documents.agent_from(s.key, s.document, **stamps(s))
            for s in by_kind.get("agent", [])
        },
        rules=rules,
    )
