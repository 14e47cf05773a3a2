"""The whole control plane with simulated nodes, as a kubectl user meets it: `dockyard server`
(scheduler and controllers in-process) plus `dockyard sim` nodes in another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 10
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: web}}
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute,
         tolerationSeconds: 1}
      containers:
      - name: web
        image: busybox:latest
        resources: {requests: {cpu: 100m, memory: 64Mi}}
"""


def eventually(check: Callable[[], object], timeout: float = 20.0, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"not reached within {timeout}s (last: {last!r})")


class Sim:
    """`dockyard sim` as a separate process, like real nodes would be."""

    def __init__(self, server: ServerProcess, prefix: str, nodes: int, zones: int) -> None:
        env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli.main", "sim", "--nodes", str(nodes),
             "--zones", str(zones), "--name-prefix", prefix],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", extra_args=["--node-monitor-grace-period", "2"])
    srv.data_dir.mkdir()
    srv.start()
    yield srv
    srv.stop()


def pods(server: ServerProcess, selector: str = "app=web") -> list[dict]:
    out = server.kubectl("get", "pods", "-l", selector, "-o", "json").stdout
    return json.loads(out)["items"]


def live_pods(server: ServerProcess) -> list[dict]:
    return [p for p in pods(server) if not p["metadata"].get("deletionTimestamp")]


def test_deployment_spreads_over_zones_and_cascades(cluster: ServerProcess) -> None:
    nodes = Sim(cluster, "zone", nodes=3, zones=3)
    try:
        eventually(lambda: cluster.kubectl("get", "nodes").stdout.count(" Ready ") == 3)
        cluster.kubectl("apply", "-f", "-", input=DEPLOYMENT)
        cluster.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        running = pods(cluster)
        assert len(running) == 10
        assert all(p["status"]["phase"] == "Running" for p in running)
        per_node: dict[str, int] = {}
        for pod in running:
            per_node[pod["spec"]["nodeName"]] = per_node.get(pod["spec"]["nodeName"], 0) + 1
        assert sorted(per_node.values()) == [3, 3, 4]  # maxSkew 1 over three zones

        # Deleting the Deployment deletes its ReplicaSets and their pods.
        cluster.kubectl("delete", "deployment", "web")
        eventually(lambda: not json.loads(cluster.kubectl(
            "get", "rs", "-l", "app=web", "-o", "json").stdout)["items"], timeout=30)
        eventually(lambda: not pods(cluster), timeout=30)
    finally:
        nodes.stop()


def test_pods_of_a_dead_node_are_replaced(cluster: ServerProcess) -> None:
    doomed = Sim(cluster, "doomed", nodes=2, zones=1)
    spare = None
    try:
        eventually(lambda: cluster.kubectl("get", "nodes").stdout.count(" Ready ") == 2)
        manifest = DEPLOYMENT.replace("replicas: 10", "replicas: 4")
        manifest = manifest[:manifest.index("      topologySpreadConstraints")] + \
            manifest[manifest.index("      tolerations"):]
        cluster.kubectl("apply", "-f", "-", input=manifest)
        cluster.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        spare = Sim(cluster, "spare", nodes=1, zones=1)
        eventually(lambda: cluster.kubectl("get", "nodes").stdout.count(" Ready ") == 3)
        doomed.stop()  # heartbeats stop; grace period 2 s, toleration 1 s
        eventually(lambda: "Unknown" in cluster.kubectl(
            "get", "node", "doomed-0", "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}").stdout, timeout=30)
        eventually(lambda: len(live_pods(cluster)) == 4 and all(
            p["spec"].get("nodeName") == "spare-0" and p["status"].get("phase") == "Running"
            for p in live_pods(cluster)), timeout=40)
        taints = json.loads(cluster.kubectl("get", "node", "doomed-0", "-o",
                                            "jsonpath={.spec.taints}").stdout)
        assert {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}.items() <= \
            next(t for t in taints if t["effect"] == "NoExecute").items()
    finally:
        doomed.stop()
        if spare:
            spare.stop()


def holder_pid(server: ServerProcess, lease: str) -> int:
    out = server.kubectl("get", "lease", "-n", "kube-system", lease, "-o",
                         "jsonpath={.spec.holderIdentity}", check=False).stdout
    parts = out.strip().split("_")  # host_pid_random
    return int(parts[1]) if len(parts) == 3 else 0


@pytest.mark.parametrize("component,lease,flag", [
    ("controller-manager", "kube-controller-manager", "--disable-controller-manager"),
    ("scheduler", "kube-scheduler", "--disable-scheduler"),
])
def test_leader_failover(tmp_path: Path, component: str, lease: str, flag: str) -> None:
    """Two instances of a component: only one acts; SIGKILL it and the other takes over."""
    srv = ServerProcess(tmp_path / "data", extra_args=[flag])
    srv.data_dir.mkdir()
    srv.start()
    env = {**os.environ, "KUBECONFIG": str(srv.kubeconfig)}
    nodes = Sim(srv, "n", nodes=1, zones=1)
    instances = {}
    try:
        for _ in range(2):
            proc = subprocess.Popen([sys.executable, "-m", "dockyard.cli.main", component,
                                     "--lease-duration", "3"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            instances[proc.pid] = proc
        leader = eventually(lambda: holder_pid(srv, lease))
        srv.kubectl("apply", "-f", "-", input=REPLICASET.replace("NAME", "before"))
        eventually(lambda: len([p for p in pods(srv, "rs=before")
                                if p["status"].get("phase") == "Running"]) == 2, timeout=30)
        time.sleep(1)
        assert holder_pid(srv, lease) == leader  # the standby never stole a live lease
        instances[leader].send_signal(signal.SIGKILL)
        instances[leader].wait()
        started = time.monotonic()
        successor = eventually(lambda: holder_pid(srv, lease) not in (0, leader)
                               and holder_pid(srv, lease), timeout=15)
        assert successor in instances and time.monotonic() - started < 15
        srv.kubectl("apply", "-f", "-", input=REPLICASET.replace("NAME", "after"))
        eventually(lambda: len([p for p in pods(srv, "rs=after")  # the new leader acts
                                if p["status"].get("phase") == "Running"]) == 2, timeout=30)
    finally:
        for proc in instances.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        nodes.stop()
        srv.stop()


REPLICASET = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: NAME}
spec:
  replicas: 2
  selector: {matchLabels: {rs: NAME}}
  template:
    metadata: {labels: {rs: NAME}}
    spec:
      containers: [{name: c, image: busybox:latest}]
"""
