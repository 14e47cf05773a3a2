"""The node lifecycle controller: notices nodes whose agent stopped reporting, and taints them.

Every `node_monitor_period` a monitor pass records, per node, when its Lease renewTime or its
Ready heartbeat last changed (by this controller's clock, as Kubernetes does, so node clocks do
not matter) and queues nodes silent for longer than the grace period. `sync(node)` then sets
their conditions to Unknown, keeps the condition taints (not-ready / unreachable NoExecute and
NoSchedule, pressure and unschedulable NoSchedule) in line with the conditions, and marks the
pods of an unreachable node not Ready. Eviction itself is `taintmanager.TaintEvictionController`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer, by_node
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.controllers.podutil import (
    condition,
    condition_status,
    is_pod_ready,
    now_rfc3339,
    parse_time,
)

log = logging.getLogger("dockyard.controllers.nodelifecycle")

NODES = by_kind("", "Node")
PODS = by_kind("", "Pod")
LEASES = by_kind("coordination.k8s.io", "Lease")
NODE_LEASE_NAMESPACE = "kube-node-lease"
Obj = dict[str, Any]

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
# (condition, status) -> the NoSchedule taint it implies (doNoScheduleTaintingPass).
NO_SCHEDULE_TAINTS = {
    ("Ready", "False"): TAINT_NOT_READY,
    ("Ready", "Unknown"): TAINT_UNREACHABLE,
    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable",
}
MANAGED_TAINT_KEYS = frozenset({*NO_SCHEDULE_TAINTS.values(), TAINT_UNSCHEDULABLE})
# The conditions a silent node's kubelet is no longer vouching for.
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


# -- pure logic ----------------------------------------------------------------------------


def desired_taints(node: Obj) -> set[tuple[str, str]]:
    """The (key, effect) pairs this controller wants on `node`, from its conditions and spec."""
    wanted: set[tuple[str, str]] = set()
    for (type_, status), key in NO_SCHEDULE_TAINTS.items():
        if condition_status(node, type_) == status:
            wanted.add((key, "NoSchedule"))
    if (node.get("spec") or {}).get("unschedulable"):
        wanted.add((TAINT_UNSCHEDULABLE, "NoSchedule"))
    ready = condition_status(node, "Ready")
    if ready == "False":
        wanted.add((TAINT_NOT_READY, "NoExecute"))
    elif ready == "Unknown":
        wanted.add((TAINT_UNREACHABLE, "NoExecute"))
    return wanted


def reconcile_taints(node: Obj, now: str) -> list[Obj] | None:
    """The node's taint list with managed taints matching `desired_taints`, or None if equal.

    Taints of other keys are kept as they are; kept managed taints keep their `timeAdded`.
    """
    current: list[Obj] = list((node.get("spec") or {}).get("taints") or [])
    wanted = desired_taints(node)
    kept = [t for t in current if t.get("key") not in MANAGED_TAINT_KEYS
            or (t.get("key"), t.get("effect")) in wanted]
    have = {(t.get("key"), t.get("effect")) for t in kept}
    added = [{"key": key, "effect": effect, "timeAdded": now}
             for key, effect in sorted(wanted - have)]
    result = kept + added
    return None if result == current else result


def unknown_conditions(node: Obj, now: str) -> list[Obj] | None:
    """Conditions after the kubelet went silent (all kubelet conditions Unknown), or None."""
    conditions = [dict(c) for c in (node.get("status") or {}).get("conditions") or []]
    created = node["metadata"].get("creationTimestamp")
    changed = False
    for type_ in KUBELET_CONDITIONS:
        cond = next((c for c in conditions if c.get("type") == type_), None)
        if cond is None:
            conditions.append({"type": type_, "status": "Unknown",
                               "reason": "NodeStatusNeverUpdated",
                               "message": "Kubelet never posted node status.",
                               "lastHeartbeatTime": created, "lastTransitionTime": now})
            changed = True
        elif cond.get("status") != "Unknown":
            cond.update(status="Unknown", reason="NodeStatusUnknown",
                        message="Kubelet stopped posting node status.",
                        lastTransitionTime=now)
            changed = True
    return conditions if changed else None


@dataclass
class NodeHealth:
    """What this controller last saw of a node, and when (its own wall clock)."""

    probe: float  # when the node last showed a sign of life
    heartbeat: str = ""  # Ready condition lastHeartbeatTime seen then
    renew: str = ""  # Lease renewTime seen then
    ready: str = ""  # Ready condition status seen then
    grace: float = 0.0


# -- the controller ------------------------------------------------------------------------


class NodeLifecycleController(Controller):
    name = "node-lifecycle-controller"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 node_monitor_grace_period: float = 40.0, node_monitor_period: float = 5.0,
                 node_startup_grace_period: float = 60.0,
                 pod_eviction_timeout: float = 300.0, workers: int = 4) -> None:
        super().__init__()
        assert NODES is not None and PODS is not None and LEASES is not None
        self.client = client
        self.recorder = recorder
        self.grace = node_monitor_grace_period
        self.period = node_monitor_period
        self.startup_grace = node_startup_grace_period
        # Accepted for flag compatibility; taint-based eviction uses tolerationSeconds instead.
        self.pod_eviction_timeout = pod_eviction_timeout
        self.workers = workers
        self.nodes = factory.informer(NODES)
        self.leases = factory.informer(LEASES)
        self.pods = factory.informer(PODS, indexers={"by_node": by_node})
        self._health: dict[str, NodeHealth] = {}
        self._mark_pods: set[str] = set()  # nodes seen going from Ready=True to False
        self.nodes.add_handlers(Handlers(
            on_add=lambda n: self.queue.add(n["metadata"]["name"]),
            on_update=lambda _old, n: self.queue.add(n["metadata"]["name"]),
            on_delete=lambda n: self.queue.add(n["metadata"]["name"])))
        self.pods.add_handlers(Handlers(on_add=self._pod_changed,
                                        on_update=lambda _old, new: self._pod_changed(new)))

    def informers(self) -> list[Informer]:
        return [self.nodes, self.leases, self.pods]

    def _pod_changed(self, pod: Obj) -> None:
        """A Ready pod on an unreachable node (it came in late): mark it not Ready."""
        node = (pod.get("spec") or {}).get("nodeName")
        if node and is_pod_ready(pod) and \
                condition_status(self.nodes.get(node), "Ready") == "Unknown":
            self.queue.add(node)

    async def run(self) -> None:
        monitor = asyncio.create_task(self._monitor(), name=f"{self.name}-monitor")
        try:
            await super().run()
        finally:
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)

    async def _monitor(self) -> None:
        """monitorNodeHealth: observe every node each period; queue the silent ones."""
        await asyncio.gather(*(i.wait_synced() for i in self.informers()))
        while True:
            now = time.time()
            for node in self.nodes.list():
                name = node["metadata"]["name"]
                health = self._observe(node, now)
                if now > health.probe + health.grace and \
                        unknown_conditions(node, "") is not None:
                    self.queue.add(name)
            await asyncio.sleep(self.period)

    def _observe(self, node: Obj, now: float) -> NodeHealth:
        """tryUpdateNodeHealth's bookkeeping: a changed heartbeat or lease renewal is life."""
        name = node["metadata"]["name"]
        ready = condition(node, "Ready")
        heartbeat = str((ready or {}).get("lastHeartbeatTime") or "")
        lease = self.leases.get(f"{NODE_LEASE_NAMESPACE}/{name}")
        renew = str(((lease or {}).get("spec") or {}).get("renewTime") or "")
        status = str((ready or {}).get("status") or "")
        health = self._health.get(name)
        if health is None:
            if ready is None:  # never reported: count from creation, with the startup grace
                created = parse_time(node["metadata"].get("creationTimestamp"))
                probe = created.timestamp() if created else now
                health = NodeHealth(probe, heartbeat, renew, status, self.startup_grace)
            else:
                health = NodeHealth(now, heartbeat, renew, status, self.grace)
            self._health[name] = health
            return health
        if ready is not None:
            health.grace = self.grace
        if heartbeat != health.heartbeat:
            health.heartbeat, health.probe = heartbeat, now
        if renew != health.renew:
            health.renew, health.probe = renew, now
        if health.ready == "True" and status == "False":
            self._mark_pods.add(name)
        health.ready = status
        return health

    # -- reconcile -------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            self._health.pop(key, None)
            self._mark_pods.discard(key)
            return
        now = time.time()
        health = self._observe(node, now)
        if now > health.probe + health.grace:
            node = await self._mark_unknown(node) or node
        await self._sync_taints(node)
        ready = condition_status(node, "Ready")
        if ready == "Unknown" or (ready == "False" and key in self._mark_pods):
            await self._mark_pods_not_ready(key)
        self._mark_pods.discard(key)

    async def _mark_unknown(self, node: Obj) -> Obj | None:
        assert NODES is not None
        stamp = now_rfc3339()
        conditions = unknown_conditions(node, stamp)
        if conditions is None:
            return None
        was_ready = condition_status(node, "Ready") == "True"
        updated = copy.deepcopy(node)
        updated.setdefault("status", {})["conditions"] = conditions
        try:
            result = await self.client.update_status(NODES, updated)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise
        name = node["metadata"]["name"]
        log.info("node %s: kubelet stopped posting node status; conditions set to Unknown", name)
        if was_ready:
            self.recorder.event(node, "Normal", "NodeNotReady",
                                f"Node {name} status is now: NodeNotReady")
        return result

    async def _sync_taints(self, node: Obj) -> None:
        assert NODES is not None
        taints = reconcile_taints(node, now_rfc3339())
        if taints is None:
            return
        updated = copy.deepcopy(node)
        spec = updated.setdefault("spec", {})
        if taints:
            spec["taints"] = taints
        else:
            spec.pop("taints", None)
        try:
            await self.client.update(NODES, updated)
        except ApiError as exc:
            if not is_not_found(exc):
                raise  # a conflict: retried with the newer node from the cache

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        """MarkPodsNotReady: the Ready condition of every pod on the node becomes False."""
        assert PODS is not None
        failed: ApiError | None = None
        stamp = now_rfc3339()
        for pod in self.pods.by_index("by_node", node_name):
            if not is_pod_ready(pod):
                continue
            updated = copy.deepcopy(pod)
            for cond in updated["status"]["conditions"]:
                if cond.get("type") == "Ready":
                    cond.update(status="False", lastTransitionTime=stamp)
            try:
                await self.client.update_status(PODS, updated)
            except ApiError as exc:
                if not is_not_found(exc):
                    failed = exc  # (a conflict: retried with the newer pod)
                continue
            self.recorder.event(pod, "Warning", "NodeNotReady", "Node is not ready")
        if failed is not None:
            raise failed
