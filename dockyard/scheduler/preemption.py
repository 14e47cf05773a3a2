"""DefaultPreemption: a PostFilter that makes room for a pod by evicting lower-priority pods.

For each node that rejected the pod with a resolvable reason, remove every pod of lower
priority and check the pod fits; then give back ("reprieve") as many of them as possible, most
important first, so only the necessary victims remain. Among the candidate nodes pick the one
whose most important victim has the lowest priority, then the fewest victims, then the lowest
priority sum (pickOneNodeForPreemption). The scheduler evicts the victims through the API and
nominates the node; the pod is retried when they are gone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from dockyard.scheduler.framework import (
    Code,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    PostFilterResult,
    Status,
    fit_error_message,
    unresolvable,
    unschedulable,
)
from dockyard.scheduler.runtime import FilterFn, Framework

NAME = "DefaultPreemption"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
MIN_CANDIDATE_NODES_PERCENTAGE = 10
MIN_CANDIDATE_NODES_ABSOLUTE = 100
_INT32_OFFSET = 2**31  # Kubernetes sums priorities shifted to be non-negative

# Called with (preemptor, node name, victims) to evict the victims through the API.
Evict = Callable[[PodInfo, str, list[PodInfo]], None]


def _importance(pod: PodInfo) -> tuple[int, str]:
    """Sort key, most important first: higher priority, then earlier start."""
    status = pod.pod.get("status") or {}
    return (-pod.priority, status.get("startTime") or pod.creation)


class DefaultPreemption:
    NAME = NAME
    EVENTS: frozenset[str] = frozenset()

    def __init__(self, handle: Handle, evict: Evict,
                 nominated_node: Callable[[str], str | None] | None = None) -> None:
        self.handle = handle
        self.evict = evict
        # The scheduler's own record of nominations, which may be ahead of the pod's status.
        self.nominated_node = nominated_node or (lambda _key: None)
        self.framework: Framework | None = None  # set by the scheduler once built
        self.rng = random.Random()

    def post_filter(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status],
                    num_nodes: int) -> tuple[PostFilterResult | None, Status]:
        result, status = self.preempt(state, pod, statuses)
        if status.reasons:
            return result, Status(status.code, (f"preemption: {status.message}",))
        return result, status

    def preempt(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status]
                ) -> tuple[PostFilterResult | None, Status]:
        eligible, why = self.eligible(pod, statuses)
        if not eligible:
            return None, unschedulable(why)
        nodes = self.handle.node_infos()
        potential = [n for n in nodes if (s := statuses.get(n.name)) is not None
                     and s.code == Code.UNSCHEDULABLE]
        not_helpful = unresolvable(NOT_HELPFUL)
        if not potential:
            return PostFilterResult(""), unschedulable(
                fit_error_message(len(nodes), {}, absent=not_helpful))
        assert self.framework is not None
        filters = self.framework.active_filters(state)
        wanted = min(len(potential), max(MIN_CANDIDATE_NODES_ABSOLUTE,
                                         len(potential) * MIN_CANDIDATE_NODES_PERCENTAGE // 100))
        offset = self.rng.randrange(len(potential))
        candidates: list[tuple[str, list[PodInfo]]] = []
        node_statuses: dict[str, Status] = {}
        for i in range(len(potential)):
            node = potential[(offset + i) % len(potential)]
            victims, status = select_victims(filters, state, pod, node)
            if status is None:
                candidates.append((node.name, victims))
                if len(candidates) >= wanted:
                    break
            else:
                node_statuses[node.name] = status
        if not candidates:
            return PostFilterResult(""), unschedulable(
                fit_error_message(len(nodes), node_statuses, absent=not_helpful))
        node_name, victims = pick_one(candidates)
        self.evict(pod, node_name, victims)
        return PostFilterResult(node_name), Status(Code.SUCCESS)

    def eligible(self, pod: PodInfo, statuses: dict[str, Status]) -> tuple[bool, str]:
        """PodEligibleToPreemptOthers."""
        if pod.spec.get("preemptionPolicy") == "Never":
            return False, "not eligible due to preemptionPolicy=Never."
        nominated = (pod.pod.get("status") or {}).get("nominatedNodeName") or \
            self.nominated_node(pod.key)
        if nominated:
            status = statuses.get(nominated)
            if status is not None and status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
                return True, ""
            node = self.handle.node_info(nominated)
            if node is not None and any(p.priority < pod.priority and p.terminating
                                        for p in node.pods.values()):
                return False, "not eligible due to a terminating pod on the nominated node."
        return True, ""


def select_victims(filters: list[tuple[str, FilterFn]], state: CycleState, pod: PodInfo,
                   node: NodeInfo) -> tuple[list[PodInfo], Status | None]:
    """SelectVictimsOnNode: the fewest lower-priority pods whose removal lets `pod` fit."""
    lower = [p for p in node.pods.values() if p.priority < pod.priority]
    if not lower:
        return [], unresolvable(NO_VICTIMS)
    trial = node.clone()
    for p in lower:
        trial.remove_pod(p.key)
    status = Framework.run_filters(filters, state, pod, trial)
    if status is not None:
        return [], status
    victims = []
    for p in sorted(lower, key=_importance):
        trial.add_pod(p)
        if Framework.run_filters(filters, state, pod, trial) is not None:
            trial.remove_pod(p.key)
            victims.append(p)
    if not victims:
        return [], Status(Code.ERROR, (f'expected at least one victim pod on node "{node.name}"',))
    return victims, None


def pick_one(candidates: list[tuple[str, list[PodInfo]]]) -> tuple[str, list[PodInfo]]:
    """pickOneNodeForPreemption (without PodDisruptionBudgets)."""
    def key(candidate: tuple[str, list[PodInfo]]) -> tuple[Any, ...]:
        victims = candidate[1]
        top = max(v.priority for v in victims)
        total = sum(v.priority + _INT32_OFFSET for v in victims)
        # Among the most important victims, the node whose earliest start is latest wins.
        earliest = min((v.pod.get("status") or {}).get("startTime") or v.creation
                       for v in victims if v.priority == top)
        return (top, total, len(victims), _Reversed(earliest))
    return min(candidates, key=key)


class _Reversed:
    """Orders strings backwards (a later timestamp sorts first)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def new(args: Any, handle: Handle, evict: Evict,
        nominated_node: Callable[[str], str | None] | None = None) -> DefaultPreemption:
    return DefaultPreemption(handle, evict, nominated_node)
