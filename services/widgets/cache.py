"""Where precomputed widget configurations wait for the widget's next call.

Every entry is stamped with the routing configuration version it was computed at, and the
version in force is itself a cache key that every write to personas, escalation policies,
assignments, queues, calendars or SLA policies moves before it answers. A reader fetches the
version and the entry in one round trip (MGET) and takes the entry only when the stamps
agree, so an entry computed from a policy that has since changed is never served, whoever
wrote it and when. An entry also ends when the handover queue's calendar opens or closes,
since what the visitor is offered and promised depends on that.

``RedisWidgetCache`` is production's, shared by servers and workers; ``LocalWidgetCache``
is the embedded default's, inside the one routing process.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit
from weakref import WeakKeyDictionary

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.core.clock import Clock, utc_now

PREFIX = "sb:widget:"
VERSION_KEY = PREFIX + "version"
PREFIX_BYTES = PREFIX.encode()
VERSION_KEY_BYTES = VERSION_KEY.encode()
# Written by the precompute task when it finishes, for operators and the benchmark.
PRECOMPUTED_KEY = PREFIX + "precomputed"
# No entry outlives a day, so entries for customers that left age out.
MAX_AGE = timedelta(days=1)

# Versions only move forward, whoever publishes them and in whatever order.
_PUBLISH = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('GET', KEYS[1])
"""


class CacheDown(Exception):
    """The cache did not answer; callers compute instead of failing."""


@dataclass(frozen=True)
class Entry:
    name: str
    value: bytes
    # When the entry stops being true (a calendar opens or closes); None = no such moment.
    expire_at: datetime | None


class WidgetCache(Protocol):
    async def read_async(self, name: str) -> tuple[int, bytes | None]:
        """``read`` for an event loop, which it never blocks."""
        ...

    def read(self, name: str) -> tuple[int, bytes | None]:
        """The version in force (0 = none published yet) and the entry at it, if any."""
        ...

    def write(self, version: int, entries: Sequence[Entry]) -> None: ...

    def publish(self, version: int) -> int:
        """Move the version in force forward to ``version``; returns the one in force."""
        ...

    def forget(self, names: Sequence[str]) -> None:
        """Drop these entries (their customers changed)."""
        ...

    def forget_all(self) -> None:
        """Drop every entry (segment definitions changed), where the cache can afford it."""
        ...


def entry_name(customer_id: str) -> str:
    return "c:" + customer_id


def _end(expire_at: datetime | None, now: datetime) -> datetime:
    return now + MAX_AGE if expire_at is None else min(expire_at, now + MAX_AGE)


class RedisWidgetCache:
    def __init__(self, url: str, *, timeout_seconds: float = 0.25, clock: Clock = utc_now) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self.client = self._connect(single=False)
        self._publish = self.client.register_script(_PUBLISH)
        self._per_thread = threading.local()
        # Refuses an address the fast reader cannot use now, not on the first widget call.
        self._address = _Address.of(url)
        self._loop_reads = _PipelinedReads(self._address, timeout_seconds)

    def _connect(self, *, single: bool) -> redis.Redis:
        # Short timeouts and no retries: a widget call facing a dead Redis computes instead.
        return redis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout_seconds,
            socket_connect_timeout=self.timeout_seconds,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=single,
        )

    async def read_async(self, name: str) -> tuple[int, bytes | None]:
        return _entry_of(await self._loop_reads.call(_read_command(name)))

    def read(self, name: str) -> tuple[int, bytes | None]:
        reader = getattr(self._per_thread, "reader", None)
        if reader is None:
            reader = self._per_thread.reader = _ReadConnection(self._address, self.timeout_seconds)
        try:
            reply = reader.call(*_read_command(name))
        except (OSError, redis.RedisError) as error:
            raise CacheDown(str(error)) from error
        return _entry_of(reply)

    def write(self, version: int, entries: Sequence[Entry]) -> None:
        now = self.clock()
        stamp = b"%d:" % version
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for entry in entries:
                    ttl = _end(entry.expire_at, now) - now
                    pipe.set(
                        PREFIX + entry.name,
                        stamp + entry.value,
                        px=max(1, int(ttl.total_seconds() * 1000)),
                    )
                pipe.execute()
        except redis.RedisError as error:
            raise CacheDown(str(error)) from error

    def publish(self, version: int) -> int:
        try:
            return int(self._publish(keys=[VERSION_KEY], args=[version]))
        except redis.RedisError as error:
            raise CacheDown(str(error)) from error

    def forget(self, names: Sequence[str]) -> None:
        if not names:
            return
        try:
            self.client.delete(*(PREFIX + name for name in names))
        except redis.RedisError as error:
            raise CacheDown(str(error)) from error

    def forget_all(self) -> None:
        """Nothing here: shared by many servers, the entries are rewritten by the workers'
        refresh, which notices changed segment definitions and recomputes everyone."""

    def set_status(self, key: str, value: str) -> None:
        try:
            self.client.set(key, value)
        except redis.RedisError as error:
            raise CacheDown(str(error)) from error


