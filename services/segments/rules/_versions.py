"""Version strings for ``$veq``..``$vlte``, compared the way GrowthBook SDKs compare them.

A version is reduced to one string whose plain string order is the version order: the
leading ``v`` and ``+build`` suffix are dropped, it is split on ``.`` and ``-``, a release
without a pre-release tag gets ``~`` appended (``~`` sorts after every letter and digit, so
``1.0.0`` > ``1.0.0-beta``), and numeric parts are left-padded to width 5 so ``" 9" < "10"``.
"""

from __future__ import annotations

import re

from ._js import number_to_string

_STRIP = re.compile(r"^v|\+.*$")
_SEPARATORS = re.compile(r"[-.]")
_PAD_WIDTH = 5


def padded_version(value: object) -> str:
    """Sortable form of a version; anything that is not a version string counts as ``0``."""
    if type(value) is int or type(value) is float:
        value = number_to_string(value)
    if not isinstance(value, str) or not value:
        value = "0"
    parts = _SEPARATORS.split(_STRIP.sub("", value))
    if len(parts) == 3:
        parts.append("~")
    return "-".join(
        part.rjust(_PAD_WIDTH) if part.isdigit() and part.isascii() else part for part in parts
    )
