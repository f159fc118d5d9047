"""The newcomer's walkthrough of the workers, as the README tells it: on the stack that
``switchboard up`` starts with nothing configured, billing and CRM syncs from the CLI move
customers between segments, and a drop in an Enterprise account's logins turns it at-risk
within seconds and sends a signed webhook to a local receiver."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from switchboard.profiles.v1 import profiles_pb2 as ppb
from switchboard.profiles.v1 import profiles_pb2_grpc
from switchboard.segments.v1 import outreach_pb2 as opb
from switchboard.segments.v1 import outreach_pb2_grpc, segments_pb2_grpc
from switchboard.segments.v1 import segments_pb2 as spb

from tests.integration.test_stack import stack_env
from tests.support.access import keyed_channel
from tests.support.processes import RunningCommand
from tests.support.stores import free_port
from tests.support.workers import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "whsec_walkthrough-0123456789"


def switchboard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_syncs_move_customers_and_a_usage_drop_alerts_customer_success(
    tmp_path: Path, database_url: str
) -> None:
    env = stack_env(tmp_path / "var", database_url)
    stack = RunningCommand(["up"], env)
    receiver_port = free_port()
    receiver = RunningCommand(
        ["outreach", "receive", "--port", str(receiver_port), "--secret", SECRET], env
    )
    try:
        stack.wait_for_line("Switchboard is up", timeout=90)
        receiver.wait_for_line("listening", timeout=30)
        demo = switchboard(env, "demo")
        assert demo.returncode == 0, demo.stderr

        # The admin key the first `up` made and kept for this machine's clients.
        admin_key = (tmp_path / "var" / "admin.key").read_text().strip()
        with (
            keyed_channel(env["SWITCHBOARD_PROFILES_ADDRESS"], admin_key) as profiles_channel,
            keyed_channel(env["SWITCHBOARD_SEGMENTS_ADDRESS"], admin_key) as segments_channel,
        ):
            profiles = profiles_pb2_grpc.ProfileServiceStub(profiles_channel)
            segments = segments_pb2_grpc.SegmentServiceStub(segments_channel)
            outreach = outreach_pb2_grpc.OutreachServiceStub(segments_channel)

            def customer_id(billing_id: str) -> str:
                lookup = ppb.ExternalId(system="billing", id=billing_id)
                found = profiles.GetCustomer(ppb.GetCustomerRequest(external_id=lookup))
                return found.customer.customer_id

            def segments_of(billing_id: str) -> set[str]:
                asked = spb.ListMembershipsRequest(customer_id=customer_id(billing_id))
                return {m.segment_id for m in segments.ListMemberships(asked).memberships}

            outreach.CreateWebhookEndpoint(
                opb.CreateWebhookEndpointRequest(
                    endpoint=opb.WebhookEndpoint(
                        endpoint_id="cs-team",
                        url=f"http://127.0.0.1:{receiver_port}/",
                        enabled=True,
                    ),
                    secret=SECRET,
                )
            )
            outreach.CreateOutreachSubscription(
                opb.CreateOutreachSubscriptionRequest(
                    subscription=opb.OutreachSubscription(
                        subscription_id="enterprise-at-risk",
                        segment_id="at_risk",
                        transition=spb.MEMBERSHIP_CHANGE_KIND_ENTERED,
                        endpoint_id="cs-team",
                        require_segment_ids=["tier_enterprise"],
                    )
                )
            )
            assert "tier_growth" in segments_of("cus_hooli")

            billing = switchboard(env, "sync", "run", "billing", str(EXAMPLES / "billing.jsonl"))
            assert billing.returncode == 0, billing.stdout + billing.stderr
            assert "succeeded" in billing.stdout and "1 rejected" in billing.stdout
            wait_for(lambda: "tier_enterprise" in segments_of("cus_hooli"), "Hooli to Enterprise")

            crm = switchboard(env, "sync", "run", "crm", str(EXAMPLES / "crm.csv"))
            assert crm.returncode == 0, crm.stdout + crm.stderr
            wait_for(lambda: "lifecycle_churned" in segments_of("cus_umbrella"), "Umbrella churned")

            hooli = customer_id("cus_hooli")
            # The week before last, Hooli logged in far more than this week: down by 70%.
            before = datetime.now(UTC) - timedelta(days=10)
            drop = ppb.UsageEvent(customer_id=hooli, metric="logins", value=300)
            drop.time.FromDatetime(before)
            profiles.RecordUsageEvents(ppb.RecordUsageEventsRequest(events=[drop]))

            line = receiver.wait_for_line(f"customer={hooli}", timeout=60)
            assert "segment.entered" in line and "segment=at_risk" in line
            assert "tier_enterprise" in line
    finally:
        receiver.stop(signal.SIGINT)
        code = stack.stop(signal.SIGINT)
    assert code == 0, "".join(stack.output)
