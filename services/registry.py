"""The services Switchboard runs, by the name used on the command line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from services.core.server import ServiceSpec
from services.core.settings import Settings
from services.profiles.server import profiles_spec
from services.routing.server import routing_specs
from services.segments.server import segments_specs


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    # A server may carry more than one gRPC service (routing serves the widgets too).
    build: Callable[[Engine, Settings], list[ServiceSpec]]
    address: Callable[[Settings], str]
    metrics_port: Callable[[Settings], int]
    # Where the server's asyncio edge listens, if it has one (services.core.edge).
    edge_address: Callable[[Settings], str | None] = lambda _settings: None


SERVICES: dict[str, ServiceEntry] = {
    "profiles": ServiceEntry(
        "profiles",
        lambda engine, _settings: [profiles_spec(engine)],
        lambda s: s.profiles_address,
        lambda s: s.profiles_metrics_port,
    ),
    "segments": ServiceEntry(
        "segments",
        segments_specs,
        lambda s: s.segments_address,
        lambda s: s.segments_metrics_port,
    ),
    "routing": ServiceEntry(
        "routing",
        routing_specs,
        lambda s: s.routing_address,
        lambda s: s.routing_metrics_port,
        lambda s: s.widgets_address,
    ),
}
