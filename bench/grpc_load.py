"""gRPC load from h2load, a client that is not Python, and the echo calibration.

A Python load client saturates before a Python server does, so throughput and latency are
measured with h2load (Debian ``nghttp2-client``) in its own process. h2load speaks plain
HTTP/2: a gRPC call is a POST of a prepared body (one length-prefixed message, see
``grpc_frame``) with ``content-type: application/grpc`` and ``te: trailers``.

Switchboard services need an API key on every call: ``check_call`` and ``run_h2load`` send
``authorization: Bearer <api_key>`` when given one (the echo service ignores it, so loading
echo with the same key keeps the request headers the same size).

h2load only sees the HTTP status, and gRPC answers 200 even when the call fails (the
``grpc-status`` trailer carries the code). So every benchmark first proves its prepared body
succeeds with ``check_call`` through a real grpc channel, and ``run_h2load`` refuses a run
whose responses carry no gRPC messages at all.

Run: ``python bench/grpc_load.py --echo [--duration 5] [--body-bytes 200]``: starts
``bench/echo_server.py`` in its own process and loads it at 1, 16 and 64 concurrent calls.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import Message

from services.core.channels import AUTHORIZATION_HEADER

ECHO_SERVER = Path(__file__).resolve().parent / "echo_server.py"
ECHO_METHOD = "/bench.v1.EchoService/Echo"

# One byte "compressed" flag (always 0 here) and a 4-byte big-endian message length.
_FRAME_HEADER = struct.Struct(">BI")
DEFAULT_DURATION_SECONDS = 10.0
# Share of a timed run that calls must keep completing for; a healthy run spans all of it.
_ACTIVE_SHARE = 0.8

_REQUESTS_LINE = re.compile(
    r"^requests: (?P<total>\d+) total, (?P<started>\d+) started, (?P<done>\d+) done, "
    r"(?P<succeeded>\d+) succeeded, (?P<failed>\d+) failed, (?P<errored>\d+) errored, "
    r"(?P<timeout>\d+) timeout",
    re.MULTILINE,
)
_FINISHED_LINE = re.compile(r"^finished in [^,]+, (?P<rate>[\d.]+) req/s", re.MULTILINE)
_TRAFFIC_LINE = re.compile(r"^traffic: .*\((?P<data>\d+)\) data\s*$", re.MULTILINE)


class H2LoadError(RuntimeError):
    """h2load is missing, failed, or produced a run that cannot be trusted."""


class GrpcCallFailed(RuntimeError):
    """A prepared request did not come back OK, so loading it would measure errors."""


@dataclass(frozen=True)
class LoadResult:
    """One h2load run; latencies are over the calls that got an HTTP 2xx answer."""

    concurrency: int
    requests: int
    succeeded: int
    failed: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class _Summary:
    done: int
    succeeded: int
    failed: int
    requests_per_second: float
    data_bytes: int


def grpc_frame(message: Message | bytes) -> bytes:
    """The body of a unary gRPC request: an uncompressed length prefix, then the message."""
    payload = message if isinstance(message, bytes) else message.SerializeToString()
    return _FRAME_HEADER.pack(0, len(payload)) + payload


def unframe(body: bytes) -> bytes:
    """The message inside a body built by ``grpc_frame``; refuses anything else."""
    if len(body) < _FRAME_HEADER.size:
        raise ValueError(f"a gRPC body has a {_FRAME_HEADER.size}-byte prefix; got {len(body)}")
    compressed, length = _FRAME_HEADER.unpack_from(body)
    payload = body[_FRAME_HEADER.size :]
    if compressed != 0 or length != len(payload):
        raise ValueError(
            f"not one uncompressed gRPC frame: flag {compressed}, prefix says {length} bytes, "
            f"{len(payload)} follow"
        )
    return payload


def authorization(api_key: str) -> str:
    """The value of the authorization header that presents ``api_key``."""
    return f"Bearer {api_key}"


def check_call(
    address: str, method: str, body: bytes, *, api_key: str = "", timeout: float = 5.0
) -> bytes:
    """Send the very body h2load will send through a real grpc channel; return the reply.

    ``body`` is the framed request (as passed to ``run_h2load``), so the check also covers
    the framing; ``api_key`` is presented as h2load presents it. Raises ``GrpcCallFailed``
    with the status code and details unless OK.
    """
    payload = unframe(body)
    metadata = ((AUTHORIZATION_HEADER, authorization(api_key)),) if api_key else ()
    with grpc.insecure_channel(address) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        try:
            response: bytes = call(payload, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            code = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            raise GrpcCallFailed(f"{method} at {address} answered {code}: {details}") from error
    return response


def run_h2load(
    *,
    address: str,
    method: str,
    body: bytes,
    concurrency: int,
    requests: int | None = None,
    duration_seconds: float | None = None,
    warmup_seconds: float = 1.0,
    threads: int = 1,
    api_key: str = "",
) -> LoadResult:
    """Load ``method`` at ``address`` with ``concurrency`` calls in flight, one per connection,
    each presenting ``api_key`` when given.

    Measures for ``duration_seconds`` (default 10 s) after ``warmup_seconds``, so every
    concurrency level gets the same time; with ``requests`` instead it sends that many
    calls and has no warm-up. Streams h2load saw fail are counted in the result. A run
    that cannot be trusted raises ``H2LoadError``: h2load missing or failing, nothing
    completed, answers without gRPC messages, or calls that stopped before the window ended.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if requests is not None and duration_seconds is not None:
        raise ValueError("give requests or duration_seconds, not both")
    if requests is None and duration_seconds is None:
        duration_seconds = DEFAULT_DURATION_SECONDS

    with tempfile.TemporaryDirectory(prefix="h2load-") as workdir:
        body_path = Path(workdir, "body")
        log_path = Path(workdir, "requests.tsv")
        body_path.write_bytes(body)
        command = [
            *h2load_command(body_path, api_key),
            f"--clients={concurrency}",
            # h2load refuses more threads than clients.
            f"--threads={max(1, min(threads, concurrency))}",
            f"--log-file={log_path}",
        ]
        if duration_seconds is not None:
            command += [
                f"--duration={_milliseconds(duration_seconds)}",
                f"--warm-up-time={_milliseconds(warmup_seconds)}",
            ]
            time_limit: float | None = warmup_seconds + duration_seconds + 60
        else:
            command.append(f"--requests={requests}")
            time_limit = None
        command.append(grpc_url(address, method))
        try:
            finished = subprocess.run(
                command, capture_output=True, text=True, timeout=time_limit, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise H2LoadError(f"h2load did not finish within {time_limit:.0f} s") from error
        output = finished.stdout + finished.stderr
        if finished.returncode != 0:
            raise H2LoadError(f"h2load exited with {finished.returncode}:\n{output.strip()}")
        summary = _parse_summary(output)
        log = log_path.read_text()
        latencies = _successful_latencies_ms(log)
        active_seconds = _active_seconds(log)

    if summary.done == 0:
        raise H2LoadError(
            f"h2load completed no request to {address}; is a gRPC server listening there?\n"
            + output.strip()
        )
    # A failed gRPC call is a trailers-only HTTP 200 without DATA, while every OK answer
    # carries at least a frame prefix. Warm-up bytes are counted in the total too, so this
    # catches calls failing wholesale, not an occasional failure.
    if summary.succeeded and summary.data_bytes < _FRAME_HEADER.size * summary.succeeded:
        raise H2LoadError(
            f"{summary.succeeded} HTTP 200 answers carried only {summary.data_bytes} bytes of "
            f"gRPC messages: the calls to {method} fail with a grpc-status h2load cannot see; "
            "run check_call with the same body"
        )
    # When the server dies, h2load counts its dropped streams nowhere: the log just ends.
    if duration_seconds is not None and active_seconds < _ACTIVE_SHARE * duration_seconds:
        raise H2LoadError(
            f"calls stopped completing {active_seconds:.2f} s into the {duration_seconds:g} s "
            f"measurement of {method} at {address}; did the server stop?"
        )
    return LoadResult(
        concurrency=concurrency,
        requests=summary.succeeded + summary.failed,
        succeeded=summary.succeeded,
        failed=summary.failed,
        seconds=summary.done / summary.requests_per_second,
        requests_per_second=summary.requests_per_second,
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
    )


def h2load_command(body_path: Path, api_key: str) -> list[str]:
    """h2load posting the gRPC body in ``body_path`` with gRPC's headers, one call in flight
    per connection; the caller adds clients, timing, the log file and the URL."""
    executable = shutil.which("h2load")
    if executable is None:
        raise H2LoadError("h2load is not on PATH; install it with: apt-get install nghttp2-client")
    command = [
        executable,
        f"--data={body_path}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        "--max-concurrent-streams=1",
    ]
    if api_key:
        command.append(f"--header={AUTHORIZATION_HEADER}: {authorization(api_key)}")
    return command


def grpc_url(address: str, method: str) -> str:
    """The URL h2load posts to for ``method`` (``/package.Service/Method``) at ``address``."""
    return f"http://{address}/{method.lstrip('/')}"


def format_table(rows: Sequence[tuple[str, LoadResult]]) -> str:
    """A markdown table of runs, one row per (service, result)."""
    lines = [
        "| service | concurrency | req/s | p50 ms | p99 ms | ok/failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for service, result in rows:
        lines.append(
            f"| {service} | {result.concurrency} | {result.requests_per_second:,.0f} "
            f"| {_milliseconds_cell(result.p50_ms)} | {_milliseconds_cell(result.p99_ms)} "
            f"| {result.succeeded:,}/{result.failed:,} |"
        )
    return "\n".join(lines)


def _milliseconds(seconds: float) -> str:
    # h2load durations are whole numbers with a unit.
    return f"{max(1, round(seconds * 1000))}ms"


def _parse_summary(output: str) -> _Summary:
    requests_line = _REQUESTS_LINE.search(output)
    finished_line = _FINISHED_LINE.search(output)
    traffic_line = _TRAFFIC_LINE.search(output)
    if requests_line is None or finished_line is None or traffic_line is None:
        raise H2LoadError(f"could not read h2load's summary from its output:\n{output.strip()}")
    done = int(requests_line["done"])
    succeeded = int(requests_line["succeeded"])
    # "failed" already includes "errored"; streams abandoned at the end may be in neither.
    failed = max(int(requests_line["failed"]), done - succeeded)
    return _Summary(
        done=done,
        succeeded=succeeded,
        failed=failed,
        requests_per_second=float(finished_line["rate"]),
        data_bytes=int(traffic_line["data"]),
    )


def _successful_latencies_ms(log: str) -> list[float]:
    """Elapsed times of 2xx rows in h2load's log: start µs, HTTP status (-1 failed), elapsed µs."""
    latencies = []
    for line in log.splitlines():
        columns = line.split("\t")
        if len(columns) < 3:
            continue
        try:
            status, elapsed_microseconds = int(columns[1]), int(columns[2])
        except ValueError:
            continue
        if 200 <= status < 300:
            latencies.append(elapsed_microseconds / 1000)
    return sorted(latencies)


def _active_seconds(log: str) -> float:
    """From the first logged start to the last logged completion, in seconds."""
    first_start = last_end = None
    for line in log.splitlines():
        columns = line.split("\t")
        try:
            start, elapsed = int(columns[0]), int(columns[2])
        except (IndexError, ValueError):
            continue
        first_start = start if first_start is None else min(first_start, start)
        last_end = start + elapsed if last_end is None else max(last_end, start + elapsed)
    if first_start is None or last_end is None:
        return 0.0
    return (last_end - first_start) / 1_000_000


def _percentile(sorted_values: Sequence[float], percent: float) -> float:
    """Nearest rank: the smallest value with at least ``percent``% of values at or below it."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(percent / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def _milliseconds_cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


@contextmanager
def echo_server_process(*, ready_timeout: float = 30.0, edge: bool = False) -> Iterator[str]:
    """``bench/echo_server.py`` in its own process on a free port; yields its address, or
    with ``edge`` the address of its asyncio edge.

    It inherits this environment, so ``SWITCHBOARD_GRPC_MAX_WORKERS`` applies to it as it
    does to the service it is compared with.
    """
    environment = {"SWITCHBOARD_LOG_LEVEL": "WARNING", **os.environ}
    server = subprocess.Popen(
        [
            sys.executable,
            str(ECHO_SERVER),
            "--address",
            "127.0.0.1:0",
            *(["--edge", "127.0.0.1:0"] if edge else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert server.stdout is not None
        readable, _, _ = select.select([server.stdout], [], [], ready_timeout)
        port_line = server.stdout.readline().strip().split(" ")[-1] if readable else ""
        if not port_line.isdigit():
            raise RuntimeError(
                f"echo server did not report its port (exit code {server.poll()}, "
                f"said {port_line!r})"
            )
        yield f"127.0.0.1:{port_line}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def calibrate_echo(
    *, concurrencies: Sequence[int], duration_seconds: float, body_bytes: int, threads: int
) -> list[LoadResult]:
    """The echo ceiling at each concurrency, after proving the body echoes back intact."""
    payload = bytes(index % 251 for index in range(body_bytes))
    body = grpc_frame(payload)
    results = []
    with echo_server_process() as address:
        if check_call(address, ECHO_METHOD, body) != payload:
            raise GrpcCallFailed("the echo service did not return the request bytes")
        for concurrency in concurrencies:
            results.append(
                run_h2load(
                    address=address,
                    method=ECHO_METHOD,
                    body=body,
                    concurrency=concurrency,
                    duration_seconds=duration_seconds,
                    threads=threads,
                )
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--echo", action="store_true", help="load the bare echo service (the calibration)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per level")
    parser.add_argument("--body-bytes", type=int, default=200, help="request message size")
    parser.add_argument("--threads", type=int, default=1, help="h2load threads")
    arguments = parser.parse_args()
    if not arguments.echo:
        parser.error("nothing to run: pass --echo for the echo calibration")
    results = calibrate_echo(
        concurrencies=arguments.concurrency,
        duration_seconds=arguments.duration,
        body_bytes=arguments.body_bytes,
        threads=arguments.threads,
    )
    print(
        f"h2load, {arguments.duration:g} s per level after 1 s warm-up, "
        f"{arguments.body_bytes}-byte messages, one call per connection\n"
    )
    print(format_table([("echo", result) for result in results]))
    if any(result.failed for result in results):
        sys.exit("some calls failed; the numbers above are not a valid calibration")


if __name__ == "__main__":
    main()
