"""The reports dashboard in headless Chromium: the figures a support lead reads on the page
are the ReportService's figures, its gaps are the ones the RPC flags, and the page needs
nothing from the internet. Plus the JSON API's answers to bad requests and outages."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from email.message import Message
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from selenium import webdriver
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import Engine
from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.reports.v1 import reports_pb2 as rpb
from switchboard.reports.v1 import reports_pb2_grpc
from switchboard.routing.v1 import routing_pb2 as pb
from switchboard.segments.v1 import segments_pb2 as spb

from services.access.domain import Role
from services.access.keys import KeyStore
from services.core.channels import open_channel
from services.core.settings import Settings
from services.dashboard.server import SESSION_COOKIE, RunningDashboard, create_dashboard
from tests.browser.conftest import BROWSER_TIME_ZONE
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import (
    Desk,
    Profiles,
    Routing,
    Segments,
    action,
    create_agent,
    create_customer,
    create_policy,
    create_queue,
    create_segment,
    create_tier_segments,
    set_rules,
    sla_policy,
)
from tests.support.access import new_key
from tests.support.stores import free_port

ReportStub = reports_pb2_grpc.ReportServiceStub

# ---- the support team of the test ------------------------------------------------------------


@dataclass(frozen=True)
class Handled:
    """One conversation: who wrote in, and how long the first reply and the resolution took."""

    conversation_id: str
    customer_id: str
    first_reply_after: timedelta
    resolved_after: timedelta
    csat: int


# Starter customers wait hours for a first reply and rate it badly; everyone else is served
# within minutes. Targets: first reply within 1 hour, resolution within 8.
HANDLED = (
    Handled("acme-1", "acme", timedelta(minutes=5), timedelta(minutes=40), 5),
    Handled("acme-2", "acme", timedelta(minutes=10), timedelta(hours=1), 5),
    Handled("bloom-1", "bloom", timedelta(minutes=15), timedelta(hours=2), 4),
    Handled("cleo-1", "cleo", timedelta(hours=2), timedelta(hours=10), 2),
    Handled("dune-1", "dune", timedelta(hours=3), timedelta(hours=5), 1),
)


def run_support_desk(
    routing: Routing, segments: Segments, profiles: Profiles, clock: ManualClock, now: datetime
) -> None:
    """Tiers by seats since 40 days ago; five conversations six days ago; Cleo grows from
    Starter to Enterprise two days ago."""
    desk = Desk(routing, clock)
    desk.at(now - timedelta(days=40))
    create_tier_segments(segments)
    create_segment(
        segments, "lifecycle_churned", {"lifecycle_stage": "churned"}, family="lifecycle"
    )
    for customer_id, seats in (("acme", 120), ("bloom", 12), ("cleo", 3), ("dune", 2)):
        create_customer(profiles, customer_id, seats=seats, lifecycle_stage="active")
    recompute(segments)

    create_policy(
        routing,
        sla_policy("standard", first_response=timedelta(hours=1), resolution=timedelta(hours=8)),
    )
    create_queue(routing, "general")
    create_agent(routing, "ana", chats=3, online=True)
    set_rules(routing, [], default=action("general", policy="standard"))

    for index, handled in enumerate(HANDLED):
        routed_at = now - timedelta(days=6) + index * timedelta(hours=12)
        desk.at(routed_at)
        desk.route(handled.conversation_id, customer_id=handled.customer_id)
        desk.at(routed_at + handled.first_reply_after)
        desk.record(handled.conversation_id, pb.CONVERSATION_EVENT_KIND_AGENT_REPLY, agent_id="ana")
        desk.at(routed_at + handled.resolved_after)
        desk.record(handled.conversation_id, pb.CONVERSATION_EVENT_KIND_RESOLVE)
        desk.record(
            handled.conversation_id, pb.CONVERSATION_EVENT_KIND_CSAT, csat_rating=handled.csat
        )

    desk.at(now - timedelta(days=2))
    profiles.UpdateCustomer(
        ppb.UpdateCustomerRequest(
            customer=ppb.Customer(customer_id="cleo", seats=60),
            update_mask=field_mask_pb2.FieldMask(paths=["seats"]),
        )
    )
    recompute(segments)
    desk.at(now)


@pytest.fixture
def support_desk(
    routing: Routing,
    segments: Segments,
    profiles: Profiles,
    segments_clock: ManualClock,
    dashboard_now: datetime,
) -> None:
    run_support_desk(routing, segments, profiles, segments_clock, dashboard_now)


def recompute(segments: Segments) -> None:
    segments.RecomputeMemberships(
        spb.RecomputeMembershipsRequest(scope=spb.RECOMPUTE_SCOPE_CHANGED)
    )


# ---- the page's formatting, restated ---------------------------------------------------------
# The page formats what the API returned and computes nothing. These restate its rules
# (JavaScript's Math.round and toFixed round halves up), so "the same figure" can be checked
# as text.


@dataclass(frozen=True)
class Column:
    field: str
    kind: str
    # The count that must be non-zero for the figure to exist (the page shows "—" else).
    basis: str = ""
    metric: int = rpb.METRIC_UNSPECIFIED


COLUMNS = (
    Column("conversations", "count"),
    Column("customers", "count"),
    Column(
        "first_response_p50_seconds", "duration", "first_responses", rpb.METRIC_FIRST_RESPONSE_P50
    ),
    Column(
        "first_response_p90_seconds", "duration", "first_responses", rpb.METRIC_FIRST_RESPONSE_P90
    ),
    Column("resolution_p50_seconds", "duration", "resolutions", rpb.METRIC_RESOLUTION_P50),
    Column("resolution_p90_seconds", "duration", "resolutions", rpb.METRIC_RESOLUTION_P90),
    Column(
        "first_response_sla_attainment",
        "rate",
        "first_response_sla_decided",
        rpb.METRIC_FIRST_RESPONSE_SLA_ATTAINMENT,
    ),
    Column(
        "resolution_sla_attainment",
        "rate",
        "resolution_sla_decided",
        rpb.METRIC_RESOLUTION_SLA_ATTAINMENT,
    ),
    Column("csat_average", "score", "csat_count", rpb.METRIC_CSAT_AVERAGE),
    Column("bot_containment_rate", "rate", "bot_conversations", rpb.METRIC_BOT_CONTAINMENT_RATE),
    Column("escalation_rate", "rate", "bot_conversations", rpb.METRIC_ESCALATION_RATE),
    Column("reopen_rate", "rate", "conversations", rpb.METRIC_REOPEN_RATE),
    Column(
        "handling_seconds_per_conversation", "duration", "conversations", rpb.METRIC_HANDLING_TIME
    ),
    Column("support_cost_per_customer", "money", "customers", rpb.METRIC_SUPPORT_COST_PER_CUSTOMER),
    Column("retention_rate", "rate", "retention_base", rpb.METRIC_RETENTION_RATE),
)
COLUMN_OF_METRIC = {column.metric: column for column in COLUMNS if column.metric}
BLENDED = "(blended)"
NO_DATA = "—"


def js_round(value: float) -> int:
    return math.floor(value + 0.5)


def to_fixed(value: float, digits: int) -> str:
    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def shown(kind: str, value: float) -> str:
    if kind == "count":
        return str(int(value))
    if kind == "rate":
        return f"{to_fixed(value * 100, 1)}%"
    if kind in ("score", "money"):
        return to_fixed(value, 2)
    if value < 59.5:
        return f"{js_round(value)} s"
    minutes = js_round(value / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def shown_figure(column: Column, figures: rpb.Figures) -> str:
    if column.basis and getattr(figures, column.basis) == 0:
        return NO_DATA
    return shown(column.kind, getattr(figures, column.field))


def shown_gap(gap: rpb.Gap) -> str:
    kind = COLUMN_OF_METRIC[gap.metric].kind
    return (
        f"{to_fixed(gap.relative_gap * 100, 1)}% worse than blended "
        f"({shown(kind, gap.value)} vs {shown(kind, gap.blended)})"
    )


# ---- reading the page ------------------------------------------------------------------------


def page_state(browser: webdriver.Chrome) -> str:
    return browser.find_element("tag name", "body").get_attribute("data-state") or ""


def settled_state(browser: webdriver.Chrome) -> str:
    """The page's state once it has stopped loading: ready, error or signed-out."""
    WebDriverWait(browser, 10).until(lambda driver: page_state(driver) != "loading")
    return page_state(browser)


