"""Keys for tests: servers in tests check credentials exactly as ``switchboard serve`` does."""

from __future__ import annotations

import grpc
from sqlalchemy import Engine

from services.access.domain import Role
from services.access.gate import AccessControl
from services.access.keys import KeyStore
from services.core.channels import open_channel
from services.core.server import RunningServer, create_server
from services.core.settings import Settings
from services.registry import SERVICES


def new_key(engine: Engine, role: Role = Role.ADMIN, agent_id: str = "") -> str:
    """A fresh key's token."""
    _key, token = KeyStore(engine).create(f"test {role.value}", role, agent_id)
    return token


def gate(engine: Engine) -> AccessControl:
    return AccessControl.of(engine)


def keyed_channel(address: str, token: str) -> grpc.Channel:
    """A channel presenting ``token`` on every call, with no default deadline."""
    return open_channel(address, Settings(api_key=token), deadline_seconds=None)


def serve_all(engine: Engine, settings: Settings) -> dict[str, RunningServer]:
    """Every Switchboard server on a free port, each wired to the ones before it (profiles
    first) and checking credentials as ``switchboard serve`` does."""
    running: dict[str, RunningServer] = {}
    for name, entry in SERVICES.items():
        running[name] = create_server(
            entry.build(engine, settings), address="127.0.0.1:0", gate=gate(engine), max_workers=4
        )
        settings = settings.model_copy(
            update={f"{name}_address": f"127.0.0.1:{running[name].port}"}
        )
    return running
