"""Pod garbage collection (Kubernetes' PodGC controller): pods nobody else will ever remove.

Three keys: `terminated` trims Succeeded/Failed pods above the threshold, oldest first;
`node/<name>` force-deletes the pods of a node that is gone (after a quarantine and a direct
GET, since the node cache may lag), first marking running ones Failed; `pod/<ns>/<name>`
force-deletes a terminating pod that no kubelet will finish: unscheduled, or on a NotReady
node tainted `node.kubernetes.io/out-of-service`. Deletes use gracePeriodSeconds=0.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer, by_node, object_key, split_key
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.controllers.podutil import (
    condition_status,
    is_terminal,
    is_terminating,
    now_rfc3339,
)

log = logging.getLogger("dockyard.controllers.podgc")

PODS = by_kind("", "Pod")
NODES = by_kind("", "Node")
Obj = dict[str, Any]

TERMINATED_KEY = "terminated"
OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"


def gc_order(pod: Obj) -> tuple[bool, str, str]:
    """byEvictionAndCreationTimestamp: evicted pods first, then oldest, then by name."""
    evicted = (pod.get("status") or {}).get("reason") == "Evicted"
    meta = pod["metadata"]
    return (not evicted, meta.get("creationTimestamp") or "", meta["name"])


def terminated_to_delete(pods: list[Obj], threshold: int) -> list[Obj]:
    """The terminated pods over `threshold`, in the order they should go."""
    terminated = [p for p in pods if is_terminal(p)]
    if threshold <= 0 or len(terminated) <= threshold:
        return []
    return sorted(terminated, key=gc_order)[:len(terminated) - threshold]


class PodGCController(Controller):
    name = "pod-garbage-collector"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 terminated_pod_gc_threshold: int = 12500, gc_check_period: float = 20.0,
                 orphan_quarantine: float = 40.0, workers: int = 2) -> None:
        super().__init__()
        assert PODS is not None and NODES is not None
        self.client = client
        self.recorder = recorder
        self.threshold = terminated_pod_gc_threshold
        self.period = gc_check_period
        self.quarantine = orphan_quarantine
        self.workers = workers
        self.pods = factory.informer(PODS, indexers={"by_node": by_node})
        self.nodes = factory.informer(NODES)
        self._missing_since: dict[str, float] = {}
        self.pods.add_handlers(Handlers(on_add=self._pod_changed,
                                        on_update=lambda _old, new: self._pod_changed(new)))
        self.nodes.add_handlers(Handlers(
            on_update=lambda _old, node: self._enqueue_pods_of(node),
            on_delete=lambda node: self.queue.add(f"node/{node['metadata']['name']}")))

    def informers(self) -> list[Informer]:
        return [self.pods, self.nodes]

    # -- handlers: only enqueue ------------------------------------------------------------

    def _pod_changed(self, pod: Obj) -> None:
        if is_terminal(pod) and self.threshold > 0:
            # Batch the count: one pass per period however many pods finish.
            self.queue.add_after(TERMINATED_KEY, self.period)
        node = (pod.get("spec") or {}).get("nodeName")
        if node and self.nodes.get(node) is None:
            self.queue.add(f"node/{node}")
        if is_terminating(pod):
            self.queue.add(f"pod/{object_key(pod)}")

    def _enqueue_pods_of(self, node: Obj) -> None:
        if _out_of_service(node):
            for pod in self.pods.by_index("by_node", node["metadata"]["name"]):
                if is_terminating(pod):
                    self.queue.add(f"pod/{object_key(pod)}")

    # -- reconcile -------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        kind, _, rest = key.partition("/")
        if key == TERMINATED_KEY:
            await self._gc_terminated()
        elif kind == "node":
            await self._gc_orphaned(rest)
        elif kind == "pod":
            await self._gc_terminating(rest)

    async def _gc_terminated(self) -> None:
        victims = terminated_to_delete(self.pods.list(), self.threshold)
        if victims:
            log.info("deleting %d terminated pods over the threshold of %d", len(victims),
                     self.threshold)
        for pod in victims:
            await self._force_delete(pod)

    async def _gc_orphaned(self, node_name: str) -> None:
        assert NODES is not None
        pods = self.pods.by_index("by_node", node_name)
        if self.nodes.get(node_name) is not None or not pods:
            self._missing_since.pop(node_name, None)
            return
        now = time.monotonic()
        since = self._missing_since.setdefault(node_name, now)
        if now - since < self.quarantine:
            self.queue.add_after(f"node/{node_name}", self.quarantine - (now - since) + 0.01)
            return
        try:  # the cache may lag: ask the API server itself before deleting anything
            await self.client.get(NODES, None, node_name)
            self._missing_since.pop(node_name, None)
            return
        except ApiError as exc:
            if not is_not_found(exc):
                raise
        for pod in pods:
            await self._force_delete(pod, fail_reason="DeletionByPodGC",
                                     message="PodGC: node no longer exists")
        self._missing_since.pop(node_name, None)

    async def _gc_terminating(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or not is_terminating(pod):
            return
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            await self._force_delete(pod)  # unscheduled: no kubelet will ever finish it
            return
        node = self.nodes.get(node_name)
        if node is not None and _out_of_service(node) and \
                condition_status(node, "Ready") != "True":
            await self._force_delete(pod, fail_reason="DeletionByPodGC",
                                     message="PodGC: node is out of service")

    async def _force_delete(self, pod: Obj, *, fail_reason: str = "", message: str = "") -> None:
        """Delete with grace 0; a pod not yet terminal is first marked Failed (as k8s does)."""
        assert PODS is not None
        namespace, name = split_key(object_key(pod))
        if fail_reason and not is_terminal(pod):
            updated = copy.deepcopy(pod)
            status = updated.setdefault("status", {})
            status["phase"] = "Failed"
            conditions = [c for c in status.get("conditions") or []
                          if c.get("type") != "DisruptionTarget"]
            conditions.append({"type": "DisruptionTarget", "status": "True",
                               "reason": fail_reason, "message": message,
                               "lastTransitionTime": now_rfc3339()})
            status["conditions"] = conditions
            try:
                await self.client.update_status(PODS, updated)
            except ApiError as exc:
                if is_not_found(exc):
                    return
                raise  # a conflict: retried with the newer pod
        try:
            await self.client.delete(PODS, namespace, name, grace_period_seconds=0,
                                     preconditions={"uid": pod["metadata"].get("uid")})
        except ApiError as exc:
            if not is_not_found(exc) and exc.code != 409:
                raise
            return
        log.info("force-deleted pod %s/%s", namespace, name)


def _out_of_service(node: Obj) -> bool:
    return any(t.get("key") == OUT_OF_SERVICE_TAINT
               for t in (node.get("spec") or {}).get("taints") or [])
