"""``switchboard keys ...`` and ``switchboard audit``: API keys and the audit log.

Like ``switchboard db upgrade`` these read and write the store directly: whoever can reach
the store is already an administrator, and the first key has to come from somewhere.
"""

from __future__ import annotations

import click

from services.access.domain import ApiKey, Role
from services.access.keys import MAX_AUDIT_PAGE, KeyStore
from services.core.clock import utc_now
from services.core.db import create_db_engine
from services.core.errors import SwitchboardError
from services.core.settings import Settings
from services.segments.rules import parse_duration


def _store() -> KeyStore:
    return KeyStore(create_db_engine(Settings().effective_database_url))


def _refused(error: SwitchboardError) -> click.ClickException:
    return click.ClickException(error.message)


def _describe(key: ApiKey) -> str:
    state = "revoked" if key.revoke_time else "active"
    agent = f" agent={key.agent_id}" if key.agent_id else ""
    return f"{key.key_id}  {key.role.value:<7} {state:<7} {key.name}{agent}"


@click.group()
def keys() -> None:
    """API keys: every RPC needs one, and each carries one role."""


@keys.command("create")
@click.option("--name", required=True, help="Who or what uses the key.")
@click.option("--role", required=True, type=click.Choice([role.value for role in Role]))
@click.option("--agent", "agent_id", default="", help="The agent a console key acts for.")
def create_key(name: str, role: str, agent_id: str) -> None:
    """Make a key; its secret is printed once and never again."""
    try:
        key, token = _store().create(name, role, agent_id)
    except SwitchboardError as error:
        raise _refused(error) from error
    click.echo(_describe(key))
    click.echo(token)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
def list_keys(include_revoked: bool) -> None:
    """Every key, without its secret."""
    for key in _store().list_keys(include_revoked=include_revoked):
        click.echo(_describe(key))


@keys.command("rotate")
@click.argument("key_id")
def rotate_key(key_id: str) -> None:
    """Give the key a new secret (printed once); the old secret stops working."""
    try:
        key, token = _store().rotate(key_id)
    except SwitchboardError as error:
        raise _refused(error) from error
    click.echo(_describe(key))
    click.echo(token)


@keys.command("revoke")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Stop the key working, everywhere, within SWITCHBOARD_ACCESS_REFRESH_SECONDS."""
    try:
        click.echo(_describe(_store().revoke(key_id)))
    except SwitchboardError as error:
        raise _refused(error) from error


@click.command()
@click.option("--key", "key_id", default="", help="Only this key's entries.")
@click.option("--since", default="", help="Only the last DURATION, e.g. 1h or 7d.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, MAX_AUDIT_PAGE))
def audit(key_id: str, since: str, limit: int) -> None:
    """Writes made through the API and refused attempts, newest first, with their key."""
    window = parse_duration(since) if since else None
    if since and window is None:
        raise click.BadParameter("a duration such as 30m, 12h or 7d", param_hint="--since")
    start = utc_now() - window if window else None
    for entry in _store().audit(key_id=key_id, since=start, limit=limit):
        click.echo(
            f"{entry.time.isoformat(timespec='seconds')}  {entry.key_id}  {entry.role:<7} "
            f"{entry.code:<19} {entry.method}  request={entry.request_id} peer={entry.peer}"
        )