def sign_in(browser: webdriver.Chrome, api_key: str) -> str:
    """Sign in through the page's form; the state the page settles in."""
    field = browser.find_element("id", "api-key")
    field.clear()
    field.send_keys(api_key)
    browser.find_element("css selector", "#sign-in-form button[type=submit]").click()
    return settled_state(browser)


def open_page(
    browser: webdriver.Chrome, dashboard: RunningDashboard, query: str, api_key: str
) -> None:
    """Open the page on ``query``, signing in with ``api_key`` when it asks."""
    browser.get(f"{dashboard.url}?{query}")
    state = settled_state(browser)
    if state == "signed-out":
        state = sign_in(browser, api_key)
    assert state == "ready", browser.find_element("tag name", "main").text
    # Script errors, failed loads and anything the page's security policy refused.
    problems = [
        entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
    ]
    assert not problems, problems


def read_cells(browser: webdriver.Chrome, selector: str, *keys: str) -> list[dict[str, str]]:
    """Every element matching ``selector`` as its data attributes, text, class and title,
    read in one round trip."""
    script = """
        return [...document.querySelectorAll(arguments[0])].map((node) => ({
          ...node.dataset,
          text: node.textContent,
          class: node.getAttribute("class") || "",
          title: node.querySelector(":scope > title")?.textContent ?? node.title ?? "",
        }));
    """
    cells: list[dict[str, str]] = browser.execute_script(script, selector)
    assert cells, f"nothing on the page matches {selector}"
    for cell in cells:
        assert all(key in cell for key in keys), cell
    return cells


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ---- the page shows the RPC's figures --------------------------------------------------------


