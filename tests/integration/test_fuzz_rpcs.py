"""Every RPC of every Switchboard service answers random and malformed requests with a clean
status, and the servers stay up.

The methods come from the descriptors of the services the real servers serve, so a new RPC
is fuzzed without touching this file (and a service no server serves fails the test). Each
method gets requests drawn by ``tests.support.fuzz`` from its request type, some carrying
ids seeded in the store first, and bodies that are not valid messages at all. A clean answer
is OK or a status a caller can act on; UNKNOWN, INTERNAL, DATA_LOSS, UNIMPLEMENTED and
UNAVAILABLE (nothing is down here) are failures, and so is DEADLINE_EXCEEDED on a unary call:
a request must never hang a handler. Every failure is collected and reported at the end,
each with its method, request, status and, for INTERNAL, the server's exception.

By default the run is small and repeatable (fixed seed, ``DEFAULT_EXAMPLES`` requests per
method). For a bigger run:

    SWITCHBOARD_FUZZ_EXAMPLES=200 SWITCHBOARD_FUZZ_SEED=random \\
        .venv/bin/python -m pytest -p no:cacheprovider tests/integration/test_fuzz_rpcs.py

``SWITCHBOARD_FUZZ_EXAMPLES`` is the number of generated requests per method (half as many
malformed bodies are sent besides); ``SWITCHBOARD_FUZZ_SEED`` is a number, or ``random``
for a fresh seed, which the failure message names so the run can be repeated.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import random
import re
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import grpc
import pytest
import switchboard
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.reports.v1 import reports_pb2, reports_pb2_grpc
from switchboard.routing.v1 import routing_pb2_grpc, widgets_pb2_grpc
from switchboard.segments.v1 import outreach_pb2 as opb
from switchboard.segments.v1 import outreach_pb2_grpc, segments_pb2_grpc

from services.core.server import RunningServer
from tests.integration.conftest import ManualClock
from tests.integration.routing_setup import Desk, create_agent, create_segment, timestamp
from tests.integration.widgets_setup import set_up_team
from tests.support.access import keyed_channel
from tests.support.fuzz import Hints, describe, malformed_bodies, requests, seeds_from

DEFAULT_EXAMPLES = 20
DEFAULT_SEED = 8
# A unary call answers within this, even on a loaded machine, or a handler hangs.
UNARY_TIMEOUT_SECONDS = 60.0
# A stream is read for at most this long or this many messages, then we hang up. The
# deadline is far shorter than any server-side one (5 s between services), so a
# DEADLINE_EXCEEDED on a stream is always ours: a watch with nothing to report stays open.
STREAM_TIMEOUT_SECONDS = 0.3
STREAM_MESSAGES = 3
# Unclean answers kept per method, and kinds of them shown in the report.
FAILURES_STORED = 200
FAILURES_SHOWN = 5

CLEAN = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
ENDED_BY_US = frozenset({grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED})

# Keys worth finding in Struct fields: rule operators and the customer fields rules read.
STRUCT_KEYS = (
    "$and", "$or", "$nor", "$not", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
    "$all", "$size", "$elemMatch", "$exists", "$type", "$regex", "$regexi", "$veq", "$vgt",
    "$inSegment", "$notInSegment", "$withinLast", "$olderThan", "$before", "$after",
    "seats", "plan", "country", "arr", "health_score", "signup_time", "tags",
    "traits.logins_7d", "attributes.contract_type", "field_sources.plan.refresh_time",
)  # fmt: skip


@dataclass
class Target:
    """One RPC and the channel of the server that serves it."""

    method: MethodDescriptor
    channel: grpc.Channel

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def name(self) -> str:
        return f"{self.method.containing_service.name}/{self.method.name}"


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str = ""
    ended_by_us: bool = False
    # The answer of a unary call that succeeded.
    response: Message | None = None


@dataclass
class Findings:
    """Every answer, tallied by method; the unclean ones kept with their request."""

    codes: dict[str, Counter[str]] = field(default_factory=dict)
    # Per method: (status, details, request as text), up to FAILURES_STORED.
    failures: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def record(self, target: Target, request: Message | bytes, outcome: Outcome) -> None:
        self.codes.setdefault(target.name, Counter())[outcome.code.name] += 1
        if outcome.code in CLEAN or (outcome.ended_by_us and outcome.code in ENDED_BY_US):
            return
        kept = self.failures.setdefault(target.name, [])
        if len(kept) < FAILURES_STORED:
            kept.append((outcome.code.name, outcome.details, describe(request)))

    def report(self, causes: dict[str, str]) -> str:
        """Per method, each kind of failure once (an INTERNAL's kind is the server's
        exception), with how often it happened and the first request that caused it."""
        lines: list[str] = []
        for method, kept in sorted(self.failures.items()):
            kinds: dict[str, list[str]] = {}
            for code, details, request in kept:
                error_id = re.search(r"internal error ([0-9a-f]{12})", details)
                cause = causes.get(error_id.group(1), "") if error_id else ""
                kinds.setdefault(f"{code}: {cause or details[:200]}", []).append(request)
            lines.append(f"{method} ({dict(self.codes[method])}):")
            for kind, requests_sent in list(kinds.items())[:FAILURES_SHOWN]:
                lines.append(f"  - x{len(requests_sent)} {kind}\n      request: {requests_sent[0]}")
            if len(kinds) > FAILURES_SHOWN:
                lines.append(f"  - and {len(kinds) - FAILURES_SHOWN} more kinds")
        return "\n".join(lines)


def call(
    target: Target, request: Message | bytes, timeout: float = UNARY_TIMEOUT_SECONDS
) -> Outcome:
    """Send one request (raw bytes as they are) the way any client would, and return how
    it ended."""
    serialize = _raw if isinstance(request, bytes) else _encoded
    parse = GetMessageClass(target.method.output_type).FromString
    try:
        if not target.method.server_streaming:
            rpc = target.channel.unary_unary(
                target.path, request_serializer=serialize, response_deserializer=parse
            )
            return Outcome(grpc.StatusCode.OK, response=rpc(request, timeout=timeout))
        stream = target.channel.unary_stream(
            target.path, request_serializer=serialize, response_deserializer=parse
        )(request, timeout=STREAM_TIMEOUT_SECONDS)
        for received, _ in enumerate(stream, start=1):
            if received >= STREAM_MESSAGES:
                stream.cancel()
                return Outcome(grpc.StatusCode.CANCELLED, ended_by_us=True)
        return Outcome(grpc.StatusCode.OK)
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
        ours = target.method.server_streaming and code in ENDED_BY_US
        return Outcome(code, details, ended_by_us=ours)


def _raw(body: bytes) -> bytes:
    return body


def _encoded(message: Message) -> bytes:
    return message.SerializeToString()


def fuzz(
    target: Target, hints: Hints, findings: Findings, *, examples: int, base_seed: int
) -> None:
    """Call ``target`` with ``examples`` generated requests and half as many malformed bodies."""
    request_type = target.method.input_type
    method_seed = zlib.crc32(f"{base_seed}:{target.path}".encode())
    for strategy, count in (
        (requests(request_type, hints), examples),
        (malformed_bodies(request_type, hints), max(1, examples // 2)),
    ):

        @seed(method_seed)
        @settings(
            max_examples=count,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=False,
        )
        @given(strategy)
        def send(request: Message | bytes) -> None:
            findings.record(target, request, call(target, request))

        send()


def test_every_rpc_answers_bad_input_with_a_clean_status(
    profiles_server: RunningServer,
    segments_server: RunningServer,
    routing_server: RunningServer,
    segments_clock: ManualClock,
    admin_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    servers = [profiles_server, segments_server, routing_server]
    # Every call is an admin's, which may call every RPC: the role matrix is test_access's.
    channels = [keyed_channel(f"127.0.0.1:{server.port}", admin_key) for server in servers]
    try:
        targets = [
            Target(method, channel)
            for server, channel in zip(servers, channels, strict=True)
            for name in server.service_names
            for method in descriptor_pool.Default().FindServiceByName(name).methods
        ]
        assert {t.method.containing_service.full_name for t in targets} == switchboard_services()
        hints = seed_store(channels, targets, segments_clock)
        # Deletions last, so every other method still finds the seeded records.
        targets.sort(key=lambda t: t.method.name.startswith("Delete"))

        base_seed, examples = fuzz_settings()
        findings = Findings()
        with caplog.at_level(logging.ERROR, logger="switchboard.rpc"):
            for target in targets:
                fuzz(target, hints, findings, examples=examples, base_seed=base_seed)

        if findings.failures:
            pytest.fail(
                f"unclean answers (seed {base_seed}, {examples} examples per method; repeat "
                f"with SWITCHBOARD_FUZZ_SEED={base_seed} SWITCHBOARD_FUZZ_EXAMPLES={examples}):\n"
                + findings.report(internal_causes(caplog.records)),
                pytrace=False,
            )
        never_ok = sorted(
            {t.method.containing_service.name for t in targets}
            - {name.split("/")[0] for name, codes in findings.codes.items() if codes["OK"]}
        )
        assert not never_ok, f"services that answered no request with OK: {never_ok}"
        for server, channel in zip(servers, channels, strict=True):
            assert_still_serving(server, channel)
        # Writes and reports still work too: a new segment, and its family's scorecard.
        create_segment(
            segments_pb2_grpc.SegmentServiceStub(channels[1]),
            "after_fuzz",
            {"seats": {"$gte": 1}},
            family="after_fuzz",
        )
        reports_pb2_grpc.ReportServiceStub(channels[2]).GetScorecard(
            reports_pb2.GetScorecardRequest(
                family="after_fuzz", start_time=timestamp(segments_clock.now - timedelta(days=30))
            ),
            timeout=UNARY_TIMEOUT_SECONDS,
        )
    finally:
        for channel in channels:
            channel.close()


# ---- helpers ---------------------------------------------------------------------------------


def fuzz_settings() -> tuple[int, int]:
    """The seed and the number of examples per method, from the environment."""
    wanted = os.environ.get("SWITCHBOARD_FUZZ_SEED", str(DEFAULT_SEED))
    base_seed = random.SystemRandom().randrange(2**32) if wanted == "random" else int(wanted)
    examples = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
    return base_seed, examples


def switchboard_services() -> set[str]:
    """Every service declared in the generated ``switchboard`` packages."""
    names: set[str] = set()
    for module_info in pkgutil.walk_packages(switchboard.__path__, "switchboard."):
        if module_info.name.endswith("_pb2"):
            module = importlib.import_module(module_info.name)
            names.update(s.full_name for s in module.DESCRIPTOR.services_by_name.values())
    return names


def seed_store(channels: list[grpc.Channel], targets: list[Target], clock: ManualClock) -> Hints:
    """A small support desk (widgets_setup's team, an agent holding a conversation, a webhook
    endpoint), and hints naming what it holds so requests reach past "not found": its ids,
    and its records as every List and Get answers an empty request, to start from."""
    profiles_channel, segments_channel, routing_channel = channels
    routing = routing_pb2_grpc.RoutingServiceStub(routing_channel)
    set_up_team(
        routing,
        segments_pb2_grpc.SegmentServiceStub(segments_channel),
        profiles_pb2_grpc.ProfileServiceStub(profiles_channel),
        widgets_pb2_grpc.WidgetServiceStub(routing_channel),
    )
    create_agent(routing, "ada", languages=["en"], online=True)
    desk = Desk(routing, clock)
    desk.route("conv-1", customer_id="acme")
    desk.assign_next("ada")
    desk.route("conv-2", customer_id="globex")
    endpoint = outreach_pb2_grpc.OutreachServiceStub(segments_channel).CreateWebhookEndpoint(
        opb.CreateWebhookEndpointRequest(
            endpoint=opb.WebhookEndpoint(
                endpoint_id="crm_hook", url="http://127.0.0.1:9/hook", enabled=True
            )
        )
    )
    assert endpoint.endpoint.endpoint_id == "crm_hook"
    answers: list[Message] = list(report_requests(clock.now))
    for target in targets:
        if target.method.name.startswith(("List", "Get")) and not target.method.server_streaming:
            request_class = GetMessageClass(target.method.input_type)
            requests_sent = [request_class()]
            if "page_size" in target.method.input_type.fields_by_name:
                requests_sent.append(request_class(page_size=1))  # for a next page token
            # A Get needs an id, so most fail: there is nothing to learn from those.
            answers += [a for r in requests_sent if (a := call(target, r).response) is not None]
    tokens = [
        answer.next_page_token for answer in answers if getattr(answer, "next_page_token", "")
    ]
    segment_ids = ["tier_enterprise", "tier_growth", "tier_starter", "at_risk"]
    return Hints(
        strings={
            "customer_id": ["acme", "bloom", "cleo", "globex"],
            "segment_id": segment_ids,
            "require_segment_id": segment_ids,
            "churn_segment_id": segment_ids,
            "family": ["tier"],
            "system": ["billing"],
            "queue_id": ["senior", "priority", "email"],
            "calendar_id": ["berlin_office"],
            "sla_policy_id": ["enterprise_30m", "growth_2h", "email_24h"],
            "policy_id": ["enterprise_30m", "enterprise_fast", "visitor_email"],
            "escalation_policy_id": ["enterprise_fast", "growth_standard", "at_risk_now"],
            "persona_id": ["detailed", "friendly", "visitor"],
            "agent_id": ["ada"],
            "conversation_id": ["conv-1", "conv-2"],
            "endpoint_id": ["crm_hook"],
            "metric": ["logins"],
            "time_zone": ["Europe/Berlin", "UTC"],
            "language": ["en", "de"],
            "plan": ["enterprise", "growth"],
            "tag": ["vip"],
            "page_token": tokens,
        },
        struct_keys=STRUCT_KEYS,
        anchor=clock.now,
        seeds=seeds_from(answers),
    )


def report_requests(now: datetime) -> list[Message]:
    """A valid request of each report: random ones rarely get family, range and options
    right together, and these reach the figures."""
    month_ago = timestamp(now - timedelta(days=30))
    return [
        reports_pb2.GetScorecardRequest(family="tier", start_time=month_ago),
        reports_pb2.CompareCohortRequest(segment_id="at_risk", start_time=month_ago),
        reports_pb2.GetMigrationMatrixRequest(family="tier", start_time=month_ago),
        reports_pb2.GetSegmentHealthRequest(
            family="tier", start_time=month_ago, time_zone="Europe/Berlin"
        ),
    ]


def assert_still_serving(server: RunningServer, channel: grpc.Channel) -> None:
    """Health answers SERVING for each service, and the first list of each (its main
    resource, which needs no argument) still answers."""
    health = health_pb2_grpc.HealthStub(channel)
    for name in server.service_names:
        answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        for method in descriptor_pool.Default().FindServiceByName(name).methods:
            if method.name.startswith("List") and not method.server_streaming:
                target = Target(method, channel)
                outcome = call(target, GetMessageClass(method.input_type)())
                assert outcome.code == grpc.StatusCode.OK, (target.name, outcome)
                break


def internal_causes(records: list[logging.LogRecord]) -> dict[str, str]:
    """For each logged error id, the exception's first line and the innermost frame of
    Switchboard's code, which is where a fix starts."""
    causes: dict[str, str] = {}
    for record in records:
        if not record.exc_info or not isinstance(record.args, tuple) or not record.args:
            continue
        error_type, error, trace = record.exc_info
        ours = [f for f in traceback.extract_tb(trace) if "/services/" in f.filename]
        where = f" at services/{ours[-1].filename.split('/services/')[-1]}:{ours[-1].lineno}"
        summary = str(error).splitlines()[0] if str(error) else ""
        name = error_type.__name__ if error_type else "?"
        causes[str(record.args[0])] = f"{name}: {summary}{where if ours else ''}"
    return causes
