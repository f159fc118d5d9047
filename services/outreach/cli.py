"""``switchboard outreach ...``: the delivery log, replays, and a local test receiver."""

from __future__ import annotations

import click


@click.group()
def outreach() -> None:
    """Outreach webhooks."""
