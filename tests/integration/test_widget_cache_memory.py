"""The widget port's memory of cache entries, against a real Redis: entries read once are
served from memory until Redis reports them rewritten or deleted, and a new version in force
replaces what was remembered as soon as Redis reports it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta

import pytest
import redis

from services.core.clock import utc_now
from services.widgets.cache import HEARTBEAT_SECONDS, Entry, RedisWidgetCache
from tests.support.network import SilenceableProxy
from tests.support.stores import redis_server
from tests.support.workers import fresh_redis_database

ACME = "c:acme"


@pytest.fixture
def fresh_redis(redis_url: str) -> Iterator[str]:
    yield from fresh_redis_database(redis_url, 5)


@pytest.fixture(scope="module")
def private_redis() -> Iterator[str]:
    """A Redis of this module's own, whose command counts and users nobody else touches."""
    with redis_server() as url:
        yield url


FORMAL, FRIENDLY = b"persona:formal", b"persona:friendly"
Steps = Callable[[RedisWidgetCache, RedisWidgetCache], Awaitable[None]]


def after_remembering(
    url: str, steps: Steps, *, reader_url: str = "", expire_at: datetime | None = None
) -> None:
    """With version 7 in force and acme's entry written at it by the workers' cache, a
    widget port's reader reads the entry (so remembers it, where it can); then ``steps``
    run with (writer, reader) on the reader's event loop."""
    writer = RedisWidgetCache(url, remembered_entries=0)
    writer.publish(7)
    writer.write(7, [Entry(ACME, FORMAL, expire_at)])
    reader = RedisWidgetCache(reader_url or url)

    async def scenario() -> None:
        assert await reader.read_async(ACME) == (7, FORMAL)
        await steps(writer, reader)

    asyncio.run(scenario())


async def eventually(read: Callable[[], Awaitable[object]], wanted: object) -> object:
    """``read()`` until it gives ``wanted``, for up to two seconds: an invalidation travels
    on its own connection and lands a moment after the write."""
    for _ in range(200):
        found = await read()
        if found == wanted:
            return found
        await asyncio.sleep(0.01)
    return found


def calls(url: str) -> dict[str, int]:
    """How many reads of keys Redis has run: GET, MGET and PTTL."""
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in READS}


READS = ("get", "mget", "pttl")


def test_a_remembered_entry_is_served_without_reading_it_again(private_redis: str) -> None:
    async def steps(_writer: RedisWidgetCache, reader: RedisWidgetCache) -> None:
        before = calls(private_redis)
        for _ in range(5):
            assert await reader.read_async(ACME) == (7, FORMAL)
        together = await asyncio.gather(*(reader.read_async(ACME) for _ in range(10)))
        assert together == [(7, FORMAL)] * 10
        assert calls(private_redis) == before, "a remembered entry costs Redis nothing"

    after_remembering(private_redis, steps)


def test_an_entry_the_workers_rewrite_or_drop_is_not_served_from_memory(fresh_redis: str) -> None:
    async def steps(writer: RedisWidgetCache, reader: RedisWidgetCache) -> None:
        writer.write(7, [Entry(ACME, FRIENDLY, None)])
        rewritten = await eventually(lambda: reader.read_async(ACME), (7, FRIENDLY))
        assert rewritten == (7, FRIENDLY)
        writer.forget([ACME])  # the customer changed, or was erased
        assert await eventually(lambda: reader.read_async(ACME), (7, None)) == (7, None)

    after_remembering(fresh_redis, steps)


def test_a_new_version_is_answered_as_soon_as_redis_reports_it(fresh_redis: str) -> None:
    async def steps(writer: RedisWidgetCache, reader: RedisWidgetCache) -> None:
        assert await reader.read_async(ACME) == (7, FORMAL)
        # A policy changed. Redis's report travels on the subscriber's own connection and
        # can land a moment after the write was acknowledged, so a call in between may
        # still get version 7 (the window the README names; seen in 1 run of 20 with both
        # cores busy). The reader takes in reports before it answers from memory, so no
        # call after the report lands does.
        writer.publish(8)
        assert await eventually(lambda: reader.read_async(ACME), (8, None)) == (8, None)
        assert [await reader.read_async(ACME) for _ in range(5)] == [(8, None)] * 5

    after_remembering(fresh_redis, steps)


def test_an_entry_is_not_served_from_memory_past_its_end(fresh_redis: str) -> None:
    async def steps(_writer: RedisWidgetCache, reader: RedisWidgetCache) -> None:
        assert await reader.read_async(ACME) == (7, FORMAL)
        await asyncio.sleep(0.4)  # the handover queue's calendar closed
        assert await reader.read_async(ACME) == (7, None)

    after_remembering(fresh_redis, steps, expire_at=utc_now() + timedelta(milliseconds=300))


def test_losing_the_invalidations_connection_forgets_what_was_remembered(
    private_redis: str,
) -> None:
    admin = redis.Redis.from_url(private_redis)

    async def steps(writer: RedisWidgetCache, reader: RedisWidgetCache) -> None:
        # Without its subscriber nothing would report the next write: the reader must
        # stop trusting what it remembers. (This Redis is the module's own: no other
        # subscriber is killed.)
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.2)
        writer.write(7, [Entry(ACME, FRIENDLY, None)])
        assert await reader.read_async(ACME) == (7, FRIENDLY)

    try:
        after_remembering(private_redis, steps)
    finally:
        admin.close()


def test_a_redis_that_refuses_tracking_is_read_on_every_call(private_redis: str) -> None:
    admin = redis.Redis.from_url(private_redis)
    admin.acl_setuser(
        "widgets",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-client"],
    )

    async def steps(writer: RedisWidgetCache, reader: RedisWidgetCache) -> None:
        writer.write(7, [Entry(ACME, FRIENDLY, None)])
        assert await reader.read_async(ACME) == (7, FRIENDLY)

    try:
        user_url = private_redis.replace("redis://", "redis://widgets:secret@")
        after_remembering(private_redis, steps, reader_url=user_url)
    finally:
        admin.acl_deluser("widgets")
        admin.close()


def test_an_invalidations_connection_gone_silent_is_given_up(private_redis: str) -> None:
    port = int(private_redis.rsplit(":", 1)[1].split("/")[0])
    with SilenceableProxy("127.0.0.1", port) as proxy:

        async def steps(writer: RedisWidgetCache, reader: RedisWidgetCache) -> None:
            # Nothing gets through, not even the report of the next write, yet nothing
            # closes: only the heartbeat going unanswered shows the reports have stopped.
            proxy.silent.set()
            await asyncio.sleep(2 * HEARTBEAT_SECONDS + 0.5)
            writer.write(7, [Entry(ACME, FRIENDLY, None)])
            proxy.silent.clear()
            assert await reader.read_async(ACME) == (7, FRIENDLY)

        after_remembering(private_redis, steps, reader_url=f"redis://127.0.0.1:{proxy.port}/0")
