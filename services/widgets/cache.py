"""Where precomputed widget configurations wait for the widget's next call.

Every entry is stamped with the routing configuration version it was computed at, and the
version in force is itself a cache key that every write to personas, escalation policies,
assignments, queues, calendars or SLA policies moves before it answers. A reader fetches the
version and the entry in one round trip (MGET) and takes the entry only when the stamps
agree, so an entry computed from a policy that has since changed is never served, whoever
wrote it and when. An entry also ends when the handover queue's calendar opens or closes,
since what the visitor is offered and promised depends on that.

An event loop's reader also remembers what it has read, the version in force included,
with Redis tracking those keys (server-assisted client-side caching): Redis reports every
write to a tracked key on a second connection, in the same step as the write, and the
reader applies every report that has arrived before it answers a call from memory. So a
warm call costs Redis nothing, and an answer from a changed policy is still not served.

``RedisWidgetCache`` is production's, shared by servers and workers; ``LocalWidgetCache``
is the embedded default's, inside the one routing process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
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
    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 0.25,
        remembered_entries: int = 200_000,
        clock: Clock = utc_now,
    ) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self.client = self._connect(single=False)
        self._publish = self.client.register_script(_PUBLISH)
        self._per_thread = threading.local()
        # Refuses an address the fast reader cannot use now, not on the first widget call.
        self._address = _Address.of(url)
        self._loop_reads = _PipelinedReads(self._address, timeout_seconds, remembered_entries)

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
        link = await self._loop_reads.link()
        if link.invalidations is not None:
            link.invalidations.apply()
            if link.closed:  # the reports stopped: start again with nothing remembered
                link = await self._loop_reads.link()
        if link.invalidations is None:
            return _entry_of(await link.call(_read_command(name)))
        memory = link.invalidations.memory
        key = PREFIX_BYTES + name.encode()
        now = link.loop.time()
        in_force = memory.get(VERSION_KEY_BYTES, now)
        kept = memory.get(key, now)
        if in_force is not None and kept is not None and kept[0] == in_force[0]:
            return in_force[0], kept[1]
        version_ticket, entry_ticket = memory.expect(VERSION_KEY_BYTES), memory.expect(key)
        read = link.call(_read_command(name))
        remaining = link.call((b"PTTL", key))
        try:
            version, config = _entry_of(await read)
        except BaseException:
            _abandon(remaining)
            raise
        milliseconds = await remaining
        now = link.loop.time()
        memory.keep(version_ticket, VERSION_KEY_BYTES, version, b"", math.inf)
        # -1: no expiry (not written by ``write``, which always sets one).
        lasts = milliseconds / 1000 if milliseconds >= 0 else MAX_AGE.total_seconds()
        memory.keep(entry_ticket, key, version, config, now + lasts)
        return version, config

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


def _abandon(waiter: asyncio.Future[Any]) -> None:
    """Nobody will await ``waiter``: cancel it, or take its error so none is logged."""
    if not waiter.cancel() and not waiter.cancelled():
        waiter.exception()


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
    with every command waiting on the same connection; the next opens a new one.

    With ``remembered_entries`` the connection is tracked: Redis reports writes to the keys
    it has read on a second connection (``_Invalidations``), and what it read is remembered
    until such a report arrives. Losing either connection loses both, and the memory."""

    def __init__(self, address: _Address, timeout_seconds: float, remembered_entries: int) -> None:
        self.address = address
        self.timeout_seconds = timeout_seconds
        self.remembered_entries = remembered_entries
        # A connection belongs to the loop that opened it, and a loop to its thread; found
        # by thread, as asking for the running loop costs a system call (getpid).
        self._links: dict[int, _Link] = {}
        self._opening: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            WeakKeyDictionary()
        )

    async def link(self) -> _Link:
        link = self._links.get(threading.get_ident())
        if link is None or link.closed or link.loop.is_closed():
            link = await self._open()
        return link

    async def _open(self) -> _Link:
        loop = asyncio.get_running_loop()
        async with self._opening.setdefault(loop, asyncio.Lock()):
            opened = self._links.get(threading.get_ident())
            if opened is not None and not opened.closed and opened.loop is loop:
                return opened
            link = await self._connect(loop)
            try:
                for command in self.address.handshake:
                    await link.call(command)
                if self.remembered_entries > 0:
                    await self._track(link)
            except CacheDown:
                link.close()
                raise
            self._links[threading.get_ident()] = link
            return link

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Link:
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
        return link

    async def _track(self, link: _Link) -> None:
        """Have Redis report writes to the keys ``link`` reads. A Redis that cannot track
        (older than 6, or forbidden by its ACL) leaves the link reading every entry."""
        invalidations = await _Invalidations.open(
            link, _Remembered(self.remembered_entries), self.address, self.timeout_seconds
        )
        if invalidations is None:
            return
        try:
            await link.call(
                (b"CLIENT", b"TRACKING", b"ON", b"REDIRECT", b"%d" % invalidations.client_id)
            )
        except CacheDown:
            invalidations.close()
            if link.closed:
                raise
            return
        link.invalidations = invalidations


# Where Redis publishes the names of tracked keys that changed (RESP2 clients).
INVALIDATIONS = b"__redis__:invalidate"
# How often the invalidations connection proves it is alive; a PING not answered by the
# next beat ends it (and the memory), so a silently dead connection is trusted 2 s at most.
HEARTBEAT_SECONDS = 1.0


