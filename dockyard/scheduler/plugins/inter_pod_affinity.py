"""InterPodAffinity: required pod affinity / anti-affinity by topology domain (Filter), and
preferred terms of the pod and of the pods already placed (Score).

PreFilter counts, per (topologyKey, value) pair, the existing pods matching the incoming pod's
terms and the existing pods whose required anti-affinity matches the incoming pod; Filter is
then a few dict lookups per node. Only nodes holding pods with affinity are scanned when the
incoming pod has no terms of its own, so plain pods pay nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockyard.scheduler.framework import (
    SKIP,
    AffinityTerm,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    unresolvable,
    unschedulable,
)

NAME = "InterPodAffinity"
REASON_AFFINITY = "node(s) didn't match pod affinity rules"
REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
HARD_POD_AFFINITY_WEIGHT = 1

Pair = tuple[str, str]


def _bump(counts: dict[Pair, int], node: NodeInfo, key: str, by: int) -> None:
    value = node.labels.get(key)
    if value is not None:
        counts[(key, value)] = counts.get((key, value), 0) + by


@dataclass
class _State:
    existing_anti: dict[Pair, int]
    affinity: dict[Pair, int]
    anti: dict[Pair, int]


class InterPodAffinity:
    NAME = NAME
    EVENTS = frozenset({"NodeAdd", "NodeUpdate", "AssignedPodAdd", "AssignedPodUpdate",
                        "AssignedPodDelete"})

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        ns_labels = self.handle.namespace_labels
        existing_anti: dict[Pair, int] = {}
        for node in self.handle.nodes_with_required_anti_affinity_pods():
            for other in node.anti_affinity_pods.values():
                for term in other.required_anti_affinity:
                    if term.matches(pod, ns_labels):
                        _bump(existing_anti, node, term.topology_key, 1)
        if not pod.required_affinity and not pod.required_anti_affinity and not existing_anti:
            return SKIP
        affinity: dict[Pair, int] = {}
        anti: dict[Pair, int] = {}
        if pod.required_affinity or pod.required_anti_affinity:
            for node in self.handle.node_infos():
                for other in node.pods.values():
                    if pod.required_affinity and all(
                            t.matches(other, ns_labels) for t in pod.required_affinity):
                        for t in pod.required_affinity:
                            _bump(affinity, node, t.topology_key, 1)
                    for t in pod.required_anti_affinity:
                        if t.matches(other, ns_labels):
                            _bump(anti, node, t.topology_key, 1)
        state.write(NAME, _State(existing_anti, affinity, anti))
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s: _State = state.read(NAME)
        labels = node.labels
        if pod.required_affinity:
            present = True
            for t in pod.required_affinity:
                value = labels.get(t.topology_key)
                if value is None:
                    return unresolvable(REASON_AFFINITY)
                if s.affinity.get((t.topology_key, value), 0) <= 0:
                    present = False
            # The first pod of a group that has affinity to itself may go anywhere.
            if not present and not (not s.affinity and all(
                    t.matches(pod, self.handle.namespace_labels)
                    for t in pod.required_affinity)):
                return unresolvable(REASON_AFFINITY)
        if s.anti:
            for t in pod.required_anti_affinity:
                value = labels.get(t.topology_key)
                if value is not None and s.anti.get((t.topology_key, value), 0) > 0:
                    return unschedulable(REASON_ANTI_AFFINITY)
        if s.existing_anti:
            for pair in labels.items():
                if s.existing_anti.get(pair, 0) > 0:
                    return unschedulable(REASON_EXISTING_ANTI_AFFINITY)
        return None

    # -- scoring ---------------------------------------------------------------------------

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        own = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
        sources = self.handle.node_infos() if own else self.handle.nodes_with_affinity_pods()
        ns_labels = self.handle.namespace_labels
        scores: dict[Pair, int] = {}

        def add(terms: list[AffinityTerm], target: PodInfo, node: NodeInfo, sign: int,
                weight: int | None = None) -> None:
            for t in terms:
                if t.matches(target, ns_labels):
                    _bump(scores, node, t.topology_key, sign * (weight or t.weight))

        for node in sources:
            for other in (node.pods if own else node.affinity_pods).values():
                if own:
                    add(pod.preferred_affinity, other, node, 1)
                    add(pod.preferred_anti_affinity, other, node, -1)
                if other.has_affinity:
                    add(other.required_affinity, pod, node, 1, HARD_POD_AFFINITY_WEIGHT)
                    add(other.preferred_affinity, pod, node, 1)
                    add(other.preferred_anti_affinity, pod, node, -1)
        if not scores:
            return SKIP
        state.write(NAME + "/score", scores)
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        scores: dict[Pair, int] = state.read(NAME + "/score")
        labels = node.labels
        return sum(s for (key, value), s in scores.items() if labels.get(key) == value)

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        if not scores:
            return
        low, high = min(scores), max(scores)
        spread = high - low
        scores[:] = [int(100 * (s - low) / spread) if spread > 0 else 0 for s in scores]


def new(args: Any, handle: Handle) -> InterPodAffinity:
    return InterPodAffinity(handle)
