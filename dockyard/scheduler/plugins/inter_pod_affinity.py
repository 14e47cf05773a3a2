"""InterPodAffinity: required pod affinity / anti-affinity by topology domain (Filter), and
preferred terms of the pod and of the pods already placed (Score).

PreFilter counts, per (topologyKey, value) pair, the existing pods matching the incoming pod's
terms and the existing pods whose required anti-affinity matches the incoming pod; Filter is
then a few dict lookups per node. The cache indexes placed pods by label and their terms by
signature, so a cycle looks at the pods a term's selector names and at each distinct existing
term once (as k8s' topologyToMatchedTermCount maps), never at every pod.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dockyard.scheduler.framework import (
    PREFERRED_AFFINITY,
    PREFERRED_ANTI_AFFINITY,
    REQUIRED_AFFINITY,
    REQUIRED_ANTI_AFFINITY,
    SKIP,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    split_nodes,
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


def _add(counts: dict[Pair, int], key: str, amounts: Iterable[tuple[NodeInfo, int]]) -> None:
    """_bump for many nodes (the loop of PreFilter)."""
    get = counts.get
    for node, by in amounts:
        value = node.labels.get(key)
        if value is not None:
            pair = (key, value)
            counts[pair] = get(pair, 0) + by


@dataclass
class _State:
    existing_anti: dict[Pair, int]
    affinity: dict[Pair, int]
    anti: dict[Pair, int]
    # topology key -> values of the pairs above (anti and existing anti) with pods counted
    blocked: dict[str, set[str]]


class InterPodAffinity:
    NAME = NAME
    EVENTS = frozenset({"NodeAdd", "NodeUpdate", "AssignedPodAdd", "AssignedPodUpdate",
                        "AssignedPodDelete"})

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        ns_labels = self.handle.namespace_labels
        existing_anti: dict[Pair, int] = {}
        for term, nodes in self.handle.placed_terms(REQUIRED_ANTI_AFFINITY, pod):
            if term.matches(pod, ns_labels):
                _add(existing_anti, term.topology_key, nodes)
        if not pod.required_affinity and not pod.required_anti_affinity and not existing_anti:
            return SKIP
        affinity: dict[Pair, int] = {}
        anti: dict[Pair, int] = {}
        if pod.required_affinity:
            terms = pod.required_affinity
            for other, node in self.handle.candidate_pods(terms[0]):
                if all(t.matches(other, ns_labels) for t in terms):
                    for t in terms:
                        _bump(affinity, node, t.topology_key, 1)
        for t in pod.required_anti_affinity:
            _add(anti, t.topology_key, ((node, 1) for other, node in self.handle.candidate_pods(t)
                                        if t.matches(other, ns_labels)))
        blocked: dict[str, set[str]] = {}
        for counts in (anti, existing_anti):
            for (key, value), n in counts.items():
                if n > 0:
                    blocked.setdefault(key, set()).add(value)
        state.write(NAME, _State(existing_anti, affinity, anti, blocked))
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

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                     ) -> tuple[list[NodeInfo], list[NodeInfo]] | None:
        """Without required affinity, a node passes unless it is in a blocked domain."""
        s: _State = state.read(NAME)
        if pod.required_affinity:
            return None
        if not s.blocked:
            return nodes, []
        if len(s.blocked) == 1:  # the usual case: one topology key
            [(key, values)] = s.blocked.items()
            passing = [n for n in nodes if n.labels.get(key) not in values]
            if len(passing) == len(nodes):
                return passing, []
            return passing, [n for n in nodes if n.labels.get(key) in values]
        pairs = list(s.blocked.items())
        return split_nodes(nodes, [n for n in nodes if not any(
            n.labels.get(key) in values for key, values in pairs)])

    # -- scoring ---------------------------------------------------------------------------

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        handle = self.handle
        ns_labels = handle.namespace_labels
        scores: dict[Pair, int] = {}
        for terms, sign in ((pod.preferred_affinity, 1), (pod.preferred_anti_affinity, -1)):
            for t in terms:
                for other, node in handle.candidate_pods(t):
                    if t.matches(other, ns_labels):
                        _bump(scores, node, t.topology_key, sign * t.weight)
        for kind, sign, weight in ((REQUIRED_AFFINITY, 1, HARD_POD_AFFINITY_WEIGHT),
                                   (PREFERRED_AFFINITY, 1, 1),
                                   (PREFERRED_ANTI_AFFINITY, -1, 1)):
            for term, placed in handle.placed_terms(kind, pod):
                if term.matches(pod, ns_labels):
                    for node, amount in placed:
                        _bump(scores, node, term.topology_key, sign * weight * amount)
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
