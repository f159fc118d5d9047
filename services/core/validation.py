"""Small checks every service's request handling shares; each returns or raises
``FieldViolation``s so a caller can report every problem of a request at once."""

from __future__ import annotations

from services.core.errors import FieldViolation, InvalidArgument

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_ACTOR_LENGTH = 200


def page_limit(requested: int) -> int:
    """The page size to use: 0 means the default; beyond the maximum is refused."""
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidArgument.field("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    return requested or DEFAULT_PAGE_SIZE


def required(field: str, value: str) -> list[FieldViolation]:
    return [] if value else [FieldViolation(field, "is required")]


def actor_problems(actor: str) -> list[FieldViolation]:
    if len(actor) > MAX_ACTOR_LENGTH:
        return [FieldViolation("actor", f"at most {MAX_ACTOR_LENGTH} characters")]
    return []


def raise_if(problems: list[FieldViolation]) -> None:
    if problems:
        raise InvalidArgument(problems)
