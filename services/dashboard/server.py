"""The dashboard's HTTP server: the page, its own scripts and styles, and a JSON API that
passes ReportService answers through unchanged.

The API is a thin translation: query string to request, response to JSON with the proto
field names, gRPC status to HTTP status. Every figure on the page is the RPC's figure, so
the page and ``switchboard report`` can never disagree.

Reports need a signed-in visitor: ``POST /api/session`` with an API key opens a session
(``sessions.py``), and every report call presents that key, never the dashboard's own, so
the report service decides who may read what.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
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

from services.core.channels import AUTHORIZATION_HEADER
from services.core.clock import Clock, utc_now
from services.core.errors import InvalidArgument
from services.dashboard.query import ReportQuery, parse_report_query
from services.dashboard.sessions import Sessions

log = logging.getLogger("switchboard.dashboard")

ReportStub = reports_pb2_grpc.ReportServiceStub
Metadata = tuple[tuple[str, str], ...]

SESSION_PATH = "/api/session"
SESSION_COOKIE = "switchboard_session"
# Scripts cannot read it, and no other site's page can make the browser send it.
_COOKIE_ATTRIBUTES = "Path=/; HttpOnly; SameSite=Strict"
# A sign-in body is one key; anything much longer is not one.
MAX_SIGN_IN_BYTES = 4096

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
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
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
    call: Callable[[ReportStub, ReportQuery, Metadata], Message]


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


def _scorecard(reports: ReportStub, query: ReportQuery, metadata: Metadata) -> Message:
    request = _in_range(pb.GetScorecardRequest(family=query.family), query)
    return reports.GetScorecard(request, metadata=metadata)


def _migration(reports: ReportStub, query: ReportQuery, metadata: Metadata) -> Message:
    request = _in_range(pb.GetMigrationMatrixRequest(family=query.family), query)
    return reports.GetMigrationMatrix(request, metadata=metadata)


def _health(reports: ReportStub, query: ReportQuery, metadata: Metadata) -> Message:
    request = pb.GetSegmentHealthRequest(family=query.family, time_zone=query.time_zone)
    return reports.GetSegmentHealth(_in_range(request, query), metadata=metadata)


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
        sessions: Sessions,
    ) -> None:
        super().__init__(address, _DashboardHandler)
        self.reports = reports
        self.clock = clock
        self.assets = assets
        self.sessions = sessions


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
            api_key = self._signed_in_key()
            if api_key is not None:
                parameters = parse_qs(url.query, keep_blank_values=True)
                self._answer_api(ENDPOINTS[url.path], parameters, api_key)
        elif url.path == SESSION_PATH:
            token = self._session_token()
            signed_in = bool(token) and self.dashboard.sessions.api_key(token) is not None
            self._send_json(HTTPStatus.OK, {"signed_in": signed_in})
        else:
            self._send_error(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no such page: {url.path}")

    def do_POST(self) -> None:
        if urlsplit(self.path).path == SESSION_PATH:
            self._sign_in()
        else:
            self._refuse_method()

    def do_DELETE(self) -> None:
        if urlsplit(self.path).path == SESSION_PATH:
            self._close_session()
            self._send_json(HTTPStatus.OK, {"signed_in": False}, _FORGET_SESSION)
        else:
            self._refuse_method()

    def _refuse_method(self) -> None:
        if urlsplit(self.path).path == SESSION_PATH:
            allowed, message = "GET, POST, DELETE", "sign in with POST, sign out with DELETE"
        else:
            allowed, message = "GET", "the dashboard is read-only: GET only"
        self._send_error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            message,
            extra_headers={"Allow": allowed},
        )

    do_PUT = do_PATCH = _refuse_method

    # ---- sessions

    def _session_token(self) -> str:
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(self.headers.get("Cookie", ""))
        except CookieError:
            return ""
        morsel = cookies.get(SESSION_COOKIE)
        return morsel.value if morsel is not None else ""

    def _signed_in_key(self) -> str | None:
        """The visitor's API key; None once a 401 asking them to sign in has been sent."""
        token = self._session_token()
        api_key = self.dashboard.sessions.api_key(token) if token else None
        if api_key is None:
            self._send_error(
                HTTPStatus.UNAUTHORIZED,
                "SIGN_IN_REQUIRED",
                "sign in with an admin API key to read reports",
                extra_headers=_FORGET_SESSION if token else None,
            )
        return api_key

    def _close_session(self) -> None:
        token = self._session_token()
        if token:
            self.dashboard.sessions.close(token)

    def _sign_in(self) -> None:
        """Open a session for the key in the JSON body. The key is checked by the report
        service on the first report call, which ends the session if it is refused."""
        if self.headers.get_content_type() != "application/json":
            self._send_error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                'send the key as JSON: {"api_key": "..."}',
            )
            return
        try:
            size = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send_error(HTTPStatus.LENGTH_REQUIRED, "LENGTH_REQUIRED", "no Content-Length")
            return
        if not 0 <= size <= MAX_SIGN_IN_BYTES:
            self._send_error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "REQUEST_ENTITY_TOO_LARGE",
                f"a sign-in body is at most {MAX_SIGN_IN_BYTES} bytes",
            )
            return
        try:
            document = json.loads(self.rfile.read(size))
        except (ValueError, RecursionError):
            self._send_error(HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", "the body is not JSON")
            return
        api_key = document.get("api_key") if isinstance(document, dict) else None
        problem = _api_key_problem(api_key)
        if problem:
            violation = {"field": "api_key", "description": problem}
            self._send_error(HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", problem, [violation])
            return
        assert isinstance(api_key, str)
        self._close_session()
        token = self.dashboard.sessions.open(api_key.strip())
        cookie = {"Set-Cookie": f"{SESSION_COOKIE}={token}; {_COOKIE_ATTRIBUTES}"}
        self._send_json(HTTPStatus.OK, {"signed_in": True}, cookie)

    # ---- reports

    def _answer_api(
        self, endpoint: _Endpoint, parameters: Mapping[str, list[str]], api_key: str
    ) -> None:
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
            response = endpoint.call(
                self.dashboard.reports, query, ((AUTHORIZATION_HEADER, f"Bearer {api_key}"),)
            )
        except grpc.RpcError as error:
            code = error.code()
            refused = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            if refused:
                # A key the service refuses (unknown, revoked, or of a role that may not read
                # reports) ends the session: the page asks for another key.
                self._close_session()
            self._send_error(
                http_status_of(code),
                code.name,
                error.details() or "",
                _field_violations(error),
                extra_headers=_FORGET_SESSION if refused else None,
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


def _api_key_problem(api_key: object) -> str:
    """Why ``api_key`` cannot be a key (it must travel in a gRPC header); empty if it can."""
    if not isinstance(api_key, str) or not api_key.strip():
        return "give the API key to sign in with"
    if not all("!" <= character <= "~" for character in api_key.strip()):
        return "an API key is printable ASCII without spaces"
    return ""


_FORGET_SESSION = {"Set-Cookie": f"{SESSION_COOKIE}=; Max-Age=0; {_COOKIE_ATTRIBUTES}"}


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
    from ``reports`` with the signed-in visitor's key. The channel behind ``reports``
    should present no key of its own."""
    httpd = _DashboardHTTPServer((host, port), reports, clock, _load_assets(), Sessions())
    thread = threading.Thread(target=httpd.serve_forever, name="dashboard-http", daemon=True)
    thread.start()
    return RunningDashboard(host, httpd.server_address[1], httpd, thread)
