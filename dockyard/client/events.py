"""Recording core/v1 Events about objects, as `kubectl describe` shows them.

Repeats of the same (object, type, reason, message) increase `count` and `lastTimestamp` of one
Event instead of creating new ones. Writes happen on a background task owned by the recorder,
so recording never blocks or fails the caller's reconcile step.
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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, client: Client, component: str, host: str = "") -> None:
        self.client = client
        self.component = component
        self.host = host
        self._pending: asyncio.Queue[tuple[Obj, str, str, str]] = asyncio.Queue(10_000)
        self._seen: dict[tuple[str, str, str, str], Obj] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name=f"events-{self.component}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Queue an event (`Normal` or `Warning`) about `obj`; drops it if far behind."""
        try:
            self._pending.put_nowait((obj, type_, reason, message))
        except asyncio.QueueFull:
            log.warning("event queue full, dropping %s %s", reason, message)

    async def _drain(self) -> None:
        while True:
            obj, type_, reason, message = await self._pending.get()
            try:
                await self._write(obj, type_, reason, message)
            except (ApiError, OSError) as exc:
                log.debug("event %s for %s not written: %s", reason,
                          obj.get("metadata", {}).get("name"), exc)

    async def _write(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        assert EVENTS is not None
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid", ""), type_, reason, message)
        previous = self._seen.get(key)
        now = _now()
        if previous is not None:
            patch = {"count": previous["count"] + 1, "lastTimestamp": now}
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
        if len(self._seen) > 4096:
            self._seen.clear()
        self._seen[key] = {"metadata": created["metadata"], "count": 1}
