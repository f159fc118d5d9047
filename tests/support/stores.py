"""Throwaway stores for tests: a migrated database per test, a Redis server per session.

The backend is chosen by SWITCHBOARD_TEST_DATABASE (``sqlite``, the default, or
``postgresql``); PostgreSQL is reached through SWITCHBOARD_TEST_POSTGRES_URL, a URL of an
existing database used only to create and drop the throwaway ones.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

from services.core.db import upgrade_database

DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5432/test"


def backend_under_test() -> str:
    backend = os.environ.get("SWITCHBOARD_TEST_DATABASE", "sqlite")
    if backend not in ("sqlite", "postgresql"):
        raise RuntimeError(f"SWITCHBOARD_TEST_DATABASE={backend!r}: use sqlite or postgresql")
    return backend


def postgres_admin_url() -> str:
    return os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


class DatabaseFactory:
    """Makes migrated databases quickly: migrate a template once, then copy it per test."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.created: list[str] = []
        if backend == "sqlite":
            self.template = workdir / "template.db"
            upgrade_database(f"sqlite:///{self.template}")
        else:
            self.template_name = f"sbtest_{self.run_id}_template"
            self._admin(f'CREATE DATABASE "{self.template_name}"')
            upgrade_database(self._url(self.template_name))

    def new_database(self) -> str:
        if self.backend == "sqlite":
            path = self.workdir / f"{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(self.template, path)
            return f"sqlite:///{path}"
        name = f"sbtest_{self.run_id}_{uuid.uuid4().hex[:8]}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template_name}"')
        self.created.append(name)
        return self._url(name)

    def drop(self, url: str) -> None:
        if self.backend == "postgresql":
            name = make_url(url).database
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        if self.backend == "postgresql":
            for name in [*self.created, self.template_name]:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _url(self, database: str) -> str:
        return make_url(postgres_admin_url()).set(database=database).render_as_string(False)

    def _admin(self, statement: str) -> None:
        with psycopg.connect(postgres_admin_url(), autocommit=True) as connection:
            connection.execute(statement)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server on a free port that keeps nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; scripts/test installs it")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="sb-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
