"""Connectors declared as data: which profile field each source field feeds, and how.

A connector is a TOML or JSON document (the built-ins live in ``connectors/*.toml``), so a
new source is configuration, not code. ``map_row`` turns one row of an export into the
values to write, or into reasons for rejecting it.

Ownership: a connector lists the fields it ``owns``. Loading a connector that maps a field
another known source owns is refused (rather than skipping the field with a warning), so a
mistake in a mapping file is found before any customer is written.

Pure: no I/O beyond reading the declaration file, no clock, no SQL.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.core.errors import FieldViolation, InvalidArgument
from services.profiles.domain import SCALAR_FIELDS, SyncRecord, SyncRejection
from services.profiles.logic import EXTERNAL_SYSTEM_PATTERN, normalize_values, validate_values

CONNECTORS_DIR = Path(__file__).with_name("connectors")
FORMATS = ("csv", "jsonl")
FIELD_TYPES = ("text", "integer", "number", "timestamp", "enum")
# Billing intervals as periods per year, for ``per_interval``: a monthly price times 12.
PERIODS_PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}

# The type a profile column accepts; ``attributes.*`` take any type.
_TARGET_TYPES: dict[str, tuple[str, ...]] = {
    **{name: ("text", "enum") for name in SCALAR_FIELDS},
    "seats": ("integer",),
    "employee_count": ("integer",),
    "nps": ("integer",),
    "arr": ("number", "integer"),
    "annual_revenue": ("number", "integer"),
    "health_score": ("number", "integer"),
    "signup_time": ("timestamp",),
}
ATTRIBUTE_PREFIX = "attributes."


@dataclass(frozen=True)
class FieldMapping:
    """How one profile field (``target``) is read from a source row."""

    target: str
    path: str
    type: str = "text"
    values: Mapping[str, str] = field(default_factory=dict)
    """For ``enum``: source value -> stored value; anything else is rejected."""
    scale: float | None = None
    """Multiply the number by this (0.01 turns cents into major units)."""
    multiply_by: str = ""
    """Path of another number to multiply by (price per seat times quantity)."""
    per_interval: str = ""
    """Path of a billing interval (day/week/month/year): the amount becomes per year."""


@dataclass(frozen=True)
class Connector:
    """A declared source: the external-id system keying its rows, the ids of other systems
    its rows carry (used to find a customer the key does not know yet), and its fields."""

    source: str
    key_system: str
    key_path: str
    fields: tuple[FieldMapping, ...]
    owns: frozenset[str] = frozenset()
    links: Mapping[str, str] = field(default_factory=dict)
    """Other systems' ids carried by a row: system -> path."""
    formats: tuple[str, ...] = FORMATS
    description: str = ""

    def to_document(self) -> dict[str, Any]:
        """The declaration as JSON, stored with a run so a resumed run maps rows the same."""
        document = asdict(self)
        document["owns"] = sorted(self.owns)
        # A list, not a table: PostgreSQL's JSONB reorders object keys, and rows are
        # mapped (and their rejection reasons listed) in declaration order.
        document["fields"] = [
            {k: v for k, v in asdict(mapping).items() if v} for mapping in self.fields
        ]
        document["key"] = {"system": document.pop("key_system"), "path": document.pop("key_path")}
        document["formats"] = list(self.formats)
        return document


# ---- loading -------------------------------------------------------------------------------


def builtin_connector_names() -> list[str]:
    return sorted(path.stem for path in CONNECTORS_DIR.glob("*.toml"))


def load_connector(source: str, mapping_file: Path | None = None) -> Connector:
    """The connector for ``source``: the built-in one, or the declaration in
    ``mapping_file``, which must name the same source. Checked against every built-in
    connector's ownership."""
    if mapping_file is None:
        path = CONNECTORS_DIR / f"{source}.toml"
        if not path.is_file():
            raise InvalidArgument.field(
                "source",
                f"no built-in connector {source!r} (built-in: "
                f"{', '.join(builtin_connector_names())}); give one with --mapping FILE",
            )
        connector = connector_from_document(read_declaration(path))
    else:
        connector = connector_from_document(read_declaration(mapping_file))
        if connector.source != source:
            raise InvalidArgument.field(
                "source",
                f"{mapping_file} declares source {connector.source!r}, not {source!r}",
            )
    others = [
        connector_from_document(read_declaration(CONNECTORS_DIR / f"{name}.toml"))
        for name in builtin_connector_names()
        if name != connector.source
    ]
    check_ownership(connector, others)
    return connector