class _Invalidations:
    """The connection on which Redis reports writes to the keys a tracked link has read.

    A plain non-blocking socket rather than a transport, so that ``apply`` can take in
    whatever has arrived right now, before a call is answered from memory, instead of
    whenever the event loop next gets to it."""

    def __init__(
        self,
        link: _Link,
        memory: _Remembered,
        connection: socket.socket,
        client_id: int,
        replies: hiredis.Reader,
    ) -> None:
        self.link = link
        self.memory = memory
        self.client_id = client_id
        self.closed = False
        self._socket = connection
        # The handshake's reader: it may already hold the first reports.
        self._replies = replies
        self._unanswered_pings = 0
        link.loop.add_reader(connection.fileno(), self.apply)
        self._beat = link.loop.call_later(HEARTBEAT_SECONDS, self._heartbeat)

    @classmethod
    async def open(
        cls, link: _Link, memory: _Remembered, address: _Address, timeout_seconds: float
    ) -> _Invalidations | None:
        """Subscribed, or None if Redis refuses (no tracking then); CacheDown if it cannot
        be reached."""
        loop = link.loop
        try:
            found = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise CacheDown(f"cannot find Redis at {address.host}: {error!r}") from error
        family, kind, protocol, _, where = found[0]
        connection = socket.socket(family, kind, protocol)
        connection.setblocking(False)
        replies = hiredis.Reader()
        commands = [c for c in address.handshake if c[0] == b"AUTH"]
        commands += [(b"CLIENT", b"ID"), (b"SUBSCRIBE", INVALIDATIONS)]

        async def handshake() -> int | None:
            await loop.sock_connect(connection, where)
            await loop.sock_sendall(connection, b"".join(map(encode_command, commands)))
            answers: list[Any] = []
            while len(answers) < len(commands):
                data = await loop.sock_recv(connection, 65536)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                replies.feed(data)
                while (reply := replies.gets()) is not False:
                    answers.append(reply)
            refused = [a for a in answers if isinstance(a, hiredis.ReplyError)]
            return None if refused else int(answers[-2])

        try:
            client_id = await asyncio.wait_for(handshake(), timeout_seconds)
        except (OSError, TimeoutError) as error:
            connection.close()
            raise CacheDown(f"cannot subscribe to Redis's invalidations: {error!r}") from error
        if client_id is None:
            connection.close()
            return None
        return cls(link, memory, connection, client_id, replies)

    def apply(self) -> None:
        """Forget whatever Redis has reported changed so far; on a lost connection, forget
        everything (the link goes too)."""
        if self.closed:
            return
        while True:
            try:
                data = self._socket.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.link.close()
                return
            self._replies.feed(data)
        try:
            while (reply := self._replies.gets()) is not False:
                if isinstance(reply, list) and reply and reply[0] == b"pong":
                    self._unanswered_pings = 0
                else:
                    self.memory.invalidated(reply)
        except hiredis.ProtocolError:  # not Redis speaking: no report can be trusted
            self.link.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._beat.cancel()
        with contextlib.suppress(ValueError, OSError):
            self.link.loop.remove_reader(self._socket.fileno())
        self._socket.close()

    def _heartbeat(self) -> None:
        if self.closed:
            return
        if self._unanswered_pings:
            self.link.close()
            return
        try:
            self._socket.send(encode_command((b"PING",)))
        except OSError:
            self.link.close()
            return
        self._unanswered_pings += 1
        self._beat = self.link.loop.call_later(HEARTBEAT_SECONDS, self._heartbeat)


class _Remembered:
    """Entries a tracked connection has read, until Redis says they changed.

    A read's reply and the invalidation of what it read come on different connections, in
    either order. So a read first ``expect``s its key, an invalidation withdraws every
    expectation of its keys, and a reply is kept only if its expectation still stands."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # key -> (version the entry was computed at, the entry, loop time it ends)
        self._entries: dict[bytes, tuple[int, bytes, float]] = {}
        self._expected: dict[bytes, object] = {}

    def get(self, key: bytes, now: float) -> tuple[int, bytes, float] | None:
        kept = self._entries.get(key)
        if kept is not None and kept[2] <= now:
            del self._entries[key]
            return None
        return kept

    def expect(self, key: bytes) -> object:
        ticket = self._expected[key] = object()
        return ticket

    def keep(
        self, ticket: object, key: bytes, version: int, entry: bytes | None, until: float
    ) -> None:
        """Remember the reply to the read that took ``ticket``, unless a report overtook it
        or a later read of the key is under way. No entry (a miss): nothing to remember."""
        if self._expected.get(key) is not ticket:
            return
        del self._expected[key]
        if entry is None:
            return
        if len(self._entries) >= self.capacity and key not in self._entries:
            del self._entries[next(iter(self._entries))]  # the longest remembered
        self._entries[key] = (version, entry, until)

    def invalidated(self, message: Any) -> None:
        """A message on the invalidation channel: the keys that changed, or None when
        Redis dropped them all (FLUSHDB, FLUSHALL)."""
        if not isinstance(message, list) or len(message) != 3 or message[0] != b"message":
            return
        keys = message[2]
        if keys is None:
            self._entries.clear()
            self._expected.clear()
            return
        for key in keys:
            self._entries.pop(key, None)
            self._expected.pop(key, None)


class _Link(asyncio.Protocol):
    """One pipelined connection: replies come back in the order the commands went out."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_seconds: float) -> None:
        self.loop = loop
        self.timeout_seconds = timeout_seconds
        self.closed = False
        # Set when Redis tracks what this link reads (with what it remembers): lost
        # together with the link.
        self.invalidations: _Invalidations | None = None
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

    def close(self) -> None:
        self._fail(CacheDown("the connection to Redis was closed"))

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
        if self.closed:
            return
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(error)
        self._waiting.clear()
        self._unsent.clear()
        if self.invalidations is not None:
            self.invalidations.close()


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