@pytest.mark.usefixtures("support_desk")
def test_scorecard_shows_the_rpc_figures_and_highlights_the_starter_gap(
    browser: webdriver.Chrome,
    dashboard: RunningDashboard,
    admin_key: str,
    dashboard_now: datetime,
    reports: ReportStub,
) -> None:
    open_page(browser, dashboard, "family=tier&since=30d", admin_key)

    page_range = browser.find_element("id", "range")
    start, end = dashboard_now - timedelta(days=30), dashboard_now
    assert instant(page_range.get_attribute("data-start") or "") == start
    assert instant(page_range.get_attribute("data-end") or "") == end
    scorecard = reports.GetScorecard(
        rpb.GetScorecardRequest(family="tier", start_time=timestamp(start), end_time=timestamp(end))
    )
    rows = {score.segment_id: score for score in scorecard.segments}
    assert list(rows) == ["tier_enterprise", "tier_growth", "tier_starter"]
    assert scorecard.blended.conversations == len(HANDLED)

    cells = read_cells(browser, "#scorecard td", "segment", "metric")
    on_page = {(cell["segment"], cell["metric"]): cell["text"] for cell in cells}
    expected = {
        (segment_id, column.field): shown_figure(column, score.figures)
        for segment_id, score in rows.items()
        for column in COLUMNS
    } | {(BLENDED, column.field): shown_figure(column, scorecard.blended) for column in COLUMNS}
    assert on_page == expected

    highlighted = {
        (cell["segment"], cell["metric"]): cell["title"]
        for cell in cells
        if "gap" in cell["class"].split()
    }
    flagged = {
        (segment_id, COLUMN_OF_METRIC[gap.metric].field): shown_gap(gap)
        for segment_id, score in rows.items()
        for gap in score.gaps
    }
    assert highlighted == flagged
    # The gap the issue is about is on the page: Starter waits hours and rates it low.
    assert {"first_response_p50_seconds", "csat_average"} <= {
        metric for segment, metric in highlighted if segment == "tier_starter"
    }
    assert on_page["tier_starter", "first_response_p50_seconds"] == "2 h 0 min"
    assert on_page[BLENDED, "first_response_p50_seconds"] == "15 min"

    bars = read_cells(browser, "#attainment-chart rect, #csat-chart rect", "segment", "metric")
    names = {segment_id: score.display_name for segment_id, score in rows.items()}
    names[BLENDED] = "Blended"
    drawn = {(bar["segment"], bar["metric"]): bar["title"].rsplit(": ", 1)[1] for bar in bars}
    charted = {
        "first_response_sla_attainment",
        "resolution_sla_attainment",
        "csat_average",
    }
    assert drawn == {
        key: text for key, text in expected.items() if key[1] in charted and text != NO_DATA
    }
    assert all(bar["title"].startswith(names[bar["segment"]]) for bar in bars)


