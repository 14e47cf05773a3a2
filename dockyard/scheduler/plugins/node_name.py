"""NodeName: a pod that names its node (`spec.nodeName`) fits only that node."""

from __future__ import annotations

from typing import Any

from dockyard.scheduler.framework import (
    SKIP,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    unresolvable,
)

NAME = "NodeName"
REASON = "node(s) didn't match the requested node name"


class NodeName:
    NAME = NAME
    EVENTS = frozenset({"NodeAdd"})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None if pod.spec.get("nodeName") else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if pod.spec.get("nodeName") == node.name:
            return None
        return unresolvable(REASON)

    def filter_key(self, state: CycleState, pod: PodInfo) -> str:
        return pod.spec.get("nodeName") or ""


def new(args: Any, handle: Handle) -> NodeName:
    return NodeName()
