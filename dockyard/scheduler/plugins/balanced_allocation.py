"""NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory would be used in equal
shares after placing the pod (score = (1 - std of the two fractions) * 100)."""

from __future__ import annotations

from typing import Any

from dockyard.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
)

NAME = "NodeResourcesBalancedAllocation"


class BalancedAllocation:
    NAME = NAME
    EVENTS = frozenset({"NodeAdd", "NodeUpdate", "AssignedPodDelete"})

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        # A best-effort pod changes no balance: skip, as Kubernetes 1.32 does.
        return None if pod.requests.milli_cpu or pod.requests.memory else SKIP

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        fractions = []
        capacity = node.allocatable.milli_cpu
        if capacity:
            fractions.append(min(1.0, (node.requested.milli_cpu + pod.requests.milli_cpu)
                                 / capacity))
        capacity = node.allocatable.memory
        if capacity:
            fractions.append(min(1.0, (node.requested.memory + pod.requests.memory) / capacity))
        std = abs(fractions[0] - fractions[1]) / 2 if len(fractions) == 2 else 0.0
        return int((1 - std) * MAX_NODE_SCORE)

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        return None


def new(args: Any, handle: Handle) -> BalancedAllocation:
    return BalancedAllocation()
