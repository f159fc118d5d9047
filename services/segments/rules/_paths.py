"""JSON paths into a rule document (``$.$and[1].seats.$gt``), for violations and explanations."""

from __future__ import annotations

import json
import re

_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")


def child_path(parent: str, key: str) -> str:
    """``$.seats``; keys that are not plain names, like ``traits.logins``, use ``['...']``."""
    if _PLAIN_KEY.match(key):
        return f"{parent}.{key}"
    # json.dumps gives correct escaping; JSONPath accepts double-quoted bracket keys.
    return f"{parent}[{json.dumps(key)}]"


def index_path(parent: str, index: int) -> str:
    """``$.$and[1]``."""
    return f"{parent}[{index}]"
