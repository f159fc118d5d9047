"""docker-compose.yml runs only commands the CLI has and sets only variables Settings reads.

There is no Docker engine in CI, so the file is checked against the code it drives: a
renamed command or setting would otherwise only show up as a container that never starts.
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import ValidationError

from services.cli import main
from services.core.settings import Settings
from services.registry import SERVICES

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SERVICES = ("migrate", "profiles", "segments", "routing", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _switchboard_invocations(compose: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """Every argument list given to the ``switchboard`` CLI: image commands (the entrypoint
    is ``switchboard``) and health checks that call it."""
    for name, service in _services(compose).items():
        if service.get("image") == "switchboard:local":
            yield f"{name}.command", [str(arg) for arg in service["command"]]
        test = service.get("healthcheck", {}).get("test")
        if test:
            words = _healthcheck_words(test)
            if words and words[0] == "switchboard":
                yield f"{name}.healthcheck", words[1:]


def _healthcheck_words(test: str | Sequence[str]) -> list[str]:
    if isinstance(test, str):
        return shlex.split(test)
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    return [str(word) for word in test[1:]] if test[0] == "CMD" else []


def _parse_with_cli(args: Sequence[str]) -> click.Command:
    """Resolve ``args`` through the real click group as ``switchboard`` would, without
    running anything; raises ``click.UsageError`` for unknown commands or options."""
    command: click.Command = main
    words = list(args)
    name = "switchboard"
    while isinstance(command, click.Group):
        if not words:
            raise click.UsageError(f"{name!r} needs a subcommand")
        name, *words = words
        if name not in command.commands:
            raise click.UsageError(f"no such command {name!r}")
        command = command.commands[name]
    command.make_context(name, words)
    return command


def test_every_image_service_runs_a_command_the_cli_has(compose: dict[str, Any]) -> None:
    invocations = list(_switchboard_invocations(compose))
    assert {where.split(".")[0] for where, _ in invocations} >= set(IMAGE_SERVICES)
    broken = []
    for where, args in invocations:
        try:
            _parse_with_cli(args)
        except click.ClickException as error:
            broken.append(f"{where}: `switchboard {shlex.join(args)}`: {error.format_message()}")
    assert not broken, "\n".join(broken)


def test_the_resolver_rejects_what_the_cli_rejects() -> None:
    with pytest.raises(click.UsageError):
        _parse_with_cli(["serve", "billing"])
    with pytest.raises(click.UsageError):
        _parse_with_cli(["db", "migrate"])
    with pytest.raises(click.UsageError):
        _parse_with_cli(["health", "--services", "profiles"])
    with pytest.raises(click.UsageError):
        _parse_with_cli(["db"])


def test_the_image_entrypoint_is_the_switchboard_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["switchboard"] == "services.cli:main"
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    assert 'ENTRYPOINT ["switchboard"]' in dockerfile
    assert "FROM python:3.11-slim" in dockerfile


def test_every_switchboard_variable_is_a_valid_setting(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: write environment as a mapping"
        settings = {
            key.removeprefix("SWITCHBOARD_").lower(): value
            for key, value in environment.items()
            if key.startswith("SWITCHBOARD_")
        }
        unknown = sorted(set(settings) - set(Settings.model_fields))
        assert not unknown, f"{name}: Settings has no field for {unknown}"
        try:
            Settings(**settings)
        except ValidationError as error:
            pytest.fail(f"{name}: {error}")


def test_servers_bind_every_interface_and_publish_their_ports(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["serve", name]
        environment = service["environment"]
        address = environment[f"SWITCHBOARD_{name.upper()}_ADDRESS"]
        host, port = address.rsplit(":", 1)
        assert host == "0.0.0.0", f"{name} must listen beyond the container's loopback"
        metrics_port = environment[f"SWITCHBOARD_{name.upper()}_METRICS_PORT"]
        assert f"{port}:{port}" in service["ports"]
        assert f"{metrics_port}:{metrics_port}" in service["ports"]
        assert environment["SWITCHBOARD_METRICS_HOST"] == "0.0.0.0"
    widgets = services["routing"]["environment"]["SWITCHBOARD_WIDGETS_ADDRESS"]
    host, port = widgets.rsplit(":", 1)
    assert host == "0.0.0.0" and f"{port}:{port}" in services["routing"]["ports"]


def test_nothing_starts_before_the_schema_is_migrated(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in IMAGE_SERVICES:
        if name != "migrate":
            depends_on = services[name]["depends_on"]
            assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    for backend in ("postgres", "redis"):
        assert services[backend]["healthcheck"]["test"]


def test_every_process_uses_the_production_backends(compose: dict[str, Any]) -> None:
    for name in IMAGE_SERVICES:
        environment = _services(compose)[name]["environment"]
        assert environment["SWITCHBOARD_DATABASE_URL"] == (
            "postgresql://switchboard:switchboard@postgres:5432/switchboard"
        )
        assert environment["SWITCHBOARD_REDIS_URL"] == "redis://redis:6379/0"
