"""The scheduler's cache: one NodeInfo per node, fed by the node and pod informers.

A pod is counted on its node as soon as the scheduler decides (`assume`), before the binding
reaches the API, so the next cycles see the node as fuller; the informer's bound copy later
confirms it, and a failed binding `forget`s it. Scheduling cycles are synchronous on the event
loop, so the cache itself is the cycle's consistent snapshot: no copying per cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from dockyard.scheduler.framework import NodeInfo, Obj, PodInfo
from dockyard.scheduler.labels import Labels

log = logging.getLogger("dockyard.scheduler.cache")


def pod_key(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class Cache:
    """Implements the plugins' `Handle` over the cached nodes and pods."""

    def __init__(self, namespace_labels: Callable[[str], Labels] | None = None) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        self._order: list[NodeInfo] = []
        self._order_dirty = False
        self._pod_node: dict[str, str] = {}  # pod key -> node it is counted on
        self._assumed: set[str] = set()
        self._affinity_nodes: set[str] = set()
        self._anti_affinity_nodes: set[str] = set()
        self._namespace_labels = namespace_labels or (lambda _ns: {})

    # -- Handle ----------------------------------------------------------------------------

    def node_infos(self) -> list[NodeInfo]:
        if self._order_dirty:
            self._order = [n for n in self._nodes.values() if n.node is not None]
            self._order_dirty = False
        return self._order

    def node_info(self, name: str) -> NodeInfo | None:
        info = self._nodes.get(name)
        return info if info is not None and info.node is not None else None

    def nodes_with_affinity_pods(self) -> Iterable[NodeInfo]:
        return [n for name in self._affinity_nodes if (n := self.node_info(name))]

    def nodes_with_required_anti_affinity_pods(self) -> Iterable[NodeInfo]:
        return [n for name in self._anti_affinity_nodes if (n := self.node_info(name))]

    def namespace_labels(self, namespace: str) -> Labels:
        return self._namespace_labels(namespace)

    # -- nodes -----------------------------------------------------------------------------

    def add_node(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        info = self._nodes.get(name)
        if info is None:
            self._nodes[name] = NodeInfo(node)
        else:
            was_listed = info.node is not None
            info.set_node(node)
            if was_listed:
                return
        self._order_dirty = True

    def remove_node(self, name: str) -> None:
        info = self._nodes.get(name)
        if info is None:
            return
        if info.pods:
            info.node = None  # keep counting its pods until they are deleted too
        else:
            del self._nodes[name]
        self._order_dirty = True

    @property
    def node_count(self) -> int:
        return len(self.node_infos())

    # -- pods ------------------------------------------------------------------------------

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    def assume(self, pod: PodInfo, node: str) -> None:
        """Count `pod` on `node` now; the binding is still on its way."""
        self._place(pod, node)
        self._assumed.add(pod.key)

    def forget(self, key: str) -> None:
        """The binding failed: stop counting an assumed pod."""
        if key in self._assumed:
            self._assumed.discard(key)
            self._unplace(key)

    def add_pod(self, pod: Obj) -> None:
        """A bound pod seen by the informer (confirms an assumed one)."""
        if is_terminal(pod):
            self.remove_pod(pod_key(pod))
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return
        key = pod_key(pod)
        self._assumed.discard(key)
        self._place(PodInfo(pod), node)

    def update_pod(self, pod: Obj) -> None:
        self.add_pod(pod)

    def remove_pod(self, key: str) -> None:
        self._assumed.discard(key)
        self._unplace(key)

    def pods_on(self, node: str) -> list[PodInfo]:
        info = self._nodes.get(node)
        return list(info.pods.values()) if info else []

    def _place(self, pod: PodInfo, node: str) -> None:
        previous = self._pod_node.get(pod.key)
        if previous is not None and previous != node:
            self._unplace(pod.key)
        info = self._nodes.get(node)
        if info is None:
            info = self._nodes[node] = NodeInfo(name=node)  # pods may arrive before the node
        info.add_pod(pod)
        self._pod_node[pod.key] = node
        self._track_affinity(info)

    def _unplace(self, key: str) -> None:
        node = self._pod_node.pop(key, None)
        if node is None:
            return
        info = self._nodes.get(node)
        if info is None:
            return
        info.remove_pod(key)
        self._track_affinity(info)
        if info.node is None and not info.pods:
            del self._nodes[node]

    def _track_affinity(self, info: NodeInfo) -> None:
        for members, names in ((info.affinity_pods, self._affinity_nodes),
                               (info.anti_affinity_pods, self._anti_affinity_nodes)):
            if members:
                names.add(info.name)
            else:
                names.discard(info.name)
