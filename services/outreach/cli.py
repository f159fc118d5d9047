"""``switchboard outreach ...``: the delivery log, replays, and a local test receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click
from switchboard.segments.v1 import outreach_pb2 as pb
from switchboard.segments.v1 import outreach_pb2_grpc

from services.cli_support import call_rpc, connected
from services.core.clock import utc_now
from services.core.settings import Settings
from services.outreach.signing import DEFAULT_TOLERANCE, SIGNATURE_HEADER, verify

_STATUS_CHOICES = {
    "pending": pb.DELIVERY_STATUS_PENDING,
    "delivered": pb.DELIVERY_STATUS_DELIVERED,
    "dead": pb.DELIVERY_STATUS_DEAD,
}
_STATUS_NAMES = {value: name for name, value in _STATUS_CHOICES.items()}


@click.group()
def outreach() -> None:
    """Outreach webhooks."""


def _service() -> AbstractContextManager[outreach_pb2_grpc.OutreachServiceStub]:
    settings = Settings()
    return connected(
        outreach_pb2_grpc.OutreachServiceStub,
        settings.segments_address,
        settings,
        settings.call_deadline_seconds,
    )


@outreach.command()
@click.option("--status", type=click.Choice(sorted(_STATUS_CHOICES)), help="Only this status.")
@click.option("--customer", default="", help="Only deliveries about this customer.")
@click.option("--endpoint", default="", help="Only deliveries to this endpoint.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def deliveries(status: str | None, customer: str, endpoint: str, limit: int) -> None:
    """List webhook deliveries, newest first (through the segments server)."""
    request = pb.ListDeliveriesRequest(
        status=_STATUS_CHOICES[status] if status else pb.DELIVERY_STATUS_UNSPECIFIED,
        customer_id=customer,
        endpoint_id=endpoint,
        page_size=limit,
    )
    with _service() as service:
        found = call_rpc(lambda: service.ListDeliveries(request)).deliveries
    if not found:
        click.echo("no deliveries")
        return
    for delivery in found:
        click.echo(_describe(delivery))


def _describe(delivery: pb.Delivery) -> str:
    status = _STATUS_NAMES.get(delivery.status, "unknown")
    line = (
        f"{delivery.delivery_id}  {status:<9} {delivery.event_type:<16} "
        f"customer={delivery.customer_id or '-'} endpoint={delivery.endpoint_id} "
        f"attempts={delivery.attempt_count}"
    )
    if delivery.last_status_code or delivery.last_error:
        line += f" last={delivery.last_error or delivery.last_status_code}"
    if delivery.status == pb.DELIVERY_STATUS_PENDING:
        line += f" next={delivery.next_attempt_time.ToJsonString()}"
    return line


@outreach.command()
@click.argument("delivery_id")
def replay(delivery_id: str) -> None:
    """Send a dead or delivered webhook again, with the same idempotency key."""
    with _service() as service:
        replayed = call_rpc(
            lambda: service.ReplayDelivery(pb.ReplayDeliveryRequest(delivery_id=delivery_id))
        ).delivery
    click.echo(f"replaying {replayed.delivery_id}: pending, sent within seconds")


@outreach.command()
@click.option("--port", default=8099, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--secret",
    envvar="SWITCHBOARD_OUTREACH_RECEIVER_SECRET",
    required=True,
    help="The endpoint's signing secret (or SWITCHBOARD_OUTREACH_RECEIVER_SECRET).",
)
def receive(port: int, host: str, secret: str) -> None:
    """A local webhook receiver for trying outreach: checks each signature (401 when it
    does not verify), drops repeated idempotency keys and prints one line per webhook."""
    server = receiver(host, port, secret, click.echo)
    click.echo(f"listening on http://{host}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def receiver(host: str, port: int, secret: str, say: Callable[[str], None]) -> ThreadingHTTPServer:
    """The receiver ``receive`` runs, bound but not yet serving."""
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            header = self.headers.get(SIGNATURE_HEADER, "")
            if not verify(secret, body, header, utc_now(), DEFAULT_TOLERANCE):
                say(f"refused: bad signature ({len(body)} bytes)")
                self._answer(401, {"error": "bad signature"})
                return
            key = self.headers.get("Idempotency-Key", "")
            with lock:
                repeated = key in seen
                seen.add(key)
            if repeated:
                say(f"duplicate {key}: dropped")
            else:
                say(_summary(self.headers.get("Switchboard-Event", ""), body, key))
            self._answer(200, {"received": key})

        def _answer(self, code: int, document: dict[str, Any]) -> None:
            encoded = json.dumps(document).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, *_args: Any) -> None:
            """One line per webhook is printed by ``do_POST``; no access log."""

    return ThreadingHTTPServer((host, port), Handler)


def _summary(event: str, body: bytes, key: str) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return f"{event} (body is not JSON) key={key}"
    segments = ",".join(payload.get("segments") or []) or "-"
    return (
        f"{event} customer={payload.get('customer_id') or '-'} "
        f"segment={payload.get('segment_id') or '-'} segments={segments} "
        f"reason={payload.get('trigger') or '-'} key={key}"
    )
