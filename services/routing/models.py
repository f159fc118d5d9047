"""Tables of the routing service.

Configuration (calendars, SLA policies, queues, agents' definitions, the routing rules) is a
small set of documents an admin edits whole, so each lives as one JSON document keyed by
kind and id, with every revision kept: the SLA clock of a conversation needs the policy
revisions in force while it ran, and rules are rolled back by revision. A single version
counter changes with every configuration write, which lets the hot path reuse its compiled
configuration after one tiny read.

What changes per conversation lives in typed columns: where it waits, who holds it, its
order keys, and an append-only event log that is also what consoles watch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, text
from sqlmodel import Field, SQLModel

from services.core.db import AutoIncrementId, JsonDocument, UTCDateTime


class DefinitionRow(SQLModel, table=True):
    __tablename__ = "routing_definitions"

    kind: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=64)
    document: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonDocument))
    revision: int = Field(default=1, sa_type=BigInteger)
    create_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    update_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class DefinitionRevisionRow(SQLModel, table=True):
    __tablename__ = "routing_definition_revisions"

    kind: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=64)
    revision: int = Field(primary_key=True, sa_type=BigInteger)
    document: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonDocument))
    actor: str = Field(default="", max_length=200)
    action: str = Field(default="", max_length=32)
    restored_revision: int = Field(default=0, sa_type=BigInteger)
    revise_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class ConfigVersionRow(SQLModel, table=True):
    """One row whose version moves with every configuration write."""

    __tablename__ = "routing_config_version"

    name: str = Field(primary_key=True, max_length=16)
    version: int = Field(default=0, sa_type=BigInteger)


class AgentPresenceRow(SQLModel, table=True):
    """An agent's availability, which changes all day and is never a revision."""

    __tablename__ = "routing_agent_presence"

    agent_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=16)
    status_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    # When the agent last got a conversation: LEAST_BUSY ties go to the longest idle.
    last_assign_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class QueueCursorRow(SQLModel, table=True):
    """Where ROUND_ROBIN stopped in each queue."""

    __tablename__ = "routing_queue_cursors"

    queue_id: str = Field(primary_key=True, max_length=64)
    last_agent_id: str = Field(default="", max_length=64)


class ConversationRow(SQLModel, table=True):
    __tablename__ = "routing_conversations"
    __table_args__ = (
        # The serving order of a queue's waiting conversations (AssignNext).
        Index(
            "ix_routing_conversations_waiting",
            "queue_id",
            "state",
            "priority",
            "order_due",
            "enqueue_time",
        ),
        Index("ix_routing_conversations_agent", "agent_id", "state"),
        Index("ix_routing_conversations_timer", "timer_time"),
        Index("ix_routing_conversations_sla_check", "sla_next_check_time"),
    )

    conversation_id: str = Field(primary_key=True, max_length=128)
    customer_id: str = Field(default="", max_length=64)
    channel: str = Field(max_length=16)
    language: str = Field(default="", max_length=35)
    topic: str = Field(default="", max_length=200)
    state: str = Field(max_length=32)
    queue_id: str = Field(max_length=64)
    agent_id: str = Field(default="", max_length=64)
    # The named agent a fallback step holds it for; others may not take it meanwhile.
    reserved_agent_id: str = Field(default="", max_length=64)
    priority: int = 0
    sla_policy_id: str = Field(default="", max_length=64)
    required_skills: list[str] = Field(default_factory=list, sa_column=Column(JsonDocument))
    segment_ids: list[str] = Field(default_factory=list, sa_column=Column(JsonDocument))
    # First-response due time, or a far-future stand-in when there is none, so one index
    # orders every queue.
    order_due: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    enqueue_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    assign_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    agent_replied: bool = False
    # The fallback steps still to try, and when the current step or the queue's overflow
    # acts next.
    pending_steps: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JsonDocument)
    )
    timer_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    decision: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonDocument))
    csat_rating: int = 0
    last_event_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    # When the SLA watch must look at it next: the earliest warning or due time still ahead
    # of a counting clock, or the time of the latest change to its clocks (an event, a
    # policy edit) until the watch has worked out what that change means. None: never.
    sla_next_check_time: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class ConversationEventRow(SQLModel, table=True):
    __tablename__ = "routing_conversation_events"
    __table_args__ = (
        Index("ix_routing_conversation_events_conversation", "conversation_id", "event_id"),
        Index("ix_routing_conversation_events_agent", "agent_id", "event_id"),
        # Each SLA threshold of each clock cycle is recorded once, however many watchers run.
        Index(
            "ux_routing_conversation_events_sla",
            "conversation_id",
            "kind",
            "sla_metric",
            "sla_cycle",
            unique=True,
            sqlite_where=text("sla_metric <> ''"),
            postgresql_where=text("sla_metric <> ''"),
        ),
    )

    event_id: int | None = Field(default=None, primary_key=True, sa_type=AutoIncrementId)
    conversation_id: str = Field(max_length=128)
    kind: str = Field(max_length=32)
    time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    agent_id: str = Field(default="", max_length=64)
    queue_id: str = Field(default="", max_length=64)
    policy_id: str = Field(default="", max_length=64)
    to_bot: bool = False
    rating: int = 0
    note: str = Field(default="", max_length=500)
    # SLA_WARNING and SLA_BREACHED only: the clock, its cycle and what the escalation did.
    sla_metric: str = Field(default="", max_length=16)
    sla_cycle: int = 0
    raised_priority: int = 0
    moved_to_queue_id: str = Field(default="", max_length=64)
    notified_endpoint_id: str = Field(default="", max_length=64)


