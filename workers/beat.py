"""Beat's scheduler on Redis: celery-redbeat, made to ride out a Redis outage.

RedBeat as shipped ends beat when Redis is down as it starts or at the first Redis error of
a tick, and when Redis comes back empty (restarted without persistence, or failed over to a
fresh replica) it has lost both its lock and its schedule: the lock extension fails and ends
beat too. Here beat waits for Redis to start, a tick that cannot reach it tries again a
moment later, and a beat that finds its lock gone takes it again (or waits for the beat that
holds it now, as at startup) and puts its schedule back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redbeat import RedBeatScheduler  # type: ignore[import-untyped]
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("switchboard.workers.beat")

# How long a tick that could not reach Redis waits before trying again.
REDIS_RETRY_SECONDS = 1.0


class ResilientRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat that survives Redis going away and coming back, empty or not."""

    lock: Any  # redis-py's Lock, taken by redbeat when beat starts
    _lock_lost = False
    _redis_down = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            if self._lock_lost:
                self._take_lock_again()
            interval: float = super().tick(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as error:
            if not self._redis_down:
                log.warning("beat cannot reach Redis; retrying: %s", error)
                self._redis_down = True
            return REDIS_RETRY_SECONDS
        except LockError:
            # LockNotOwnedError: the lock expired or Redis lost it; tick again at once.
            log.warning("beat lost its lock in Redis; taking it again")
            self._lock_lost = True
            return 0.0
        if self._redis_down:
            log.warning("beat reaches Redis again")
            self._redis_down = False
        return interval

    def setup_schedule(self) -> None:
        """Put the schedule in Redis; a beat started while Redis is down waits for it, as
        workers wait for their broker, instead of exiting."""
        while True:
            try:
                super().setup_schedule()
                return
            except (RedisConnectionError, RedisTimeoutError) as error:
                if not self._redis_down:
                    log.warning("beat cannot reach Redis; waiting for it: %s", error)
                    self._redis_down = True
                time.sleep(REDIS_RETRY_SECONDS)

    def _take_lock_again(self) -> None:
        # Blocks while another beat holds the lock, exactly as a starting beat waits.
        self.lock.acquire()
        self._lock_lost = False
        log.warning("beat holds its lock again")
        # A Redis that came back empty has no schedule either; entries still there keep
        # their last run times.
        self.setup_schedule()

    def close(self) -> None:
        try:
            super().close()
        except (RedisConnectionError, RedisTimeoutError, LockError):
            # Stopping while Redis is down: the lock expires by itself.
            self.lock = None
