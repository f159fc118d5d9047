"""Every ``buf curl`` example in the README works as printed against real servers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from services.core.server import RunningServer
from services.core.settings import Settings
from services.demo import load_demo, load_routing_demo, load_segment_demo, load_widgets_demo
from tests.support.access import new_key, serve_all

README = Path(__file__).parents[2] / "README.md"
BUF = Path(sys.executable).parent / "buf"


def readme_examples() -> list[str]:
    """Each ``.venv/bin/buf curl`` command of the README, continuation lines joined."""
    commands, current = [], ""
    for line in README.read_text().splitlines():
        if line.startswith(".venv/bin/buf curl") or current:
            current += line.rstrip("\\").strip() + " "
            if not line.endswith("\\"):
                commands.append(current.strip())
                current = ""
    return commands


@pytest.fixture
def servers(engine: Engine, tmp_path: Path) -> Iterator[dict[str, RunningServer]]:
    """Profiles first, so that the others are wired to it and not to a default address.

    As after ``switchboard up``, an admin key waits in ``var/admin.key`` under the working
    directory, and every client (the demo loaders, buf curl) presents it."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "admin.key").write_text(new_key(engine) + "\n")
    running = serve_all(engine, Settings(data_dir=data_dir, api_key=""))
    yield running
    for server in running.values():
        server.stop(grace=1)


@pytest.mark.skipif(shutil.which(str(BUF)) is None, reason="buf comes with the dev extra")
def test_readme_buf_curl_examples_work_as_printed(
    servers: dict[str, RunningServer], tmp_path: Path
) -> None:
    ports = {
        "50051": servers["profiles"].port,
        "50052": servers["segments"].port,
        "50053": servers["routing"].port,
    }
    settings = Settings(
        profiles_address=f"127.0.0.1:{ports['50051']}",
        segments_address=f"127.0.0.1:{ports['50052']}",
        routing_address=f"127.0.0.1:{ports['50053']}",
        data_dir=tmp_path / "var",
    )
    load_demo(settings)  # what `switchboard demo` does, as the README asks first
    load_segment_demo(settings)
    load_routing_demo(settings)
    load_widgets_demo(settings)
    examples = readme_examples()
    assert len(examples) >= 10

    for example in examples:
        command = re.sub(
            r"127\.0\.0\.1:(5005[123])", lambda m: f"127.0.0.1:{ports[m.group(1)]}", example
        ).replace(".venv/bin/buf", str(BUF), 1)
        result = subprocess.run(
            command,
            shell=True,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=tmp_path,
        )
        if "not-an-email" in example or "lots" in example:
            assert result.returncode != 0 and "invalid_argument" in result.stderr + result.stdout
        else:
            assert result.returncode == 0, f"{example}\n{result.stdout}\n{result.stderr}"