def encode_command(command: Sequence[bytes]) -> bytes:
    """One Redis command in the protocol's wire form (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(command)]
    parts += [b"$%d\r\n%s\r\n" % (len(part), part) for part in command]
    return b"".join(parts)


def _read_command(name: str) -> tuple[bytes, ...]:
    """The version in force and the entry, in one round trip."""
    return (b"MGET", VERSION_KEY_BYTES, PREFIX_BYTES + name.encode())


def _entry_of(reply: Any) -> tuple[int, bytes | None]:
    """(version in force, the entry if it was computed at that version)."""
    version, value = reply
    if version is None:
        return 0, None
    stamp, _, config = (value or b"").partition(b":")
    return int(version), config if value and stamp == version else None


@dataclass(frozen=True)
class _Address:
    """Where the fast readers find Redis, and what they say on connecting."""

    host: str
    port: int
    handshake: tuple[tuple[bytes, ...], ...]

    @classmethod
    def of(cls, url: str) -> _Address:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"the widget cache reads Redis over redis:// only, not {url!r}")
        database = parts.path.strip("/") or "0"
        user, password = unquote(parts.username or "default"), unquote(parts.password or "")
        handshake: list[tuple[bytes, ...]] = []
        if password:
            handshake.append((b"AUTH", user.encode(), password.encode()))
        if database != "0":
            handshake.append((b"SELECT", database.encode()))
        return cls(parts.hostname or "localhost", parts.port or 6379, tuple(handshake))


class _ReadConnection:
    """One thread's connection for the read on every widget call: the command written
    whole, the reply parsed by hiredis. It costs about half the CPU of redis-py's general
    client, which on this call is most of the server's work; anything else uses redis-py."""

    def __init__(self, address: _Address, timeout_seconds: float) -> None:
        self.address = address
        self.timeout_seconds = timeout_seconds
        self._socket: socket.socket | None = None
        self._replies = hiredis.Reader()

    def call(self, *command: bytes) -> Any:
        connection = self._socket or self._open()
        try:
            return self._exchange(connection, command)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._replies = hiredis.Reader()

    def _open(self) -> socket.socket:
        address = (self.address.host, self.address.port)
        connection = socket.create_connection(address, timeout=self.timeout_seconds)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket = connection
        for command in self.address.handshake:
            self._exchange(connection, command)
        return connection

    def _exchange(self, connection: socket.socket, command: Sequence[bytes]) -> Any:
        connection.sendall(encode_command(command))
        reply = self._replies.gets()
        while reply is False:
            data = connection.recv(65536)
            if not data:
                raise ConnectionError("Redis closed the connection")
            self._replies.feed(data)
            reply = self._replies.gets()
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
        return reply


