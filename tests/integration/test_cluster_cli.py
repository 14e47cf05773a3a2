"""`dockyard cluster up|status|down`: a local multi-node cluster, as a user drives it.

`up` returns once the nodes are Ready and leaves its processes running (the test only has the
kubeconfig it printed and the pids `status` lists); `down`, another process, must leave
nothing: no process, namespace, link, mount, cgroup or route of any prefix involved.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from dockyard.network.routes import route_protocol
from dockyard.runtime.naming import cluster_prefix
from tests.conftest import kubectl_binary
from tests.hostcheck import leftovers
from tests.multinode import DOCKYARD
from tests.nodecluster import wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and containers need root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed"),
]

SERVE = "mkdir /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"


def dockyard(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DOCKYARD, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def kubectl(kubeconfig: Path, *args: str, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([kubectl_binary(), "--kubeconfig", str(kubeconfig), *args],
                            input=input, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def status_table(data_dir: Path) -> list[dict[str, str]]:
    out = dockyard("cluster", "status", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "PID", "STATE", "DETAIL"]
    return [dict(zip(["kind", "name", "pid", "state", "detail"], line.split(None, 4),
                     strict=True)) for line in lines[1:]]


def everything_left(data_dir: Path) -> list[str]:
    """Leftovers of every prefix the cluster used: its own (bridge, hosts, veths, routes),
    the servers' and each node's."""
    dirs = [data_dir, *sorted(data_dir.glob("server*")), *sorted(data_dir.glob("node*/data"))]
    left = [item for d in dirs for item in leftovers(cluster_prefix(d), d)]
    proto = route_protocol(cluster_prefix(data_dir))
    routes = subprocess.run(["ip", "-4", "route", "show", "proto", str(proto)],
                            capture_output=True, text=True).stdout.strip()
    return left + ([f"routes: {routes}"] if routes else [])


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The cluster's directory; whatever happens in the test, the cluster goes down."""
    path = tmp_path / "cluster"
    yield path
    if (path / "cluster.json").exists():
        dockyard("cluster", "down", "--data-dir", str(path))


def up(data_dir: Path, *args: str) -> Path:
    """`cluster up`; the kubeconfig path from its last line (`export KUBECONFIG=...`)."""
    result = dockyard("cluster", "up", "--data-dir", str(data_dir), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"export KUBECONFIG=(\S+)", last)
    assert match, result.stdout
    return Path(match[1])


def down(data_dir: Path, pids: list[int]) -> None:
    result = dockyard("cluster", "down", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert everything_left(data_dir) == []
    assert [pid for pid in pids if not _gone(pid)] == []
    assert not (data_dir / "cluster.json").exists()
    again = dockyard("cluster", "status", "--data-dir", str(data_dir))
    assert again.returncode != 0 and "no cluster in" in again.stderr


def ready_nodes(kubeconfig: Path) -> list[dict]:
    items = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    return [n for n in items if any(c["type"] == "Ready" and c["status"] == "True"
                                    for c in n["status"]["conditions"])]


def test_up_runs_pods_on_every_node_and_down_removes_everything(data_dir: Path) -> None:
    kubeconfig = up(data_dir, "--nodes", "2")
    # The processes belong to no one now: `up` has exited.
    table = status_table(data_dir)
    procs = {r["name"]: r for r in table if r["kind"] in ("server", "agent", "etcd")}
    assert sorted(procs) == ["node-1", "node-2", "server-1"]
    assert all(r["state"] == "running" for r in procs.values()), table
    pids = [int(r["pid"]) for r in procs.values()]
    assert not any(_gone(pid) for pid in pids)
    hosts = [r for r in table if r["kind"] == "host"]
    assert [r["state"] for r in hosts] == ["present", "present"], table
    assert [r["state"] for r in table if r["kind"] == "bridge"] == ["present"]

    # The server listens on the bridge address, reachable from this machine.
    config = yaml.safe_load(kubeconfig.read_text())
    bridge_address = [r["detail"].split("/")[0] for r in table if r["kind"] == "bridge"][0]
    assert config["clusters"][0]["cluster"]["server"].startswith(f"https://{bridge_address}:")

    nodes = ready_nodes(kubeconfig)
    assert sorted(n["metadata"]["name"] for n in nodes) == ["node-1", "node-2"]
    cidrs = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in nodes}
    assert len(set(cidrs.values())) == 2

    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"web-{i}"},
             "spec": {"terminationGracePeriodSeconds": 1,
                      "nodeSelector": {"kubernetes.io/hostname": f"node-{i}"},
                      "containers": [{"name": "web", "image": "busybox",
                                      "command": ["sh", "-c", SERVE]}]}} for i in (1, 2)]
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all(pods))

    def running() -> dict[str, dict] | None:
        items = json.loads(kubectl(kubeconfig, "get", "pods", "-o", "json").stdout)["items"]
        up_ = {p["metadata"]["name"]: p for p in items if p["status"].get("phase") == "Running"}
        return up_ if len(up_) == 2 else None

    running_pods = wait_for(running, 60, "a Running pod on each node")
    for i in (1, 2):
        pod = running_pods[f"web-{i}"]
        assert pod["spec"]["nodeName"] == f"node-{i}"
        assert ipaddress.ip_address(pod["status"]["podIP"]) in \
            ipaddress.ip_network(cidrs[f"node-{i}"])
        # This machine reaches each node's pods over the routes `up` added.
        page = wait_for(lambda pod=pod: _get(f"http://{pod['status']['podIP']}:8080/"), 15,
                        f"web-{i} answering")
        assert page.strip() == f"web-{i}"

    down(data_dir, pids)


