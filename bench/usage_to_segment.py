"""From a usage event to the customer's new segment: how long a drop in logins takes to make
an account at-risk, with the stack idle and under a stream of usage events.

Run from a checkout with the virtualenv active (h2load and redis-server on PATH)::

    python bench/usage_to_segment.py [--customers 10000] [--probes 60] [--database postgresql]

Every run works on a throwaway database (``bench/stack.py``) and a throwaway redis-server.
Steps:

1. Start ``serve profiles`` and ``serve segments`` on Redis, create an ``at_risk`` segment
   (logins fell by half week over week) and a seat-tier family, and load the customers plus
   the probe customers (who have no usage yet) with UpsertCustomers.
2. Start beat and one worker for the ``segments`` and ``outreach`` queues with the default
   settings (re-evaluation every ``SWITCHBOARD_REEVALUATE_SECONDS``, 1 s) and wait for the
   first round to place every customer in a tier.
3. Probe: record ten logins in the week before last for a probe customer (this week: none, so
   ``logins_wow_change`` = -1) and poll ListMemberships every 10 ms until the customer is in
   ``at_risk``. Latency = from sending RecordUsageEvents to the first answer that shows it.
   Probes run four at a time, first with nothing else happening, then while h2load sends
   RecordUsageEvents (a login for each of 50 random customers per call) as fast as profiles
   takes them, so every round has changed customers to re-evaluate.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf import struct_pb2, timestamp_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from switchboard.profiles.v1 import profiles_pb2 as ppb  # noqa: E402
from switchboard.profiles.v1 import profiles_pb2_grpc  # noqa: E402
from switchboard.segments.v1 import segments_pb2 as spb  # noqa: E402
from switchboard.segments.v1 import segments_pb2_grpc  # noqa: E402

from bench.grpc_load import LoadResult, _percentile, grpc_frame, run_h2load  # noqa: E402
from bench.stack import (  # noqa: E402
    DEFAULT_ADMIN_URL,
    Databases,
    RunningStack,
    running_services,
    stack_environment,
    switchboard_process,
)
from tests.support.stores import redis_server  # noqa: E402

RECORD_USAGE = "/switchboard.profiles.v1.ProfileService/RecordUsageEvents"
PROBES_IN_FLIGHT = 4
POLL_SECONDS = 0.01


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def create_segments(segments: segments_pb2_grpc.SegmentServiceStub) -> None:
    definitions = [
        ("at_risk", {"traits.logins_wow_change": {"$lte": -0.5}}, "", 0),
        ("tier_enterprise", {"seats": {"$gte": 50}}, "tier", 10),
        ("tier_growth", {"seats": {"$gte": 5, "$lt": 50}}, "tier", 20),
        ("tier_starter", {"seats": {"$lt": 5}}, "tier", 30),
    ]
    for segment_id, rule, family, priority in definitions:
        document = struct_pb2.Struct()
        document.update(rule)
        segment = spb.Segment(
            segment_id=segment_id,
            display_name=segment_id,
            rule=document,
            family=family,
            priority=priority,
            enabled=True,
        )
        segments.CreateSegment(spb.CreateSegmentRequest(segment=segment, actor="bench"))


def load_customers(profiles: profiles_pb2_grpc.ProfileServiceStub, ids: Sequence[str]) -> None:
    rng = random.Random(7)
    for start in range(0, len(ids), 1000):
        batch = [
            ppb.Customer(
                customer_id=customer_id,
                external_ids={"billing": f"cus_{customer_id}"},
                plan="growth",
                seats=rng.choice([2, 12, 80]),
            )
            for customer_id in ids[start : start + 1000]
        ]
        request = ppb.UpsertCustomersRequest(external_id_system="billing", customers=batch)
        profiles.UpsertCustomers(request, timeout=120)


def tier_members(segments: segments_pb2_grpc.SegmentServiceStub) -> int:
    total = 0
    for tier in ("tier_enterprise", "tier_growth", "tier_starter"):
        token = ""
        while True:
            page = segments.ListMemberships(
                spb.ListMembershipsRequest(segment_id=tier, page_size=1000, page_token=token)
            )
            total += len(page.memberships)
            token = page.next_page_token
            if not token:
                break
    return total


def probe(
    profiles: profiles_pb2_grpc.ProfileServiceStub,
    segments: segments_pb2_grpc.SegmentServiceStub,
    customer_id: str,
    timeout: float = 120.0,
) -> float:
    """Seconds from recording a drop in logins to ``at_risk`` membership being visible."""
    before = datetime.now(UTC) - timedelta(days=10)
    events = [
        ppb.UsageEvent(customer_id=customer_id, metric="logins", value=1, time=timestamp(before))
        for _ in range(10)
    ]
    asked = spb.ListMembershipsRequest(customer_id=customer_id, segment_id="at_risk")
    started = time.perf_counter()
    profiles.RecordUsageEvents(ppb.RecordUsageEventsRequest(events=events), timeout=30)
    while time.perf_counter() - started < timeout:
        if segments.ListMemberships(asked, timeout=30).memberships:
            return time.perf_counter() - started
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{customer_id} was not at-risk {timeout:g} s after its drop")


def run_probes(stack: RunningStack, customer_ids: Sequence[str]) -> list[float]:
    with (
        stack.channel("profiles") as profiles_channel,
        stack.channel("segments") as segments_channel,
    ):
        profiles = profiles_pb2_grpc.ProfileServiceStub(profiles_channel)
        segments = segments_pb2_grpc.SegmentServiceStub(segments_channel)
        rng = random.Random(11)

        def one(customer_id: str) -> float:
            # Spread the probes over the re-evaluation period instead of lining them up.
            time.sleep(rng.random())
            return probe(profiles, segments, customer_id)

        with ThreadPoolExecutor(PROBES_IN_FLIGHT) as pool:
            return sorted(pool.map(one, customer_ids))


def usage_stream_body(customer_ids: Sequence[str], rng: random.Random) -> bytes:
    """One RecordUsageEvents call: a login this week for each of 50 random customers (no
    event id, so every call records new events and changes those customers)."""
    now = datetime.now(UTC) - timedelta(hours=1)
    events = [
        ppb.UsageEvent(customer_id=customer_id, metric="logins", value=1, time=timestamp(now))
        for customer_id in rng.sample(list(customer_ids), 50)
    ]
    return grpc_frame(ppb.RecordUsageEventsRequest(events=events))


def describe(name: str, latencies: Sequence[float]) -> str:
    p50, p99 = (_percentile(latencies, p) * 1000 for p in (50, 99))
    return (
        f"  {name:<36} probes {len(latencies):>4}   p50 {p50:>7.0f} ms"
        f"   p99 {p99:>7.0f} ms   max {max(latencies) * 1000:>7.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=60, help="probes per condition")
    parser.add_argument("--load-concurrency", type=int, default=4)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="admin connection that creates and drops the throwaway database",
    )
    args = parser.parse_args()

    population = [f"c{n:07d}" for n in range(args.customers)]
    idle_probes = [f"probe-idle-{n}" for n in range(args.probes)]
    loaded_probes = [f"probe-load-{n}" for n in range(args.probes)]
    databases = Databases(args.database, args.postgres_url)
    try:
        with ExitStack() as running:
            redis_url = running.enter_context(redis_server())
            os.environ["SWITCHBOARD_REDIS_URL"] = redis_url
            database_url = databases.fresh()
            stack = running.enter_context(
                running_services(
                    ("profiles", "segments"),
                    database_url=database_url,
                    data_dir=databases.tempdir.name,
                )
            )
            with (
                stack.channel("profiles") as profiles_channel,
                stack.channel("segments") as segments_channel,
            ):
                profiles = profiles_pb2_grpc.ProfileServiceStub(profiles_channel)
                segments = segments_pb2_grpc.SegmentServiceStub(segments_channel)
                create_segments(segments)
                load_customers(profiles, population + idle_probes + loaded_probes)
                environment = stack_environment(stack, database_url, databases.tempdir.name)
                running.enter_context(switchboard_process(environment, "beat"))
                running.enter_context(
                    switchboard_process(
                        environment, "worker", "--queues=segments,outreach", "--concurrency=2"
                    )
                )
                everyone = len(population) + 2 * args.probes
                started = time.perf_counter()
                while tier_members(segments) < everyone:
                    if time.perf_counter() - started > 600:
                        raise RuntimeError("the first re-evaluation round did not finish")
                    time.sleep(1)
                first_round = time.perf_counter() - started

            idle = run_probes(stack, idle_probes)
            load: list[LoadResult] = []
            body = usage_stream_body(population, random.Random(3))
            stream = threading.Thread(
                target=lambda: load.append(
                    run_h2load(
                        address=stack.addresses["profiles"],
                        method=RECORD_USAGE,
                        body=body,
                        concurrency=args.load_concurrency,
                        duration_seconds=max(30.0, args.probes * 1.0),
                        api_key=stack.api_key,
                    )
                )
            )
            stream.start()
            time.sleep(3)  # past h2load's warm-up
            loaded = run_probes(stack, loaded_probes)
            stream.join()
    finally:
        databases.drop_all()

    usage = load[0]
    print(
        f"{args.database} and Redis: profiles and segments servers, beat, one worker "
        f"(segments and outreach queues, concurrency 2), {os.cpu_count()} CPUs, "
        f"{args.customers:,} customers"
    )
    print(f"  first round (every customer into a tier): {first_round:.1f} s")
    print(describe("idle", idle))
    print(describe("under a usage stream", loaded))
    print(
        f"  usage stream: RecordUsageEvents x {usage.requests:,} at concurrency "
        f"{usage.concurrency}, {usage.requests_per_second:,.0f} calls/s = "
        f"{usage.requests_per_second * 50:,.0f} events/s, p99 {usage.p99_ms:.1f} ms, "
        f"{usage.failed} failed"
    )


if __name__ == "__main__":
    main()
