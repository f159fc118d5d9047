"""Export files: their format, fingerprint, row count and rows.

Rows are numbered from 1 in file order (the CSV header is not a row), and a resumed run
skips rows by that number, so reading must be deterministic: no sorting, no filtering.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import InvalidArgument

_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class FileFingerprint:
    path: Path
    size: int
    sha256: str


def detect_format(path: Path, declared: str = "") -> str:
    """``declared`` when given, else from the extension (.csv, .jsonl, .ndjson)."""
    if declared:
        return declared
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InvalidArgument.field(
            "format", f"cannot tell the format of {path.name}: pass --format csv or jsonl"
        )
    return found


def fingerprint(path: Path) -> FileFingerprint:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
            size += len(block)
    return FileFingerprint(path.resolve(), size, digest.hexdigest())


def count_rows(path: Path, file_format: str) -> int:
    """How many rows ``read_rows`` will yield, counted without parsing values."""
    if file_format == "jsonl":
        with path.open("rb") as stream:
            return sum(1 for line in stream if line.strip())
    with path.open(newline="", encoding="utf-8-sig") as stream:
        return max(0, sum(1 for _ in csv.reader(stream)) - 1)


class UnreadableRow(Exception):
    """A row that is not a record at all (broken JSON); it is rejected, not fatal."""


def read_rows(path: Path, file_format: str, skip: int = 0) -> Iterator[tuple[int, Any]]:
    """``(row_number, row)`` from row ``skip + 1`` on. A row is a dict, or an
    ``UnreadableRow`` saying why the line could not be read."""
    if file_format == "jsonl":
        yield from _jsonl_rows(path, skip)
    else:
        yield from _csv_rows(path, skip)


def _jsonl_rows(path: Path, skip: int) -> Iterator[tuple[int, Any]]:
    number = 0
    with path.open("rb") as stream:
        for line in stream:
            if not line.strip():
                continue
            number += 1
            if number <= skip:
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                yield number, UnreadableRow(f"not a JSON object: {error}")
                continue
            if not isinstance(row, dict):
                yield number, UnreadableRow("not a JSON object")
                continue
            yield number, row


def _csv_rows(path: Path, skip: int) -> Iterator[tuple[int, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None:
            return
        names = [name.strip() for name in header]
        for number, values in enumerate(reader, start=1):
            if number <= skip:
                continue
            if len(values) != len(names):
                yield number, UnreadableRow(f"has {len(values)} columns, the header {len(names)}")
                continue
            yield number, dict(zip(names, values, strict=True))
