"""Conversations routed before the report tables carried figures on segment rows (revision
0010) report the same after the upgrade, and new ones join them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, bindparam, text

from services.core.db import MIGRATIONS_DIR, UTCDateTime
from services.reports.repository import ReportRepository
from services.routing.facts import conversation_facts
from services.routing.lifecycle import ConversationEvent, EventKind
from services.routing.repository import RoutingRepository
from tests.integration.routing_setup import MONDAY

END = MONDAY + timedelta(days=1)
TIERS = ["tier_enterprise", "tier_starter"]


def migrate(url: str, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    (command.downgrade if down else command.upgrade)(config, revision)


def at(hours: float) -> datetime:
    return MONDAY + timedelta(hours=hours)


def route_before_the_upgrade(
    engine: Engine, rows: list[tuple[str, str, float, float, list[str]]]
) -> None:
    """Facts and segment rows as revision 0009 stored them: (conversation, customer, routed
    at hours after Monday, seconds to first response, segments)."""
    # Bound as the application binds it: SQLite keeps times as text in one format.
    route_time = bindparam("route_time", type_=UTCDateTime())
    with engine.begin() as connection:
        for conversation_id, customer_id, hours, first_response, segment_ids in rows:
            connection.execute(
                text(
                    "INSERT INTO routing_conversation_facts (conversation_id, customer_id, "
                    "route_time, bot_first, first_response_seconds, csat_rating, "
                    "human_involved, escalated, reopened, handling_seconds) VALUES "
                    "(:conversation_id, :customer_id, :route_time, false, :first_response, 4, "
                    "true, false, false, 60)"
                ).bindparams(route_time),
                {
                    "conversation_id": conversation_id,
                    "customer_id": customer_id,
                    "route_time": at(hours),
                    "first_response": first_response,
                },
            )
            for segment_id in segment_ids:
                connection.execute(
                    text(
                        "INSERT INTO routing_conversation_segments (segment_id, route_time, "
                        "conversation_id) VALUES (:segment_id, :route_time, :conversation_id)"
                    ).bindparams(route_time),
                    {
                        "segment_id": segment_id,
                        "route_time": at(hours),
                        "conversation_id": conversation_id,
                    },
                )


def test_conversations_routed_before_the_upgrade_keep_their_figures_and_customers(
    engine: Engine, database_url: str
) -> None:
    migrate(database_url, "0009", down=True)
    route_before_the_upgrade(
        engine,
        [
            ("acme-3", "acme", 3, 300.0, ["tier_enterprise"]),
            ("acme-1", "acme", 1, 100.0, ["tier_enterprise"]),
            ("tiny-1", "tiny-1", 1.5, 900.0, ["tier_starter", "at_risk"]),
            ("acme-2", "acme", 2, 200.0, ["tier_enterprise"]),
            ("visitor", "", 2, 50.0, []),
        ],
    )
    migrate(database_url, "head")
    engine.dispose()
    reports = ReportRepository(engine)

    by_segment, everyone = reports.tally_scorecard(TIERS, at(1.5), END)
    assert (everyone.conversations, everyone.customers) == (4, 2)
    enterprise = by_segment["tier_enterprise"]
    assert (enterprise.conversations, enterprise.customers) == (2, 1)
    assert (enterprise.first_response_p50, enterprise.first_response_p90) == (200.0, 300.0)
    assert (enterprise.csat_sum, enterprise.handling_seconds) == (8, 120.0)
    assert by_segment["tier_starter"].first_response_p50 == 900.0

    # Acme writes again after the upgrade: still one customer from the second hour on.
    routing = RoutingRepository(engine)
    with routing.write() as store:
        store.record_conversation_segments("acme-4", ["tier_enterprise"], at(4))
        routed = ConversationEvent(EventKind.ROUTED, at(4))
        store.save_facts(
            [
                {
                    "conversation_id": "acme-4",
                    "customer_id": "acme",
                    **asdict(conversation_facts([routed], [])),
                }
            ]
        )
    by_segment, everyone = reports.tally_scorecard(TIERS, at(2), END)
    assert (by_segment["tier_enterprise"].conversations, everyone.customers) == (3, 1)
    assert by_segment["tier_enterprise"].customers == 1