def _gone(pid: int) -> bool:
    """No process `pid`, or only its zombie (whoever adopted it has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def _get(url: str) -> str:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return ""


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
def test_up_on_etcd(data_dir: Path) -> None:
    kubeconfig = up(data_dir, "--nodes", "1", "--datastore", "etcd")
    table = status_table(data_dir)
    procs = {r["name"]: r for r in table if r["kind"] in ("server", "agent", "etcd")}
    assert sorted(procs) == ["etcd-1", "node-1", "server-1"]
    assert all(r["state"] == "running" for r in procs.values()), table
    etcd_url = procs["etcd-1"]["detail"]
    assert httpx.get(f"{etcd_url}/health", timeout=2).json()["health"] == "true"
    # The cluster's objects are in etcd (the store's keys), not in a SQLite file.
    assert not (data_dir / "server1" / "state.db").exists()
    assert [n["metadata"]["name"] for n in ready_nodes(kubeconfig)] == ["node-1"]
    down(data_dir, [int(r["pid"]) for r in procs.values()])


def test_three_servers_need_etcd(tmp_path: Path) -> None:
    result = dockyard("cluster", "up", "--servers", "3", "--data-dir", str(tmp_path / "c"))
    assert result.returncode != 0
    assert "--servers 3 needs --datastore etcd" in result.stderr
    assert not (tmp_path / "c" / "cluster.json").exists()


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
def test_three_servers_over_three_etcd_members(data_dir: Path) -> None:
    up(data_dir, "--nodes", "2", "--servers", "3", "--datastore", "etcd")
    table = status_table(data_dir)
    procs = {r["name"]: r for r in table if r["kind"] in ("server", "agent", "etcd")}
    assert sorted(procs) == ["etcd-1", "etcd-2", "etcd-3", "node-1", "node-2",
                             "server-1", "server-2", "server-3"]
    assert all(r["state"] == "running" for r in procs.values()), table

    # One cluster: every server's admin kubeconfig carries the same CA and sees both nodes,
    # and the nodes joined through different servers.
    configs = [yaml.safe_load((data_dir / f"server{i}" / "kubeconfig.yaml").read_text())
               for i in (1, 2, 3)]
    assert len({c["clusters"][0]["cluster"]["certificate-authority-data"]
                for c in configs}) == 1
    assert len({c["clusters"][0]["cluster"]["server"] for c in configs}) == 3
    for i in (1, 2, 3):
        names = [n["metadata"]["name"]
                 for n in ready_nodes(data_dir / f"server{i}" / "kubeconfig.yaml")]
        assert sorted(names) == ["node-1", "node-2"]
    joined = [yaml.safe_load((data_dir / f"node{i}" / "data" / "agent" / "kubeconfig.yaml")
                             .read_text())["clusters"][0]["cluster"]["server"] for i in (1, 2)]
    assert joined == [configs[0]["clusters"][0]["cluster"]["server"],
                      configs[1]["clusters"][0]["cluster"]["server"]]

    # A server killed: the others still answer; `down` copes with the dead process.
    killed = int(procs["server-1"]["pid"])
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: _gone(killed), 10, "server-1 gone")
    assert [r["state"] for r in status_table(data_dir) if r["name"] == "server-1"] == \
        ["exited"]
    kubectl(data_dir / "server2" / "kubeconfig.yaml", "create", "namespace", "after")
    kubectl(data_dir / "server3" / "kubeconfig.yaml", "get", "namespace", "after")
    down(data_dir, [int(r["pid"]) for r in procs.values()])


def test_detached_process_is_found_again_by_pid_and_start_time(tmp_path: Path) -> None:
    """What `down` relies on: a recorded process is signalled only while its pid still
    names it (same start time), and `stop` ends it although the recorder is not its parent."""
    from dockyard.cluster.process import Proc, start_detached, stop

    proc = start_detached("sleeper", ["sleep", "60"], tmp_path / "logs" / "sleeper.log")
    recorded = Proc.from_json(json.loads(json.dumps(proc.to_json())))  # as cluster.json
    assert recorded.alive and os.getsid(recorded.pid) == recorded.pid  # its own session
    impostor = Proc("sleeper", recorded.pid, recorded.start_time + 1, recorded.log)
    assert not impostor.alive
    impostor.signal(signal.SIGTERM)  # not the recorded process: left alone
    assert recorded.alive
    assert stop([recorded], timeout=5) == []
    assert not recorded.alive and _gone(recorded.pid)
