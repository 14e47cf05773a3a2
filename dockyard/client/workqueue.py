"""A rate-limited work queue with client-go's guarantees.

A key is queued at most once however often it is added (dirty set), is never handed to two
workers at once (processing set; re-adds during processing run after `done`), and failed keys
come back after an exponential back-off until `forget`. `add_batched` spaces a key's runs by a
period, so the events of one burst share a run (kube-controller-manager's
--endpoint-updates-batch-period) while a lone event is still handled at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

# `add_batched` remembers when each key was last handed out; entries older than this are
# dropped once there are many (no batching period is anywhere near as long).
_TAKEN_HORIZON = 60.0
_TAKEN_PRUNE_AT = 10_000


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 300.0) -> None:
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._taken: dict[str, float] = {}  # key -> when a worker last got it (monotonic)
        self._prune_at = _TAKEN_PRUNE_AT
        self._ready = asyncio.Event()
        self._base = base_delay
        self._max = max_delay
        self._shutdown = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again when the current run is done
        self._queue.append(key)
        self._wake()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        timer = self._timers.get(key)
        if timer is not None and timer.when() <= asyncio.get_running_loop().time() + delay:
            return  # an earlier wake-up is already set
        if timer is not None:
            timer.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_batched(self, key: str, period: float) -> None:
        """Add `key` no sooner than `period` seconds after a worker last took it.

        For changes that only move what a run would report (counts in a status): a burst
        of them costs one run per period instead of one per change, and one change after a
        quiet spell is processed immediately."""
        if key in self._dirty:
            return  # already waiting: that run will see this change too
        last = self._taken.get(key)
        wait = 0.0 if last is None else last + period - time.monotonic()
        if wait > 0:
            self.add_after(key, wait)
        else:
            self.add(key)

    def add_rate_limited(self, key: str) -> None:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self.add_after(key, min(self._base * (2 ** failures), self._max))

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def retries(self, key: str) -> int:
        return self._failures.get(key, 0)

    def _wake(self) -> None:
        self._ready.set()

    async def get(self) -> str | None:
        """The next key to process, or None once shut down."""
        while not self._queue:
            if self._shutdown:
                return None
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        now = time.monotonic()
        if len(self._taken) >= self._prune_at:  # amortized: at most once per doubling
            self._taken = {k: t for k, t in self._taken.items() if now - t < _TAKEN_HORIZON}
            self._prune_at = max(_TAKEN_PRUNE_AT, 2 * len(self._taken))
        self._taken[key] = now
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake()

    async def shut_down(self) -> None:
        self._shutdown = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._queue.clear()
        self._ready.set()