@pytest.mark.usefixtures("support_desk")
def test_migration_matrix_and_segment_sizes_show_the_rpc_counts(
    browser: webdriver.Chrome,
    dashboard: RunningDashboard,
    admin_key: str,
    dashboard_now: datetime,
    reports: ReportStub,
) -> None:
    open_page(browser, dashboard, "family=tier&since=30d", admin_key)

    start, end = timestamp(dashboard_now - timedelta(days=30)), timestamp(dashboard_now)
    matrix = reports.GetMigrationMatrix(
        rpb.GetMigrationMatrixRequest(family="tier", start_time=start, end_time=end)
    )
    on_page = {
        (cell["from"], cell["to"]): cell["text"]
        for cell in read_cells(browser, "#migration td", "from", "to")
    }
    assert on_page == {
        (cell.from_segment_id, cell.to_segment_id): str(cell.customer_count)
        for cell in matrix.cells
    }
    assert on_page["tier_starter", "tier_enterprise"] == "1"  # Cleo grew
    assert on_page["tier_enterprise", "tier_enterprise"] == "1"  # Acme stayed
    row_order = browser.execute_script(
        "return [...document.querySelectorAll('#migration tbody tr')].map((r) => r.dataset.from)"
    )
    assert row_order == list(matrix.segment_ids)

    health = reports.GetSegmentHealth(
        rpb.GetSegmentHealthRequest(
            family="tier", start_time=start, end_time=end, time_zone=BROWSER_TIME_ZONE
        )
    )
    drawn: dict[str, list[int]] = {}
    for point in read_cells(browser, "#sizes-chart circle", "segment"):
        members = re.fullmatch(r".*: (\d+) members", point["title"])
        assert members, point
        drawn.setdefault(point["segment"], []).append(int(members[1]))
    assert drawn == {sizes.segment_id: list(sizes.members) for sizes in health.sizes}
    assert len(health.day_ends) == 31


def test_choosing_a_range_reloads_the_reports_for_it(
    browser: webdriver.Chrome,
    dashboard: RunningDashboard,
    admin_key: str,
    dashboard_now: datetime,
    segments: Segments,
) -> None:
    create_tier_segments(segments)
    open_page(browser, dashboard, "family=tier&since=30d", admin_key)

    Select(browser.find_element("id", "since")).select_by_value("7d")
    browser.find_element("css selector", "#controls button[type=submit]").click()
    WebDriverWait(browser, 10).until(
        lambda driver: (
            driver.find_element("id", "range").get_attribute("data-start")
            == timestamp(dashboard_now - timedelta(days=7)).ToJsonString()
        )
    )

    assert urlsplit(browser.current_url).query == "family=tier&since=7d"
    assert browser.find_element("tag name", "body").get_attribute("data-state") == "ready"


