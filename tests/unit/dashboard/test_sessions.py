"""Dashboard sessions: a token stands for its key until signed out, idle too long, or pushed
out by newer sessions."""

from __future__ import annotations

from services.dashboard.sessions import Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_stands_for_its_key_until_closed() -> None:
    sessions = Sessions()
    ada, bob = sessions.open("key-ada"), sessions.open("key-bob")

    assert ada != bob and len(ada) >= 40
    assert (sessions.api_key(ada), sessions.api_key(bob)) == ("key-ada", "key-bob")
    assert sessions.api_key("made-up") is None

    sessions.close(ada)
    assert sessions.api_key(ada) is None
    assert sessions.api_key(bob) == "key-bob"
    sessions.close(ada)  # closing twice is harmless


def test_a_session_idle_too_long_is_forgotten_but_use_keeps_it_alive() -> None:
    clock = Clock()
    sessions = Sessions(idle_seconds=60, clock=clock)
    used, idle = sessions.open("key-used"), sessions.open("key-idle")

    for _ in range(3):
        clock.now += 50
        assert sessions.api_key(used) == "key-used"

    assert sessions.api_key(idle) is None
    clock.now += 61
    assert sessions.api_key(used) is None


def test_beyond_capacity_the_least_recently_used_session_goes_first() -> None:
    sessions = Sessions(max_sessions=2)
    first, second = sessions.open("key-1"), sessions.open("key-2")
    assert sessions.api_key(first) == "key-1"  # now the second is the least recently used

    third = sessions.open("key-3")

    assert sessions.api_key(second) is None
    assert (sessions.api_key(first), sessions.api_key(third)) == ("key-1", "key-3")
