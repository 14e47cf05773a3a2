"""NodeUnschedulable: nodes with `spec.unschedulable` (cordoned) take only pods that tolerate
the `node.kubernetes.io/unschedulable:NoSchedule` taint."""

from __future__ import annotations

from typing import Any

from dockyard.api.tolerations import tolerated
from dockyard.scheduler.framework import (
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    split_nodes,
    unresolvable,
)

NAME = "NodeUnschedulable"
REASON = "node(s) were unschedulable"
_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


class NodeUnschedulable:
    NAME = NAME
    EVENTS = frozenset({"NodeAdd", "NodeUpdate"})

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.unschedulable or tolerated(pod.spec.get("tolerations") or [], _TAINT):
            return None
        return unresolvable(REASON)

    def filter_key(self, state: CycleState, pod: PodInfo) -> bool:
        return tolerated(pod.spec.get("tolerations") or [], _TAINT)

    def filter_nodes(self, state: CycleState, pod: PodInfo,
                     nodes: list[NodeInfo]) -> tuple[list[NodeInfo], list[NodeInfo]]:
        return split_nodes(nodes, [n for n in nodes if not n.unschedulable])


def new(args: Any, handle: Handle) -> NodeUnschedulable:
    return NodeUnschedulable()
