"""TaintToleration: NoSchedule/NoExecute taints must be tolerated (Filter); nodes with fewer
untolerated PreferNoSchedule taints score higher (Score, normalized in reverse)."""

from __future__ import annotations

from typing import Any

import orjson

from dockyard.api.tolerations import tolerated
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

NAME = "TaintToleration"
_HARD = ("NoSchedule", "NoExecute")


class TaintToleration:
    NAME = NAME
    EVENTS = frozenset({"NodeAdd", "NodeUpdate"})

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.taints:
            return None
        tolerations = pod.spec.get("tolerations") or []
        for taint in node.taints:
            if taint.get("effect") in _HARD and not tolerated(tolerations, taint):
                return unresolvable("node(s) had untolerated taint "
                                    f"{{{taint.get('key', '')}: {taint.get('value', '')}}}")
        return None

    def filter_key(self, state: CycleState, pod: PodInfo) -> bytes:
        return orjson.dumps(pod.spec.get("tolerations") or [], option=orjson.OPT_SORT_KEYS)

    def filter_nodes(self, state: CycleState, pod: PodInfo,
                     nodes: list[NodeInfo]) -> tuple[list[NodeInfo], list[NodeInfo]]:
        return split_nodes(nodes, [n for n in nodes if not n.taints])

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        for node in nodes:  # (a plain loop: any() over a generator is slower)
            if node.taints:
                break
        else:
            return SKIP  # every node would score the same: the choice does not change
        state.write(NAME, [t for t in pod.spec.get("tolerations") or []
                           if t.get("effect") in (None, "", "PreferNoSchedule")])
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        if not node.taints:
            return 0
        tolerations = state.read(NAME)
        return sum(1 for t in node.taints if t.get("effect") == "PreferNoSchedule"
                   and not tolerated(tolerations, t))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        default_normalize_score(scores, reverse=True)


def new(args: Any, handle: Handle) -> TaintToleration:
    return TaintToleration()
