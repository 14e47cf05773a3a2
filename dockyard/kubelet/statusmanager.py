"""Writing pod statuses to the API (the kubelet's status manager).

The pod workers `set` the status they computed; the manager writes it through the
`pods/status` subresource only when it differs from what the API already holds, from a work
queue (a burst of changes to one pod costs one write with the latest status, and no sync
waits for the API). A write carries the resourceVersion last seen; on a conflict the pod is
read again, conditions owned by others (readiness gates, DisruptionTarget) are taken from
it and the write retried. A terminal phase (Succeeded/Failed) is never replaced by another.
For a pod being deleted, `finish` writes the final status and then deletes the object with
gracePeriodSeconds=0 and the pod's uid as precondition, once the pod workers have stopped
every container and removed the sandbox.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.rest import ApiError, Client, is_conflict, is_not_found
from dockyard.client.workqueue import WorkQueue
from dockyard.kubelet.status import KUBELET_CONDITIONS, TERMINAL_PHASES

log = logging.getLogger("dockyard.kubelet.status")

PODS = by_kind("", "Pod")
Obj = dict[str, Any]
MAX_ATTEMPTS = 5


@dataclass
class _Entry:
    namespace: str
    name: str
    uid: str
    resource_version: str = ""
    known: Obj | None = None  # the status the API holds, as far as we know
    desired: Obj | None = None  # the status the pod worker computed last
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _rv_newer(candidate: str, current: str) -> bool:
    """Whether resourceVersion `candidate` is newer (our store's are revisions: integers)."""
    if not current:
        return True
    try:
        return int(candidate) > int(current)
    except ValueError:
        return candidate != current


class StatusManager:
    def __init__(self, client: Client, *, workers: int = 8) -> None:
        assert PODS is not None
        self.client = client
        self._entries: dict[str, _Entry] = {}
        self._queue = WorkQueue(base_delay=0.1, max_delay=10.0)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self.writes = 0  # for tests and metrics

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._drain(), name="pod-status-writer")
                       for _ in range(self._workers)]

    async def stop(self) -> None:
        await self._queue.shut_down()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # -- what the pod workers call ---------------------------------------------------------

    def observe(self, pod: Obj) -> None:
        """The API's view of the pod (from the informer): newer than what we knew?"""
        meta = pod.get("metadata") or {}
        entry = self._entry(pod)
        rv = str(meta.get("resourceVersion") or "")
        if rv and _rv_newer(rv, entry.resource_version):
            entry.resource_version = rv
            entry.known = pod.get("status") or {}
            if entry.desired is not None and entry.desired != entry.known:
                self._queue.add(entry.uid)

    def get(self, uid: str) -> Obj | None:
        """The latest status of the pod: what we want written, else what the API holds."""
        entry = self._entries.get(uid)
        if entry is None:
            return None
        return entry.desired if entry.desired is not None else entry.known

    def set(self, pod: Obj, status: Obj) -> None:
        entry = self._entry(pod)
        entry.desired = status
        if status != entry.known:
            self._queue.add(entry.uid)

    def pending(self, uid: str) -> bool:
        """Whether a computed status has not reached the API yet."""
        entry = self._entries.get(uid)
        return entry is not None and entry.desired is not None and entry.desired != entry.known

    async def flush(self, uid: str) -> None:
        """Write the pod's status now (if it changed) and wait for the answer."""
        await self._write(uid)

    async def finish(self, pod: Obj, status: Obj | None) -> None:
        """The pod's containers are stopped and its sandbox removed: write the final
        status, then delete the object (grace 0, uid precondition) and forget the pod."""
        assert PODS is not None
        meta = pod["metadata"]
        if status is not None:
            self.set(pod, status)
            try:
                await self._write(meta["uid"])
            except (ApiError, OSError) as exc:
                log.debug("final status of %s/%s not written: %s", meta.get("namespace"),
                          meta["name"], exc)
        try:
            await self.client.delete(PODS, meta.get("namespace"), meta["name"],
                                     grace_period_seconds=0,
                                     preconditions={"uid": meta["uid"]})
        except ApiError as exc:
            if not is_not_found(exc) and not is_conflict(exc):
                raise  # a conflict: the name now belongs to another pod
        self.forget(meta["uid"])

    def forget(self, uid: str) -> None:
        self._entries.pop(uid, None)

    # -- writing ---------------------------------------------------------------------------

    def _entry(self, pod: Obj) -> _Entry:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        entry = self._entries.get(uid)
        if entry is None:
            entry = self._entries[uid] = _Entry(str(meta.get("namespace") or ""),
                                                str(meta["name"]), uid)
        return entry

    async def _drain(self) -> None:
        while (uid := await self._queue.get()) is not None:
            try:
                await self._write(uid)
            except (ApiError, OSError) as exc:
                log.debug("status of pod %s not written (will retry): %s", uid, exc)
                self._queue.add_rate_limited(uid)
            except Exception:  # noqa: BLE001 - one pod must not stop the writer
                log.exception("status of pod %s not written", uid)
                self._queue.add_rate_limited(uid)
            else:
                self._queue.forget(uid)
            finally:
                self._queue.done(uid)

    async def _write(self, uid: str) -> None:
        assert PODS is not None
        entry = self._entries.get(uid)
        if entry is None:
            return
        async with entry.lock:
            for _ in range(MAX_ATTEMPTS):
                desired = entry.desired
                if desired is None or desired == entry.known or self._entries.get(uid) is not entry:
                    return
                if entry.known is not None:
                    desired = merge_status(desired, entry.known)
                    if desired == entry.known:
                        entry.desired = desired
                        return
                body = {"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": entry.name, "namespace": entry.namespace,
                                     "uid": uid, "resourceVersion": entry.resource_version},
                        "status": desired}
                try:
                    saved = await self.client.update_status(PODS, body)
                except ApiError as exc:
                    if is_not_found(exc):
                        self.forget(uid)
                        return
                    if not is_conflict(exc):
                        raise
                    try:
                        fresh = await self.client.get(PODS, entry.namespace, entry.name)
                    except ApiError as get_exc:
                        if is_not_found(get_exc):
                            self.forget(uid)
                            return
                        raise
                    if (fresh.get("metadata") or {}).get("uid") != uid:
                        self.forget(uid)  # the name now belongs to another pod
                        return
                    entry.resource_version = str(fresh["metadata"].get("resourceVersion") or "")
                    entry.known = fresh.get("status") or {}
                    continue
                self.writes += 1
                entry.resource_version = str(saved["metadata"].get("resourceVersion") or "")
                entry.known = saved.get("status") or {}
                if entry.desired is desired or entry.desired == desired:
                    entry.desired = entry.known
                return
            raise ApiError(409, {"kind": "Status", "reason": "Conflict",
                                 "message": f"pod {entry.namespace}/{entry.name}: status "
                                            "kept conflicting"})


def merge_status(desired: Obj, current: Obj) -> Obj:
    """`desired` on top of the API's `current`: others' conditions kept, a terminal phase
    never left (mergePodStatus and the status manager's checks)."""
    out = dict(desired)
    ours = [c for c in desired.get("conditions") or [] if c.get("type") in KUBELET_CONDITIONS]
    theirs = [c for c in current.get("conditions") or []
              if c.get("type") not in KUBELET_CONDITIONS]
    out["conditions"] = theirs + ours
    if current.get("phase") in TERMINAL_PHASES and out.get("phase") != current["phase"]:
        out["phase"] = current["phase"]
        for key in ("reason", "message"):
            if key in current:
                out[key] = current[key]
            else:
                out.pop(key, None)
    return out
