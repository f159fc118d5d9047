"""Switchboard services as production runs them, for benchmarks: throwaway databases and
``python -m services.cli serve NAME`` processes on free ports.

``Databases`` creates fresh databases of one backend (files in a temporary directory for
SQLite, ``bench_<random>`` databases through an admin URL for PostgreSQL), migrates each with
``python -m services.cli db upgrade`` and removes them all at the end. ``running_services``
makes an admin API key in the database (every RPC but health needs one), starts the named
services in their own processes on it, each told where the others listen and presenting the
key when it calls them, and stops them in reverse order. Clients get the key from
``RunningStack.api_key`` or an authenticated channel from ``RunningStack.channel``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.core.db import create_db_engine
from tests.support.access import keyed_channel, new_key

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql://root@127.0.0.1:5432/test"
# In the order they can start: segments reads profiles, routing reads both.
SERVICE_NAMES = ("profiles", "segments", "routing")


class Databases:
    """Creates fresh, migrated databases of one backend and removes them all at the end."""

    def __init__(self, backend: str, admin_url: str) -> None:
        self.backend = backend
        self.admin_url = admin_url
        self.tempdir = tempfile.TemporaryDirectory(prefix="switchboard-bench-")
        self.created: list[str] = []

    def fresh(self) -> str:
        """The SQLAlchemy URL of a new database at the newest schema."""
        name = f"bench_{secrets.token_hex(4)}"
        if self.backend == "sqlite":
            url = f"sqlite:///{Path(self.tempdir.name) / name}.db"
        else:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            url = _with_database(self.admin_url, name)
        migrated = subprocess.run(
            [sys.executable, "-m", "services.cli", "db", "upgrade"],
            env=service_environment(url, self.tempdir.name, api_key=""),
            capture_output=True,
            text=True,
            check=False,
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"db upgrade failed:\n{migrated.stdout}{migrated.stderr}")
        return url

    def drop_all(self) -> None:
        if self.created:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                for name in self.created:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.tempdir.cleanup()


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def is_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def admin_key(database_url: str) -> str:
    """The token of a new admin key in the database at ``database_url``."""
    engine = create_db_engine(database_url)
    try:
        return new_key(engine)
    finally:
        engine.dispose()


def service_environment(database_url: str, data_dir: str, api_key: str) -> dict[str, str]:
    """This process's environment plus what one stack shares: its store, its data directory,
    the API key its processes present to each other, quiet logs and every service's address
    and metrics port (free ports on 127.0.0.1).

    ``SWITCHBOARD_GRPC_MAX_WORKERS`` and the other settings pass through unchanged, so a
    service gets the same server settings as anything else started from this environment.
    """
    environment = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_DATA_DIR": data_dir,
        "SWITCHBOARD_API_KEY": api_key,
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")]),
    }
    for name in SERVICE_NAMES:
        environment[f"SWITCHBOARD_{name.upper()}_ADDRESS"] = f"127.0.0.1:{free_port()}"
        environment[f"SWITCHBOARD_{name.upper()}_METRICS_PORT"] = str(free_port())
    environment["SWITCHBOARD_WIDGETS_ADDRESS"] = f"127.0.0.1:{free_port()}"
    return environment


@dataclass(frozen=True)
class RunningStack:
    """Services serving on one database: where each listens, its Prometheus ``/metrics``
    URL, its process id, and the admin key that every call to them presents."""

    addresses: dict[str, str]
    metrics_urls: dict[str, str]
    pids: dict[str, int]
    api_key: str

    def channel(self, name: str) -> grpc.Channel:
        """A channel to service ``name`` that presents the stack's admin key on every call."""
        return keyed_channel(self.addresses[name], self.api_key)


@contextmanager
def running_services(
    names: Sequence[str],
    *,
    database_url: str,
    data_dir: str,
    ready_timeout: float = 30.0,
    log_dir: Path | None = None,
) -> Iterator[RunningStack]:
    """``python -m services.cli serve NAME`` for each of ``names``, in order, each once SERVING,
    after making the admin key they present to each other (and the bench's clients to them).
    With ``log_dir``, each service's log lines go to ``log_dir/NAME.log``, else to stderr."""
    api_key = admin_key(database_url)
    environment = service_environment(database_url, data_dir, api_key)
    addresses: dict[str, str] = {}
    metrics_urls: dict[str, str] = {}
    pids: dict[str, int] = {}
    with ExitStack() as stack:
        for name in names:
            address = environment[f"SWITCHBOARD_{name.upper()}_ADDRESS"]
            log = log_dir / f"{name}.log" if log_dir else None
            pids[name] = stack.enter_context(
                _serving(name, address, environment, ready_timeout, log)
            )
            addresses[name] = address
            if name == "routing":  # and its widget port
                addresses["widgets"] = environment["SWITCHBOARD_WIDGETS_ADDRESS"]
            metrics_port = environment[f"SWITCHBOARD_{name.upper()}_METRICS_PORT"]
            metrics_urls[name] = f"http://127.0.0.1:{metrics_port}/metrics"
        yield RunningStack(addresses, metrics_urls, pids, api_key)


def stack_environment(stack: RunningStack, database_url: str, data_dir: str) -> dict[str, str]:
    """The environment of a worker or beat joining ``stack``: same store, same addresses,
    same key."""
    environment = service_environment(database_url, data_dir, stack.api_key)
    for name, address in stack.addresses.items():
        environment[f"SWITCHBOARD_{name.upper()}_ADDRESS"] = address
    return environment


@contextmanager
def switchboard_process(
    environment: Mapping[str, str], *args: str, log: Path | None = None
) -> Iterator[int]:
    """``python -m services.cli ARGS`` (a worker, beat) until the block ends; yields its pid.
    Its log lines go to the file ``log`` when given, else to stderr."""
    with ExitStack() as files:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env=dict(environment),
            cwd=ROOT,
            # Celery's banner; its log lines go to stderr.
            stdout=subprocess.DEVNULL,
            stderr=files.enter_context(log.open("ab")) if log else None,
        )
        with _stopped_at_exit(process, timeout=60):
            yield process.pid


@contextmanager
def _stopped_at_exit(process: subprocess.Popen[bytes], *, timeout: float) -> Iterator[None]:
    """SIGTERM at the end of the block, SIGKILL after ``timeout`` seconds."""
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _serving(
    name: str,
    address: str,
    environment: dict[str, str],
    ready_timeout: float,
    log: Path | None,
) -> Iterator[int]:
    with ExitStack() as files:
        server = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", name],
            env=environment,
            stderr=files.enter_context(log.open("ab")) if log else None,
        )
        with _stopped_at_exit(server, timeout=30):
            deadline = time.monotonic() + ready_timeout
            while not is_serving(address):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} server did not start (exit {server.poll()})")
                time.sleep(0.1)
            yield server.pid


def rpc_calls(metrics_url: str) -> Counter[tuple[str, str]]:
    """How many calls the server at ``metrics_url`` has answered, by (method, status code),
    from its ``switchboard_rpc_calls`` counter."""
    counts = counted(metrics_url, "switchboard_rpc_calls", ("method", "code"))
    return Counter({(method, code): count for (method, code), count in counts.items()})


def counted(metrics_url: str, counter: str, labels: Sequence[str]) -> Counter[tuple[str, ...]]:
    """The server's ``counter`` at ``metrics_url``, by the values of ``labels``."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    counts: Counter[tuple[str, ...]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != counter:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[tuple(sample.labels[label] for label in labels)] += int(sample.value)
    return counts
