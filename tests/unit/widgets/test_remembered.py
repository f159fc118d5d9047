"""The widget port's memory of entries: what a reply may leave behind, given invalidations
that can overtake it."""

from __future__ import annotations

from services.widgets.cache import _Remembered

ACME, BLOOM, CORE = b"sb:widget:c:acme", b"sb:widget:c:bloom", b"sb:widget:c:core"


def invalidation(*keys: bytes) -> list[object]:
    return [b"message", b"__redis__:invalidate", list(keys)]


def test_a_reply_is_kept_until_its_key_is_invalidated() -> None:
    memory = _Remembered(10)
    memory.keep(memory.expect(ACME), ACME, 7, b"config", until=100.0)
    assert memory.get(ACME, now=1.0) == (7, b"config", 100.0)

    memory.invalidated(invalidation(ACME))
    assert memory.get(ACME, now=1.0) is None


def test_a_reply_overtaken_by_an_invalidation_is_not_kept() -> None:
    memory = _Remembered(10)
    ticket = memory.expect(ACME)
    memory.invalidated(invalidation(ACME))  # the entry changed after it was read
    memory.keep(ticket, ACME, 7, b"old", until=100.0)
    assert memory.get(ACME, now=1.0) is None


def test_only_the_latest_read_of_a_key_may_leave_its_reply() -> None:
    memory = _Remembered(10)
    first = memory.expect(ACME)
    second = memory.expect(ACME)
    memory.keep(first, ACME, 7, b"first", until=100.0)
    assert memory.get(ACME, now=1.0) is None
    memory.keep(second, ACME, 7, b"second", until=100.0)
    assert memory.get(ACME, now=1.0) == (7, b"second", 100.0)


def test_a_miss_leaves_nothing_behind() -> None:
    memory = _Remembered(10)
    memory.keep(memory.expect(ACME), ACME, 7, None, until=100.0)
    assert memory.get(ACME, now=1.0) is None
    assert not memory._expected, "an expectation outlived its read"


def test_an_entry_ends_when_its_time_is_up() -> None:
    memory = _Remembered(10)
    memory.keep(memory.expect(ACME), ACME, 7, b"config", until=5.0)
    assert memory.get(ACME, now=4.9) is not None
    assert memory.get(ACME, now=5.0) is None


def test_a_flush_forgets_everything_and_every_read_in_flight() -> None:
    memory = _Remembered(10)
    memory.keep(memory.expect(ACME), ACME, 7, b"a", until=100.0)
    pending = memory.expect(BLOOM)
    memory.invalidated([b"message", b"__redis__:invalidate", None])
    memory.keep(pending, BLOOM, 7, b"b", until=100.0)
    assert memory.get(ACME, now=1.0) is None
    assert memory.get(BLOOM, now=1.0) is None


def test_when_full_the_longest_remembered_entry_makes_room() -> None:
    memory = _Remembered(2)
    for key in (ACME, BLOOM, CORE):
        memory.keep(memory.expect(key), key, 7, key, until=100.0)
    assert memory.get(ACME, now=1.0) is None
    assert memory.get(BLOOM, now=1.0) is not None
    assert memory.get(CORE, now=1.0) is not None


def test_other_messages_on_the_channel_change_nothing() -> None:
    memory = _Remembered(10)
    memory.keep(memory.expect(ACME), ACME, 7, b"config", until=100.0)
    memory.invalidated([b"subscribe", b"__redis__:invalidate", 1])
    assert memory.get(ACME, now=1.0) is not None