# ---- no internet -----------------------------------------------------------------------------


class _Sources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.urls.append(found["src"] or "")
        if tag == "link" and found.get("href"):
            self.urls.append(found["href"] or "")


def test_the_page_loads_only_what_the_dashboard_serves(
    browser: webdriver.Chrome, dashboard: RunningDashboard, admin_key: str, segments: Segments
) -> None:
    create_tier_segments(segments)
    with urllib.request.urlopen(dashboard.url, timeout=5) as response:
        index = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    sources = _Sources()
    sources.feed(index)

    assert {"static/dashboard.js", "static/dashboard.css"} <= set(sources.urls)
    for url in sources.urls:
        assert not urlsplit(url).scheme and not urlsplit(url).netloc, url
        with urllib.request.urlopen(urljoin(dashboard.url, url), timeout=5) as asset:
            assert asset.status == 200
    assert "default-src 'self'" in policy

    open_page(browser, dashboard, "family=tier&since=7d", admin_key)
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name)"
    )
    origin = dashboard.url.rstrip("/")
    assert loaded and all(url.startswith(origin + "/") for url in loaded), loaded


# ---- the JSON API's errors -------------------------------------------------------------------


class Visitor:
    """A caller of the dashboard's JSON API without a browser, keeping its session cookie."""

    def __init__(self, dashboard: RunningDashboard) -> None:
        self.url = dashboard.url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        self.headers: Message = Message()

    def call(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(urljoin(self.url, path), data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with self.opener.open(request, timeout=10) as response:
                self.headers = response.headers
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            self.headers = error.headers
            return error.code, json.load(error)

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return self.call("GET", path)

    def sign_in(self, api_key: str) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"api_key": api_key}).encode()
        return self.call("POST", "api/session", body, "application/json")

    def session_token(self) -> str:
        """The token the last answer set in the session cookie."""
        cookie = SimpleCookie(self.headers["Set-Cookie"])
        return cookie[SESSION_COOKIE].value

    def replay(self, path: str, token: str) -> tuple[int, str]:
        """GET ``path`` presenting ``token``, as a client ignoring the cookie's end would."""
        request = urllib.request.Request(urljoin(self.url, path))
        request.add_header("Cookie", f"{SESSION_COOKIE}={token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, ""
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)["error"]["code"]

    def sign_out(self) -> tuple[int, dict[str, Any]]:
        return self.call("DELETE", "api/session")


def error_code(answer: tuple[int, dict[str, Any]]) -> tuple[int, str]:
    status, body = answer
    return status, body.get("error", {}).get("code", "")


def violated_fields(document: dict[str, Any]) -> set[str]:
    return {v["field"] for v in document["error"].get("field_violations", [])}


