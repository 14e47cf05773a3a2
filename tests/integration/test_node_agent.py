"""A real single-node cluster (`dockyard up`): pods run as runc containers, as users see them.

One cluster per module (each test in its own namespace) keeps the suite fast; the last test
stops it, runs `dockyard cleanup` and checks that nothing is left on the host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.runtime.naming import cluster_prefix
from tests.conftest import ServerProcess, kubectl_binary
from tests.hostcheck import leftovers
from tests.nodecluster import single_node, wait_for
from tests.terminal import run_in_terminal

pytestmark = [
    pytest.mark.xdist_group("node-agent"),  # one cluster, tests in order, on one worker
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed"),
]

Obj = dict[str, Any]
NODE = "node-1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("up") / "data"
    data.mkdir()
    with single_node(data, NODE, "--pod-max-pids", "64", "--crash-backoff", "1s,8s") as srv:
        yield srv


def apply(cluster: ServerProcess, namespace: str, *objects: Obj) -> None:
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump_all(objects))


def pod(cluster: ServerProcess, namespace: str, name: str) -> Obj:
    out = cluster.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def container_status(p: Obj, name: str, init: bool = False) -> Obj:
    key = "initContainerStatuses" if init else "containerStatuses"
    for status in (p.get("status") or {}).get(key) or []:
        if status["name"] == name:
            return status
    return {}


def running(cluster: ServerProcess, namespace: str, name: str, timeout: float = 30.0) -> Obj:
    return wait_for(lambda: (lambda p: p if (p.get("status") or {}).get("phase") == "Running"
                             else None)(pod(cluster, namespace, name)),
                    timeout, f"pod {namespace}/{name} Running")


def busybox_pod(name: str, command: str, **spec: Any) -> Obj:
    container = {"name": spec.pop("container_name", "main"), "image": "busybox",
                 "command": ["sh", "-c", command]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 2, **spec}}


def test_node_registers_with_machine_capacity(cluster: ServerProcess) -> None:
    node = wait_for(lambda: json.loads(cluster.kubectl("get", "node", NODE, "-o", "json",
                                                       check=False).stdout or "{}"),
                    what="node registered")
    status = node["status"]
    assert status["capacity"]["cpu"] == str(os.cpu_count())
    assert status["capacity"]["pods"] == "110"
    assert status["allocatable"]["memory"].endswith("Ki")
    ready = {c["type"]: c for c in status["conditions"]}
    assert ready["Ready"]["status"] == "True"
    assert ready["MemoryPressure"]["reason"] == "KubeletHasSufficientMemory"
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("runc://")
    assert node["spec"]["podCIDR"] == cluster.pod_cidr  # type: ignore[attr-defined]
    lease = cluster.kubectl("get", "lease", "-n", "kube-node-lease", NODE, "-o", "json")
    assert json.loads(lease.stdout)["spec"]["holderIdentity"] == NODE


def test_deployment_runs_with_pod_ips_logs_and_exec(cluster: ServerProcess) -> None:
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "web", "image": "busybox",
                                     "command": ["sh", "-c",
                                                 "echo started $(hostname); exec sleep 3600"]}],
                 }}}}
    apply(cluster, "deploy", deployment)

    def all_running() -> list[Obj] | None:
        out = json.loads(cluster.kubectl("get", "pods", "-n", "deploy", "-l", "app=web",
                                         "-o", "json").stdout)["items"]
        ok = [p for p in out if p["status"].get("phase") == "Running"
              and container_status(p, "web").get("ready")]
        return out if len(ok) == 3 else None

    pods = wait_for(all_running, 60, "3 web pods Running and ready")
    network = ipaddress.ip_network(cluster.pod_cidr)  # type: ignore[attr-defined]
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 3 and all(ipaddress.ip_address(ip) in network for ip in ips)
    for p in pods:
        status = container_status(p, "web")
        assert status["containerID"].startswith("runc://")
        assert status["imageID"].startswith("sha256:") or "sha256:" in status["imageID"]
        assert p["status"]["qosClass"] == "BestEffort"
        assert p["status"]["hostIP"] == "127.0.0.1"
        conditions = {c["type"]: c["status"] for c in p["status"]["conditions"]}
        assert conditions == {**conditions, "PodScheduled": "True", "Initialized": "True",
                              "ContainersReady": "True", "Ready": "True"}

    name = pods[0]["metadata"]["name"]
    logs = wait_for(lambda: cluster.kubectl("logs", "-n", "deploy", name).stdout,
                    what="log output")
    assert logs.strip() == f"started {name}"
    hostname = cluster.kubectl("exec", "-n", "deploy", name, "--", "cat", "/etc/hostname")
    assert hostname.stdout.strip() == name
    # An interactive shell with a terminal (kubectl exec -it), sized like kubectl's.
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "TERM": "dumb"}
    code, output = run_in_terminal(
        [kubectl_binary(), "exec", "-it", "-n", "deploy", name, "--", "sh"], env, rows=30,
        cols=90, typed=b"sleep 0.3; stty size; tty; exit 5\r")
    assert code == 5, output
    assert "30 90" in output and "/dev/pts/" in output
    # Pods on the node bridge reach each other by IP.
    other = pods[1]["status"]["podIP"]
    ping = cluster.kubectl("exec", "-n", "deploy", name, "--", "ping", "-c", "1", "-W", "2",
                           other, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    cluster.kubectl("delete", "deployment", "-n", "deploy", "web")
    wait_for(lambda: not json.loads(cluster.kubectl("get", "pods", "-n", "deploy", "-o",
                                                    "json").stdout)["items"],
             30, "pods of the deleted deployment gone")


def test_crash_loop_backs_off_with_growing_delay(cluster: ServerProcess) -> None:
    apply(cluster, "crash", busybox_pod("crasher", "echo boom; exit 3"))

    def backing_off() -> Obj | None:
        status = container_status(pod(cluster, "crash", "crasher"), "main")
        waiting = (status.get("state") or {}).get("waiting") or {}
        return status if waiting.get("reason") == "CrashLoopBackOff" and \
            status.get("restartCount", 0) >= 2 else None

    status = wait_for(backing_off, 45, "CrashLoopBackOff after 2 restarts")
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    events = cluster.kubectl("get", "events", "-n", "crash", "-o", "json").stdout
    messages = [e["message"] for e in json.loads(events)["items"] if e["reason"] == "BackOff"]
    assert any("Back-off restarting failed container main" in m for m in messages)
    # The waiting messages name a back-off that doubles: 1s, 2s, 4s...
    seen: set[str] = set()

    def two_delays() -> bool:
        waiting = (container_status(pod(cluster, "crash", "crasher"), "main").get("state")
                   or {}).get("waiting") or {}
        message = waiting.get("message", "")
        if message.startswith("back-off "):
            seen.add(message.split()[1])
        return len(seen) >= 2

    wait_for(two_delays, 30, "two different back-off delays")
    assert seen & {"2s", "4s", "8s"}
    logs = cluster.kubectl("logs", "-n", "crash", "crasher", "--previous")
    assert logs.stdout.strip() == "boom"


def test_probes_liveness_restarts_and_readiness_gates(cluster: ServerProcess) -> None:
    live = busybox_pod("liveness", "exec sleep 3600", container={"livenessProbe": {
        "exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1,
        "failureThreshold": 1}})
    ready = busybox_pod("readiness", "exec sleep 3600", container={"readinessProbe": {
        "exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}})
    apply(cluster, "probes", live, ready)
    wait_for(lambda: container_status(pod(cluster, "probes", "liveness"), "main")
             .get("restartCount", 0) >= 1, 30, "liveness restart")
    events = json.loads(cluster.kubectl("get", "events", "-n", "probes", "-o", "json").stdout)
    assert any(e["reason"] == "Unhealthy" and e["message"].startswith("Liveness probe failed")
               for e in events["items"])

    p = running(cluster, "probes", "readiness")
    assert container_status(p, "main")["ready"] is False
    conditions = {c["type"]: c["status"] for c in p["status"]["conditions"]}
    assert conditions["Ready"] == "False"
    cluster.kubectl("exec", "-n", "probes", "readiness", "--", "touch", "/tmp/ready")
    wait_for(lambda: container_status(pod(cluster, "probes", "readiness"), "main")
             .get("ready"), 15, "ready after the file appears")


def test_limits_oom_and_pids(cluster: ServerProcess) -> None:
    hog = busybox_pod("hog", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); sleep 1",
                      restartPolicy="Never",
                      container={"resources": {"limits": {"memory": "20Mi"}}})
    # The bomb forks until the pod's pids limit refuses; the shell that started it survives.
    bomb = busybox_pod("bomb", "sh -c 'while true; do sleep 5 & done' 2>/dev/null; "
                       "echo bomb exit $?; sleep 6; echo survived; exec sleep 3600")
    apply(cluster, "limits", hog, bomb)

    def terminated() -> Obj | None:
        state = container_status(pod(cluster, "limits", "hog"), "main").get("state") or {}
        return state.get("terminated")

    term = wait_for(terminated, 60, "memory hog terminated")
    assert term["reason"] == "OOMKilled"
    assert term["exitCode"] == 137
    assert pod(cluster, "limits", "hog")["status"]["phase"] == "Failed"

    running(cluster, "limits", "bomb")
    out = wait_for(lambda: "survived" in (logs := cluster.kubectl(
        "logs", "-n", "limits", "bomb", check=False).stdout) and logs, 30, "fork bomb output")
    assert out.split("\n")[0] == "bomb exit 2"  # busybox sh: "can't fork", exit status 2
    assert container_status(pod(cluster, "limits", "bomb"), "main")["restartCount"] == 0


def test_isolation(cluster: ServerProcess) -> None:
    apply(cluster, "iso", busybox_pod("iso", "exec sleep 3600"))
    running(cluster, "iso", "iso")

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl("exec", "-n", "iso", "iso", "--", *cmd, check=False)

    pids = [line.split()[0] for line in run("ps", "-o", "pid").stdout.split("\n")[1:] if line]
    assert "1" in pids and len(pids) <= 3  # only its own processes (sleep, ps)
    assert run("mount", "-t", "tmpfs", "none", "/mnt").returncode != 0
    module = run("insmod", "/nonexistent.ko")
    assert module.returncode != 0
    assert run("cat", "/proc/kcore").stdout == ""
    assert run("sh", "-c", "echo 1 > /proc/sys/kernel/panic").returncode != 0


def test_init_containers_and_shared_empty_dir(cluster: ServerProcess) -> None:
    spec = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shared"}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "work", "emptyDir": {}}],
        "initContainers": [
            {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo one > /w/log"],
             "volumeMounts": [{"name": "work", "mountPath": "/w"}]},
            {"name": "second", "image": "busybox",
             "command": ["sh", "-c", "echo two >> /w/log"],
             "volumeMounts": [{"name": "work", "mountPath": "/w"}]}],
        "containers": [
            {"name": "writer", "image": "busybox",
             "command": ["sh", "-c", "echo three >> /w/log; exec sleep 3600"],
             "volumeMounts": [{"name": "work", "mountPath": "/w"}]},
            {"name": "reader", "image": "busybox", "command": ["sleep", "3600"],
             "volumeMounts": [{"name": "work", "mountPath": "/data"}]}]}}
    apply(cluster, "init", spec)
    p = running(cluster, "init", "shared")
    for name in ("first", "second"):
        term = container_status(p, name, init=True)["state"]["terminated"]
        assert term["reason"] == "Completed" and term["exitCode"] == 0
    first = container_status(p, "first", init=True)["state"]["terminated"]["finishedAt"]
    second = container_status(p, "second", init=True)["state"]["terminated"]["startedAt"]
    assert first <= second
    content = wait_for(lambda: "three" in (out := cluster.kubectl(
        "exec", "-n", "init", "shared", "-c", "reader", "--", "cat", "/data/log",
        check=False).stdout) and out, 15, "writer's line in the shared dir")
    assert content.split() == ["one", "two", "three"]


def test_image_never_pull(cluster: ServerProcess) -> None:
    spec = busybox_pod("absent", "true", container={"image": "nothing-here:1.0",
                                                     "imagePullPolicy": "Never"})
    apply(cluster, "images", spec)
    waiting = wait_for(lambda: ((container_status(pod(cluster, "images", "absent"), "main")
                                 .get("state") or {}).get("waiting") or {}).get("reason")
                       == "ErrImageNeverPull" and container_status(
                           pod(cluster, "images", "absent"), "main")["state"]["waiting"],
                       30, "ErrImageNeverPull")
    assert "nothing-here:1.0" in waiting["message"]


def test_zz_agent_restart_keeps_containers_then_cleanup(cluster: ServerProcess) -> None:
    """Runs last in this module: restarts the cluster process, then removes everything."""
    bridge = f"{cluster_prefix(cluster.data_dir)}br"

    def bridge_ports() -> int:
        out = subprocess.run(["ip", "-o", "link", "show", "master", bridge],
                             capture_output=True, text=True).stdout
        return len(out.splitlines())

    ports_before = bridge_ports()
    apply(cluster, "restart", busybox_pod("steady", "exec sleep 3600"))
    before = container_status(running(cluster, "restart", "steady"), "main")
    cluster.stop()
    cluster.start(timeout=60)
    time.sleep(3)  # the agent adopts, resyncs and reports
    after = container_status(running(cluster, "restart", "steady"), "main")
    assert after["containerID"] == before["containerID"]
    assert after["restartCount"] == before["restartCount"]
    assert after["state"]["running"]["startedAt"] == before["state"]["running"]["startedAt"]

    uid = pod(cluster, "restart", "steady")["metadata"]["uid"]
    cluster.kubectl("delete", "pod", "-n", "restart", "steady", "--wait=true")
    # Deleting a pod removes what it had on the host: netns, veth, mounts, cgroups, processes.
    prefix = cluster_prefix(cluster.data_dir)
    assert [item for item in leftovers(prefix, Path(cluster.data_dir)) if uid in item] == []
    assert bridge_ports() == ports_before  # its veth went with its network namespace
    cluster.stop()
    data = cluster.data_dir
    result = subprocess.run([sys.executable, "-m", "dockyard.cli.main", "cleanup",
                             "--data-dir", str(data)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert leftovers(cluster_prefix(data), Path(data)) == []
