"""Pure logic of node lifecycle, taint eviction, endpoints, slices, pod GC and the simulator."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

from dockyard.api.tolerations import tolerates
from dockyard.controllers.endpoints import desired_subsets
from dockyard.controllers.endpointslice import desired_endpoints, plan
from dockyard.controllers.nodelifecycle import reconcile_taints, unknown_conditions
from dockyard.controllers.podgc import terminated_to_delete
from dockyard.controllers.taintmanager import eviction_deadline
from dockyard.sim import objects

Obj = dict[str, Any]
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"


# -- taints and tolerations ----------------------------------------------------------------


def test_tolerations_match_like_kubernetes() -> None:
    taint = {"key": UNREACHABLE, "effect": "NoExecute"}
    assert tolerates({"key": UNREACHABLE, "operator": "Exists"}, taint)
    assert tolerates({"operator": "Exists"}, taint)  # empty key + Exists: everything
    assert not tolerates({"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"},
                         taint)
    assert tolerates({"key": "k", "value": "v", "effect": "NoExecute"},
                     {"key": "k", "value": "v", "effect": "NoExecute"})
    assert not tolerates({"key": "k", "value": "w"}, {"key": "k", "value": "v",
                                                      "effect": "NoExecute"})


def test_eviction_deadline() -> None:
    added = datetime(2030, 1, 1, tzinfo=UTC)
    taint = {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2030-01-01T00:00:00Z"}
    assert eviction_deadline([], [taint], added_at={}) == datetime.min.replace(tzinfo=UTC)
    forever = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    assert eviction_deadline([forever], [taint], added_at={}) is None
    short = dict(forever, tolerationSeconds=30)
    # The smallest tolerationSeconds among the matching tolerations wins.
    assert eviction_deadline([forever, short], [taint], added_at={}) == \
        added + timedelta(seconds=30)
    other = {"key": NOT_READY, "effect": "NoExecute", "timeAdded": "2030-01-01T00:00:10Z"}
    tolerate_both = [short, {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 5}]
    assert eviction_deadline(tolerate_both, [taint, other], added_at={}) == \
        added + timedelta(seconds=15)
    # Seen within the second timeAdded truncates: counted from then; later: from timeAdded.
    seen = added + timedelta(milliseconds=700)
    assert eviction_deadline([short], [taint], added_at={(UNREACHABLE, ""): seen}) == \
        seen + timedelta(seconds=30)
    restarted = added + timedelta(seconds=20)
    assert eviction_deadline([short], [taint], added_at={(UNREACHABLE, ""): restarted}) == \
        added + timedelta(seconds=30)
    no_time = {"key": UNREACHABLE, "effect": "NoExecute"}
    assert eviction_deadline([short], [no_time], added_at={(UNREACHABLE, ""): added}) == \
        added + timedelta(seconds=30)


# -- node lifecycle ------------------------------------------------------------------------


def node(ready: str, taints: list[Obj] | None = None, **spec: Any) -> Obj:
    return {"metadata": {"name": "n", "creationTimestamp": "2030-01-01T00:00:00Z"},
            "spec": {"taints": taints or [], **spec},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"},
                                      {"type": "MemoryPressure", "status": "False"}]}}


def test_taints_follow_conditions_and_keep_time_added() -> None:
    user = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    assert reconcile_taints(node("True", [user]), "T1") is None
    unknown = reconcile_taints(node("Unknown", [user]), "T1")
    assert unknown == [user, {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "T1"},
                       {"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": "T1"}]
    assert reconcile_taints(node("Unknown", unknown), "T2") is None  # timeAdded kept
    swapped = reconcile_taints(node("False", unknown), "T3")
    assert swapped is not None
    assert {(t["key"], t["effect"], t.get("timeAdded")) for t in swapped} == {
        ("dedicated", "NoSchedule", None), (NOT_READY, "NoExecute", "T3"),
        (NOT_READY, "NoSchedule", "T3")}
    assert reconcile_taints(node("True", swapped), "T4") == [user]
    cordoned = reconcile_taints(node("True", unschedulable=True), "T5")
    assert cordoned == [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                         "timeAdded": "T5"}]


def test_silent_node_conditions_become_unknown() -> None:
    conditions = unknown_conditions(node("True"), "NOW")
    assert conditions is not None
    by_type = {c["type"]: c for c in conditions}
    assert by_type["Ready"]["status"] == "Unknown"
    assert by_type["Ready"]["reason"] == "NodeStatusUnknown"
    assert by_type["Ready"]["message"] == "Kubelet stopped posting node status."
    assert by_type["Ready"]["lastTransitionTime"] == "NOW"
    assert by_type["DiskPressure"]["reason"] == "NodeStatusNeverUpdated"
    assert unknown_conditions({"metadata": node("x")["metadata"], "status": {
        "conditions": conditions}}, "LATER") is None


# -- endpoints -----------------------------------------------------------------------------


def svc(**spec: Any) -> Obj:
    return {"metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
            "spec": {"selector": {"app": "web"}, "ipFamilies": ["IPv4"], **spec}}


def pod(name: str, ip: str, *, ready: bool = True, ports: list[Obj] | None = None,
        terminating: bool = False, phase: str = "Running", **spec: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "uid": f"uid-{name}",
                 "labels": {"app": "web"}}
    if terminating:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {"metadata": meta,
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports or []}],
                     **spec},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else
                                       "False"}]}}


NAMED = [{"name": "web", "containerPort": 8080}]
HTTP = {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}


def test_subsets_group_ready_and_not_ready_with_resolved_ports() -> None:
    pods = [pod("a", "10.0.0.2", ports=NAMED), pod("b", "10.0.0.1", ports=NAMED, ready=False),
            pod("c", "10.0.0.3", ports=[{"name": "web", "containerPort": 9090}]),
            pod("d", "10.0.0.4"),  # no port named "web": left out
            pod("e", "10.0.0.5", ports=NAMED, terminating=True),
            pod("f", "10.0.0.6", ports=NAMED, phase="Succeeded")]
    subsets, truncated = desired_subsets(svc(ports=[HTTP]), pods)
    assert not truncated
    assert [([a["ip"] for a in s.get("addresses") or []],
             [a["ip"] for a in s.get("notReadyAddresses") or []],
             [p["port"] for p in s["ports"]]) for s in subsets] == [
        (["10.0.0.2"], ["10.0.0.1"], [8080]), (["10.0.0.3"], [], [9090])]
    address = subsets[0]["addresses"][0]
    assert address["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "a",
                                    "uid": "uid-a"}
    assert address["nodeName"] == "n1" and subsets[0]["ports"][0]["name"] == "http"


def test_publish_not_ready_and_headless_without_ports() -> None:
    pods = [pod("a", "10.0.0.1", ready=False, hostname="a", subdomain="web")]
    subsets, _ = desired_subsets(svc(ports=[HTTP], publishNotReadyAddresses=True), [
        pod("a", "10.0.0.1", ready=False, ports=NAMED)])
    assert subsets[0]["addresses"][0]["ip"] == "10.0.0.1"
    subsets, _ = desired_subsets(svc(clusterIP="None", ports=[]), pods)
    assert subsets == [{"notReadyAddresses": [dict(subsets[0]["notReadyAddresses"][0])]}]
    assert subsets[0]["notReadyAddresses"][0]["hostname"] == "a"
    assert desired_subsets(svc(ports=[]), pods) == ([], False)  # not headless: nothing


# -- endpoint slices -----------------------------------------------------------------------


def test_slices_hold_at_most_100_and_change_little() -> None:
    service = svc(ports=[HTTP])
    pods = [pod(f"p{i}", f"10.0.{i // 250}.{i % 250 + 1}", ports=NAMED) for i in range(250)]
    create, update, delete = plan(service, [], desired_endpoints(service, pods, {}))
    assert [len(s["endpoints"]) for s in create] == [100, 100, 50] and not update and not delete
    existing = []
    for n, s in enumerate(create):
        s["metadata"]["name"] = f"web-{n}"
        existing.append(s)
    first = existing[0]["endpoints"][0]["targetRef"]["name"]
    fewer = [p for p in pods if p["metadata"]["name"] != first]
    create, update, delete = plan(service, existing, desired_endpoints(service, fewer, {}))
    assert not create and not delete and [s["metadata"]["name"] for s in update] == ["web-0"]
    # A new pod fills the slice that changes anyway rather than a new one.
    more = fewer + [pod("new", "10.1.0.1", ports=NAMED)]
    create, update, delete = plan(service, existing, desired_endpoints(service, more, {}))
    assert not create and [len(s["endpoints"]) for s in update] == [100]
    assert plan(service, existing, desired_endpoints(service, pods, {})) == ([], [], [])


def test_slice_endpoint_conditions_and_placeholder() -> None:
    service = svc(ports=[HTTP])
    wanted = desired_endpoints(service, [
        pod("a", "10.0.0.1", ports=NAMED, terminating=True),
        pod("b", "10.0.0.2", ports=NAMED, ready=False)], {"n1": "zone-a"})
    ((_, endpoints),) = wanted.values()
    assert endpoints["uid-a"]["conditions"] == {"ready": False, "serving": True,
                                                "terminating": True}
    assert endpoints["uid-b"]["conditions"] == {"ready": False, "serving": False,
                                                "terminating": False}
    assert endpoints["uid-a"]["zone"] == "zone-a"
    create, update, delete = plan(service, [], {})
    assert len(create) == 1 and create[0]["endpoints"] == [] and create[0]["ports"] == []
    meta = create[0]["metadata"]
    assert meta["generateName"] == "web-"
    assert meta["labels"]["kubernetes.io/service-name"] == "web"
    assert meta["ownerReferences"][0]["uid"] == "svc-uid"
    placeholder = dict(create[0], metadata=dict(meta, name="web-x"))
    assert plan(service, [placeholder], {}) == ([], [], [])


# -- pod GC --------------------------------------------------------------------------------


def test_terminated_pods_over_threshold_oldest_first() -> None:
    def p(name: str, created: str, phase: str, reason: str = "") -> Obj:
        return {"metadata": {"name": name, "creationTimestamp": created},
                "status": {"phase": phase, "reason": reason}}
    pods = [p("new", "2030-01-03T00:00:00Z", "Failed"), p("old", "2030-01-01T00:00:00Z",
                                                          "Succeeded"),
            p("evicted", "2030-01-04T00:00:00Z", "Failed", "Evicted"),
            p("running", "2029-01-01T00:00:00Z", "Running")]
    assert [x["metadata"]["name"] for x in terminated_to_delete(pods, 1)] == ["evicted", "old"]
    assert terminated_to_delete(pods, 3) == [] and terminated_to_delete(pods, 0) == []


# -- the simulator -------------------------------------------------------------------------


def test_sim_addresses_never_routable_and_disjoint() -> None:
    assert objects.node_ip(0) == "198.18.0.1" and objects.node_ip(4999) == "198.18.19.136"
    cidrs = [objects.pod_cidr(i, 110) for i in (0, 1, 4999)]
    assert [str(c) for c in cidrs] == ["240.0.0.0/24", "240.0.1.0/24", "240.19.135.0/24"]
    assert objects.pod_cidr(3, 1000).prefixlen == 22
    ips = objects.PodIPs(ipaddress.IPv4Network("240.0.0.0/29"))
    got = [ips.allocate(f"u{i}") for i in range(7)]
    assert got == ["240.0.0.1", "240.0.0.2", "240.0.0.3", "240.0.0.4", "240.0.0.5",
                   "240.0.0.6", None]
    ips.release("u2")
    assert ips.allocate("u9") == "240.0.0.3" and ips.allocate("u1") == "240.0.0.2"
    assert not ips.claim("x", "240.0.0.3") and not ips.claim("y", "10.0.0.1")


def test_running_status_is_ready_and_keeps_foreign_conditions() -> None:
    p = {"metadata": {"name": "p", "uid": "u"},
         "spec": {"containers": [{"name": "c", "image": "nginx"}],
                  "readinessGates": [{"conditionType": "example.com/lb"}]},
         "status": {"phase": "Pending", "qosClass": "BestEffort",
                    "conditions": [{"type": "PodScheduled", "status": "True",
                                    "lastTransitionTime": "EARLIER"}]}}
    status = objects.running_status(p, pod_ip="240.0.0.1", host_ip="198.18.0.1")
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "False"  # the readiness gate is not True yet
    assert conds["PodScheduled"]["lastTransitionTime"] == "EARLIER"
    assert status["qosClass"] == "BestEffort" and status["phase"] == "Running"
    p["status"] = dict(status, conditions=[*status["conditions"],
                                           {"type": "example.com/lb", "status": "True"}])
    assert not objects.is_running_as_posted(p, "198.18.0.1")
    status = objects.running_status(p, pod_ip="240.0.0.1", host_ip="198.18.0.1")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["containerStatuses"][0]["containerID"].startswith("sim://")
    p["status"] = status
    assert objects.is_running_as_posted(p, "198.18.0.1")


def test_node_status_changes_are_detected_but_heartbeats_are_not() -> None:
    first = objects.node_status("n", "198.18.0.1", cpu="8", memory="32Gi", pods="110")
    later = objects.node_status("n", "198.18.0.1", cpu="8", memory="32Gi", pods="110",
                                previous=first["conditions"])
    assert not objects.status_differs(first, later)
    assert later["conditions"][0]["lastTransitionTime"] == first["conditions"][0][
        "lastTransitionTime"]
    unknown = dict(first, conditions=[dict(c, status="Unknown") for c in first["conditions"]])
    assert objects.status_differs(unknown, later)
