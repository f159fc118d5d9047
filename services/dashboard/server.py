"""The dashboard's HTTP server: the page, its own scripts and styles, and a JSON API that
passes ReportService answers through unchanged.

The API is a thin translation: query string to request, response to JSON with the proto
field names, gRPC status to HTTP status. Every figure on the page is the RPC's figure, so
the page and ``switchboard report`` can never disagree.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from switchboard.reports.v1 import reports_pb2 as pb
from switchboard.reports.v1 import reports_pb2_grpc

from services.core.clock import Clock, utc_now
from services.core.errors import InvalidArgument
from services.dashboard.query import ReportQuery, parse_report_query

log = logging.getLogger("switchboard.dashboard")

ReportStub = reports_pb2_grpc.ReportServiceStub

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page may load nothing but what this server serves: it has to work with no internet,
# and the policy makes a stray CDN link fail in the browser test instead of in production.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_HTTP_STATUS_OF_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.CONFLICT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.SERVICE_UNAVAILABLE,
}
_RANGE_PARAMETERS = frozenset({"family", "since", "start", "end"})


def http_status_of(code: grpc.StatusCode) -> HTTPStatus:
    """The HTTP status the API answers for a ReportService error; anything not caused by
    the request or by an outage is the report service's fault, hence Bad Gateway."""
    return _HTTP_STATUS_OF_GRPC.get(code, HTTPStatus.BAD_GATEWAY)


@dataclass(frozen=True)
class _Endpoint:
    parameters: frozenset[str]
    call: Callable[[ReportStub, ReportQuery], Message]


class _RangedRequest(Protocol):
    @property
    def start_time(self) -> timestamp_pb2.Timestamp: ...
    @property
    def end_time(self) -> timestamp_pb2.Timestamp: ...


_Ranged = TypeVar("_Ranged", bound=_RangedRequest)


def _in_range(request: _Ranged, query: ReportQuery) -> _Ranged:
    request.start_time.FromDatetime(query.start_time)
    request.end_time.FromDatetime(query.end_time)
    return request


def _scorecard(reports: ReportStub, query: ReportQuery) -> Message:
    request = _in_range(pb.GetScorecardRequest(family=query.family), query)
    return reports.GetScorecard(request)


def _migration(reports: ReportStub, query: ReportQuery) -> Message:
    request = _in_range(pb.GetMigrationMatrixRequest(family=query.family), query)
    return reports.GetMigrationMatrix(request)


def _health(reports: ReportStub, query: ReportQuery) -> Message:
    request = pb.GetSegmentHealthRequest(family=query.family, time_zone=query.time_zone)
    return reports.GetSegmentHealth(_in_range(request, query))


ENDPOINTS: Mapping[str, _Endpoint] = {
    "/api/scorecard": _Endpoint(_RANGE_PARAMETERS, _scorecard),
    "/api/migration": _Endpoint(_RANGE_PARAMETERS, _migration),
    "/api/health": _Endpoint(_RANGE_PARAMETERS | {"time_zone"}, _health),
}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str


def _load_assets() -> dict[str, _Asset]:
    """Every file of the static folder, read once: the server never opens a path taken from
    a URL, so no URL can reach outside the folder."""
    folder = resources.files("services.dashboard").joinpath("static")
    assets: dict[str, _Asset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            assets[entry.name] = _Asset(entry.read_bytes(), _CONTENT_TYPES[suffix])
    return assets


class _DashboardHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        reports: ReportStub,
        clock: Clock,
        assets: Mapping[str, _Asset],
    ) -> None:
        super().__init__(address, _DashboardHandler)
        self.reports = reports
        self.clock = clock
        self.assets = assets


class _DashboardHandler(BaseHTTPRequestHandler):
    server_version = "SwitchboardDashboard/1"

    @property
    def dashboard(self) -> _DashboardHTTPServer:
        return cast(_DashboardHTTPServer, self.server)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send_asset("index.html")
        elif url.path.startswith("/static/"):
            self._send_asset(url.path.removeprefix("/static/"))
        elif url.path in ENDPOINTS:
            self._answer_api(ENDPOINTS[url.path], parse_qs(url.query, keep_blank_values=True))
        else:
            self._send_error(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no such page: {url.path}")

    def _refuse_method(self) -> None:
        self._send_error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "the dashboard is read-only: GET only",
            extra_headers={"Allow": "GET"},
        )

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_method

    def _answer_api(self, endpoint: _Endpoint, parameters: Mapping[str, list[str]]) -> None:
        try:
            query = parse_report_query(
                parameters, allowed=endpoint.parameters, now=self.dashboard.clock()
            )
        except InvalidArgument as error:
            violations = [
                {"field": v.field, "description": v.description} for v in error.violations
            ]
            self._send_error(HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", error.message, violations)
            return
        try:
            response = endpoint.call(self.dashboard.reports, query)
        except grpc.RpcError as error:
            code = error.code()
            self._send_error(
                http_status_of(code), code.name, error.details() or "", _field_violations(error)
            )
            return
        document = json_format.MessageToDict(response, preserving_proto_field_name=True)
        self._send_json(HTTPStatus.OK, document)

    def _send_asset(self, name: str) -> None:
        asset = self.dashboard.assets.get(name)
        if asset is None:
            self._send_error(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no such file: {name}")
            return
        self._send(HTTPStatus.OK, asset.body, asset.content_type)

    def _send_error(
        self,
        status: HTTPStatus,
        code: str,
        message: str,
        violations: list[dict[str, str]] | None = None,
        *,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if violations:
            error["field_violations"] = violations
        self._send_json(status, {"error": error}, extra_headers)

    def _send_json(
        self,
        status: HTTPStatus,
        document: Mapping[str, Any],
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        body = json.dumps(document).encode()
        self._send(status, body, "application/json", extra_headers)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # Reports change with every conversation: a reload must ask again.
        self.send_header("Cache-Control", "no-store")
        for name, value in {**_SECURITY_HEADERS, **(extra_headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


def _field_violations(error: grpc.RpcError) -> list[dict[str, str]]:
    status = rpc_status.from_call(error)
    violations: list[dict[str, str]] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations += [
                {"field": v.field, "description": v.description}
                for v in bad_request.field_violations
            ]
    return violations


@dataclass
class RunningDashboard:
    """A dashboard serving on a thread of its own; ``stop`` closes the socket."""

    host: str
    port: int
    _httpd: _DashboardHTTPServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def create_dashboard(
    reports: ReportStub, *, host: str, port: int, clock: Clock = utc_now
) -> RunningDashboard:
    """Serve the dashboard on ``host:port`` (port 0 picks a free port), reading every figure
    from ``reports``."""
    httpd = _DashboardHTTPServer((host, port), reports, clock, _load_assets())
    thread = threading.Thread(target=httpd.serve_forever, name="dashboard-http", daemon=True)
    thread.start()
    return RunningDashboard(host, httpd.server_address[1], httpd, thread)
