"""Recording core/v1 Events about objects, as `kubectl describe` shows them.

Repeats of the same (object, type, reason, message) increase `count` and `lastTimestamp` of one
Event instead of creating new ones, and client-go's EventCorrelator applies: past 10 messages of
one (object, type, reason) in 10 minutes they are combined into one Event, and each object gets
a burst of 25 Events of a type, then one per 5 minutes (a 1,000-pod ReplicaSet writes 25, not
1,000). Writes happen on a background task owned by the recorder, so recording never blocks or
fails the caller's reconcile step, at most `qps` a second past a burst (client-go's client-side
limiter; kube-scheduler's --kube-api-qps 50 --kube-api-burst 100): the 1,000 Events of a mass
scheduling trail it instead of competing with its binds and watches for the API server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.rest import ApiError, Client

log = logging.getLogger("dockyard.events")
EVENTS = by_kind("", "Event")

Obj = dict[str, Any]
Key = tuple[str, ...]

# client-go's tools/record defaults (events_cache.go).
AGGREGATE_MAX_EVENTS = 10
AGGREGATE_INTERVAL_SECONDS = 600.0
SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0
COMBINED_PREFIX = "(combined from similar events): "
CACHE_ENTRIES = 4096
WRITE_QPS = 50.0
WRITE_BURST = 100


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenBucket:
    """`burst` tokens, refilled at `rate` a second (flowcontrol's token bucket)."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.at = float(burst), time.monotonic()

    def wait(self) -> float:
        """Take a token if there is one (0.0); otherwise how long until there is."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else float("inf")


class EventRecorder:
    """Options: `qps` and `burst` bound the writes (`qps` <= 0: unbounded)."""

    def __init__(self, client: Client, component: str, host: str = "", *,
                 qps: float = WRITE_QPS, burst: int = WRITE_BURST) -> None:
        self.client = client
        self.component = component
        self.host = host
        self._pending: asyncio.Queue[tuple[Obj, str, str, str, Key]] = asyncio.Queue(10_000)
        self._seen: dict[Key, Obj] = {}
        self._similar: dict[Key, tuple[float, set[str]]] = {}  # aggregate key -> messages
        self._spam: dict[Key, TokenBucket] = {}  # per object and type
        self._writes = TokenBucket(qps, burst) if qps > 0 else None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name=f"events-{self.component}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Queue an event (`Normal` or `Warning`) about `obj`; drops it if far behind or if
        the object had its share of events (the spam filter)."""
        meta = obj.get("metadata") or {}
        involved = (str(obj.get("kind") or ""), str(meta.get("namespace") or ""),
                    str(meta.get("name") or ""), str(meta.get("uid") or ""),
                    str(obj.get("apiVersion") or ""))
        message, key = self._aggregate(involved, type_, reason, message)
        if not self._allow((*involved, type_)):
            return
        try:
            self._pending.put_nowait((obj, type_, reason, message, key))
        except asyncio.QueueFull:
            log.warning("event queue full, dropping %s %s", reason, message)

    def _aggregate(self, involved: Key, type_: str, reason: str, message: str
                   ) -> tuple[str, Key]:
        """EventAggregator: the message to write and the key of the Event it counts on."""
        similar_key = (*involved, type_, reason)
        now = time.monotonic()
        last, messages = self._similar.get(similar_key, (0.0, set()))
        if now - last > AGGREGATE_INTERVAL_SECONDS:
            messages = set()
        messages.add(message)
        if len(self._similar) >= CACHE_ENTRIES and similar_key not in self._similar:
            self._similar.clear()
        self._similar[similar_key] = (now, messages)
        if len(messages) < AGGREGATE_MAX_EVENTS:
            return message, (*similar_key, message)
        messages.pop()  # the set stays at the threshold
        return COMBINED_PREFIX + message, (*similar_key, "")

    def _allow(self, spam_key: Key) -> bool:
        """EventSourceObjectSpamFilter: a token bucket per object and event type."""
        bucket = self._spam.get(spam_key)
        if bucket is None:
            if len(self._spam) >= CACHE_ENTRIES:
                self._spam.clear()
            bucket = self._spam[spam_key] = TokenBucket(1.0 / SPAM_REFILL_SECONDS, SPAM_BURST)
        return bucket.wait() == 0.0

    async def _drain(self) -> None:
        while True:
            obj, type_, reason, message, key = await self._pending.get()
            while self._writes is not None and (delay := self._writes.wait()) > 0:
                await asyncio.sleep(delay)
            try:
                await self._write(obj, type_, reason, message, key)
            except (ApiError, OSError) as exc:
                log.debug("event %s for %s not written: %s", reason,
                          obj.get("metadata", {}).get("name"), exc)

    async def _write(self, obj: Obj, type_: str, reason: str, message: str, key: Key) -> None:
        assert EVENTS is not None
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        previous = self._seen.get(key)
        now = _now()
        if previous is not None:
            patch = {"count": previous["count"] + 1, "lastTimestamp": now, "message": message}
            try:
                await self.client.patch(EVENTS, namespace, previous["metadata"]["name"], patch)
                previous["count"] += 1
                return
            except ApiError as exc:
                if exc.code != 404:
                    raise
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.get('name', 'unknown')}.{time.time_ns():x}",
                         "namespace": namespace},
            "involvedObject": {
                "kind": obj.get("kind"), "apiVersion": obj.get("apiVersion"),
                "name": meta.get("name"), "namespace": meta.get("namespace"),
                "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason, "message": message, "type": type_,
            "source": {"component": self.component, **({"host": self.host} if self.host
                                                        else {})},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.host,
        }
        created = await self.client.create(EVENTS, event)
        if len(self._seen) > CACHE_ENTRIES:
            self._seen.clear()
        self._seen[key] = {"metadata": created["metadata"], "count": 1}
