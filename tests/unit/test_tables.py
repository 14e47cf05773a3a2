"""Server-side printing: cells computed as Kubernetes' printers.go computes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dockyard.api.resources import ResourceInfo, by_kind
from dockyard.apiserver.printers.format import human_duration, selector_string
from dockyard.apiserver.tables import to_table

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def ts(ago: timedelta) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(kind: str, *objs: dict, group: str = "", **kw) -> dict:
    return to_table(by_kind(group, kind), list(objs), now=NOW, **kw)


def cells(kind: str, obj: dict, group: str = "") -> dict[str, object]:
    """The row's cells keyed by column name."""
    t = table(kind, obj, group=group)
    return {c["name"]: v for c, v in zip(t["columnDefinitions"], t["rows"][0]["cells"],
                                         strict=True)}


@pytest.mark.parametrize(("d", "want"), [
    (timedelta(seconds=-2), "<invalid>"),
    (timedelta(seconds=-1.5), "0s"),  # up to 1s of clock skew is "now"
    (timedelta(0), "0s"),
    (timedelta(seconds=59.9), "59s"),
    (timedelta(seconds=119), "119s"),
    (timedelta(seconds=120), "2m"),
    (timedelta(seconds=121), "2m1s"),
    (timedelta(minutes=9, seconds=59), "9m59s"),
    (timedelta(minutes=10, seconds=30), "10m"),
    (timedelta(minutes=179, seconds=59), "179m"),
    (timedelta(hours=3), "3h"),
    (timedelta(hours=3, minutes=1), "3h1m"),
    (timedelta(hours=7, minutes=59), "7h59m"),
    (timedelta(hours=8, minutes=30), "8h"),
    (timedelta(hours=47, minutes=59), "47h"),
    (timedelta(hours=48), "2d"),
    (timedelta(hours=49), "2d1h"),
    (timedelta(hours=191), "7d23h"),
    (timedelta(days=8), "8d"),
    (timedelta(days=729, hours=23), "729d"),
    (timedelta(days=730), "2y"),
    (timedelta(days=731), "2y1d"),
    (timedelta(days=365 * 8 - 1), "7y364d"),
    (timedelta(days=365 * 8), "8y"),
])
def test_human_duration_boundaries(d: timedelta, want: str) -> None:
    assert human_duration(d) == want


def test_selector_string_sorts_by_key_and_values() -> None:
    sel = {"matchLabels": {"tier": "web", "app": "x"},
           "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]},
                                {"key": "gone", "operator": "DoesNotExist"}]}
    assert selector_string(sel) == "app=x,env in (a,b),!gone,tier=web"
    assert selector_string({}) == "" and selector_string(None) == ""


# --- pods ------------------------------------------------------------------------------------

def pod(phase: str = "Running", containers: int = 1, statuses: list | None = None,
        **extra) -> dict:
    spec = {"containers": [{"name": f"c{i}", "image": "busybox"} for i in range(containers)],
            **extra.pop("spec", {})}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "12",
                     "creationTimestamp": ts(timedelta(minutes=5)), **extra.pop("meta", {})},
        "spec": spec,
        "status": {"phase": phase, "containerStatuses": statuses or [], **extra},
    }


def running(name: str = "c0", ready: bool = True, restarts: int = 0) -> dict:
    return {"name": name, "ready": ready, "restartCount": restarts,
            "state": {"running": {"startedAt": ts(timedelta(minutes=4))}}}


def waiting(why: str, name: str = "c0", restarts: int = 0, **last) -> dict:
    out = {"name": name, "ready": False, "restartCount": restarts,
           "state": {"waiting": {"reason": why}}}
    if last:
        out["lastState"] = {"terminated": last}
    return out


def test_running_pod_row() -> None:
    row = cells("Pod", pod(containers=2, statuses=[running("c0"), running("c1")],
                           podIP="10.0.0.7", podIPs=[{"ip": "10.0.0.7"}],
                           spec={"nodeName": "node-a"}))
    assert row == {"Name": "web-1", "Ready": "2/2", "Status": "Running", "Restarts": "0",
                   "Age": "5m", "IP": "10.0.0.7", "Node": "node-a",
                   "Nominated Node": "<none>", "Readiness Gates": "<none>"}


def test_crashloop_restarts_show_when_last_restarted() -> None:
    crashed = waiting("CrashLoopBackOff", restarts=5, exitCode=1, reason="Error",
                      finishedAt=ts(timedelta(minutes=2, seconds=30)))
    row = cells("Pod", pod(statuses=[crashed]))
    assert (row["Ready"], row["Status"], row["Restarts"]) == ("0/1", "CrashLoopBackOff",
                                                              "5 (2m30s ago)")


