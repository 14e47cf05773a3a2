"""Fan-out of committed events to watchers, with an in-memory window for resuming watches.

The store publishes each committed batch once; every watcher whose prefix matches gets it in
revision order. A watch from a revision older than the window fails with `Compacted`, and a
watcher that falls too far behind is closed (the client resumes, as with the real apiserver).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable

from dockyard.store.interface import Compacted, Event

_CLOSED = object()


class _Watcher:
    __slots__ = ("prefix", "queue", "overflowed")

    def __init__(self, prefix: str, max_pending: int) -> None:
        self.prefix = prefix
        self.queue: asyncio.Queue[object] = asyncio.Queue(max_pending)
        self.overflowed = False


class WatchHub:
    """Keeps the last `window` events and the live watchers. Loop-thread only."""

    def __init__(self, *, window: int = 20_000, max_pending: int = 50_000) -> None:
        self._events: deque[Event] = deque(maxlen=window)
        self._watchers: set[_Watcher] = set()
        self._max_pending = max_pending
        # Revisions at or below this are not replayable (compacted or fell out of the window).
        self._floor = 0

    def seed(self, events: Iterable[Event], floor: int) -> None:
        """Fill the window after a restart from the durable log."""
        self._events.extend(events)
        self._floor = floor

    def oldest_replayable(self) -> int:
        """The smallest start revision a watch may ask for."""
        if len(self._events) == self._events.maxlen:
            return self._events[0].kv.mod_revision - 1
        return self._floor

    def compact(self, revision: int) -> None:
        self._floor = max(self._floor, revision)
        while self._events and self._events[0].kv.mod_revision <= revision:
            self._events.popleft()

    def publish(self, events: list[Event]) -> None:
        self._events.extend(events)
        for watcher in list(self._watchers):
            for event in events:
                if event.kv.key.startswith(watcher.prefix):
                    self._offer(watcher, event)

    def _offer(self, watcher: _Watcher, item: object) -> None:
        try:
            watcher.queue.put_nowait(item)
        except asyncio.QueueFull:
            # A watcher this far behind is cut off; it resumes from its last revision.
            watcher.overflowed = True
            self._watchers.discard(watcher)

    def close_all(self) -> None:
        for watcher in list(self._watchers):
            watcher.queue._queue.clear()  # type: ignore[attr-defined]  # drop, we are closing
            watcher.queue.put_nowait(_CLOSED)
        self._watchers.clear()

    async def watch(
        self, prefix: str, start_revision: int, idle: float | None = None
    ) -> AsyncIterator[Event | None]:
        """Replay retained events after `start_revision`, then stream live ones.

        With `idle`, yields None after that many quiet seconds: the watcher has then seen
        every event up to the current revision (what a bookmark needs to know).
        """
        oldest = self.oldest_replayable()
        if start_revision < oldest:
            raise Compacted(start_revision, oldest + 1)
        watcher = _Watcher(prefix, self._max_pending)
        # Snapshot and subscribe in one synchronous step: nothing can be published in between.
        backlog = [
            e for e in self._events
            if e.kv.mod_revision > start_revision and e.kv.key.startswith(prefix)
        ]
        self._watchers.add(watcher)
        try:
            for event in backlog:
                yield event
            while True:
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), idle)
                except TimeoutError:
                    yield None
                    continue
                if item is _CLOSED:
                    return
                yield item  # type: ignore[misc]
                if watcher.overflowed and watcher.queue.empty():
                    return
        finally:
            self._watchers.discard(watcher)