def test_api_maps_bad_requests_and_report_errors_to_http_statuses(
    dashboard: RunningDashboard, admin_key: str, segments: Segments
) -> None:
    create_tier_segments(segments)
    visitor = Visitor(dashboard)
    assert visitor.sign_in(admin_key)[0] == 200
    api = "api/"

    status, body = visitor.get(api + "scorecard?family=tier&since=30d")
    assert status == 200
    assert [score["segment_id"] for score in body["segments"]] == [
        "tier_enterprise",
        "tier_growth",
        "tier_starter",
    ]

    # Refused by the dashboard: the query string itself is wrong.
    for query, field in (
        ("family=tier&since=forever", "since"),
        ("family=tier&since=0d", "since"),
        ("family=tier&start=yesterday", "start"),
        ("family=tier&start=2025-03-01T00:00:00", "start"),
        ("family=tier&since=7d&start=2025-03-01T00:00:00Z", "since"),
        ("family=tier&colour=red", "colour"),
        ("family=tier&family=lifecycle", "family"),
    ):
        status, body = visitor.get(api + "scorecard?" + query)
        assert (status, body["error"]["code"]) == (400, "INVALID_ARGUMENT"), query
        assert field in violated_fields(body), (query, body)

    # Refused by the ReportService, with its field paths passed on.
    cases = (
        ("scorecard?since=30d", 400, "INVALID_ARGUMENT", "family"),
        (
            "scorecard?family=tier&start=2025-03-02T00:00:00Z&end=2025-03-01T00:00:00Z",
            400,
            "INVALID_ARGUMENT",
            "end_time",
        ),
        (
            "health?family=tier&since=7d&time_zone=Mars/Olympus",
            400,
            "INVALID_ARGUMENT",
            "time_zone",
        ),
        ("migration?family=nonexistent&since=30d", 404, "NOT_FOUND", ""),
    )
    for path, expected_status, code, field in cases:
        status, body = visitor.get(api + path)
        assert (status, body["error"]["code"]) == (expected_status, code), (path, body)
        assert body["error"]["message"], body
        if field:
            assert field in violated_fields(body), (path, body)

    status, body = visitor.get("api/nothing")
    assert status == 404
    assert error_code(visitor.call("POST", api + "scorecard?family=tier", b"")) == (
        405,
        "METHOD_NOT_ALLOWED",
    )
    assert visitor.headers["Allow"] == "GET"


def test_api_answers_503_when_the_report_service_is_down() -> None:
    channel = open_channel(
        f"127.0.0.1:{free_port()}", Settings(), deadline_seconds=2, present_key=False
    )
    running = create_dashboard(ReportStub(channel), host="127.0.0.1", port=0)
    try:
        visitor = Visitor(running)
        # Any key will do: the service that would judge it is down.
        assert visitor.sign_in("sb_unchecked")[0] == 200
        status, body = visitor.get("api/scorecard?family=tier&since=30d")
    finally:
        running.stop()
        channel.close()
    assert (status, body["error"]["code"]) == (503, "UNAVAILABLE")
    assert body["error"]["message"]


# ---- signing in ------------------------------------------------------------------------------


def test_reports_are_read_only_with_the_signed_in_visitors_own_key(
    dashboard: RunningDashboard, engine: Engine, segments: Segments
) -> None:
    create_tier_segments(segments)
    scorecard = "api/scorecard?family=tier&since=30d"
    visitor = Visitor(dashboard)

    assert error_code(visitor.get(scorecard)) == (401, "SIGN_IN_REQUIRED")

    # The report service judges the key: an unknown one is refused, and so is an agent
    # console's (reports are for admins); a refusal ends the session.
    for api_key, refused in (
        ("not-a-key", (401, "UNAUTHENTICATED")),
        (new_key(engine, Role.CONSOLE, agent_id="agent-1"), (403, "PERMISSION_DENIED")),
    ):
        assert visitor.sign_in(api_key)[0] == 200
        token = visitor.session_token()
        assert error_code(visitor.get(scorecard)) == refused
        assert error_code(visitor.get(scorecard)) == (401, "SIGN_IN_REQUIRED")
        assert visitor.replay(scorecard, token) == (401, "SIGN_IN_REQUIRED")

    assert visitor.get("api/session") == (200, {"signed_in": False})
    reader = new_key(engine, Role.ADMIN)
    status, _ = visitor.sign_in(reader)
    cookie, token = visitor.headers["Set-Cookie"], visitor.session_token()
    assert status == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert reader not in cookie
    assert visitor.get("api/session") == (200, {"signed_in": True})
    assert visitor.get(scorecard)[0] == 200

    # Signing out ends the session at once, for whoever holds its token.
    assert visitor.sign_out()[0] == 200
    assert error_code(visitor.get(scorecard)) == (401, "SIGN_IN_REQUIRED")
    assert visitor.replay(scorecard, token) == (401, "SIGN_IN_REQUIRED")

    # A key revoked while its visitor is signed in stops working within the services'
    # refresh interval (a second).
    key, token = KeyStore(engine).create("report reader", Role.ADMIN)
    assert visitor.sign_in(token)[0] == 200
    assert visitor.get(scorecard)[0] == 200
    KeyStore(engine).revoke(key.key_id)
    deadline = time.monotonic() + 5
    while (answer := error_code(visitor.get(scorecard)))[0] == 200:
        assert time.monotonic() < deadline, "the revoked key still reads reports after 5 s"
        time.sleep(0.1)
    assert answer == (401, "UNAUTHENTICATED")
    assert error_code(visitor.get(scorecard)) == (401, "SIGN_IN_REQUIRED")