class _PipelinedReads:
    """Reads for an event loop: one connection, and the commands of one turn of the loop
    written to it together, so sixteen concurrent calls cost Redis and the kernel about
    one exchange. A command not answered within ``timeout_seconds`` fails with CacheDown,
    with every command waiting on the same connection; the next opens a new one."""

    def __init__(self, address: _Address, timeout_seconds: float) -> None:
        self.address = address
        self.timeout_seconds = timeout_seconds
        # A connection belongs to the loop that opened it, and a loop to its thread; found
        # by thread, as asking for the running loop costs a system call (getpid).
        self._links: dict[int, _Link] = {}
        self._opening: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            WeakKeyDictionary()
        )

    async def call(self, command: Sequence[bytes]) -> Any:
        link = self._links.get(threading.get_ident())
        if link is None or link.closed or link.loop.is_closed():
            link = await self._open()
        return await link.call(command)

    async def _open(self) -> _Link:
        loop = asyncio.get_running_loop()
        async with self._opening.setdefault(loop, asyncio.Lock()):
            opened = self._links.get(threading.get_ident())
            if opened is not None and not opened.closed and opened.loop is loop:
                return opened
            try:
                _, link = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Link(loop, self.timeout_seconds),
                        self.address.host,
                        self.address.port,
                    ),
                    self.timeout_seconds,
                )
            except (OSError, TimeoutError) as error:
                raise CacheDown(f"cannot reach Redis: {error!r}") from error
            for command in self.address.handshake:
                await link.call(command)
            self._links[threading.get_ident()] = link
            return link


class _Link(asyncio.Protocol):
    """One pipelined connection: replies come back in the order the commands went out."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_seconds: float) -> None:
        self.loop = loop
        self.timeout_seconds = timeout_seconds
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._replies = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._unsent: list[bytes] = []
        self._sent = 0
        self._answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, error: Exception | None) -> None:
        self._fail(CacheDown(f"Redis closed the connection: {error!r}"))

    def data_received(self, data: bytes) -> None:
        self._replies.feed(data)
        while (reply := self._replies.gets()) is not False:
            self._answered += 1
            waiter = self._waiting.popleft()
            if waiter.done():  # its call was cancelled: the caller went away
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(CacheDown(str(reply)))
            else:
                waiter.set_result(reply)

    def call(self, command: Sequence[bytes]) -> asyncio.Future[Any]:
        if self.closed:
            raise CacheDown("the connection to Redis was lost")
        if not self._unsent:
            self.loop.call_soon(self._flush)
        self._unsent.append(encode_command(command))
        waiter: asyncio.Future[Any] = self.loop.create_future()
        self._waiting.append(waiter)
        return waiter

    def _flush(self) -> None:
        if self.closed or self._transport is None:
            return
        self._transport.write(b"".join(self._unsent))
        self._sent += len(self._unsent)
        self._unsent.clear()
        self.loop.call_later(self.timeout_seconds, self._expire, self._sent)

    def _expire(self, sent: int) -> None:
        if self._answered < sent and not self.closed:
            self._fail(CacheDown(f"Redis did not answer within {self.timeout_seconds} s"))

    def _fail(self, error: CacheDown) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(error)
        self._waiting.clear()
        self._unsent.clear()


class LocalWidgetCache:
    """Entries in this process, the most recently written kept up to ``size``."""

    def __init__(self, *, size: int = 100_000, clock: Clock = utc_now) -> None:
        self.size = size
        self.clock = clock
        self._lock = threading.Lock()
        self._version = 0
        self._entries: OrderedDict[str, tuple[int, bytes, datetime]] = OrderedDict()

    async def read_async(self, name: str) -> tuple[int, bytes | None]:
        return self.read(name)

    def read(self, name: str) -> tuple[int, bytes | None]:
        version = self._version
        found = self._entries.get(name)
        if found is None or found[0] != version or found[2] <= self.clock():
            return version, None
        return version, found[1]

    def write(self, version: int, entries: Sequence[Entry]) -> None:
        now = self.clock()
        with self._lock:
            for entry in entries:
                self._entries[entry.name] = (version, entry.value, _end(entry.expire_at, now))
                self._entries.move_to_end(entry.name)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def publish(self, version: int) -> int:
        with self._lock:
            self._version = max(self._version, version)
            return self._version

    def forget(self, names: Sequence[str]) -> None:
        with self._lock:
            for name in names:
                self._entries.pop(name, None)

    def forget_all(self) -> None:
        with self._lock:
            self._entries.clear()
