"""The Swarm CLI's pure parts: Docker's option syntax, the spec ↔ Kubernetes mapping, pods as
tasks, tables, progress and inspect output."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dockyard.cli.swarm import mapping
from dockyard.cli.swarm.edits import Flags, create_spec, update_spec
from dockyard.cli.swarm.inspect import node_json, service_json, service_pretty
from dockyard.cli.swarm.options import (
    format_duration,
    format_memory,
    parse_constraint,
    parse_cpus,
    parse_duration,
    parse_env,
    parse_memory,
    parse_publish,
    parse_scale,
)
from dockyard.cli.swarm.progress import ProgressView, bar, task_text
from dockyard.cli.swarm.spec import HealthCheck, PortConfig, ServiceSpec, UpdateConfig
from dockyard.cli.swarm.tables import render, task_rows
from dockyard.cli.swarm.tasks import assign_slots, failure, pod_state, tasks_of

Obj = dict[str, Any]


def spec(**kw: Any) -> ServiceSpec:
    return create_spec(name=kw.pop("name", "web"), image=kw.pop("image", "nginx"),
                       args=kw.pop("args", []), mode=kw.pop("mode", "replicated"),
                       flags=kw.pop("flags", Flags()), env=kw.pop("env", []),
                       publish=kw.pop("publish", []), constraints=kw.pop("constraints", []),
                       labels=kw.pop("labels", []), entrypoint=kw.pop("entrypoint", None),
                       environ=kw.pop("environ", {}))


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds", "shown"), [
    ("0", 0.0, "0s"), ("10s", 10.0, "10s"), ("1m30s", 90.0, "1m30s"), ("500ms", 0.5, "500ms"),
    ("1.5s", 1.5, "1.5s"), ("1h", 3600.0, "1h0m0s"), ("2m", 120.0, "2m0s")])
def test_durations_parse_and_print_as_go_does(text: str, seconds: float, shown: str) -> None:
    assert parse_duration(text) == seconds
    assert format_duration(seconds) == shown


@pytest.mark.parametrize("bad", ["10", "abc", "-1s", "1x", ""])
def test_durations_need_units(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_sizes_and_cpus_as_docker_reads_them() -> None:
    assert parse_memory("64M") == parse_memory("64MiB") == parse_memory("64m") == 64 << 20
    assert parse_memory("1g") == 1 << 30 and parse_memory("512k") == 512 << 10
    assert parse_memory("1048576") == 1 << 20
    assert format_memory(64 << 20) == "64MiB"
    with pytest.raises(ValueError, match="invalid size"):
        parse_memory("lots")
    assert parse_cpus("0.5") == 500_000_000 and parse_cpus("2") == 2_000_000_000
    with pytest.raises(ValueError, match="too precise"):
        parse_cpus("0.0000000001")


def test_publish_short_and_long_forms() -> None:
    assert parse_publish("8080:80") == PortConfig(target=80, published=8080)
    assert parse_publish("53:53/udp") == PortConfig(target=53, published=53, protocol="udp")
    assert parse_publish("80") == PortConfig(target=80)
    assert parse_publish("published=8080,target=80,protocol=tcp") == \
        PortConfig(target=80, published=8080)
    for bad, message in (("8080:0", "invalid port"), ("1.2.3.4:80:80", "hostip"),
                         ("80/xyz", "invalid protocol"),
                         ("target=80,mode=host", "'host' is not supported"),
                         ("published=80", "target")):
        with pytest.raises(ValueError, match=message):
            parse_publish(bad)


def test_constraints_env_and_scale_arguments() -> None:
    assert str(parse_constraint("node.labels.zone == blue")) == "node.labels.zone==blue"
    assert parse_constraint("node.role!=manager").op == "!="
    for bad, message in (("node.labels.zone=blue", "operator"),
                         ("engine.labels.x==y", "engine labels"),
                         ("node.color==red", "unknown constraint key"),
                         ("node.role==boss", "manager or worker")):
        with pytest.raises(ValueError, match=message):
            parse_constraint(bad)
    assert parse_env("A=1", {}) == "A=1"
    assert parse_env("HOME", {"HOME": "/root"}) == "HOME=/root"
    assert parse_env("UNSET", {}) is None
    assert parse_scale("web=5") == ("web", 5)
    with pytest.raises(ValueError, match="SERVICE=REPLICAS"):
        parse_scale("web")


# -- spec -> objects -------------------------------------------------------------------------


def test_the_lecture_service_is_a_deployment_and_a_headless_service() -> None:
    s = spec(name="mynginx", flags=Flags(replicas=2))
    d = mapping.deployment(s, "default", 2)
    assert d["kind"] == "Deployment" and d["metadata"]["name"] == "mynginx"
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {"matchLabels": {mapping.LABEL_SERVICE: "mynginx"}}
    template = d["spec"]["template"]
    assert template["metadata"]["labels"] == {mapping.LABEL_SERVICE: "mynginx"}
    assert template["spec"]["containers"] == [{"name": "task", "image": "nginx"}]
    assert template["spec"]["terminationGracePeriodSeconds"] == 10  # Docker's default
    # Swarm's defaults: one task at a time, the old one stopped first, no pause.
    assert d["spec"]["strategy"] == {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert d["spec"]["minReadySeconds"] == 0
    assert mapping.spec_of(d) == s
    svc = mapping.service(s, "default")
    assert svc["spec"] == {"selector": {mapping.LABEL_SERVICE: "mynginx"}, "type": "ClusterIP",
                           "clusterIP": "None", "ports": []}


def test_published_ports_are_node_ports_on_the_target_port() -> None:
    s = spec(publish=["8080:80", "9090:80", "53/udp"])
    svc = mapping.service(s, "default", owner={"metadata": {"name": "web", "uid": "u1"}})
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"] == [
        {"name": "tcp-80", "protocol": "TCP", "port": 80, "targetPort": 80, "nodePort": 8080},
        {"name": "tcp-9090", "protocol": "TCP", "port": 9090, "targetPort": 80,
         "nodePort": 9090},
        {"name": "udp-53", "protocol": "UDP", "port": 53, "targetPort": 53}]
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert json.loads(svc["metadata"]["annotations"][mapping.ANN_REQUESTED]) == \
        {"tcp-80": 8080, "tcp-9090": 9090}
    container = mapping.pod_template(s)["spec"]["containers"][0]
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"},
                                  {"containerPort": 53, "protocol": "UDP"}]


def test_env_resources_health_and_constraints_map_to_the_pod() -> None:
    s = spec(env=["A=1", "B=two=2"], args=["sh", "-c", "echo hi"], entrypoint="/bin/env",
             constraints=["node.labels.zone==blue", "node.hostname!=n2", "node.role==worker",
                          "node.platform.arch==x86_64"],
             flags=Flags(limit_cpu="0.5", limit_memory="64M", reserve_memory="32M",
                         health_cmd="test -f /ok", health_interval="2s", health_retries=4,
                         health_timeout="500ms"))
    pod = mapping.pod_template(s)["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["/bin/env"] and c["args"] == ["sh", "-c", "echo hi"]
    assert c["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "two=2"}]
    assert c["resources"] == {"limits": {"cpu": "500m", "memory": "64Mi"},
                              "requests": {"memory": "32Mi", "cpu": "0"}}
    probe = {"exec": {"command": ["/bin/sh", "-c", "test -f /ok"]}, "periodSeconds": 2,
             "timeoutSeconds": 1, "failureThreshold": 4, "successThreshold": 1,
             "initialDelaySeconds": 0}
    assert c["readinessProbe"] == probe and c["livenessProbe"] == probe
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert term == [{"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["blue"]},
        {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["n2"]},
        {"key": mapping.ROLE_LABEL, "operator": "DoesNotExist"},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]
    assert "podAntiAffinity" not in pod["affinity"]


def test_node_id_constraints_are_resolved_to_node_names() -> None:
    affinity = mapping.node_affinity(["node.id==abc"], {"abcdef": "n1", "zzz": "n2"})
    assert affinity is not None
    term = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term == {"matchFields": [{"key": "metadata.name", "operator": "In",
                                     "values": ["n1"]}]}
    with pytest.raises(ValueError, match="no node"):
        mapping.node_affinity(["node.id==q"], {"abcdef": "n1"})


@pytest.mark.parametrize(("order", "parallelism", "rolling"), [
    ("stop-first", "2", {"maxSurge": 0, "maxUnavailable": 2}),
    ("start-first", "1", {"maxSurge": 1, "maxUnavailable": 0}),
    ("stop-first", "0", {"maxSurge": 0, "maxUnavailable": "100%"}),
])
def test_update_config_is_the_rolling_update_and_delay_is_min_ready(
        order: str, parallelism: str, rolling: Obj) -> None:
    s = spec(flags=Flags(update={"order": order, "parallelism": parallelism, "delay": "2.5s"}))
    d = mapping.deployment(s, "default", 3)
    assert d["spec"]["strategy"]["rollingUpdate"] == rolling
    assert d["spec"]["minReadySeconds"] == 3  # whole seconds, never shorter than asked


def test_global_mode_is_one_task_per_node_and_refuses_start_first() -> None:
    s = spec(mode="global")
    pod = mapping.pod_template(s)["spec"]
    assert pod["affinity"]["podAntiAffinity"] == {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {mapping.LABEL_SERVICE: "web"}},
             "topologyKey": "kubernetes.io/hostname"}]}
    with pytest.raises(ValueError, match="start-first is not supported with --mode global"):
        mapping.deployment(spec(mode="global", flags=Flags(update={"order": "start-first"})),
                           "default", 1)
    with pytest.raises(ValueError, match="replicated mode"):
        spec(mode="global", flags=Flags(replicas=3))


def node(name: str, *, labels: dict[str, str] | None = None, ready: str = "True",
         unschedulable: bool = False, marked: str = "", taints: list[Obj] | None = None) -> Obj:
    meta: Obj = {"name": name, "uid": f"uid-{name}",
                 "labels": {"kubernetes.io/hostname": name, **(labels or {})}}
    if marked:
        meta["annotations"] = {mapping.ANN_AVAILABILITY: marked}
    return {"metadata": meta, "spec": {"unschedulable": unschedulable, "taints": taints or []},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def running_on(node_name: str) -> Obj:
    return {"metadata": {"name": f"p-{node_name}", "uid": node_name},
            "spec": {"nodeName": node_name}}


def test_global_nodes_follow_availability_readiness_and_constraints() -> None:
    nodes = [node("a", labels={"zone": "blue"}), node("b"),
             node("c", unschedulable=True),  # paused, hosting a task: keeps it
             node("d", unschedulable=True),  # paused, no task: gets none
             node("e", unschedulable=True, marked="drain"),
             node("f", ready="Unknown"),
             node("g", taints=[{"key": "gpu", "effect": "NoSchedule"}])]
    pods = [running_on("c"), running_on("e")]
    assert mapping.global_nodes(spec(mode="global"), nodes, pods) == ["a", "b", "c"]
    blue = spec(mode="global", constraints=["node.labels.zone==blue"])
    assert mapping.global_nodes(blue, nodes, pods) == ["a"]


def test_node_availability_round_trip() -> None:
    assert mapping.availability(node("a")) == "active"
    assert mapping.availability(node("a", unschedulable=True)) == "pause"  # kubectl cordon
    assert mapping.availability(node("a", unschedulable=True, marked="drain")) == "drain"
    assert mapping.availability_patch("drain") == {
        "spec": {"unschedulable": True},
        "metadata": {"annotations": {mapping.ANN_AVAILABILITY: "drain"}}}
    assert mapping.availability_patch("active") == {
        "spec": {"unschedulable": None},
        "metadata": {"annotations": {mapping.ANN_AVAILABILITY: None}}}
    with pytest.raises(ValueError):
        mapping.availability_patch("gone")


def test_invalid_names_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid service name"):
        mapping.deployment(spec(name="My_Service"), "default", 1)


# -- updates ---------------------------------------------------------------------------------


def test_update_flags_change_the_spec_as_docker_does() -> None:
    old = spec(env=["A=1", "B=2"], publish=["8080:80"], constraints=["node.labels.x==1"],
               labels=["team=a"])
    new = update_spec(old, flags=Flags(replicas=4, update={"failure_action": "rollback",
                                                           "monitor": "10s"}),
                      image="nginx:v2", env_add=["B=3", "C=4"], env_rm=["A"],
                      publish_add=["9090:90"], publish_rm=["80"],
                      constraint_add=["node.role==worker"], constraint_rm=["node.labels.x==1"],
                      label_add=["tier=web"], label_rm=["team"], force=True, environ={})
    assert new.image == "nginx:v2" and new.replicas == 4
    assert new.env == ["B=3", "C=4"]
    assert new.ports == [PortConfig(target=90, published=9090)]
    assert new.constraints == ["node.role==worker"]
    assert new.labels == {"tier": "web"}
    assert new.force_update == 1
    assert new.update_config == UpdateConfig(failure_action="rollback", monitor=10.0)
    assert old.image == "nginx" and old.env == ["A=1", "B=2"]  # the old spec is untouched
    with pytest.raises(ValueError, match="--rollback-failure-action"):
        update_spec(old, flags=Flags(rollback={"failure_action": "rollback"}), environ={})
    with pytest.raises(ValueError, match="need a --health-cmd"):
        update_spec(old, flags=Flags(health_interval="1s"), environ={})


def deployment_obj(s: ServiceSpec, **extra: Any) -> Obj:
    d = mapping.deployment(s, "default", s.replicas)
    d["metadata"].update(uid="u1", resourceVersion="7", **extra)
    return d


def test_applying_a_new_spec_keeps_identity_and_resumes() -> None:
    old = spec(labels=["team=a"])
    existing = deployment_obj(old)
    existing["metadata"]["annotations"]["other"] = "kept"
    existing["metadata"]["annotations"][mapping.ANN_PREVIOUS] = old.to_json()
    existing["spec"]["paused"] = True
    new = update_spec(old, flags=Flags(replicas=3), image="nginx:v2", label_rm=["team"],
                      environ={})
    desired = mapping.deployment(new, "default", 3)  # no previous: an automatic rollback
    out = mapping.apply_deployment(existing, desired)
    assert out["metadata"]["uid"] == "u1" and out["metadata"]["resourceVersion"] == "7"
    assert out["metadata"]["labels"] == {mapping.LABEL_SERVICE: "web"}
    assert out["metadata"]["annotations"]["other"] == "kept"
    assert mapping.ANN_PREVIOUS not in out["metadata"]["annotations"]
    assert "paused" not in out["spec"] and out["spec"]["replicas"] == 3
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:v2"
    assert mapping.spec_of(out) == new


def test_a_node_port_the_cluster_chose_survives_updates() -> None:
    s = spec(publish=["8080:80"])
    existing = mapping.service(s, "default")
    existing["spec"].update(clusterIP="10.43.0.9")
    existing["spec"]["ports"][0]["nodePort"] = 31234  # 8080 was out of range
    again = mapping.apply_service(existing, mapping.service(s, "default"))
    assert again is not None
    assert again["spec"]["ports"][0]["nodePort"] == 31234
    assert again["spec"]["clusterIP"] == "10.43.0.9"
    moved = mapping.apply_service(existing, mapping.service(spec(publish=["8081:80"]),
                                                            "default"))
    assert moved is not None and moved["spec"]["ports"][0]["nodePort"] == 8081  # asked anew
    assert mapping.apply_service(existing, mapping.service(spec(), "default")) is None
    assert mapping.without_node_ports(mapping.service(s, "default"), [8080])["spec"][
        "ports"][0].get("nodePort") is None


# -- tasks -----------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(uid: str, *, created: float = 0, slot: int | None = None, hash_: str = "h1",
        deleting: bool = False, node: str = "n1", state: Obj | None = None, ready: bool = True,
        last: Obj | None = None, restarts: int = 0, phase: str = "Running") -> Obj:
    meta: Obj = {"name": f"web-{uid}", "uid": uid, "creationTimestamp": at(created),
                 "labels": {mapping.POD_TEMPLATE_HASH: hash_}}
    if slot is not None:
        meta["annotations"] = {mapping.ANN_SLOT: str(slot)}
    if deleting:
        meta["deletionTimestamp"] = at(created + 50)
    status: Obj = {"phase": phase, "containerStatuses": [{
        "name": "task", "ready": ready, "restartCount": restarts, "image": "nginx",
        "state": state if state is not None else {"running": {"startedAt": at(created + 1)}},
        "lastState": {"terminated": last} if last else {}}]}
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"image": "nginx"}]},
            "status": status}


def test_slots_are_kept_and_replacements_take_the_freed_slot() -> None:
    pods = [pod("a", created=1, slot=1), pod("b", created=2, slot=2, deleting=True),
            pod("c", created=3), pod("d", created=4, hash_="h2"), pod("e", created=5)]
    slots, chosen = assign_slots(pods)
    # c replaces the pod leaving slot 2; d is the first of a new template; e gets slot 3.
    assert slots == {"a": 1, "b": 2, "c": 2, "d": 2, "e": 3}
    assert chosen == {"c": 2, "d": 2, "e": 3}
    names = [t.name for t in tasks_of(pods, "web", "replicated", {})]
    assert names == ["web.1", "web.2", "web.2", "web.2", "web.3"]


def test_pod_states_as_docker_task_states() -> None:
    assert pod_state(pod("a"))[0] == "running"
    assert pod_state(pod("a", ready=False))[0] == "starting"
    waiting = pod("a", state={"waiting": {"reason": "ContainerCreating"}}, ready=False)
    assert pod_state(waiting)[0] == "preparing"
    pulled = pod("a", state={"waiting": {"reason": "ErrImagePull", "message": "no image"}})
    assert pod_state(pulled)[::2] == ("rejected", "no image")
    crashed = pod("a", state={"waiting": {"reason": "CrashLoopBackOff"}},
                  last={"exitCode": 3, "finishedAt": at(9)})
    assert pod_state(crashed)[::2] == ("failed", "task: non-zero exit (3)")
    pending = {"metadata": {"name": "p", "uid": "p", "creationTimestamp": at(0)}, "spec": {},
               "status": {"phase": "Pending", "conditions": [
                   {"type": "PodScheduled", "status": "False",
                    "message": "0/1 nodes are available"}]}}
    assert pod_state(pending)[::2] == ("pending", "no suitable node (0/1 nodes are available)")


def test_failures_count_only_after_the_update_started() -> None:
    since = T0 + timedelta(seconds=10)
    old_crash = pod("a", restarts=1, last={"exitCode": 1, "finishedAt": at(5)})
    assert failure(old_crash, since) is None
    killed = pod("a", restarts=1, last={"exitCode": 137, "finishedAt": at(12)})
    assert failure(killed, since) == "task: non-zero exit (137)"
    assert failure(pod("a", state={"waiting": {"reason": "ImagePullBackOff",
                                               "message": "not found"}}), since) == "not found"
    assert failure(pod("a"), since) is None


def test_ps_rows_show_history_under_the_current_task() -> None:
    tasks = tasks_of([pod("a", slot=1, restarts=1, last={"exitCode": 2, "finishedAt": at(3),
                                                         "containerID": "runc://abcdef"})],
                     "web", "replicated", {})
    rows = task_rows(tasks, node_names={"n1": "node-1"})
    assert [r[1] for r in rows] == ["web.1", " \\_ web.1"]
    assert rows[0][2:5] == ["nginx:latest", "node-1", "Running"]
    assert rows[1][4:7] == ["Shutdown", rows[1][5], '"task: non-zero exit (2)"']
    assert rows[1][5].startswith("Failed ")


def test_tables_are_laid_out_like_dockers() -> None:
    text = render(("ID", "NAME", "MODE"), [["abc", "mynginx", "replicated"]])
    assert text.splitlines() == ["ID        NAME      MODE", "abc       mynginx   replicated"]
    wide = render(("ID", "NAME"), [["x" * 12, "web"]])
    assert wide.splitlines()[1] == "x" * 12 + "   web"


# -- progress --------------------------------------------------------------------------------


def test_progress_bar_and_lines() -> None:
    assert bar(9, 9) == "[" + "=" * 50 + ">]"
    assert bar(1, 9) == "[" + "=" * 5 + ">" + " " * 45 + "]"
    assert task_text("running", with_bar=True) == "running   [" + "=" * 50 + ">]"
    assert task_text("running", with_bar=False) == "running"
    plain = io.StringIO()
    view = ProgressView(plain, tty=False)
    for state in ("new", "new", "running"):
        view.task("1/2", state)
    view.set("verify", "Service converged")
    assert plain.getvalue().splitlines() == ["1/2: new", "1/2: running",
                                             "verify: Service converged"]
    tty = io.StringIO()
    view = ProgressView(tty, tty=True, width=120)
    view.task("1/1", "new")
    view.set("verify", "Waiting")
    view.task("1/1", "running")
    assert tty.getvalue().endswith(
        "\x1b[2A\r\x1b[2K1/1: running   [" + "=" * 50 + ">]\r\x1b[2B")


# -- inspect ---------------------------------------------------------------------------------


def test_service_inspect_has_dockers_shape() -> None:
    s = spec(publish=["8080:80"], flags=Flags(replicas=2, health_cmd="true",
                                              update={"delay": "10s"}))
    d = deployment_obj(s, creationTimestamp=at(0))
    d["metadata"]["annotations"][mapping.ANN_PREVIOUS] = spec(image="nginx:v1").to_json()
    svc = mapping.service(s, "default")
    svc["spec"]["clusterIP"] = "10.43.0.5"
    svc["spec"]["ports"][0]["nodePort"] = 31000
    info = service_json(d, svc, {"State": "completed"})
    assert info["ID"] == "u1" and info["Version"] == {"Index": 7}
    assert info["Spec"]["Mode"] == {"Replicated": {"Replicas": 2}}
    assert info["Spec"]["UpdateConfig"]["Delay"] == 10_000_000_000
    assert info["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"] == \
        ["CMD-SHELL", "true"]
    assert info["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx:v1"
    assert info["Endpoint"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 80,
                                          "PublishedPort": 31000, "PublishMode": "ingress"}]
    assert info["Endpoint"]["VirtualIPs"] == [{"NetworkID": "", "Addr": "10.43.0.5"}]
    assert info["UpdateStatus"] == {"State": "completed"}
    pretty = service_pretty(info)
    assert " Replicas:\t2" in pretty and " PublishedPort = 31000" in pretty
    assert " Delay:\t\t10s" in pretty


def test_node_inspect_has_dockers_shape() -> None:
    n = node("n1", labels={"zone": "blue"})
    n["status"].update(addresses=[{"type": "InternalIP", "address": "10.0.0.2"}],
                       capacity={"cpu": "2", "memory": "2Gi"},
                       nodeInfo={"kubeletVersion": "v1.32.0-dockyard",
                                 "architecture": "amd64", "operatingSystem": "linux"})
    info = node_json(n, role="manager", leader=True, api_port=6443)
    assert info["Spec"] == {"Labels": n["metadata"]["labels"], "Role": "manager",
                            "Availability": "active"}
    assert info["Description"]["Platform"] == {"Architecture": "x86_64", "OS": "linux"}
    assert info["Description"]["Resources"] == {"NanoCPUs": 2_000_000_000,
                                                 "MemoryBytes": 2 << 30}
    assert info["Status"] == {"State": "ready", "Addr": "10.0.0.2"}
    assert info["ManagerStatus"] == {"Leader": True, "Reachability": "reachable",
                                     "Addr": "10.0.0.2:6443"}


def test_spec_survives_json() -> None:
    s = spec(publish=["80"], flags=Flags(health_cmd="true"))
    s.healthcheck = HealthCheck(test=["CMD", "true"], retries=5)
    assert ServiceSpec.from_json(s.to_json()) == s
