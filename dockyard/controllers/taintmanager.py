"""Taint-based eviction (Kubernetes' TaintEvictionController, formerly NoExecuteTaintManager).

Keys are pods. A pod bound to a node with `NoExecute` taints it does not tolerate is deleted at
once; one that tolerates them for `tolerationSeconds` is deleted that long after the taint's
`timeAdded` (a delayed re-queue, so a restart resumes the same deadline); forever tolerated
pods stay. Deletion is the normal graceful one, after a `DisruptionTarget` condition.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.api.tolerations import tolerates
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer, by_node, object_key, split_key
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.controllers.podutil import is_terminal, is_terminating, now_rfc3339, parse_time

log = logging.getLogger("dockyard.controllers.taintmanager")

PODS = by_kind("", "Pod")
NODES = by_kind("", "Node")
Obj = dict[str, Any]


# -- pure logic ----------------------------------------------------------------------------


def no_execute_taints(node: Obj | None) -> list[Obj]:
    return [t for t in ((node or {}).get("spec") or {}).get("taints") or []
            if t.get("effect") == "NoExecute"]


def eviction_deadline(tolerations: list[Obj], taints: list[Obj], *,
                      added_at: dict[tuple[str, str], datetime]) -> datetime | None:
    """When a pod on a node with these NoExecute `taints` must be deleted, or None for never.

    A taint no toleration matches means now (`datetime.min`). Otherwise each taint allows the
    smallest `tolerationSeconds` among the tolerations matching it (none set: forever) from
    the taint's `timeAdded` (or `added_at`, when we first saw it); the earliest wins.
    """
    deadline: datetime | None = None
    for taint in taints:
        matching = [t for t in tolerations if tolerates(t, taint)]
        if not matching:
            return datetime.min.replace(tzinfo=UTC)
        seconds = [int(t["tolerationSeconds"]) for t in matching
                   if t.get("tolerationSeconds") is not None]
        if not seconds:
            continue  # tolerated forever
        start = _start(taint, added_at.get((taint.get("key") or "", taint.get("value") or "")))
        at = start + timedelta(seconds=max(0, min(seconds)))
        deadline = at if deadline is None or at < deadline else deadline
    return deadline


def _start(taint: Obj, seen: datetime | None) -> datetime:
    """When a taint's toleration clock started: its `timeAdded`, refined by when we saw it
    within the second that RFC 3339 drops (so a 1 s toleration is never cut to 0.1 s), and
    kept after a restart (so the deadline survives one)."""
    added = parse_time(taint.get("timeAdded"))
    if added is None:
        return seen or datetime.now(UTC)
    if seen is not None and added <= seen < added + timedelta(seconds=1):
        return seen
    return added


# -- the controller ------------------------------------------------------------------------


class TaintEvictionController(Controller):
    """Deletes pods from nodes whose NoExecute taints they do not (or no longer) tolerate."""

    name = "taint-eviction-controller"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 4) -> None:
        super().__init__()
        assert PODS is not None and NODES is not None
        self.client = client
        self.recorder = recorder
        self.workers = workers
        self.pods = factory.informer(PODS, indexers={"by_node": by_node})
        self.nodes = factory.informer(NODES)
        # Taints without timeAdded: when this controller first saw them, per pod.
        self._first_seen: dict[str, dict[tuple[str, str], datetime]] = {}
        self.pods.add_handlers(Handlers(on_add=self._pod_changed,
                                        on_update=lambda _old, new: self._pod_changed(new),
                                        on_delete=self._pod_deleted))
        self.nodes.add_handlers(Handlers(on_add=self._node_added, on_update=self._node_updated))

    def informers(self) -> list[Informer]:
        return [self.pods, self.nodes]

    # -- handlers: only enqueue ------------------------------------------------------------

    def _pod_changed(self, pod: Obj) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and no_execute_taints(self.nodes.get(node)):
            self.queue.add(object_key(pod))

    def _pod_deleted(self, pod: Obj) -> None:
        if object_key(pod) in self._first_seen:
            self.queue.add(object_key(pod))  # sync forgets it

    def _node_added(self, node: Obj) -> None:
        if no_execute_taints(node):
            self._enqueue_pods_on(node)

    def _node_updated(self, old: Obj, new: Obj) -> None:
        if no_execute_taints(old) != no_execute_taints(new):
            self._enqueue_pods_on(new)

    def _enqueue_pods_on(self, node: Obj) -> None:
        for pod in self.pods.by_index("by_node", node["metadata"]["name"]):
            self.queue.add(object_key(pod))

    # -- reconcile -------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or is_terminating(pod) or is_terminal(pod):
            self._first_seen.pop(key, None)
            return
        node_name = (pod.get("spec") or {}).get("nodeName")
        taints = no_execute_taints(self.nodes.get(node_name)) if node_name else []
        if not taints:
            self._first_seen.pop(key, None)
            return
        seen = self._first_seen.setdefault(key, {})
        now = datetime.now(UTC)
        for taint in taints:
            seen.setdefault((taint.get("key") or "", taint.get("value") or ""), now)
        deadline = eviction_deadline((pod.get("spec") or {}).get("tolerations") or [], taints,
                                     added_at=seen)
        if deadline is None:
            return  # tolerated forever
        if deadline > now:
            # Wake up just after the deadline; timeAdded has one-second precision.
            self.queue.add_after(key, (deadline - now).total_seconds() + 0.01)
            return
        await self._evict(pod, node_name or "")
        self._first_seen.pop(key, None)

    async def _evict(self, pod: Obj, node: str) -> None:
        assert PODS is not None
        namespace, name = split_key(object_key(pod))
        uid = pod["metadata"].get("uid")
        status = dict(pod.get("status") or {})
        conditions = [c for c in status.get("conditions") or []
                      if c.get("type") != "DisruptionTarget"]
        conditions.append({"type": "DisruptionTarget", "status": "True",
                           "reason": "DeletionByTaintManager",
                           "message": "Taint manager: deleting due to NoExecute taint",
                           "lastTransitionTime": now_rfc3339()})
        try:
            await self.client.patch(PODS, namespace, name,
                                    {"metadata": {"resourceVersion":
                                                  pod["metadata"].get("resourceVersion")},
                                     "status": {"conditions": conditions}}, sub="status")
        except ApiError as exc:
            if is_not_found(exc):
                return
            raise  # a conflict: the cache is behind; retry with the newer pod
        start = time.monotonic()
        try:
            await self.client.delete(PODS, namespace, name, preconditions={"uid": uid})
        except ApiError as exc:
            if is_not_found(exc) or exc.code == 409:  # gone, or replaced by a new pod
                return
            raise
        log.info("evicted pod %s/%s from node %s (%.0f ms)", namespace, name, node,
                 (time.monotonic() - start) * 1000)
        self.recorder.event(pod, "Normal", "TaintManagerEviction",
                            f"Marking for deletion Pod {namespace}/{name}")
