"""NodeAffinity: `spec.nodeSelector` and required node affinity must match the node's labels
(Filter); matching preferred terms add their weights (Score, normalized to the maximum)."""

from __future__ import annotations

from typing import Any

import orjson

from dockyard.scheduler.framework import (
    SKIP,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    default_normalize_score,
    split_nodes,
    unresolvable,
)
from dockyard.scheduler.labels import node_selector, node_selector_term

NAME = "NodeAffinity"
REASON = "node(s) didn't match Pod's node affinity/selector"


def required_matcher(pod: PodInfo) -> Any:
    """A `(labels, name) -> bool` for the pod's hard node constraints, or None if it has none."""
    selector = pod.spec.get("nodeSelector") or {}
    required = ((pod.spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if not selector and required is None:
        return None
    terms = node_selector(required) if required is not None else None
    items = tuple(selector.items())

    def matches(labels: dict[str, str], name: str) -> bool:
        for key, value in items:
            if labels.get(key) != value:
                return False
        return terms is None or terms(labels, name)
    return matches


class NodeAffinity:
    NAME = NAME
    EVENTS = frozenset({"NodeAdd", "NodeUpdate"})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        matcher = required_matcher(pod)
        if matcher is None:
            return SKIP
        state.write(NAME, matcher)
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        return None if state.read(NAME)(node.labels, node.name) else unresolvable(REASON)

    def filter_key(self, state: CycleState, pod: PodInfo) -> bytes:
        """What `required_matcher` is built from."""
        required = ((pod.spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution")
        return orjson.dumps([pod.spec.get("nodeSelector") or {}, required],
                            option=orjson.OPT_SORT_KEYS)

    def filter_nodes(self, state: CycleState, pod: PodInfo,
                     nodes: list[NodeInfo]) -> tuple[list[NodeInfo], list[NodeInfo]]:
        matches = state.read(NAME)
        return split_nodes(nodes, [n for n in nodes if matches(n.labels, n.name)])

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        preferred = ((pod.spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "preferredDuringSchedulingIgnoredDuringExecution") or []
        terms = [(int(t.get("weight") or 0), node_selector_term(t.get("preference") or {}))
                 for t in preferred if t.get("weight")]
        if not terms:
            return SKIP
        state.write(NAME + "/score", terms)
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        return sum(w for w, term in state.read(NAME + "/score") if term(node.labels, node.name))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        default_normalize_score(scores, reverse=False)


def new(args: Any, handle: Handle) -> NodeAffinity:
    return NodeAffinity()
