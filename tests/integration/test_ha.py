"""The HA control plane: three `dockyard server` processes over a three-member etcd cluster.

What a user sees: the servers share one cluster identity (CA, tokens) through the datastore,
sealed with the server token; kubectl against any server sees the same objects; the
scheduler and controller manager move to another server within 15 s of their server being
killed, and act on changes made afterwards; the `kubernetes` Service lists every live server;
the cluster survives an etcd member's death with no object lost.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from dockyard.apiserver.bootstrap import BootstrapError, join_cluster_pki
from dockyard.apiserver.endpointreconciler import (
    ADDRESS_ANNOTATION,
    PORT_ANNOTATION,
    ApiEndpoint,
    desired_slices,
    desired_subsets,
    live_endpoints,
)
from dockyard.client.leaderelection import micro_time
from dockyard.store.sqlite import SQLiteStore
from tests.conftest import ServerProcess
from tests.etcdcluster import EtcdCluster, etcd_binary

needs_etcd = pytest.mark.skipif(etcd_binary() is None,
                                reason="etcd not installed (apt-get install etcd-server)")
T = TypeVar("T")
ELECTED = ("kube-scheduler", "kube-controller-manager")


def wait_for(what: str, check: Callable[[], T | None], timeout: float,
             every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def server_process(tmp_path: Path, name: str, etcd: EtcdCluster, *args: str) -> ServerProcess:
    server = ServerProcess(tmp_path / name, extra_args=["--datastore", etcd.datastore, *args])
    server.data_dir.mkdir()
    return server


def get_json(server: ServerProcess, *args: str) -> Any:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def names(server: ServerProcess, *args: str) -> set[str]:
    return {item["metadata"]["name"] for item in get_json(server, *args)["items"]}


def lease_holders(server: ServerProcess) -> dict[str, str]:
    leases = get_json(server, "leases", "-n", "kube-system")["items"]
    return {lease["metadata"]["name"]: (lease.get("spec") or {}).get("holderIdentity") or ""
            for lease in leases if lease["metadata"]["name"] in ELECTED}


def holder_pid(identity: str) -> int:
    """Leader identities are `host_pid_random` (controllers/manager.py)."""
    parts = identity.rsplit("_", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


def leaders(server: ServerProcess, candidates: list[ServerProcess]) -> list[int] | None:
    """Index in `candidates` of the holder of each elected lease, if all are held by them."""
    holders = lease_holders(server)
    pids = [c.proc.pid if c.proc is not None else -1 for c in candidates]
    found = [pids.index(pid) for name in ELECTED
             if (pid := holder_pid(holders.get(name, ""))) in pids]
    return found if len(found) == len(ELECTED) else None


def running_pods(server: ServerProcess, app: str) -> int:
    pods = get_json(server, "pods", "-l", f"app={app}")["items"]
    return sum(1 for pod in pods if (pod.get("status") or {}).get("phase") == "Running"
               and (pod.get("spec") or {}).get("nodeName")
               and not pod["metadata"].get("deletionTimestamp"))


def kubernetes_endpoints(server: ServerProcess) -> set[tuple[str, int]]:
    subsets = get_json(server, "endpoints", "kubernetes").get("subsets") or []
    return {(address["ip"], port["port"]) for subset in subsets
            for address in subset.get("addresses") or [] for port in subset["ports"]}


def configmaps(names_: list[str]) -> str:
    return yaml.safe_dump_all([{"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": name}, "data": {"k": name}}
                               for name in names_])


@needs_etcd
def test_three_servers_over_three_etcd_members(tmp_path: Path) -> None:
    token = "ha-test-token-" + tmp_path.name
    addresses = [f"192.0.2.{21 + i}" for i in range(3)]  # TEST-NET-1: endpoints only
    with EtcdCluster(tmp_path / "etcd", size=3) as etcd:
        servers = [server_process(tmp_path, f"s{i}", etcd, "--token", token, "-v",
                                  "--advertise-address", addresses[i]) for i in range(3)]
        sim: subprocess.Popen[bytes] | None = None
        try:
            # The first server publishes the cluster's PKI and takes both leases; the other
            # two start together and take the PKI from etcd.
            servers[0].start(timeout=40)
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda s: s.start(timeout=40), servers[1:]))

            # One identity: same CA and admin token; each server its own serving cert.
            cas = {(s.data_dir / "pki" / "ca.crt").read_bytes() for s in servers}
            assert len(cas) == 1
            assert len({s.token for s in servers}) == 1
            assert len({(s.data_dir / "pki" / "server.crt").read_bytes()
                        for s in servers}) == 3
            # so server 0's kubeconfig (CA and token) is good against server 2 too
            other = ServerProcess(servers[0].data_dir, url=servers[2].url, token=servers[0].token)
            with other.client() as client:
                assert client.get("/api/v1/namespaces/kube-system").status_code == 200

            # Objects created through each server are seen through every server.
            before = []
            for i, server in enumerate(servers):
                batch = [f"cm-{i}-{j}" for j in range(3)]
                server.kubectl("create", "-f", "-", input=configmaps(batch))
                before += batch
            for server in servers:
                assert names(server, "configmaps") >= set(before)

            # The kubernetes Service lists all three servers (one lease each).
            ports = [int(s.url.rsplit(":", 1)[1]) for s in servers]
            everyone = set(zip(addresses, ports, strict=True))
            wait_for("three kubernetes endpoints",
                     lambda: kubernetes_endpoints(servers[1]) == everyone, 10)

            # The first server took both leases; its standbys wait.
            holders = wait_for("both leases held", lambda: leaders(servers[2], servers), 15)
            assert len(set(holders)) == 1, holders
            leader = holders[0]
            survivors = [s for i, s in enumerate(servers) if i != leader]

            # Nodes (simulated kubelets) attached to a server that stays up.
            sim = subprocess.Popen(
                [sys.executable, "-m", "dockyard.cli.main", "sim", "--nodes", "2",
                 "--kubeconfig", str(survivors[0].kubeconfig), "--name-prefix", "ha-node"],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "sim.log", "wb"))
            wait_for("two nodes", lambda: len(names(survivors[1], "nodes")) == 2, 20)

            servers[0].kubectl("create", "deployment", "web", "--image=busybox",
                               "--replicas=2")
            wait_for("2 running pods", lambda: running_pods(servers[2], "web") == 2, 20)

            # Kill the leading server; a survivor takes both leases within 15 s.
            killed = servers[leader]
            assert killed.proc is not None
            wrong = subprocess.Popen(  # meanwhile: a server with the wrong token is refused
                [sys.executable, "-m", "dockyard.cli.main", "server", "--data-dir",
                 str(tmp_path / "wrong"), "--api-port", "0", "--bind-address", "127.0.0.1",
                 "--datastore", etcd.datastore, "--token", "not-" + token],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            killed.proc.kill()
            killed.proc.wait()
            killed_at = time.monotonic()
            new_leaders = wait_for(
                "surviving servers to hold both leases",
                lambda: leaders(survivors[0], survivors), 15, every=0.1)
            handover = time.monotonic() - killed_at
            print(f"handover after kill -9 of the leading server: {handover:.1f} s "
                  f"(scheduler and controller manager now on servers {new_leaders})")
            assert handover < 15

            survivors[1].kubectl("scale", "deployment", "web", "--replicas=4")
            wait_for("4 running pods", lambda: running_pods(survivors[0], "web") == 4, 15)
            print(f"scale-up acted upon {time.monotonic() - killed_at:.1f} s after the kill")

            out, _ = wrong.communicate(timeout=30)
            assert wrong.returncode != 0
            assert "server token does not match this cluster" in out, out

            # Kill the etcd member the servers talk to first, made the raft leader.
            etcd.make_leader(0)
            etcd.kill(0)
            after = []
            for i, server in enumerate(survivors):
                batch = [f"after-{i}-{j}" for j in range(2)]
                server.kubectl("create", "-f", "-", input=configmaps(batch))
                after += batch

            # No object lost: every server left sees everything, counted.
            for server in survivors:
                cms = names(server, "configmaps")
                assert {n for n in cms if n.startswith(("cm-", "after-"))} == \
                    set(before) | set(after)
                assert len(before) + len(after) == 13
                assert names(server, "deployments") == {"web"}
                assert running_pods(server, "web") == 4
                assert names(server, "nodes") == {"ha-node-0", "ha-node-1"}
            # and the dead server's lease expired: the kubernetes Service lists the two others
            alive = {(addresses[i], ports[i]) for i in range(3) if i != leader}
            wait_for("the killed server to leave the kubernetes endpoints",
                     lambda: kubernetes_endpoints(survivors[0]) == alive, 25)
        finally:
            if sim is not None:
                sim.terminate()
                sim.wait(10)
            for server in servers:
                server.stop()


@needs_etcd
def test_first_server_generates_the_token_others_need_it(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path / "etcd", size=1) as etcd:
        first = server_process(tmp_path, "first", etcd)
        second = server_process(tmp_path, "second", etcd)
        try:
            first.start(timeout=40)
            token = (first.data_dir / "pki" / "server-token").read_text().strip()
            assert f"server token (start the other servers with --token): {token}" in \
                (first.data_dir / "server.log").read_text()

            refused = subprocess.run(
                [sys.executable, "-m", "dockyard.cli.main", "server", "--data-dir",
                 str(second.data_dir), "--api-port", "0", "--bind-address", "127.0.0.1",
                 "--datastore", etcd.datastore], capture_output=True, text=True, timeout=30)
            assert refused.returncode != 0
            assert "this datastore already holds a cluster" in refused.stderr
            assert not (second.data_dir / "pki" / "ca.key").exists()

            second.extra_args += ["--token", token]
            second.start(timeout=40)
            assert second.ca.read_bytes() == first.ca.read_bytes()
            first.kubectl("create", "configmap", "shared")
            assert "shared" in names(second, "configmaps")
            second.stop()  # a restart needs no flag: the token is kept in the data dir
            second.extra_args = second.extra_args[:-2]
            second.start(timeout=40)
            assert second.token == first.token
        finally:
            second.stop()
            first.stop()


async def test_servers_starting_at_once_agree_on_one_pki(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    await store.start()
    try:
        dirs = [tmp_path / f"server{i}" for i in range(4)]
        results = await asyncio.gather(*(join_cluster_pki(store, d, "tok") for d in dirs))
        assert results == [("tok", False)] * 4
        for name in ("ca.crt", "ca.key", "tokens.yaml", "kubelet-client.token"):
            assert len({(d / "pki" / name).read_bytes() for d in dirs}) == 1, name
        assert oct((dirs[1] / "pki" / "ca.key").stat().st_mode & 0o777) == "0o600"
        with pytest.raises(BootstrapError, match="does not match this cluster"):
            await join_cluster_pki(store, tmp_path / "intruder", "other")
        assert not (tmp_path / "intruder" / "pki" / "ca.key").exists()
    finally:
        await store.close()


def lease(address: str, port: int, renewed: datetime, seconds: int = 15) -> dict[str, Any]:
    return {"metadata": {"name": f"apiserver-{port}",
                         "annotations": {ADDRESS_ANNOTATION: address,
                                         PORT_ANNOTATION: str(port)}},
            "spec": {"renewTime": micro_time(renewed), "leaseDurationSeconds": seconds}}


def test_endpoints_list_servers_with_live_leases() -> None:
    now = datetime.now(UTC)
    leases = [lease("10.0.0.2", 6443, now), lease("10.0.0.1", 6443, now - timedelta(seconds=5)),
              lease("10.0.0.3", 6443, now - timedelta(seconds=16)),  # expired
              lease("127.0.0.1", 6443, now),  # cannot be an endpoint
              lease("10.0.0.1", 7443, now), lease("fd00::1", 6443, now)]
    live = live_endpoints(leases, now)
    assert live == sorted([ApiEndpoint("10.0.0.1", 6443), ApiEndpoint("10.0.0.2", 6443),
                           ApiEndpoint("10.0.0.1", 7443), ApiEndpoint("fd00::1", 6443)])
    assert desired_subsets(live) == [
        {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::1"}],
         "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.0.0.1"}],
         "ports": [{"name": "https", "port": 7443, "protocol": "TCP"}]}]
    slices = desired_slices(live, 6443)
    assert {name: (s["addressType"], [e["addresses"][0] for e in s["endpoints"]],
                   s["ports"][0]["port"]) for name, s in slices.items()} == {
        "kubernetes": ("IPv4", ["10.0.0.1", "10.0.0.2"], 6443),
        "kubernetes-7443": ("IPv4", ["10.0.0.1"], 7443),
        "kubernetes-ipv6-6443": ("IPv6", ["fd00::1"], 6443)}
    assert desired_slices([], 6443)["kubernetes"]["endpoints"] == []
