"""The ``switchboard`` command: run the stack, one service, a worker, beat, migrations, demo."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import click
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.access.cli import audit, keys
from services.access.domain import Role
from services.access.gate import AccessControl
from services.access.keys import KeyStore
from services.core.channels import open_channel
from services.core.db import create_db_engine, upgrade_database
from services.core.logs import configure_logging
from services.core.server import create_server, serve_until_stopped
from services.core.settings import Settings
from services.core.tls import server_credentials
from services.dashboard.cli import dashboard
from services.outreach.cli import outreach
from services.registry import SERVICES
from services.reports.cli import report
from services.sync.cli import sync

log = logging.getLogger("switchboard.cli")


@click.group()
def main() -> None:
    """Switchboard: customer segmentation and routing for support teams."""


@main.command()
@click.argument("service", type=click.Choice(sorted(SERVICES)))
def serve(service: str) -> None:
    """Run one gRPC service until SIGTERM or Ctrl-C."""
    settings = Settings()
    configure_logging(service, settings.log_level)
    entry = SERVICES[service]
    engine = create_db_engine(settings.effective_database_url)
    running = create_server(
        entry.build(engine, settings),
        address=entry.address(settings),
        gate=AccessControl.of(
            engine,
            refresh_seconds=settings.access_refresh_seconds,
            service_identities=settings.service_identities,
        ),
        max_workers=settings.grpc_max_workers,
        tls=(
            server_credentials(settings.tls_cert_file, settings.tls_client_ca_file)
            if settings.tls_cert_file
            else None
        ),
        edge_address=entry.edge_address(settings),
    )
    metrics_port = running.metrics.serve(settings.metrics_host, entry.metrics_port(settings))
    log.info(
        "serving",
        extra={
            "address": entry.address(settings),
            "port": running.port,
            "edge": entry.edge_address(settings),
            "metrics": f"http://{settings.metrics_host}:{metrics_port}/metrics",
        },
    )
    serve_until_stopped(running, grace=settings.grpc_shutdown_grace_seconds)
    engine.dispose()


@main.command()
@click.option("--concurrency", default=2, show_default=True, help="Worker processes.")
@click.option(
    "--queues",
    default="",
    help="Comma-separated queues to serve (default: all of them).",
)
def worker(concurrency: int, queues: str) -> None:
    """Run a Celery worker for every Switchboard queue, or for the ones named."""
    from workers.app import QUEUES, create_celery_app

    wanted = [name.strip() for name in queues.split(",") if name.strip()] or list(QUEUES)
    unknown = sorted(set(wanted) - set(QUEUES))
    if unknown:
        raise click.BadParameter(f"unknown queues {unknown}; known: {list(QUEUES)}")
    settings = Settings()
    configure_logging("worker", settings.log_level)
    app = create_celery_app(settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level}",
            f"--concurrency={concurrency}",
            f"--queues={','.join(wanted)}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.command()
def beat() -> None:
    """Run Celery beat, which enqueues the periodic tasks."""
    from workers.app import create_celery_app

    settings = Settings()
    configure_logging("beat", settings.log_level)
    app = create_celery_app(settings)
    app.Beat(loglevel=settings.log_level).run()


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    settings = Settings()
    upgrade_database(settings.effective_database_url)
    click.echo(f"database at newest schema: {_redacted(settings.effective_database_url)}")


@main.command()
@click.option("--service", type=click.Choice(sorted(SERVICES)), multiple=True)
@click.option("--timeout", default=2.0, show_default=True)
def health(service: tuple[str, ...], timeout: float) -> None:
    """Exit 0 when every named service (default: all) answers SERVING."""
    settings = Settings()
    names = service or tuple(SERVICES)
    failing = [
        name
        for name in names
        if not _is_serving(SERVICES[name].address(settings), settings, timeout)
    ]
    for name in names:
        click.echo(f"{name}: {'NOT SERVING' if name in failing else 'SERVING'}")
    sys.exit(1 if failing else 0)


@main.command()
@click.option(
    "--month",
    is_flag=True,
    help="Also play out a month of conversations, so the reports and dashboard show figures.",
)
def demo(month: bool) -> None:
    """Load a small demo data set through the running services."""
    from services.demo import load_demo, load_routing_demo, load_segment_demo, load_widgets_demo

    settings = Settings()
    click.echo(load_demo(settings))
    click.echo(load_segment_demo(settings))
    click.echo(load_routing_demo(settings))
    click.echo(load_widgets_demo(settings))
    if month:
        from services.demo_month import load_conversation_month

        click.echo(load_conversation_month(settings))


@main.command()
@click.option("--ready-timeout", default=60.0, show_default=True)
def up(ready_timeout: float) -> None:
    """Run the whole stack: three services, workers, beat and the dashboard, until Ctrl-C."""
    settings = Settings()
    configure_logging("up", settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    click.echo(_describe_backends(settings))
    upgrade_database(settings.effective_database_url)
    _ensure_admin_key(settings)

    from workers.app import QUEUES

    command = [sys.executable, "-m", "services.cli"]
    not_sync = ",".join(queue for queue in QUEUES if queue != "sync")
    children = {
        **{name: subprocess.Popen([*command, "serve", name]) for name in SERVICES},
        # Syncs get a worker of their own so that a long import never delays the SLA
        # watch, re-evaluation or outreach.
        "worker": subprocess.Popen([*command, "worker", "--queues", not_sync]),
        "sync worker": subprocess.Popen(
            [*command, "worker", "--queues", "sync", "--concurrency", "1"]
        ),
        "beat": subprocess.Popen([*command, "beat"]),
        "dashboard": subprocess.Popen([*command, "dashboard"]),
    }
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        deadline = time.monotonic() + ready_timeout
        pending = set(SERVICES)
        while pending and not stopping and time.monotonic() < deadline:
            _exit_if_any_died(children)
            pending = {
                n for n in pending if not _is_serving(SERVICES[n].address(settings), settings, 0.5)
            }
            time.sleep(0.2 if pending else 0)
        if pending and not stopping:
            raise click.ClickException(f"not ready after {ready_timeout:.0f}s: {sorted(pending)}")
        if not stopping:
            click.echo(_describe_addresses(settings))
        while not stopping:
            _exit_if_any_died(children)
            time.sleep(0.5)
    finally:
        _stop_children(children, settings.grpc_shutdown_grace_seconds + 5)
    click.echo("Switchboard stopped.")


def _ensure_admin_key(settings: Settings) -> None:
    """On first start, make an admin key, print it and keep it (owner-only) in the data
    directory, where the services, workers and commands of this machine find it: the stack
    never runs open. Later starts need a key, from that file or SWITCHBOARD_API_KEY."""
    store = KeyStore(create_db_engine(settings.effective_database_url))
    if not store.has_admin():
        _key, token = store.create("first admin (switchboard up)", Role.ADMIN)
        settings.admin_key_file.touch(mode=0o600)
        settings.admin_key_file.write_text(token + "\n")
        click.echo(
            f"Admin API key (saved to {settings.admin_key_file}, not shown again):\n  {token}"
        )
    elif not settings.client_api_key:
        raise click.ClickException(
            "the store has API keys but none was given: set SWITCHBOARD_API_KEY to an admin "
            "key (the services call each other with it)"
        )


def _describe_backends(settings: Settings) -> str:
    database = _redacted(settings.effective_database_url)
    if settings.redis_url:
        broker = f"Redis ({_redacted(settings.redis_url)})"
        cache = broker
    else:
        broker = f"embedded SQLite broker ({settings.data_dir / 'broker.db'}), default beat"
        cache = "in-process"
    return f"Store: {database}\nCelery broker: {broker}\nDecision cache: {cache}"


def _describe_addresses(settings: Settings) -> str:
    lines = ["Switchboard is up:"]
    for name, entry in SERVICES.items():
        lines.append(
            f"  {name:<9} grpc {entry.address(settings):<22} "
            f"metrics http://{settings.metrics_host}:{entry.metrics_port(settings)}/metrics"
        )
        if (edge := entry.edge_address(settings)) is not None:
            lines.append(f"  {'':<9} grpc {edge:<22} the widget port (WidgetService)")
    sign_in = "sign in with an admin API key"
    if settings.admin_key_file.exists():
        sign_in += f", such as the one in {settings.admin_key_file}"
    lines.append(
        f"  dashboard http://{settings.dashboard_host}:{settings.dashboard_port}/ ({sign_in})"
    )
    lines.append("  workers (sync, and everything else) and beat running. Ctrl-C stops everything.")
    return "\n".join(lines)


def _is_serving(address: str, settings: Settings, timeout: float) -> bool:
    with open_channel(address, settings, deadline_seconds=timeout) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def _exit_if_any_died(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, child in children.items():
        if child.poll() is not None:
            raise click.ClickException(f"{name} exited with code {child.returncode}")


def _stop_children(children: dict[str, subprocess.Popen[bytes]], grace: float) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _redacted(url: str) -> str:
    """The URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


main.add_command(sync)
main.add_command(keys)
main.add_command(audit)
main.add_command(outreach)
main.add_command(report)
main.add_command(dashboard)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
