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

    def score_key(self, state: CycleState, pod: PodInfo) -> tuple[int, int]:
        """The score depends on the node and the pod's cpu and memory requests only."""
        return pod.requests.milli_cpu, pod.requests.memory

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        cpu, memory = node.allocatable.milli_cpu, node.allocatable.memory
        if not cpu or not memory:
            return MAX_NODE_SCORE  # one fraction or none: a standard deviation of zero
        used, want = node.requested, pod.requests
        cpu_share = (used.milli_cpu + want.milli_cpu) / cpu
        memory_share = (used.memory + want.memory) / memory
        if cpu_share > 1.0:
            cpu_share = 1.0
        if memory_share > 1.0:
            memory_share = 1.0
        std = (cpu_share - memory_share if cpu_share > memory_share
               else memory_share - cpu_share) / 2
        return int((1 - std) * MAX_NODE_SCORE)

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        return None


def new(args: Any, handle: Handle) -> BalancedAllocation:
    return BalancedAllocation()
