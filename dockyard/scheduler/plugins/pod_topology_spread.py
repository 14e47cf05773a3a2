"""PodTopologySpread: keep matching pods evenly spread over topology domains.

DoNotSchedule constraints filter: placing the pod on a node must not make
`count(domain) + self - min(count over domains)` exceed maxSkew. ScheduleAnyway constraints
score: fewer matching pods in the node's domains is better. Counts are taken in PreFilter and
PreScore over the nodes that pass the pod's node affinity (nodeAffinityPolicy Honor) and carry
every constraint's topology key, as Kubernetes 1.32 does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dockyard.api.tolerations import tolerated
from dockyard.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    unresolvable,
    unschedulable,
)
from dockyard.scheduler.labels import Matcher, label_selector
from dockyard.scheduler.plugins.node_affinity import required_matcher

NAME = "PodTopologySpread"
REASON = "node(s) didn't match pod topology spread constraints"
REASON_LABEL = "node(s) didn't match pod topology spread constraints (missing required label)"
HOSTNAME = "kubernetes.io/hostname"


@dataclass(frozen=True)
class Constraint:
    max_skew: int
    topology_key: str
    selector: Matcher
    empty_selector: bool  # labels.Selector.Empty(): counts nothing
    min_domains: int
    honor_affinity: bool
    honor_taints: bool


def constraints(pod: PodInfo, when: str) -> list[Constraint]:
    out = []
    for c in pod.spec.get("topologySpreadConstraints") or []:
        if c.get("whenUnsatisfiable") != when:
            continue
        raw = c.get("labelSelector")
        if raw is not None and c.get("matchLabelKeys"):
            extra = [{"key": k, "operator": "In", "values": [pod.labels[k]]}
                     for k in c["matchLabelKeys"] if k in pod.labels]
            raw = {**raw, "matchExpressions": [*(raw.get("matchExpressions") or []), *extra]}
        empty = raw is None or not (raw.get("matchLabels") or raw.get("matchExpressions"))
        out.append(Constraint(
            int(c.get("maxSkew") or 1), c.get("topologyKey") or "", label_selector(raw), empty,
            int(c.get("minDomains") or 1), c.get("nodeAffinityPolicy", "Honor") != "Ignore",
            c.get("nodeTaintsPolicy") == "Honor"))
    return out


def count_matching(node: NodeInfo, c: Constraint, namespace: str) -> int:
    """countPodsMatchSelector: same namespace, not terminating, selector matches."""
    if c.empty_selector:
        return 0
    return sum(1 for p in node.pods.values()
               if p.namespace == namespace and c.selector(p.labels) and not p.terminating)


def _eligible(node: NodeInfo, c: Constraint, pod: PodInfo, affinity: Any) -> bool:
    """MatchNodeInclusionPolicies."""
    if c.honor_affinity and affinity is not None and not affinity(node.labels, node.name):
        return False
    if c.honor_taints:
        tolerations = pod.spec.get("tolerations") or []
        for taint in node.taints:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and \
                    not tolerated(tolerations, taint):
                return False
    return True


@dataclass
class _FilterState:
    constraints: list[Constraint]
    counts: dict[tuple[str, str], int]
    minimum: dict[str, int]
    domains: dict[str, int]


class PodTopologySpread:
    NAME = NAME
    EVENTS = frozenset({"NodeAdd", "NodeUpdate", "NodeDelete", "AssignedPodAdd",
                        "AssignedPodUpdate", "AssignedPodDelete"})

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        cs = constraints(pod, "DoNotSchedule")
        if not cs:
            return SKIP
        affinity = required_matcher(pod)
        keys = [c.topology_key for c in cs]
        counts: dict[tuple[str, str], int] = {}
        for node in self.handle.node_infos():
            labels = node.labels
            if any(k not in labels for k in keys):
                continue
            for c in cs:
                if _eligible(node, c, pod, affinity):
                    pair = (c.topology_key, labels[c.topology_key])
                    counts[pair] = counts.get(pair, 0) + count_matching(node, c, pod.namespace)
        minimum: dict[str, int] = {}
        domains: dict[str, int] = {}
        for (key, _value), n in counts.items():
            domains[key] = domains.get(key, 0) + 1
            minimum[key] = min(minimum.get(key, n), n)
        state.write(NAME, _FilterState(cs, counts, minimum, domains))
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s: _FilterState = state.read(NAME)
        for c in s.constraints:
            value = node.labels.get(c.topology_key)
            if value is None:
                return unresolvable(REASON_LABEL)
            key = c.topology_key
            least = 0 if s.domains.get(key, 0) < c.min_domains else s.minimum.get(key, 0)
            own = 1 if c.selector(pod.labels) else 0
            if s.counts.get((key, value), 0) + own - least > c.max_skew:
                return unschedulable(REASON)
        return None

    # -- scoring ---------------------------------------------------------------------------

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        cs = constraints(pod, "ScheduleAnyway")
        if not cs:
            return SKIP
        keys = [c.topology_key for c in cs]
        ignored = {n.name for n in nodes if any(k not in n.labels for k in keys)}
        counts: dict[tuple[str, str], int] = {}
        values: dict[str, set[str]] = {}
        for node in nodes:
            if node.name not in ignored:
                for c in cs:
                    if c.topology_key != HOSTNAME:
                        counts[(c.topology_key, node.labels[c.topology_key])] = 0
                        values.setdefault(c.topology_key, set()).add(
                            node.labels[c.topology_key])
        weights = [math.log((len(nodes) - len(ignored) if c.topology_key == HOSTNAME
                             else len(values.get(c.topology_key, ()))) + 2) for c in cs]
        affinity = required_matcher(pod)
        if counts:
            for node in self.handle.node_infos():
                if any(k not in node.labels for k in keys):
                    continue
                for c in cs:
                    pair = (c.topology_key, node.labels[c.topology_key])
                    if pair in counts and _eligible(node, c, pod, affinity):
                        counts[pair] += count_matching(node, c, pod.namespace)
        state.write(NAME + "/score", (cs, counts, weights, ignored, [n.name for n in nodes]))
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        cs, counts, weights, _ignored, _names = state.read(NAME + "/score")
        total = 0.0
        for c, weight in zip(cs, weights, strict=True):
            value = node.labels.get(c.topology_key)
            if value is None:
                continue
            if c.topology_key == HOSTNAME:
                n = count_matching(node, c, pod.namespace)
            else:
                n = counts.get((c.topology_key, value), 0)
            total += n * weight + (c.max_skew - 1)
        return round(total)

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        _cs, _counts, _weights, ignored, names = state.read(NAME + "/score")
        live = [s for name, s in zip(names, scores, strict=True) if name not in ignored]
        if not live:
            scores[:] = [0] * len(scores)
            return
        low, high = min(live), max(live)
        for i, name in enumerate(names):
            if name in ignored:
                scores[i] = 0
            elif high == 0:
                scores[i] = MAX_NODE_SCORE
            else:
                scores[i] = MAX_NODE_SCORE * (high + low - scores[i]) // high


def new(args: Any, handle: Handle) -> PodTopologySpread:
    return PodTopologySpread(handle)
