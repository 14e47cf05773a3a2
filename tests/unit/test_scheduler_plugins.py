"""Scheduler plugins, preemption, queue and messages on hand-built nodes and pods (no server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dockyard.scheduler.cache import Cache
from dockyard.scheduler.framework import (
    Code,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    fit_error_message,
    unresolvable,
    unschedulable,
)
from dockyard.scheduler.plugins import (
    balanced_allocation,
    inter_pod_affinity,
    node_affinity,
    node_resources_fit,
    node_unschedulable,
    pod_topology_spread,
    taint_toleration,
)
from dockyard.scheduler.preemption import DefaultPreemption, pick_one, select_victims
from dockyard.scheduler.queue import SchedulingQueue
from dockyard.scheduler.runtime import Framework
from dockyard.scheduler.scheduler import num_feasible_nodes_to_find


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
         zone: str = "a", labels: dict[str, str] | None = None,
         taints: list[dict[str, Any]] | None = None, unschedulable: bool = False) -> dict:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                              "topology.kubernetes.io/zone": zone,
                                              **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods}},
    }


def pod(name: str, *, cpu: str | None = None, memory: str | None = None,
        labels: dict[str, str] | None = None, node_name: str = "", priority: int = 0,
        **spec: Any) -> dict:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    return {
        "metadata": {"name": name, "namespace": "default", "labels": labels or {},
                     "uid": f"uid-{name}", "creationTimestamp": f"2024-01-01T00:00:{name[-1]}Z"},
        "spec": {"containers": [{"name": "c", "image": "x",
                                 "resources": {"requests": requests}}],
                 "priority": priority, **({"nodeName": node_name} if node_name else {}), **spec},
    }


def cluster(nodes: list[dict], pods: list[dict] = ()) -> Cache:  # type: ignore[assignment]
    cache = Cache()
    for n in nodes:
        cache.add_node(n)
    for p in pods:
        cache.add_pod(p)
    return cache


def run_filter(plugin: Any, p: dict, info: NodeInfo) -> Status | None:
    state = CycleState()
    pi = PodInfo(p)
    if hasattr(plugin, "pre_filter"):
        pre = plugin.pre_filter(state, pi)
        if pre is not None and pre.code == Code.SKIP:
            return None
    return plugin.filter(state, pi, info)


def reasons(status: Status | None) -> tuple[str, ...]:
    return () if status is None else status.reasons


# ---------------------------------------------------------------------------- resources


def test_fit_cpu_memory_and_pod_count() -> None:
    fit = node_resources_fit.new(None, Cache())
    empty = NodeInfo(node("n1"))
    assert run_filter(fit, pod("p1", cpu="1", memory="1Gi"), empty) is None
    status = run_filter(fit, pod("p1", cpu="5"), empty)
    assert status is not None and status.code == Code.UNSCHEDULABLE
    assert reasons(status) == ("Insufficient cpu",)
    assert reasons(run_filter(fit, pod("p1", cpu="5", memory="9Gi"), empty)) == (
        "Insufficient cpu", "Insufficient memory")
    full = cluster([node("n1", pods="1")], [pod("old1", node_name="n1")]).node_info("n1")
    assert full is not None
    assert reasons(run_filter(fit, pod("p2"), full)) == ("Too many pods",)


def test_fit_counts_bound_pods_and_init_containers() -> None:
    fit = node_resources_fit.new(None, Cache())
    cache = cluster([node("n1")], [pod("old1", cpu="3", node_name="n1")])
    info = cache.node_info("n1")
    assert info is not None and info.requested.milli_cpu == 3000
    assert run_filter(fit, pod("p1", cpu="1"), info) is None
    assert reasons(run_filter(fit, pod("p1", cpu="1001m"), info)) == ("Insufficient cpu",)
    # an init container needing 2 cpu dominates two containers of 500m each
    p = pod("p2", cpu="500m")
    p["spec"]["containers"].append({"name": "d", "resources": {"requests": {"cpu": "500m"}}})
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]
    assert PodInfo(p).requests.milli_cpu == 2000
    assert reasons(run_filter(fit, p, info)) == ("Insufficient cpu",)
    cache.remove_pod("default/old1")
    assert info.requested.milli_cpu == 0 and run_filter(fit, p, info) is None


def test_least_allocated_and_balanced_scores() -> None:
    fit = node_resources_fit.new(None, Cache())
    balanced = balanced_allocation.new(None, Cache())
    cache = cluster([node("busy"), node("idle")], [pod("old1", cpu="2", memory="1Gi",
                                                        node_name="busy")])
    p = PodInfo(pod("p", cpu="1", memory="1Gi"))
    busy, idle = cache.node_info("busy"), cache.node_info("idle")
    assert busy is not None and idle is not None
    state = CycleState()
    assert fit.score(state, p, idle) > fit.score(state, p, busy)
    # idle: cpu 1/4, memory 1/8 -> std 0.0625 -> 93; busy: cpu 3/4, memory 2/8 -> 75
    assert balanced.score(state, p, idle) == 93 and balanced.score(state, p, busy) == 75
    assert balanced.pre_score(state, PodInfo(pod("be")), [idle]) is not None  # skip


# ---------------------------------------------------------------------------- node affinity


def _required(*exprs: dict[str, Any]) -> dict[str, Any]:
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": list(exprs)}]}}}}


@pytest.mark.parametrize(("expr", "fits"), [
    ({"key": "disk", "operator": "In", "values": ["ssd", "nvme"]}, True),
    ({"key": "disk", "operator": "In", "values": ["hdd"]}, False),
    ({"key": "disk", "operator": "NotIn", "values": ["hdd"]}, True),
    ({"key": "disk", "operator": "NotIn", "values": ["ssd"]}, False),
    ({"key": "gpu", "operator": "NotIn", "values": ["x"]}, True),
    ({"key": "disk", "operator": "Exists"}, True),
    ({"key": "gpu", "operator": "Exists"}, False),
    ({"key": "gpu", "operator": "DoesNotExist"}, True),
    ({"key": "disk", "operator": "DoesNotExist"}, False),
    ({"key": "cores", "operator": "Gt", "values": ["7"]}, True),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, False),
    ({"key": "cores", "operator": "Lt", "values": ["9"]}, True),
    ({"key": "cores", "operator": "Lt", "values": ["8"]}, False),
    ({"key": "disk", "operator": "Gt", "values": ["1"]}, False),  # not an integer
])
def test_node_affinity_operators(expr: dict[str, Any], fits: bool) -> None:
    plugin = node_affinity.new(None, Cache())
    info = NodeInfo(node("n1", labels={"disk": "ssd", "cores": "8"}))
    status = run_filter(plugin, pod("p", **_required(expr)), info)
    if fits:
        assert status is None
    else:
        assert status is not None and status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        assert reasons(status) == ("node(s) didn't match Pod's node affinity/selector",)


def test_node_selector_terms_are_ored_and_selector_anded() -> None:
    plugin = node_affinity.new(None, Cache())
    info = NodeInfo(node("n1", labels={"disk": "ssd"}))
    terms = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
        ]}}}}
    assert run_filter(plugin, pod("p", **terms), info) is None
    assert run_filter(plugin, pod("p", nodeSelector={"disk": "ssd"}), info) is None
    assert run_filter(plugin, pod("p", nodeSelector={"disk": "ssd", "x": "y"}), info) is not None


def test_node_affinity_preferred_score() -> None:
    plugin = node_affinity.new(None, Cache())
    nodes = [NodeInfo(node("n1", labels={"disk": "ssd"})), NodeInfo(node("n2"))]
    p = PodInfo(pod("p", affinity={"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 30, "preference": {"matchExpressions": [
                {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}))
    state = CycleState()
    assert plugin.pre_score(state, p, nodes) is None
    scores = [plugin.score(state, p, n) for n in nodes]
    plugin.normalize_score(state, p, scores)
    assert scores == [100, 0]


# ---------------------------------------------------------------------------- taints


CONTROL_PLANE = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


@pytest.mark.parametrize(("taint", "tolerations", "fits"), [
    (CONTROL_PLANE, [], False),
    (CONTROL_PLANE, [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                      "effect": "NoSchedule"}], True),
    (CONTROL_PLANE, [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                      "effect": "NoExecute"}], False),  # wrong effect
    (CONTROL_PLANE, [{"operator": "Exists"}], True),  # no key + Exists tolerates everything
    ({"key": "dedicated", "value": "gpu", "effect": "NoExecute"},
     [{"key": "dedicated", "operator": "Equal", "value": "gpu"}], True),
    ({"key": "dedicated", "value": "gpu", "effect": "NoExecute"},
     [{"key": "dedicated", "value": "db"}], False),
    ({"key": "soft", "value": "x", "effect": "PreferNoSchedule"}, [], True),
])
def test_taint_filter(taint: dict[str, Any], tolerations: list[dict[str, Any]],
                      fits: bool) -> None:
    plugin = taint_toleration.new(None, Cache())
    status = run_filter(plugin, pod("p", tolerations=tolerations),
                        NodeInfo(node("n1", taints=[taint])))
    assert (status is None) == fits
    if not fits:
        assert status is not None and status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        value = taint.get("value", "")
        assert reasons(status) == (f"node(s) had untolerated taint {{{taint['key']}: {value}}}",)


def test_prefer_no_schedule_scores_lower() -> None:
    plugin = taint_toleration.new(None, Cache())
    nodes = [NodeInfo(node("n1", taints=[{"key": "soft", "effect": "PreferNoSchedule"}])),
             NodeInfo(node("n2"))]
    p = PodInfo(pod("p"))
    state = CycleState()
    plugin.pre_score(state, p, nodes)
    scores = [plugin.score(state, p, n) for n in nodes]
    plugin.normalize_score(state, p, scores)
    assert scores == [0, 100]


def test_cordoned_node() -> None:
    plugin = node_unschedulable.new(None, Cache())
    info = NodeInfo(node("n1", unschedulable=True))
    assert reasons(run_filter(plugin, pod("p"), info)) == ("node(s) were unschedulable",)
    tolerant = pod("p", tolerations=[{"key": "node.kubernetes.io/unschedulable",
                                      "operator": "Exists", "effect": "NoSchedule"}])
    assert run_filter(plugin, tolerant, info) is None


# ---------------------------------------------------------------------------- topology spread


def _spread(max_skew: int = 1, when: str = "DoNotSchedule") -> dict[str, Any]:
    return {"topologySpreadConstraints": [{
        "maxSkew": max_skew, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]}


def test_topology_spread_skew() -> None:
    web = {"app": "web"}
    cache = cluster([node("n1", zone="a"), node("n2", zone="b"), node("n3", zone="c")],
                    [pod("w1", labels=web, node_name="n1"), pod("w2", labels=web, node_name="n1"),
                     pod("w3", labels=web, node_name="n2"), pod("w4", labels=web, node_name="n3"),
                     pod("o1", labels={"app": "other"}, node_name="n2")])
    plugin = pod_topology_spread.new(None, cache)
    p = pod("new", labels=web, **_spread())
    results = {n.name: run_filter(plugin, p, n) for n in cache.node_infos()}
    assert reasons(results["n1"]) == ("node(s) didn't match pod topology spread constraints",)
    assert results["n1"] is not None and results["n1"].code == Code.UNSCHEDULABLE
    assert results["n2"] is None and results["n3"] is None
    assert run_filter(plugin, pod("new", labels=web, **_spread(max_skew=2)),
                      cache.node_infos()[0]) is None
    unlabeled = NodeInfo(node("n4"))
    unlabeled.labels = {}
    assert reasons(run_filter(plugin, p, unlabeled)) == (
        "node(s) didn't match pod topology spread constraints (missing required label)",)


def test_topology_spread_score_prefers_emptier_zone() -> None:
    web = {"app": "web"}
    cache = cluster([node("n1", zone="a"), node("n2", zone="b")],
                    [pod("w1", labels=web, node_name="n1")])
    plugin = pod_topology_spread.new(None, cache)
    p = PodInfo(pod("new", labels=web, **_spread(when="ScheduleAnyway")))
    nodes = cache.node_infos()
    state = CycleState()
    assert plugin.pre_score(state, p, nodes) is None
    scores = [plugin.score(state, p, n) for n in nodes]
    plugin.normalize_score(state, p, scores)
    assert scores[1] > scores[0]


# ---------------------------------------------------------------------------- pod affinity


def _anti(key: str, app: str = "web", kind: str = "podAntiAffinity") -> dict[str, Any]:
    return {"affinity": {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}}


def test_inter_pod_anti_affinity() -> None:
    cache = cluster([node("n1", zone="a"), node("n2", zone="a"), node("n3", zone="b")],
                    [pod("w1", labels={"app": "web"}, node_name="n1")])
    plugin = inter_pod_affinity.new(None, cache)
    by_host = pod("new", labels={"app": "web"}, **_anti("kubernetes.io/hostname"))
    got = {n.name: reasons(run_filter(plugin, by_host, n)) for n in cache.node_infos()}
    assert got == {"n1": ("node(s) didn't match pod anti-affinity rules",), "n2": (), "n3": ()}
    by_zone = pod("new", labels={"app": "web"}, **_anti("topology.kubernetes.io/zone"))
    got = {n.name: reasons(run_filter(plugin, by_zone, n)) for n in cache.node_infos()}
    assert got["n1"] and got["n2"] and got["n3"] == ()
    # pods without terms of their own respect the anti-affinity of pods already placed
    guarded = cluster([node("n1"), node("n2")],
                      [pod("g1", labels={"app": "db"}, node_name="n1",
                           **_anti("kubernetes.io/hostname"))])
    plugin = inter_pod_affinity.new(None, guarded)
    newcomer = pod("new", labels={"app": "web"})
    assert reasons(run_filter(plugin, newcomer, guarded.node_info("n1"))) == (  # type: ignore
        "node(s) didn't satisfy existing pods anti-affinity rules",)
    assert run_filter(plugin, newcomer, guarded.node_info("n2")) is None  # type: ignore


def test_inter_pod_affinity_required() -> None:
    cache = cluster([node("n1", zone="a"), node("n2", zone="b")],
                    [pod("db1", labels={"app": "db"}, node_name="n1")])
    plugin = inter_pod_affinity.new(None, cache)
    near_db = pod("web", labels={"app": "web"},
                  **_anti("topology.kubernetes.io/zone", "db", "podAffinity"))
    status = run_filter(plugin, near_db, cache.node_info("n2"))  # type: ignore[arg-type]
    assert status is not None and status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert reasons(status) == ("node(s) didn't match pod affinity rules",)
    assert run_filter(plugin, near_db, cache.node_info("n1")) is None  # type: ignore[arg-type]
    # the first pod of a self-affine group may go anywhere
    first = pod("w1", labels={"app": "solo"},
                **_anti("topology.kubernetes.io/zone", "solo", "podAffinity"))
    assert run_filter(plugin, first, cache.node_info("n2")) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- messages


def test_failed_scheduling_message_matches_kubernetes() -> None:
    statuses = {
        "cp": unresolvable("node(s) had untolerated taint "
                           "{node-role.kubernetes.io/control-plane: }"),
        "n1": unschedulable("Insufficient cpu"),
        "n2": unschedulable("Insufficient cpu"),
    }
    inner = fit_error_message(3, {}, absent=unresolvable("Preemption is not helpful for "
                                                         "scheduling"))
    assert fit_error_message(3, statuses, post_filter_msg=f"preemption: {inner}") == (
        "0/3 nodes are available: 1 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes "
        "are available: 3 Preemption is not helpful for scheduling.")
    # counts are sorted as strings, as Go's sort.Strings does: "10 ..." before "2 ..."
    many = {f"n{i}": unschedulable("Insufficient memory") for i in range(10)}
    many.update({"x": unschedulable("Insufficient cpu", "Too many pods"),
                 "y": unschedulable("Insufficient cpu")})
    assert fit_error_message(12, many) == (
        "0/12 nodes are available: 1 Too many pods, 10 Insufficient memory, 2 Insufficient cpu.")


def test_num_feasible_nodes_to_find() -> None:
    assert num_feasible_nodes_to_find(0, 50) == 50
    assert num_feasible_nodes_to_find(0, 200) == 100
    assert num_feasible_nodes_to_find(0, 1000) == 420
    assert num_feasible_nodes_to_find(0, 5000) == 500
    assert num_feasible_nodes_to_find(100, 5000) == 5000
    assert num_feasible_nodes_to_find(1, 5000) == 100


# ---------------------------------------------------------------------------- preemption


def test_preemption_picks_fewest_lowest_victims() -> None:
    low = [pod(f"low{i}", cpu="1", priority=10, node_name="n1") for i in range(1, 5)]
    mixed = [pod("mid1", cpu="2", priority=100, node_name="n2"),
             pod("mid2", cpu="1", priority=100, node_name="n2"),
             pod("low5", cpu="1", priority=10, node_name="n2")]
    cache = cluster([node("n1"), node("n2")], low + mixed)
    evicted: list[tuple[str, list[str]]] = []
    preemption = DefaultPreemption(cache, lambda p, n, v: evicted.append(
        (n, sorted(x.name for x in v))))
    fw = Framework(cache, post_filters=[preemption])
    preemption.framework = fw
    preemptor = PodInfo(pod("big", cpu="2", priority=1000))
    state = CycleState()
    assert fw.run_pre_filter(state, preemptor) is None
    filters = fw.active_filters(state)
    statuses = {n.name: s for n in cache.node_infos()
                if (s := Framework.run_filters(filters, state, preemptor, n)) is not None}
    victims, status = select_victims(filters, state, preemptor, cache.node_info("n2"))  # type: ignore
    assert status is None and [v.name for v in victims] == ["mid2", "low5"]
    result, status = preemption.post_filter(state, preemptor, statuses, 2)
    # n1 loses two priority-10 pods; n2 would lose a priority-100 pod: n1 wins
    assert status.is_success() and result is not None and result.nominated_node == "n1"
    assert evicted == [("n1", ["low3", "low4"])]
    assert pick_one([("a", victims), ("b", victims[1:])])[0] == "b"


def test_preemption_messages() -> None:
    cache = cluster([node("n1"), node("n2")], [pod("high", cpu="4", priority=5000,
                                                   node_name="n1")])
    preemption = DefaultPreemption(cache, lambda *a: None)
    fw = Framework(cache, post_filters=[preemption])
    preemption.framework = fw
    preemptor = PodInfo(pod("big", cpu="100", priority=1000))
    statuses = {"n1": unschedulable("Insufficient cpu"), "n2": unschedulable("Insufficient cpu")}
    state = CycleState()
    fw.run_pre_filter(state, preemptor)
    _result, status = preemption.post_filter(state, preemptor, statuses, 2)
    assert status.reasons == ("preemption: 0/2 nodes are available: 2 No preemption victims "
                              "found for incoming pod.",)
    never = PodInfo(pod("big", cpu="100", priority=1000, preemptionPolicy="Never"))
    assert preemption.post_filter(state, never, statuses, 2)[1].reasons == (
        "preemption: not eligible due to preemptionPolicy=Never.",)


# ---------------------------------------------------------------------------- queue


async def test_queue_orders_by_priority_and_moves_on_events() -> None:
    queue = SchedulingQueue(initial_backoff=0.05, max_backoff=0.2)
    queue.add(PodInfo(pod("p1", priority=1)))
    queue.add(PodInfo(pod("p2", priority=100)))
    queue.add(PodInfo(pod("p3", priority=1)))
    order = [(await queue.pop()).pod.name for _ in range(3)]  # type: ignore[union-attr]
    assert order == ["p2", "p1", "p3"]
    queue.done("default/p2")
    queue.done("default/p3")
    # p1 was rejected by NodeResourcesFit: a node label change does not help it...
    queue.add_unschedulable(queue._in_flight["default/p1"], {"NodeResourcesFit"})
    interested = {"NodeResourcesFit": frozenset({"NodeAdd", "AssignedPodDelete"})}
    assert queue.move("AssignedPodAdd", interested) == 0
    assert queue.pending()["unschedulable"] == 1
    # ...a deleted pod does; it comes back after its back-off
    assert queue.move("AssignedPodDelete", interested) == 1
    popped = await asyncio.wait_for(queue.pop(), 1.0)
    assert popped is not None and popped.pod.name == "p1" and popped.attempts == 2
    assert queue.backoff_duration(1) == 0.05 and queue.backoff_duration(10) == 0.2


async def test_queue_requeues_on_own_changes_not_on_status_writes() -> None:
    queue = SchedulingQueue(initial_backoff=0.01, max_backoff=0.01)
    raw = pod("p1")
    queue.add(PodInfo(raw))
    qpi = await queue.pop()
    assert qpi is not None
    queue.add_unschedulable(qpi, {"TaintToleration"})
    status_only = {**raw, "status": {"conditions": [{"type": "PodScheduled"}]}}
    queue.update(PodInfo(status_only))  # the scheduler's own condition write: stays parked
    assert queue.pending()["unschedulable"] == 1
    tolerant = {**raw, "spec": {**raw["spec"], "tolerations": [{"operator": "Exists"}]}}
    queue.update(PodInfo(tolerant))  # the user added a toleration: try again
    assert queue.pending()["unschedulable"] == 0
    again = await asyncio.wait_for(queue.pop(), 1.0)
    assert again is not None and again.pod.spec["tolerations"] == [{"operator": "Exists"}]
    # an event during the cycle sends the pod to back-off instead of parking it
    queue.move("NodeAdd", {})
    queue.add_unschedulable(again, {"TaintToleration"})
    assert queue.pending() == {"active": 0, "backoff": 1, "unschedulable": 0, "in_flight": 0}
    queue.delete("default/p1")
    assert "default/p1" not in queue
