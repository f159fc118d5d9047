"""A headless Chromium and a dashboard in front of real servers, for the browser tests.

Chromium is part of the test setup (scripts/test installs Debian's ``chromium`` and
``chromium-driver``), so a missing browser fails these tests rather than skipping them: a
skipped browser test would let a broken page through unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from switchboard.reports.v1 import reports_pb2_grpc

from services.core.channels import open_channel
from services.core.server import RunningServer
from services.core.settings import Settings
from services.dashboard.server import RunningDashboard, create_dashboard
from tests.integration import conftest as integration

# The real servers the dashboard reads from, as the integration tests start them.
profiles_server = integration.profiles_server
profiles_channel = integration.profiles_channel
profiles = integration.profiles
segments_clock = integration.segments_clock
segments_server = integration.segments_server
segments = integration.segments
preview_desk_seconds = integration.preview_desk_seconds
routing_server = integration.routing_server
routing = integration.routing
admin_key = integration.admin_key
reports = integration.reports

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Not the machine's zone, so that a page ignoring its browser's zone would show.
BROWSER_TIME_ZONE = "Europe/Berlin"


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: install Debian's chromium and chromium-driver "
            "(scripts/test does, through sb_ensure_chromium)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        # Tests run as root in containers, where Chromium's sandbox cannot start.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,2000",
    ):
        options.add_argument(argument)
    # Kept so that tests can fail on script errors and blocked loads the page would hide.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER), env={**os.environ, "TZ": BROWSER_TIME_ZONE})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(15)
    yield driver
    driver.quit()


@pytest.fixture
def dashboard_now() -> datetime:
    """The dashboard's now: fixed, so that the page's three reports and the test's own RPC
    calls all cover the very same range."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def dashboard(routing_server: RunningServer, dashboard_now: datetime) -> Iterator[RunningDashboard]:
    """A dashboard as ``switchboard dashboard`` runs it: its channel presents no key, so every
    report it shows was read with the key a visitor signed in with."""
    channel = open_channel(
        f"127.0.0.1:{routing_server.port}", Settings(), deadline_seconds=30, present_key=False
    )
    running = create_dashboard(
        reports_pb2_grpc.ReportServiceStub(channel),
        host="127.0.0.1",
        port=0,
        clock=lambda: dashboard_now,
    )
    yield running
    running.stop()
    channel.close()