def read_declaration(path: Path) -> dict[str, Any]:
    """A TOML (``.toml``) or JSON (anything else) declaration file as a dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidArgument.field("mapping", f"cannot read {path}: {error.strerror}") from error
    try:
        document = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument.field("mapping", f"{path} is not valid: {error}") from error
    if not isinstance(document, dict):
        raise InvalidArgument.field("mapping", f"{path} must hold an object")
    return document


def connector_from_document(document: Mapping[str, Any]) -> Connector:
    """A connector from its declaration, or InvalidArgument naming every problem."""
    problems: list[FieldViolation] = []

    def bad(where: str, why: str) -> None:
        problems.append(FieldViolation(where, why))

    source = document.get("source")
    if not isinstance(source, str) or not EXTERNAL_SYSTEM_PATTERN.match(source):
        bad("source", "required: 1-32 lowercase letters, digits, '_' or '-'")
        source = ""
    key = document.get("key")
    key_system = key_path = ""
    if not isinstance(key, Mapping):
        bad("key", 'required: {system = "...", path = "..."}')
    else:
        key_system, key_path = str(key.get("system", "")), str(key.get("path", ""))
        if not EXTERNAL_SYSTEM_PATTERN.match(key_system):
            bad("key.system", "an external id system: 1-32 lowercase letters, digits, '_', '-'")
        if not key_path:
            bad("key.path", "required: the source field holding the id")
    formats = tuple(document.get("formats", FORMATS))
    for name in formats:
        if name not in FORMATS:
            bad("formats", f"{name!r} is not one of {', '.join(FORMATS)}")
    links = document.get("links", {})
    if not isinstance(links, Mapping) or not all(
        EXTERNAL_SYSTEM_PATTERN.match(str(system)) and isinstance(path, str) and path
        for system, path in links.items()
    ):
        bad("links", "a table of external id system -> source path")
        links = {}
    declared = document.get("fields")
    if isinstance(declared, list) and all(isinstance(spec, Mapping) for spec in declared):
        declared = {str(spec.get("target")): _without_target(spec) for spec in declared}
    mappings: list[FieldMapping] = []
    if not isinstance(declared, Mapping) or not declared:
        bad("fields", "required: at least one profile field")
    else:
        for target, spec in declared.items():
            mapping = _field_mapping(str(target), spec, bad)
            if mapping is not None:
                mappings.append(mapping)
    owns = document.get("owns", [])
    if not isinstance(owns, list) or not all(isinstance(name, str) for name in owns):
        bad("owns", "a list of profile field names")
        owns = []
    for name in owns:
        if name not in _TARGET_TYPES and not _is_attribute(name):
            bad("owns", f"{name!r} is not a profile field")
    if problems:
        raise InvalidArgument(problems, reason="BAD_CONNECTOR")
    return Connector(
        source=source,
        key_system=key_system,
        key_path=key_path,
        fields=tuple(mappings),
        owns=frozenset(owns),
        links=dict(links),
        formats=formats,
        description=str(document.get("description", "")),
    )


def _without_target(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.items() if key != "target"}


def _field_mapping(target: str, spec: Any, bad: Any) -> FieldMapping | None:
    where = f"fields.{target}"
    if not isinstance(spec, Mapping):
        bad(where, 'expected a table such as {path = "email", type = "text"}')
        return None
    allowed = _TARGET_TYPES.get(target)
    if allowed is None and not _is_attribute(target):
        bad(where, f"{target!r} is not a profile field (custom fields are attributes.NAME)")
        return None
    unknown = set(spec) - {"path", "type", "values", "scale", "multiply_by", "per_interval"}
    if unknown:
        bad(where, f"unknown keys {sorted(unknown)}")
    kind = spec.get("type", "text")
    if kind not in FIELD_TYPES:
        bad(f"{where}.type", f"{kind!r} is not one of {', '.join(FIELD_TYPES)}")
    elif allowed is not None and kind not in allowed:
        bad(f"{where}.type", f"{target} takes {' or '.join(allowed)}, not {kind}")
    path = spec.get("path")
    if not isinstance(path, str) or not path:
        bad(f"{where}.path", "required: the source field (dotted path into JSON objects)")
        path = ""
    values = spec.get("values", {})
    if kind == "enum" and (not isinstance(values, Mapping) or not values):
        bad(f"{where}.values", "an enum needs a table of source value -> stored value")
    scale = spec.get("scale")
    if scale is not None and (not isinstance(scale, int | float) or not math.isfinite(scale)):
        bad(f"{where}.scale", "must be a number")
    arithmetic = scale is not None or spec.get("multiply_by") or spec.get("per_interval")
    if arithmetic and kind not in ("integer", "number"):
        bad(where, "scale, multiply_by and per_interval apply to numbers only")
    return FieldMapping(
        target=target,
        path=path,
        type=kind,
        values={str(k): str(v) for k, v in values.items()} if isinstance(values, Mapping) else {},
        scale=float(scale) if isinstance(scale, int | float) else None,
        multiply_by=str(spec.get("multiply_by", "")),
        per_interval=str(spec.get("per_interval", "")),
    )


def _is_attribute(name: str) -> bool:
    return name.startswith(ATTRIBUTE_PREFIX) and len(name) > len(ATTRIBUTE_PREFIX)


def check_ownership(connector: Connector, others: Iterable[Connector]) -> None:
    """Refuse a connector that maps or claims a field another source owns."""
    problems = []
    for other in others:
        if other.source == connector.source:
            continue
        for mapping in connector.fields:
            if mapping.target in other.owns:
                problems.append(
                    FieldViolation(
                        f"fields.{mapping.target}",
                        f"{mapping.target} is owned by the {other.source} source; "
                        f"{connector.source} cannot write it",
                    )
                )
        for name in sorted(connector.owns & other.owns):
            problems.append(
                FieldViolation("owns", f"{name} is already owned by the {other.source} source")
            )
    if problems:
        raise InvalidArgument(problems, reason="FIELD_OWNED_BY_ANOTHER_SOURCE")


# ---- mapping rows --------------------------------------------------------------------------


def read_path(row: Mapping[str, Any], path: str) -> Any:
    """The value at ``path``: a flat column named exactly ``path`` (CSV headers such as
    ``subscription.status``), else a walk through nested objects and list indexes."""
    if path in row:
        return row[path]
    current: Any = row
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
        if current is None:
            return None
    return current


def map_row(
    connector: Connector, row_number: int, row: Mapping[str, Any]
) -> SyncRecord | SyncRejection:
    """The row's values for the profile, or every reason it cannot be stored."""
    raw_key = read_path(row, connector.key_path)
    key = "" if _is_blank(raw_key) else str(raw_key).strip()
    reasons: list[str] = []
    if not key:
        reasons.append(f"missing {connector.key_path} (the {connector.key_system} id)")
    values: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for mapping in connector.fields:
        raw = read_path(row, mapping.path)
        if _is_blank(raw):
            continue
        try:
            value = convert_value(mapping, raw, row)
        except ValueError as error:
            reasons.append(f"{mapping.target}: {error}")
            continue
        if _is_attribute(mapping.target):
            attributes[mapping.target.removeprefix(ATTRIBUTE_PREFIX)] = value
        else:
            values[mapping.target] = value
    links = {}
    for system, path in connector.links.items():
        linked = read_path(row, path)
        if not _is_blank(linked):
            links[system] = str(linked).strip()
    reasons += [
        f"{problem.field}: {problem.description}"
        for problem in validate_values({**values, "external_ids": links})
    ]
    if reasons:
        return SyncRejection(row_number, key, tuple(reasons))
    return SyncRecord(row_number, key, normalize_values(values), attributes, links)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def convert_value(mapping: FieldMapping, raw: Any, row: Mapping[str, Any]) -> Any:
    """One source value as the profile stores it; ValueError says why it cannot be."""
    if mapping.type == "text":
        if isinstance(raw, dict | list):
            raise ValueError(f"{_show(raw)} is not text")
        return str(raw).strip()
    if mapping.type == "enum":
        text = str(raw).strip()
        if text not in mapping.values:
            raise ValueError(f"{_show(raw)} is not one of {', '.join(sorted(mapping.values))}")
        return mapping.values[text]
    if mapping.type == "timestamp":
        return parse_timestamp(raw)
    number = parse_number(raw, integer=mapping.type == "integer" and not _scaled(mapping))
    if mapping.multiply_by:
        factor = read_path(row, mapping.multiply_by)
        if _is_blank(factor):
            raise ValueError(f"needs {mapping.multiply_by}, which is missing")
        number *= parse_number(factor, integer=False, name=mapping.multiply_by)
    if mapping.per_interval:
        interval = str(read_path(row, mapping.per_interval) or "").strip()
        if interval not in PERIODS_PER_YEAR:
            raise ValueError(
                f"{mapping.per_interval} {_show(interval)} is not one of "
                f"{', '.join(PERIODS_PER_YEAR)}"
            )
        number *= PERIODS_PER_YEAR[interval]
    if mapping.scale is not None:
        number *= mapping.scale
    if mapping.type == "integer":
        if not float(number).is_integer():
            raise ValueError(f"{_show(raw)} does not give a whole number")
        return int(number)
    # Cents times quantity times 12 / 100 is exact in decimal but not always in binary.
    return round(float(number), 6)


def _scaled(mapping: FieldMapping) -> bool:
    return bool(mapping.scale is not None or mapping.multiply_by or mapping.per_interval)


def parse_number(raw: Any, *, integer: bool, name: str = "") -> float:
    what = "an integer" if integer else "a number"
    prefix = f"{name} " if name else ""
    if isinstance(raw, bool):
        raise ValueError(f"{prefix}{_show(raw)} is not {what}")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        number = raw
    else:
        text = str(raw).strip()
        try:
            # Python reads "1_000" as a number; an export never means that.
            number = float("nan" if "_" in text else text)
        except ValueError:
            raise ValueError(f"{prefix}{_show(raw)} is not {what}") from None
    if not math.isfinite(number) or (integer and not number.is_integer()):
        raise ValueError(f"{prefix}{_show(raw)} is not {what}")
    return int(number) if integer else number


def parse_timestamp(raw: Any) -> datetime:
    """ISO 8601 (a date alone means midnight UTC; no zone means UTC) or Unix seconds, as
    Stripe exports them."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return datetime.fromtimestamp(raw, UTC)
    text = str(raw).strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{_show(raw)} is not a timestamp") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
