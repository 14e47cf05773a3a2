"""NodeResourcesFit: the pod's requests must fit the node's allocatable minus what the pods
already on it (bound or assumed) request; scores with the LeastAllocated strategy.

Requests are `framework.pod_requests` (containers summed, raised to the largest init
container), pre-computed once per pod in `PodInfo`. Scoring uses the non-zero requests
(100m / 200Mi for containers without one), as Kubernetes does.
"""

from __future__ import annotations

from typing import Any

from dockyard.scheduler.framework import (
    MAX_NODE_SCORE,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    split_nodes,
    unschedulable,
)

NAME = "NodeResourcesFit"


class NodeResourcesFit:
    NAME = NAME
    EVENTS = frozenset({"NodeAdd", "NodeUpdate", "AssignedPodDelete", "AssignedPodUpdate"})

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        want = pod.requests
        if node.free_pods > 0 and want.milli_cpu <= node.free_cpu and \
                want.memory <= node.free_memory and want.ephemeral_storage <= node.free_storage \
                and not want.scalar:
            return None  # the common case, without building a list of reasons
        reasons = insufficient(pod, node)
        return unschedulable(*reasons) if reasons else None

    def filter_key(self, state: CycleState, pod: PodInfo) -> tuple[Any, ...]:
        want = pod.requests
        return (want.milli_cpu, want.memory, want.ephemeral_storage,
                tuple(sorted(want.scalar.items())))

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                     ) -> tuple[list[NodeInfo], list[NodeInfo]] | None:
        want = pod.requests
        if want.scalar:
            return None
        cpu, memory, storage = want.milli_cpu, want.memory, want.ephemeral_storage
        return split_nodes(nodes, [n for n in nodes if n.free_pods > 0 and cpu <= n.free_cpu
                                   and memory <= n.free_memory and storage <= n.free_storage])

    def score_key(self, state: CycleState, pod: PodInfo) -> tuple[int, int]:
        """The score depends on the node and the pod's non-zero cpu and memory only."""
        return pod.non_zero_cpu, pod.non_zero_memory

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        """LeastAllocated over cpu and memory, each weighted 1."""
        cpu, memory = node.allocatable.milli_cpu, node.allocatable.memory
        if cpu and memory:  # the usual node: both resources count
            used_cpu = node.non_zero_cpu + pod.non_zero_cpu
            used_memory = node.non_zero_memory + pod.non_zero_memory
            return ((0 if used_cpu > cpu else (cpu - used_cpu) * MAX_NODE_SCORE // cpu)
                    + (0 if used_memory > memory
                       else (memory - used_memory) * MAX_NODE_SCORE // memory)) // 2
        total = weights = 0
        capacity = node.allocatable.milli_cpu
        if capacity:
            requested = node.non_zero_cpu + pod.non_zero_cpu
            total += 0 if requested > capacity else (capacity - requested) * MAX_NODE_SCORE \
                // capacity
            weights += 1
        capacity = node.allocatable.memory
        if capacity:
            requested = node.non_zero_memory + pod.non_zero_memory
            total += 0 if requested > capacity else (capacity - requested) * MAX_NODE_SCORE \
                // capacity
            weights += 1
        return total // weights if weights else 0

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        return None


def insufficient(pod: PodInfo, node: NodeInfo) -> list[str]:
    """fitsRequest: the reasons, in Kubernetes' order (pods, cpu, memory, storage, scalars)."""
    reasons: list[str] = []
    alloc, used, want = node.allocatable, node.requested, pod.requests
    if len(node.pods) + 1 > alloc.allowed_pods:
        reasons.append("Too many pods")
    if want.milli_cpu > 0 and want.milli_cpu > alloc.milli_cpu - used.milli_cpu:
        reasons.append("Insufficient cpu")
    if want.memory > 0 and want.memory > alloc.memory - used.memory:
        reasons.append("Insufficient memory")
    if want.ephemeral_storage > 0 and \
            want.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage:
        reasons.append("Insufficient ephemeral-storage")
    for name, amount in want.scalar.items():
        if amount > alloc.scalar.get(name, 0) - used.scalar.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def new(args: Any, handle: Handle) -> NodeResourcesFit:
    return NodeResourcesFit()
