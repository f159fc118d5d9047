"""Real Celery workers on a real Redis, started the way a user starts them, for tests of
tasks (never eager mode: a task that only works in-process is not tested by one)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import redis

from services.core.settings import Settings
from tests.support.processes import RunningCommand

T = TypeVar("T")


def fresh_redis_database(redis_url: str, database: int) -> Iterator[str]:
    """The session's Redis on database ``database``, emptied before and after use."""
    url = redis_url.rsplit("/", 1)[0] + f"/{database}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def worker_environment(
    data_dir: Path,
    database_url: str,
    redis_url: str,
    addresses: Mapping[str, int] = {},
    api_key: str = "",
) -> dict[str, str]:
    """Environment for ``switchboard worker``/``beat``: ``addresses`` maps a service name
    (profiles, segments, routing) to the port its test server listens on, and ``api_key``
    is what the worker presents to them."""
    env = {
        "SWITCHBOARD_DATA_DIR": str(data_dir),
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_API_KEY": api_key,
    }
    for service, port in addresses.items():
        env[f"SWITCHBOARD_{service.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    return env


@contextmanager
def running_worker(
    env: Mapping[str, str], *args: str, concurrency: int = 1
) -> Iterator[RunningCommand]:
    """``switchboard worker`` with ``args``, ready to take tasks; stopped with SIGTERM."""
    process = RunningCommand(["worker", f"--concurrency={concurrency}", *args], env)
    try:
        process.wait_for_line("ready", timeout=60)
        yield process
    finally:
        process.stop(signal.SIGTERM, timeout=60)


def settings_of(env: Mapping[str, str]) -> Settings:
    """The settings a process started with ``env`` reads."""
    return Settings(
        data_dir=Path(env["SWITCHBOARD_DATA_DIR"]),
        database_url=env["SWITCHBOARD_DATABASE_URL"],
        redis_url=env["SWITCHBOARD_REDIS_URL"],
    )


def wait_for(check: Callable[[], T], what: str, timeout: float = 30) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
