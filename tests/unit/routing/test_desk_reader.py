"""Concurrent desk reads share one query, and nobody gets a snapshot older than their call.

The query is replaced by a gate the test opens, so which read answers which caller is decided
by the test, not by timing; the database side of the read is covered by the routing tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import create_engine

from services.routing.repository import _DeskReader


class GatedReader(_DeskReader):
    """Each query waits for the test to release it; its desk's config version is its number."""

    def __init__(self, max_age_seconds: float = 0.0) -> None:
        super().__init__(create_engine("sqlite://"), max_age_seconds)
        self.queries = 0
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.fail_next = False

    def _query(self) -> list[Any]:
        self.queries += 1
        number = self.queries
        self.entered.release()
        self.release.acquire()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError(f"read {number} failed")
        return [("version", "config", "", None, None, number)]


def started(reader: GatedReader) -> None:
    """Wait until a query is running and held at the gate."""
    assert reader.entered.acquire(timeout=5), "no read started"


def waiting_callers(reader: GatedReader, pool: ThreadPoolExecutor, count: int) -> list[Future[Any]]:
    """``count`` calls that have all reached the reader (none answered yet)."""
    calls = [pool.submit(reader.read) for _ in range(count)]
    _wait_until(lambda: _waiters(reader) >= count)
    return calls


def _waiters(reader: GatedReader) -> int:
    # Condition keeps its waiters in a deque; counting them is how the test knows every
    # caller has arrived without sleeping.
    return len(reader._turn._waiters)  # type: ignore[attr-defined]


def _wait_until(condition: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(500):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("callers never arrived")


def test_callers_arriving_during_a_read_share_the_next_one() -> None:
    reader = GatedReader()
    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(reader.read)
        started(reader)  # read 1 is running
        later = waiting_callers(reader, pool, 5)
        reader.release.release()  # read 1 ends; one of the five starts read 2
        started(reader)
        reader.release.release()
        versions = [call.result(timeout=5).config_version for call in later]
    assert first.result().config_version == 1
    # Read 1 started before they asked, so none of them may get it: all get read 2.
    assert versions == [2] * 5
    assert reader.queries == 2


def test_a_failed_read_fails_its_callers_and_the_next_call_reads_again() -> None:
    reader = GatedReader()
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(reader.read)
        started(reader)
        later = waiting_callers(reader, pool, 3)
        reader.release.release()
        started(reader)  # read 2, the one the three wait for: it will fail
        reader.fail_next = True
        reader.release.release()
        for call in later:
            with pytest.raises(RuntimeError, match="read 2 failed"):
                call.result(timeout=5)
        again = pool.submit(reader.read)
        started(reader)
        reader.release.release()
        assert again.result(timeout=5).config_version == 3
    assert first.result().config_version == 1


def test_a_recent_snapshot_answers_until_this_process_writes() -> None:
    reader = GatedReader(max_age_seconds=3600)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(reader.read)
        started(reader)
        reader.release.release()
        assert first.result(timeout=5).config_version == 1
        reader.release.release()  # so that a read here, which would be wrong, cannot hang
        reused = reader.read()
        assert reader.queries == 1
        reader.wrote()
        after_the_write = pool.submit(reader.read)
        started(reader)
        reader.release.release()
        assert (reused.config_version, after_the_write.result(timeout=5).config_version) == (1, 2)
    assert reader.queries == 2


def test_a_snapshot_whose_read_overlapped_a_write_is_not_reused() -> None:
    reader = GatedReader(max_age_seconds=3600)
    with ThreadPoolExecutor(max_workers=1) as pool:
        during = pool.submit(reader.read)
        started(reader)  # read 1 runs; a write commits before it ends
        reader.wrote()
        reader.release.release()
        assert during.result(timeout=5).config_version == 1
        next_call = pool.submit(reader.read)
        started(reader)
        reader.release.release()
        assert next_call.result(timeout=5).config_version == 2