def test_signing_in_refuses_what_is_not_a_key(dashboard: RunningDashboard) -> None:
    visitor = Visitor(dashboard)
    session = "api/session"

    # Only JSON: a cross-site form cannot send it without the browser asking first.
    form = b"api_key=abc"
    assert error_code(visitor.call("POST", session, form, "application/x-www-form-urlencoded")) == (
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    # Nor anything that could not travel as a gRPC header.
    for body in (
        b"{}",
        b'{"api_key": "  "}',
        b'{"api_key": 7}',
        b"[]",
        '{"api_key": "clé"}'.encode(),
        b'{"api_key": "sb_a\\nb"}',
        b'{"api_key": "sb_a b"}',
    ):
        status, answer = visitor.call("POST", session, body, "application/json")
        assert (status, violated_fields(answer)) == (400, {"api_key"}), body
    for body in (b"{not json", b"\xff\xfe", b"[" * 3000 + b"]" * 1000):
        assert error_code(visitor.call("POST", session, body, "application/json")) == (
            400,
            "INVALID_ARGUMENT",
        ), body[:20]
    huge = json.dumps({"api_key": "k" * 5000}).encode()
    assert error_code(visitor.call("POST", session, huge, "application/json")) == (
        413,
        "REQUEST_ENTITY_TOO_LARGE",
    )
    assert error_code(visitor.call("PUT", session, b"{}", "application/json")) == (
        405,
        "METHOD_NOT_ALLOWED",
    )
    assert visitor.headers["Allow"] == "GET, POST, DELETE"
    # None of these opened a session.
    assert error_code(visitor.get("api/scorecard?family=tier")) == (401, "SIGN_IN_REQUIRED")


def test_the_page_asks_for_a_key_and_says_why_one_was_refused(
    browser: webdriver.Chrome, dashboard: RunningDashboard, engine: Engine, segments: Segments
) -> None:
    create_tier_segments(segments)
    browser.delete_all_cookies()
    browser.get(f"{dashboard.url}?family=tier&since=30d")

    def shown(element_id: str) -> bool:
        return browser.find_element("id", element_id).is_displayed()

    # A first visit gets the form, with nothing to apologise for, and no report.
    assert settled_state(browser) == "signed-out"
    assert shown("sign-in") and not shown("sign-in-error")
    assert not shown("scorecard") and not shown("controls")

    assert sign_in(browser, new_key(engine, Role.CONSOLE, agent_id="agent-1")) == "signed-out"
    assert "PERMISSION_DENIED" in browser.find_element("id", "sign-in-error").text
    assert sign_in(browser, "not-a-key") == "signed-out"
    assert "UNAUTHENTICATED" in browser.find_element("id", "sign-in-error").text

    assert sign_in(browser, new_key(engine, Role.ADMIN)) == "ready"
    assert not shown("sign-in") and shown("scorecard") and shown("sign-out")
    assert browser.find_elements("css selector", "#scorecard tbody tr")
    # The page's scripts cannot read the session, let alone the key.
    assert browser.execute_script("return document.cookie") == ""

    browser.find_element("id", "sign-out").click()
    WebDriverWait(browser, 10).until(lambda driver: page_state(driver) == "signed-out")
    browser.refresh()
    assert settled_state(browser) == "signed-out"
    assert not shown("sign-in-error")