def test_restarts_without_termination_time_are_a_bare_count() -> None:
    assert cells("Pod", pod(statuses=[running(restarts=3)]))["Restarts"] == "3"


def test_pending_pod_container_creating() -> None:
    row = cells("Pod", pod("Pending", statuses=[waiting("ContainerCreating")]))
    assert (row["Ready"], row["Status"]) == ("0/1", "ContainerCreating")
    assert cells("Pod", pod("Pending"))["Status"] == "Pending"


@pytest.mark.parametrize(("init_status", "want"), [
    ({"state": {"waiting": {"reason": "PodInitializing"}}}, "Init:0/2"),
    ({"state": {"running": {}}}, "Init:0/2"),
    ({"state": {"waiting": {"reason": "CrashLoopBackOff"}}}, "Init:CrashLoopBackOff"),
    ({"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}, "Init:Error"),
    ({"state": {"terminated": {"exitCode": 2}}}, "Init:ExitCode:2"),
    ({"state": {"terminated": {"exitCode": 137, "signal": 9}}}, "Init:Signal:9"),
])
def test_init_container_status(init_status: dict, want: str) -> None:
    obj = pod("Pending", statuses=[waiting("PodInitializing")],
              spec={"initContainers": [{"name": "i0"}, {"name": "i1"}]},
              initContainerStatuses=[{"name": "i0", "restartCount": 0, **init_status}])
    assert cells("Pod", obj)["Status"] == want


def test_second_init_container_counts_the_first_done() -> None:
    obj = pod("Pending", spec={"initContainers": [{"name": "i0"}, {"name": "i1"}]},
              initContainerStatuses=[
                  {"name": "i0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                  {"name": "i1", "state": {"running": {}}}])
    assert cells("Pod", obj)["Status"] == "Init:1/2"


def test_started_sidecar_counts_as_a_ready_container() -> None:
    obj = pod(statuses=[running()],
              spec={"initContainers": [{"name": "proxy", "restartPolicy": "Always"}]},
              initContainerStatuses=[{"name": "proxy", "started": True, "ready": True,
                                      "restartCount": 2, "state": {"running": {}}}],
              conditions=[{"type": "Initialized", "status": "True"}])
    row = cells("Pod", obj)
    assert (row["Ready"], row["Status"], row["Restarts"]) == ("2/2", "Running", "2")


def test_succeeded_pod_is_completed_with_row_condition() -> None:
    done = {"name": "c0", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    t = table("Pod", pod("Succeeded", statuses=[done]))
    row = t["rows"][0]
    assert row["cells"][1:3] == ["0/1", "Completed"]
    assert row["conditions"] == [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                  "message": "The pod has completed successfully."}]


def test_completed_container_beside_a_running_one() -> None:
    done = {"name": "c1", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    obj = pod(containers=2, statuses=[running("c0"), done])
    assert cells("Pod", obj)["Status"] == "NotReady"
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert cells("Pod", obj)["Status"] == "Running"


def test_deleting_pod_is_terminating_unless_finished_or_node_lost() -> None:
    deleted = {"deletionTimestamp": ts(timedelta(seconds=3))}
    assert cells("Pod", pod(statuses=[running()], meta=deleted))["Status"] == "Terminating"
    assert cells("Pod", pod("Succeeded", meta=deleted))["Status"] == "Succeeded"
    lost = pod(statuses=[running()], meta=deleted, reason="NodeLost")
    assert cells("Pod", lost)["Status"] == "Unknown"


def test_scheduling_gated_and_readiness_gates() -> None:
    obj = pod("Pending", spec={"readinessGates": [{"conditionType": "a"},
                                                  {"conditionType": "b"}]},
              conditions=[{"type": "PodScheduled", "status": "False",
                           "reason": "SchedulingGated"},
                          {"type": "a", "status": "True"}])
    row = cells("Pod", obj)
    assert (row["Status"], row["Readiness Gates"]) == ("SchedulingGated", "1/2")


# --- other kinds -----------------------------------------------------------------------------

def test_deployment_row_and_wide_columns() -> None:
    dep = {"metadata": {"name": "web", "creationTimestamp": ts(timedelta(days=3, hours=2))},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"spec": {"containers": [
                        {"name": "web", "image": "nginx:1"}, {"name": "log", "image": "fb"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    t = table("Deployment", dep, group="apps")
    cols = [(c["name"], c["priority"]) for c in t["columnDefinitions"]]
    assert cols == [("Name", 0), ("Ready", 0), ("Up-to-date", 0), ("Available", 0),
                    ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)]
    assert t["rows"][0]["cells"] == ["web", "2/3", 3, 2, "3d2h", "web,log", "nginx:1,fb",
                                     "app=web"]


def test_replicaset_and_job_rows() -> None:
    rs = {"metadata": {"name": "web-abc"}, "spec": {"replicas": 2, "selector": {}},
          "status": {"replicas": 2, "readyReplicas": 1}}
    assert cells("ReplicaSet", rs, "apps") == {
        "Name": "web-abc", "Desired": 2, "Current": 2, "Ready": 1, "Age": "<unknown>",
        "Containers": "", "Images": "", "Selector": "<none>"}
    job = {"metadata": {"name": "pi"}, "spec": {"completions": 1},
           "status": {"succeeded": 1, "startTime": ts(timedelta(minutes=3)),
                      "completionTime": ts(timedelta(seconds=40)),
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    row = cells("Job", job, "batch")
    assert (row["Status"], row["Completions"], row["Duration"]) == ("Complete", "1/1", "2m20s")
    job = {"metadata": {"name": "p"}, "spec": {"parallelism": 3, "suspend": True},
           "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}
    row = cells("Job", job, "batch")
    assert (row["Status"], row["Completions"], row["Duration"]) == ("Suspended", "0/1 of 3", "")
    assert cells("Job", {"metadata": {"name": "r"}}, "batch")["Status"] == "Running"


def test_service_rows() -> None:
    svc = {"metadata": {"name": "web"},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                    "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                    "selector": {"app": "web", "tier": "fe"}}}
    row = cells("Service", svc)
    assert row == {"Name": "web", "Type": "ClusterIP", "Cluster-IP": "10.96.0.10",
                   "External-IP": "<none>", "Port(s)": "80/TCP,53/UDP", "Age": "<unknown>",
                   "Selector": "app=web,tier=fe"}
    svc["spec"].update(type="NodePort", clusterIPs=["10.96.0.11"],
                       ports=[{"port": 80, "nodePort": 30080, "protocol": "TCP"}])
    row = cells("Service", svc)
    assert (row["Cluster-IP"], row["Port(s)"]) == ("10.96.0.11", "80:30080/TCP")
    svc["spec"]["type"] = "LoadBalancer"
    assert cells("Service", svc)["External-IP"] == "<pending>"
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb"}]}}
    assert cells("Service", svc)["External-IP"] == "1.2.3.4,lb"
    headless = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}
    row = cells("Service", headless)
    assert (row["Cluster-IP"], row["Port(s)"], row["Selector"]) == ("None", "<none>", "<none>")


def test_node_row() -> None:
    node = {"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "",
                                                  "kubernetes.io/role": "edge"}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "False"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian"},
                       "addresses": [{"type": "InternalIP", "address": "10.1.0.5"}]}}
    row = cells("Node", node)
    assert row["Status"] == "NotReady,SchedulingDisabled"
    assert row["Roles"] == "control-plane,edge"
    assert (row["Version"], row["Internal-IP"], row["External-IP"]) == (
        "v1.32.0", "10.1.0.5", "<none>")
    assert (row["OS-Image"], row["Kernel-Version"]) == ("Debian", "<unknown>")
    assert cells("Node", {"metadata": {"name": "n2"}})["Status"] == "Unknown"
    assert cells("Node", {"metadata": {"name": "n2"}})["Roles"] == "<none>"


def test_endpoints_and_endpointslice_rows() -> None:
    ep = {"metadata": {"name": "web"}, "subsets": [
        {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]},
        {"addresses": [{"ip": "10.0.0.3"}, {"ip": "fd00::4"}], "ports": [{"port": 80}]}]}
    assert cells("Endpoints", ep)["Endpoints"] == "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
    assert cells("Endpoints", {"metadata": {"name": "x"}})["Endpoints"] == "<none>"
    eps = {"metadata": {"name": "web-x"}, "addressType": "IPv4",
           "ports": [{"port": 80}, {"name": "dns"}, {}],
           "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]}
    row = cells("EndpointSlice", eps, "discovery.k8s.io")
    assert (row["Ports"], row["Endpoints"]) == ("80,dns,*", "10.0.0.1,10.0.0.2")
    row = cells("EndpointSlice", {"metadata": {"name": "e"}}, "discovery.k8s.io")
    assert (row["Ports"], row["Endpoints"]) == ("<unset>", "<unset>")


def test_event_row() -> None:
    ev = {"metadata": {"name": "web-1.17a"}, "type": "Warning", "reason": "BackOff",
          "message": " Back-off restarting failed container\n",
          "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{c}"},
          "source": {"component": "kubelet", "host": "n1"},
          "firstTimestamp": ts(timedelta(minutes=10)), "lastTimestamp": ts(timedelta(seconds=30)),
          "count": 4}
    t = table("Event", ev)
    assert t["columnDefinitions"][0]["name"] == "Last Seen"
    assert t["rows"][0]["cells"] == ["30s", "Warning", "BackOff", "pod/web-1",
                                     "spec.containers{c}", "kubelet, n1",
                                     "Back-off restarting failed container", "10m", 4,
                                     "web-1.17a"]
    new_style = {"metadata": {"name": "e"}, "eventTime": "2026-01-02T11:59:00.123456Z",
                 "involvedObject": {"kind": "Node"}, "reportingComponent": "sched"}
    row = cells("Event", new_style)
    # 59.88s truncates to 59s, as Go's int(d.Seconds()) does.
    assert (row["Last Seen"], row["First Seen"], row["Count"]) == ("59s", "59s", 1)
    assert (row["Object"], row["Source"]) == ("node", "sched")


def test_small_kinds() -> None:
    assert table("Namespace", {"metadata": {"name": "default"},
                               "status": {"phase": "Active"}})["rows"][0]["cells"] == [
        "default", "Active", "<unknown>"]
    cm = {"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}}
    assert cells("ConfigMap", cm)["Data"] == 2
    sec = {"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}}
    assert (cells("Secret", sec)["Type"], cells("Secret", sec)["Data"]) == ("Opaque", 1)
    assert cells("ServiceAccount", {"metadata": {"name": "default"}})["Secrets"] == 0
    lease = {"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}}
    assert cells("Lease", lease, "coordination.k8s.io")["Holder"] == "me"


# --- the Table envelope ----------------------------------------------------------------------

def test_table_envelope_and_include_object() -> None:
    obj = pod(statuses=[running()])
    t = table("Pod", obj, list_meta={"resourceVersion": "40", "continue": "abc"})
    assert (t["kind"], t["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert t["metadata"] == {"resourceVersion": "40", "continue": "abc"}
    first = t["columnDefinitions"][0]
    assert first == {"name": "Name", "type": "string", "format": "name",
                     "description": first["description"], "priority": 0}
    assert t["rows"][0]["object"] == {"kind": "PartialObjectMetadata",
                                      "apiVersion": "meta.k8s.io/v1",
                                      "metadata": obj["metadata"]}
    assert "conditions" not in t["rows"][0]
    assert table("Pod", obj)["metadata"] == {"resourceVersion": "12"}  # a single GET
    assert table("Pod", obj, include_object="")["rows"][0]["object"]["kind"] == (
        "PartialObjectMetadata")
    assert table("Pod", obj, include_object="Object")["rows"][0]["object"] is obj
    assert table("Pod", obj, include_object="None")["rows"][0]["object"] is None
    bare = {"metadata": {"name": "x"}}
    full = table("Pod", bare, include_object="Object")["rows"][0]["object"]
    assert (full["apiVersion"], full["kind"]) == ("v1", "Pod")
    with pytest.raises(ValueError, match="unrecognized includeObject"):
        table("Pod", obj, include_object="Everything")


def test_empty_list_still_has_columns() -> None:
    t = table("Pod", list_meta={"resourceVersion": "3"})
    assert t["rows"] == [] and len(t["columnDefinitions"]) == 9


def test_every_served_kind_prints_as_many_cells_as_columns() -> None:
    from dockyard.api.resources import RESOURCES

    for info in RESOURCES:
        t = to_table(info, [{"metadata": {"name": "x"}}], now=NOW)
        assert len(t["rows"][0]["cells"]) == len(t["columnDefinitions"]), info.kind
        assert any(c["format"] == "name" for c in t["columnDefinitions"]), info.kind


def test_unknown_kind_gets_the_default_name_age_table() -> None:
    info = ResourceInfo("example.com", "v1", "Widget", "widgets", True)
    obj = {"metadata": {"name": "w", "creationTimestamp": ts(timedelta(hours=5, minutes=3))}}
    t = to_table(info, [obj], now=NOW.replace(tzinfo=None))  # naive `now` is taken as UTC
    assert [(c["name"], c["type"]) for c in t["columnDefinitions"]] == [
        ("Name", "string"), ("Age", "date")]
    assert t["rows"][0]["cells"] == ["w", "5h3m"]
