"""Small checks every service's request handling shares; each returns or raises
``FieldViolation``s so a caller can report every problem of a request at once."""

from __future__ import annotations

from google.protobuf.message import Message

from services.core.errors import FieldViolation, InvalidArgument

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_ACTOR_LENGTH = 200


def page_limit(requested: int) -> int:
    """The page size to use: 0 means the default; beyond the maximum is refused."""
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidArgument.field("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    return requested or DEFAULT_PAGE_SIZE


def too_many(field: str, count: int, limit: int, noun: str) -> None:
    """Refuse a repeated field holding more than ``limit`` entries, naming both numbers;
    called before the entries are read, so a million of them cost one comparison."""
    if count > limit:
        raise InvalidArgument.field(field, f"at most {limit} {noun}, got {count}")


def required(field: str, value: str) -> list[FieldViolation]:
    return [] if value else [FieldViolation(field, "is required")]


def actor_problems(actor: str) -> list[FieldViolation]:
    if len(actor) > MAX_ACTOR_LENGTH:
        return [FieldViolation("actor", f"at most {MAX_ACTOR_LENGTH} characters")]
    return []


def raise_if(problems: list[FieldViolation]) -> None:
    if problems:
        raise InvalidArgument(problems)


def nul_problems(message: Message, path: str = "") -> list[FieldViolation]:
    """Every string of a request holding a NUL character, by its path in the request.

    PostgreSQL cannot store NUL in text (nor in JSON); refusing it for every request, on
    every backend, answers INVALID_ARGUMENT where the store would fail with INTERNAL."""
    problems: list[FieldViolation] = []
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            items = [(f"{name}[{key!r}]", key, item) for key, item in value.items()]
            problems += [FieldViolation(where, _NUL) for where, key, _ in items if _has_nul(key)]
            values = [(where, item) for where, _, item in items]
        elif field.is_repeated:
            values = [(f"{name}[{index}]", item) for index, item in enumerate(value)]
        else:
            values = [(name, value)]
        for where, item in values:
            if isinstance(item, Message):
                problems += nul_problems(item, f"{where}.")
            elif _has_nul(item):
                problems.append(FieldViolation(where, _NUL))
    return problems


_NUL = "must not contain NUL characters"


def _has_nul(value: object) -> bool:
    return isinstance(value, str) and "\x00" in value
