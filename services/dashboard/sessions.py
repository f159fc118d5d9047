"""Who is signed in to the dashboard: a random session token per browser, standing for the
API key its visitor signed in with.

The key stays on the server. The browser holds only the token, in a cookie its scripts
cannot read, and every report call presents the visitor's own key, so the report service's
access rules decide what the visitor may read and a revoked key stops working at once.
Sessions live in memory: restarting the dashboard signs everyone out.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Signed in for a working day without a call, then asked again.
IDLE_SECONDS = 8 * 3600.0
# Beyond this many, signing in forgets the session unused for longest.
MAX_SESSIONS = 1000


@dataclass
class _Session:
    api_key: str
    last_used: float


class Sessions:
    """Session tokens and their keys; safe to share between the server's threads."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle_seconds = idle_seconds
        self._max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        # Least recently used first.
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def open(self, api_key: str) -> str:
        """A new session for ``api_key``; its token."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = _Session(api_key, self._clock())
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
        return token

    def api_key(self, token: str) -> str | None:
        """The key of a live session, which counts as using it; None for an unknown or idle
        one (forgotten then)."""
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            now = self._clock()
            if now - session.last_used > self._idle_seconds:
                del self._sessions[token]
                return None
            session.last_used = now
            self._sessions.move_to_end(token)
            return session.api_key

    def close(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)
