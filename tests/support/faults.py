"""Things tests break on purpose: a Redis and a PostgreSQL cluster of their own that stop and
come back on the same port, and a gRPC service that takes calls and never answers them."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psycopg
import redis

from tests.support.stores import free_port


class RestartableRedis:
    """A private redis-server on a fixed free port that keeps nothing on disk: ``stop`` ends
    it (its data is gone, as after a crash of an unpersisted Redis) and ``start`` brings an
    empty one back on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; scripts/test installs it")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = tempfile.mkdtemp(prefix="sb-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            _until(client.ping, (redis.ConnectionError,))
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def restartable_redis(*, started: bool = True) -> Iterator[RestartableRedis]:
    """A ``RestartableRedis``, running unless ``started`` is False; gone afterwards."""
    server = RestartableRedis()
    try:
        if started:
            server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own (``initdb`` in a temporary directory, trust
    authentication, a free port), for faults the shared test server must not suffer."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("PostgreSQL's server binaries are not installed")
        self.bin_dir = Path(found[-1]).parent
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="sb-pg-"))
        self.data_dir = self.workdir / "data"
        # initdb refuses to run as root: the cluster then belongs to the postgres user.
        self.owner = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            account = pwd.getpwnam(self.owner)
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", self.owner, "--auth=trust", "-E", "UTF8"
        )
        options = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, *self._start_flags("start"))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.owner}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is ended at once, as an operator's
        restart does; returns when the server takes connections again."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", *self._start_flags("restart"))

    def close(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "stop", "-m", "immediate", "-w")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _start_flags(self, action: str) -> list[str]:
        # The server's output goes to a log file: were it to inherit pg_ctl's, reading that
        # to its end would wait for the server to stop.
        return ["-l", str(self.workdir / "server.log"), "-w", "-t", "60", action]

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.owner, "--", *command]
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        if done.returncode != 0:
            log = self.workdir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stdout.decode()[-2000:]}\n{tail}")


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres()
    try:
        yield cluster
    finally:
        cluster.close()


class StalledService:
    """A gRPC server that accepts every call to any method and does not answer it until
    ``release``: a downstream service that hangs. ``arrived`` lists the methods called;
    after ``release`` a method answers the bytes ``answers`` holds for it (UNIMPLEMENTED
    for the others). ``time_left`` holds, per arrival, the seconds its caller gave it."""

    def __init__(self, answers: Mapping[str, bytes] = {}) -> None:
        self.answers = dict(answers)
        self.arrived: list[str] = []
        self.time_left: list[float] = []
        self.released = threading.Event()
        self._arrival = threading.Condition()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((_Stall(self),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def wait_for_call(self, method: str, timeout: float = 30, *, count: int = 1) -> None:
        """Block until ``count`` calls to ``method`` (a full name, /package.Service/Method)
        arrived."""
        with self._arrival:
            if not self._arrival.wait_for(lambda: self.arrived.count(method) >= count, timeout):
                raise AssertionError(f"no call {count} to {method} arrived; got {self.arrived}")

    def release(self) -> None:
        self.released.set()

    def hold(self) -> None:
        """Stall the calls that arrive from now on again, until the next ``release``."""
        self.released.clear()

    def stop(self) -> None:
        self.released.set()
        self.server.stop(grace=None)

    def _hold(self, method: str, context: grpc.ServicerContext) -> bytes:
        with self._arrival:
            self.arrived.append(method)
            self.time_left.append(context.time_remaining())
            self._arrival.notify_all()
        while not self.released.wait(0.05):
            if not context.is_active():
                return b""  # the caller gave up; free the thread
        if method not in self.answers:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not answered here")
        return self.answers[method]


class _Stall(grpc.GenericRpcHandler):
    def __init__(self, stalled: StalledService) -> None:
        self.stalled = stalled

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        return grpc.unary_unary_rpc_method_handler(
            lambda _request, context: self.stalled._hold(method, context)
        )


@contextmanager
def stalled_service(answers: Mapping[str, bytes] = {}) -> Iterator[StalledService]:
    stalled = StalledService(answers)
    try:
        yield stalled
    finally:
        stalled.stop()


def _until(attempt: Callable[[], Any], failures: tuple[type[BaseException], ...]) -> None:
    """Call ``attempt`` until it stops raising ``failures``, for up to 30 seconds."""
    deadline = time.monotonic() + 30
    while True:
        try:
            attempt()
            return
        except failures:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
