"""The scheduling queue (internal/queue/scheduling_queue.go): activeQ, backoffQ, unschedulable.

activeQ is a heap by priority then enqueue time; a pod that failed waits in backoffQ (1 s
doubling per attempt up to 10 s) or, when a plugin rejected it, in the unschedulable set until
a cluster event that one of its rejecting plugins cares about moves it back (`move`), or until
it has waited `unschedulable_timeout` (the periodic flush). A move that happens while a pod is
being scheduled is remembered, so that pod goes to backoffQ instead of waiting for another.
The queue also tracks nominated pods (preemptors waiting for their victims to leave).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dockyard.scheduler.framework import Obj, PodInfo

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 10.0
UNSCHEDULABLE_TIMEOUT = 60.0
FLUSH_UNSCHEDULABLE_EVERY = 30.0


@dataclass(eq=False)
class QueuedPodInfo:
    pod: PodInfo
    timestamp: float  # when it last entered the queue (orders equal priorities)
    attempts: int = 0
    unschedulable_plugins: set[str] = field(default_factory=set)
    backoff_until: float = 0.0
    entered_unschedulable: float = 0.0
    cycle: int = 0  # the scheduling cycle that popped it last
    changed_in_flight: bool = False  # the pod itself changed while a cycle was on it
    parked: int = 0  # orders the unschedulable pods by when they became unschedulable
    parked_under: tuple[str | None, ...] = ()  # its keys in SchedulingQueue._rejected_by


def _parked(qpi: QueuedPodInfo) -> int:
    return qpi.parked


def _spec_changed(old: Obj, new: Obj) -> bool:
    """isPodUpdated: anything but status and bookkeeping metadata changed."""
    if old.get("spec") != new.get("spec"):
        return True
    skip = ("resourceVersion", "generation", "managedFields", "finalizers")
    o, n = old.get("metadata") or {}, new.get("metadata") or {}
    return {k: v for k, v in o.items() if k not in skip} != \
        {k: v for k, v in n.items() if k not in skip}


class SchedulingQueue:
    """Pending pods of one scheduler: `add`/`update`/`delete` from informers, `pop` for the
    loop, `add_unschedulable`/`add_backoff` after a failed cycle, `move` on cluster events."""

    def __init__(self, *, initial_backoff: float = INITIAL_BACKOFF,
                 max_backoff: float = MAX_BACKOFF,
                 unschedulable_timeout: float = UNSCHEDULABLE_TIMEOUT,
                 clock: Callable[[], float] | None = None) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        self._now = clock or time.monotonic
        self._seq = itertools.count()
        self._active: list[tuple[int, float, int, str]] = []
        self._active_items: dict[str, QueuedPodInfo] = {}
        self._backoff: list[tuple[float, int, str]] = []
        self._backoff_items: dict[str, QueuedPodInfo] = {}
        self._unschedulable: dict[str, QueuedPodInfo] = {}
        # rejecting plugin (None: none named) -> keys of the unschedulable pods it rejected, so
        # an event (one per binding, for one) looks at the pods it may help only
        self._rejected_by: dict[str | None, dict[str, None]] = {}
        self._in_flight: dict[str, QueuedPodInfo] = {}
        self._ready = asyncio.Event()
        self._closed = False
        self.cycle = 0
        self._move_cycle = -1
        self._nominated: dict[str, dict[str, PodInfo]] = {}  # node -> pod key -> pod
        self._nominated_node: dict[str, str] = {}

    # -- sizes (for tests and metrics) -----------------------------------------------------

    def pending(self) -> dict[str, int]:
        return {"active": len(self._active_items), "backoff": len(self._backoff_items),
                "unschedulable": len(self._unschedulable), "in_flight": len(self._in_flight)}

    def __contains__(self, key: str) -> bool:
        return key in self._active_items or key in self._backoff_items or \
            key in self._unschedulable or key in self._in_flight

    # -- adding and removing pods ----------------------------------------------------------

    def add(self, pod: PodInfo) -> None:
        """A new pending pod (or one seen again after a relist)."""
        if pod.key in self:
            self.update(pod)
            return
        self._push_active(QueuedPodInfo(pod, self._now()))
        self._nominate_from_status(pod)

    def update(self, pod: PodInfo) -> None:
        key = pod.key
        self._nominate_from_status(pod)
        for items in (self._active_items, self._backoff_items, self._in_flight):
            qpi = items.get(key)
            if qpi is not None:
                if items is self._in_flight and _spec_changed(qpi.pod.pod, pod.pod):
                    qpi.changed_in_flight = True
                qpi.pod = pod
                return
        qpi = self._unschedulable.get(key)
        if qpi is None:
            self.add(pod)
            return
        changed = _spec_changed(qpi.pod.pod, pod.pod)
        qpi.pod = pod
        if changed:  # the pod itself changed (tolerations, affinity...): try it again
            self._unpark(key)
            self._requeue(qpi)

    def delete(self, key: str) -> None:
        self._active_items.pop(key, None)  # heap entries are dropped lazily
        self._backoff_items.pop(key, None)
        self._unpark(key)
        self._in_flight.pop(key, None)
        self.remove_nomination(key)

    def done(self, key: str) -> None:
        """The cycle that popped `key` bound it (or gave up on it for good)."""
        self._in_flight.pop(key, None)

    def _push_active(self, qpi: QueuedPodInfo) -> None:
        key = qpi.pod.key
        self._active_items[key] = qpi
        heapq.heappush(self._active, (-qpi.pod.priority, qpi.timestamp, next(self._seq), key))
        self._ready.set()

    def _push_backoff(self, qpi: QueuedPodInfo) -> None:
        key = qpi.pod.key
        self._backoff_items[key] = qpi
        heapq.heappush(self._backoff, (qpi.backoff_until, next(self._seq), key))
        self._ready.set()  # a waiting pop() recomputes when to wake up

    def _requeue(self, qpi: QueuedPodInfo) -> None:
        """To backoffQ while its back-off runs, else straight to activeQ."""
        if qpi.backoff_until > self._now():
            self._push_backoff(qpi)
        else:
            self._push_active(qpi)

    # -- popping and failing ---------------------------------------------------------------

    async def pop(self) -> QueuedPodInfo | None:
        """The most important ready pod; waits for one. None once closed."""
        while True:
            if self._closed:
                return None
            self._flush_backoff()
            while self._active:
                _prio, _ts, _seq, key = heapq.heappop(self._active)
                qpi = self._active_items.pop(key, None)
                if qpi is None:
                    continue  # deleted or re-pushed since
                self.cycle += 1
                qpi.cycle = self.cycle
                qpi.attempts += 1
                self._in_flight[key] = qpi
                return qpi
            self._ready.clear()
            timeout = (self._backoff[0][0] - self._now()) if self._backoff else None
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                pass

    def add_unschedulable(self, qpi: QueuedPodInfo, plugins: set[str]) -> None:
        """The pod did not fit: wait for an event that may help (or for its back-off when such
        an event already happened during its cycle)."""
        key = qpi.pod.key
        if self._in_flight.pop(key, None) is None:
            return  # deleted meanwhile
        qpi.unschedulable_plugins = set(plugins)
        qpi.backoff_until = self._now() + self.backoff_duration(qpi.attempts)
        qpi.timestamp = self._now()
        if self._move_cycle >= qpi.cycle or qpi.changed_in_flight:
            qpi.changed_in_flight = False
            self._push_backoff(qpi)
        else:
            qpi.entered_unschedulable = self._now()
            self._park(qpi)

    def _park(self, qpi: QueuedPodInfo) -> None:
        key = qpi.pod.key
        self._unpark(key)
        self._unschedulable[key] = qpi
        qpi.parked = next(self._seq)
        qpi.parked_under = tuple(qpi.unschedulable_plugins) or (None,)
        for plugin in qpi.parked_under:
            self._rejected_by.setdefault(plugin, {})[key] = None

    def _unpark(self, key: str) -> QueuedPodInfo | None:
        qpi = self._unschedulable.pop(key, None)
        if qpi is not None:
            for plugin in qpi.parked_under:
                keys = self._rejected_by.get(plugin)
                if keys is not None:
                    keys.pop(key, None)
                    if not keys:
                        del self._rejected_by[plugin]
        return qpi

    def add_backoff(self, qpi: QueuedPodInfo) -> None:
        """The cycle failed with an error (e.g. the API refused the binding): retry later."""
        key = qpi.pod.key
        if self._in_flight.pop(key, None) is None and key not in self._active_items:
            return
        qpi.backoff_until = self._now() + self.backoff_duration(qpi.attempts)
        self._push_backoff(qpi)

    def backoff_duration(self, attempts: int) -> float:
        return min(self.initial_backoff * (2 ** max(attempts - 1, 0)), self.max_backoff)

    def _flush_backoff(self) -> None:
        now = self._now()
        while self._backoff and self._backoff[0][0] <= now:
            _until, _seq, key = heapq.heappop(self._backoff)
            qpi = self._backoff_items.get(key)
            if qpi is not None and qpi.backoff_until <= now:
                del self._backoff_items[key]
                self._push_active(qpi)

    # -- cluster events --------------------------------------------------------------------

    def move(self, event: str, interested: dict[str, frozenset[str]]) -> int:
        """Move the unschedulable pods a rejecting plugin of which registered `event`;
        `interested` maps plugin names to the events they registered. Returns the count."""
        self._move_cycle = self.cycle
        if not self._unschedulable:
            return 0
        keys = set(self._rejected_by.get(None) or ())
        for plugin, events in interested.items():
            if event in events and plugin in self._rejected_by:
                keys.update(self._rejected_by[plugin])
        moved = sorted((self._unschedulable[key] for key in keys), key=_parked)
        for qpi in moved:
            self._unpark(qpi.pod.key)
            self._requeue(qpi)
        return len(moved)

    def flush_unschedulable(self) -> int:
        """Pods that waited longer than `unschedulable_timeout` get another try."""
        deadline = self._now() - self.unschedulable_timeout
        stale = [q for q in self._unschedulable.values() if q.entered_unschedulable <= deadline]
        for qpi in stale:
            self._unpark(qpi.pod.key)
            self._requeue(qpi)
        return len(stale)

    async def run_flusher(self) -> None:
        """The periodic leftover flush (plus waking `pop` for expired back-offs)."""
        while not self._closed:
            await asyncio.sleep(min(FLUSH_UNSCHEDULABLE_EVERY, self.unschedulable_timeout / 2))
            self.flush_unschedulable()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    # -- nominated pods --------------------------------------------------------------------

    def _nominate_from_status(self, pod: PodInfo) -> None:
        node = (pod.pod.get("status") or {}).get("nominatedNodeName")
        if node:
            self.nominate(pod, node)
        elif pod.key in self._nominated_node:
            # the status may simply not carry our own (newer) nomination yet: keep it
            self._nominated[self._nominated_node[pod.key]][pod.key] = pod

    def nominate(self, pod: PodInfo, node: str) -> None:
        self.remove_nomination(pod.key)
        self._nominated.setdefault(node, {})[pod.key] = pod
        self._nominated_node[pod.key] = node

    def remove_nomination(self, key: str) -> None:
        node = self._nominated_node.pop(key, None)
        if node is not None:
            pods = self._nominated.get(node, {})
            pods.pop(key, None)
            if not pods:
                self._nominated.pop(node, None)

    def nominated_node(self, key: str) -> str | None:
        return self._nominated_node.get(key)

    def nominated_pods(self, node: str) -> list[PodInfo]:
        pods = self._nominated.get(node)
        return list(pods.values()) if pods else []

    def has_nominations(self) -> bool:
        return bool(self._nominated)