class ConversationFigures(SQLModel):
    """What the reports add up over one conversation, folded from its history at every
    write that adds events to it. The facts row and each row of the segments it was routed
    in carry the same figures, so the blended and the per-segment figures are each one scan
    of one table, never a join over a million rows."""

    customer_id: str = Field(default="", max_length=64)
    bot_first: bool = False
    # Calendar seconds until the first human reply, and until the last resolution; None
    # while there is none (or the conversation was reopened since).
    first_response_seconds: float | None = None
    resolution_seconds: float | None = None
    # The SLA verdicts: None while a clock runs on track, or when there is no target.
    first_response_met: bool | None = None
    resolution_met: bool | None = None
    csat_rating: int = 0
    human_involved: bool = False
    escalated: bool = False
    reopened: bool = False
    handling_seconds: float = 0.0


class ConversationFactsRow(ConversationFigures, table=True):
    """One conversation's figures: the blended scorecard and cohorts add these up."""

    __tablename__ = "routing_conversation_facts"
    __table_args__ = (
        Index("ix_routing_conversation_facts_route_time", "route_time"),
        Index("ix_routing_conversation_facts_customer", "customer_id", "route_time"),
    )

    conversation_id: str = Field(primary_key=True, max_length=128)
    route_time: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    # When the customer's conversation before this one was routed (in (route_time,
    # conversation_id) order); None for their first. A range counts a customer once, on
    # the conversation whose previous one was routed before the range.
    previous_route_time: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ConversationSegmentRow(ConversationFigures, table=True):
    """A segment the conversation's customer was in when it was routed, with the
    conversation's figures: reports group by these, never by today's memberships."""

    __tablename__ = "routing_conversation_segments"
    __table_args__ = (
        # Each write that refolds a conversation's figures finds its segment rows by this.
        Index("ix_routing_conversation_segments_conversation", "conversation_id"),
        Index(
            "ix_routing_conversation_segments_customer", "customer_id", "segment_id", "route_time"
        ),
    )

    segment_id: str = Field(primary_key=True, max_length=64)
    route_time: datetime = Field(sa_column=Column(UTCDateTime, primary_key=True))
    conversation_id: str = Field(primary_key=True, max_length=128)
    # As on the facts, counting only the customer's conversations routed in this segment.
    previous_route_time: datetime | None = Field(default=None, sa_type=UTCDateTime)
