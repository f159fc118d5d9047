"""``switchboard sync ...``: run billing and CRM imports and read their status."""

from __future__ import annotations

import click


@click.group()
def sync() -> None:
    """Billing and CRM syncs."""
