"""``switchboard dashboard``: serve the read-only reports dashboard until stopped."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click
from switchboard.reports.v1 import reports_pb2_grpc

from services.core.channels import open_channel
from services.core.logs import configure_logging
from services.core.settings import Settings
from services.dashboard.server import create_dashboard


@click.command()
def dashboard() -> None:
    """Serve the reports dashboard over HTTP until SIGTERM or Ctrl-C."""
    settings = Settings()
    configure_logging("dashboard", settings.log_level)
    # The reports are served by the routing server, and read with each visitor's own key.
    channel = open_channel(
        settings.routing_address,
        settings,
        deadline_seconds=settings.report_deadline_seconds,
        present_key=False,
    )
    running = create_dashboard(
        reports_pb2_grpc.ReportServiceStub(channel),
        host=settings.dashboard_host,
        port=settings.dashboard_port,
    )
    stopping = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    address = f"http://{settings.dashboard_host}:{running.port}/"
    click.echo(f"dashboard {address} (sign in with an admin API key)")
    stopping.wait()
    running.stop()
    channel.close()
