"""The README's configuration table is the only place users look for settings: every setting
Switchboard reads is in it, with its real default, and it names nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from services.core.settings import Settings

README = Path(__file__).resolve().parents[3] / "README.md"
ROW = re.compile(r"^\| `SWITCHBOARD_([A-Z0-9_]+)` \| ([^|]*) \|", re.MULTILINE)


def documented() -> dict[str, str]:
    return {name.lower(): default.strip() for name, default in ROW.findall(README.read_text())}


def test_every_setting_is_documented_and_nothing_else() -> None:
    assert set(documented()) == set(Settings.model_fields)


def test_documented_defaults_are_the_real_ones() -> None:
    table = documented()
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        shown = table[name]
        if default in ("", None):
            assert shown == "*(empty)*", name
        else:
            assert shown == f"`{default}`", name
