"""Services and NetworkPolicy as pods see them, on a real single-node cluster (`dockyard up`).

Busybox pods serve their own hostname with `httpd`; a client pod asks with `nc` (busybox-static
1.35's `wget` crashes on this Debian). Everything goes through the proxy's nftables rules: the
ClusterIP balanced over ready pods, unready pods dropped, affinity, hairpin, NodePort on the
node's bridge address, a NetworkPolicy. One cluster for the module (tests in order on one
worker); the last test stops it, shows the rules still serve while it is down, cleans up and
checks that nothing (the nft table included) is left. A separate, unprivileged test runs the
proxy loop against an API server with a recording stand-in for `nft`: how fast and how often
it writes.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.api.resources import by_kind
from dockyard.client.rest import Client
from dockyard.kubelet.config import KubeletConfig
from dockyard.network.proxy import Proxier
from dockyard.runtime.naming import cluster_prefix, netns_name
from tests.conftest import ServerProcess
from tests.hostcheck import leftovers
from tests.nodecluster import single_node, wait_for

pytestmark = [pytest.mark.xdist_group("services")]  # one cluster, tests in order, one worker
real_cluster = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runc") is None or shutil.which("nft") is None,
    reason="real containers and nft rules need root, runc and nft (Debian: runc, nftables)")

Obj = dict[str, Any]
NODE = "svc-node"
NS = "svc"
SERVE = ("mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && "
         "exec httpd -f -p 8080 -h /www")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("svc") / "data"
    data.mkdir()
    with single_node(data, NODE) as srv:
        yield srv


def server_pod(name: str, labels: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [web_container()]}}


def web_container() -> Obj:
    return {"name": "web", "image": "busybox", "command": ["sh", "-c", SERVE],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]},
                               "periodSeconds": 1}}


def sleeper(name: str, labels: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}


def svc(name: str, selector: dict[str, str], **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector,
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}}


def apply(cluster: ServerProcess, namespace: str, *objects: Obj) -> None:
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def get(cluster: ServerProcess, namespace: str, *what: str) -> Obj:
    out = cluster.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def ready_pods(cluster: ServerProcess, namespace: str, selector: str) -> dict[str, str]:
    """name -> IP of the Ready pods matching `selector`."""
    items = get(cluster, namespace, "pods", "-l", selector).get("items") or []
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in items
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions") or [])}


def wait_ready(cluster: ServerProcess, namespace: str, selector: str, count: int,
               timeout: float = 60) -> dict[str, str]:
    return wait_for(lambda: (lambda r: r if len(r) == count else None)(
        ready_pods(cluster, namespace, selector)), timeout, f"{count} ready pods {selector}")


def cluster_ip(cluster: ServerProcess, namespace: str, name: str) -> str:
    ip = wait_for(lambda: (get(cluster, namespace, "service", name).get("spec") or {})
                  .get("clusterIP"), 10, f"ClusterIP of {name}")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.43.0.0/16")
    return ip


REQUEST = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {wait} {ip} {port} | tail -n 1"


def fetch(cluster: ServerProcess, namespace: str, pod: str, ip: str, port: int = 80,
          count: int = 1, wait: int = 2) -> list[str]:
    """The bodies (hostnames) of `count` requests from `pod`; "" for each failed one."""
    one = REQUEST.format(wait=wait, ip=ip, port=port)
    script = f"for i in $(seq {count}); do r=$({one}); echo \"=$r\"; done"
    out = cluster.kubectl("exec", "-n", namespace, pod, "--", "sh", "-c", script,
                          check=False).stdout
    return [line[1:] for line in out.splitlines() if line.startswith("=")]


@pytest.fixture(scope="module")
def web(cluster: ServerProcess) -> Obj:
    """Deployment `web` (3 pods) behind Service `web` (targetPort by name), a client pod."""
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "terminationGracePeriodSeconds": 1, "containers": [web_container()]}}}}
    apply(cluster, NS, deployment, svc("web", {"app": "web"}), sleeper("client"))
    pods = wait_ready(cluster, NS, "app=web", 3)
    wait_for(lambda: (get(cluster, NS, "pod", "client").get("status") or {})
             .get("phase") == "Running", 60, "client running")
    return {"pods": pods, "ip": cluster_ip(cluster, NS, "web")}


@real_cluster
def test_cluster_ip_balances_over_all_ready_pods(cluster: ServerProcess, web: Obj) -> None:
    answers = fetch(cluster, NS, "client", web["ip"], count=60)
    counts = Counter(answers)
    assert set(counts) == set(web["pods"]), counts  # all 60 answered, by all three pods


@real_cluster
def test_unready_pod_gets_nothing_and_new_pods_get_traffic(cluster: ServerProcess,
                                                           web: Obj) -> None:
    victim = sorted(web["pods"])[0]
    cluster.kubectl("exec", "-n", NS, victim, "--", "rm", "/tmp/ready")
    wait_for(lambda: victim not in ready_pods(cluster, NS, "app=web"), 15,
             f"{victim} not Ready")
    time.sleep(2.0)  # from the pod turning unready: 2 s for the slice and the rules
    answers = Counter(fetch(cluster, NS, "client", web["ip"], count=30))
    assert victim not in answers and "" not in answers, answers
    assert len(answers) == 2

    cluster.kubectl("exec", "-n", NS, victim, "--", "touch", "/tmp/ready")
    cluster.kubectl("scale", "-n", NS, "deployment/web", "--replicas=5")
    pods = wait_ready(cluster, NS, "app=web", 5)
    time.sleep(1.0)
    answers = Counter(fetch(cluster, NS, "client", web["ip"], count=100))
    assert set(answers) == set(pods), answers


@real_cluster
def test_session_affinity_keeps_a_client_on_one_pod(cluster: ServerProcess, web: Obj) -> None:
    apply(cluster, NS, svc("sticky", {"app": "web"}, sessionAffinity="ClientIP"))
    ip = cluster_ip(cluster, NS, "sticky")
    first = wait_for(lambda: fetch(cluster, NS, "client", ip)[0], 10, "sticky answers")
    answers = fetch(cluster, NS, "client", ip, count=20)
    assert set(answers) == {first}
    # The plain service spreads the same client over several pods meanwhile.
    assert len(set(fetch(cluster, NS, "client", web["ip"], count=20))) > 1


@real_cluster
def test_pod_reaches_itself_through_its_service(cluster: ServerProcess) -> None:
    apply(cluster, NS, server_pod("solo", {"app": "solo"}), svc("solo", {"app": "solo"}))
    wait_ready(cluster, NS, "app=solo", 1)
    ip = cluster_ip(cluster, NS, "solo")
    answers = wait_for(lambda: (lambda a: a if a == ["solo"] * 5 else None)(
        fetch(cluster, NS, "solo", ip, count=5)), 10, "hairpin answers")
    assert answers == ["solo"] * 5


@real_cluster
def test_service_without_endpoints_is_refused_at_once(cluster: ServerProcess,
                                                      web: Obj) -> None:
    apply(cluster, NS, svc("nobody", {"app": "nobody"}))
    ip = cluster_ip(cluster, NS, "nobody")
    time.sleep(1.0)
    started = time.monotonic()
    assert fetch(cluster, NS, "client", ip, wait=10) == [""]
    assert time.monotonic() - started < 5  # a TCP reset, not a 10 s timeout
    # A port the service does not have is refused as well.
    assert fetch(cluster, NS, "client", web["ip"], port=81, wait=10) == [""]
    assert time.monotonic() - started < 10


@real_cluster
def test_node_port_from_the_node_and_from_pods(cluster: ServerProcess, web: Obj) -> None:
    apply(cluster, NS, svc("web-np", {"app": "web"}, type="NodePort"))
    port = wait_for(lambda: ((get(cluster, NS, "service", "web-np").get("spec") or {})
                             .get("ports") or [{}])[0].get("nodePort"), 10, "nodePort")
    assert 30000 <= port <= 32767
    pods = ready_pods(cluster, NS, "app=web")
    # The node's address on the pod bridge (kube-proxy does not serve NodePorts on 127.0.0.1).
    gateway = str(next(ipaddress.ip_network(cluster.pod_cidr).hosts()))  # type: ignore[attr-defined]

    def from_node() -> str:
        conn = http.client.HTTPConnection(gateway, port, timeout=3)
        try:
            conn.request("GET", "/")
            return conn.getresponse().read().decode().strip()
        except OSError:
            return ""
        finally:
            conn.close()

    wait_for(from_node, 10, "NodePort answer on the node")
    answers = Counter(from_node() for _ in range(20))
    assert set(answers) <= set(pods) and len(answers) > 1, answers
    answers = Counter(fetch(cluster, NS, "client", gateway, port=port, count=20))
    assert set(answers) <= set(pods) and len(answers) > 1, answers


@real_cluster
def test_network_policy_allows_only_frontend(cluster: ServerProcess) -> None:
    ns = "netpol"
    apply(cluster, ns, server_pod("db", {"app": "db"}), svc("db", {"app": "db"}),
          sleeper("frontend", {"role": "frontend"}), sleeper("other", {"role": "other"}))
    db_ip = wait_ready(cluster, ns, "app=db", 1)["db"]
    service_ip = cluster_ip(cluster, ns, "db")
    wait_for(lambda: all((get(cluster, ns, "pod", p).get("status") or {}).get("phase")
                         == "Running" for p in ("frontend", "other")), 60, "clients running")
    # No policy selects db yet: everyone may talk to it.
    assert wait_for(lambda: fetch(cluster, ns, "other", db_ip, port=8080) == ["db"], 10,
                    "open access")

    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "db-frontend-only"},
              "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                       "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {"matchLabels":
                                                              {"role": "frontend"}}}],
                                    "ports": [{"protocol": "TCP", "port": 8080}]}]}}
    apply(cluster, ns, policy)
    wait_for(lambda: fetch(cluster, ns, "other", db_ip, port=8080, wait=1) == [""], 10,
             "other blocked")
    assert fetch(cluster, ns, "other", service_ip, wait=1) == [""]  # after DNAT too
    assert fetch(cluster, ns, "frontend", db_ip, port=8080, count=3) == ["db"] * 3
    assert fetch(cluster, ns, "frontend", service_ip, count=3) == ["db"] * 3

    cluster.kubectl("delete", "networkpolicy", "-n", ns, "db-frontend-only")
    assert wait_for(lambda: fetch(cluster, ns, "other", db_ip, port=8080) == ["db"], 10,
                    "open again without the policy")


@real_cluster
def test_zz_rules_serve_while_stopped_then_cleanup(cluster: ServerProcess, web: Obj) -> None:
    """Runs last: the data plane without the control plane, then nothing left on the host."""
    prefix = cluster_prefix(cluster.data_dir)
    uid = get(cluster, NS, "pod", "client")["metadata"]["uid"]
    pods = ready_pods(cluster, NS, "app=web")
    cluster.stop()
    listed = subprocess.run(["nft", "list", "table", "ip", prefix], capture_output=True,
                            text=True, timeout=30)
    assert listed.returncode == 0, "the rules must outlive the agent"
    request = subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns_name(prefix, uid)}", "busybox", "nc", "-w", "3",
         web["ip"], "80"], input="GET / HTTP/1.0\r\n\r\n", capture_output=True, text=True,
        timeout=30)
    assert request.stdout.strip().splitlines()[-1] in pods, request

    data = cluster.data_dir
    result = subprocess.run([sys.executable, "-m", "dockyard.cli.main", "cleanup",
                             "--data-dir", str(data)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert leftovers(prefix, Path(data)) == []


# -- the proxy loop against an API server, `nft` replaced by a recorder (no root needed) -------

FAKE_NFT = """#!/bin/sh
# Records each `nft -f -` transaction with its time; the table never exists for `list`.
case "$1" in
  -j) exit 1 ;;
  -f) { echo "@@ $(date +%s.%N)"; cat; echo "@@end"; } >> {log}; exit 0 ;;
esac
exit 0
"""


def transactions(log: Path) -> list[tuple[float, str]]:
    if not log.exists():
        return []
    out = []
    for chunk in log.read_text().split("@@ ")[1:]:
        stamp, _, body = chunk.partition("\n")
        if body.endswith("@@end\n"):  # complete (the recorder may be writing the last one)
            out.append((float(stamp), body.removesuffix("@@end\n")))
    return out


async def test_proxy_applies_endpoint_changes_promptly_and_coalesces(
        server: ServerProcess, tmp_path: Path) -> None:
    log = tmp_path / "nft.log"
    fake = tmp_path / "nft"
    fake.write_text(FAKE_NFT.replace("{log}", str(log)))
    fake.chmod(0o755)
    config = KubeletConfig(node_name="n1", data_dir=tmp_path, prefix=cluster_prefix(tmp_path),
                           pod_cidr="10.42.0.0/24")
    services, slices = by_kind("", "Service"), by_kind("discovery.k8s.io", "EndpointSlice")
    assert services is not None and slices is not None
    client = Client(server.url, token=server.token, ca_file=str(server.ca))
    proxier = Proxier(client, config, nft_binary=str(fake))
    task = asyncio.create_task(proxier.run())

    def endpoints(ready: list[bool]) -> list[Obj]:
        return [{"addresses": [f"10.42.0.{10 + i}"], "conditions": {"ready": r}}
                for i, r in enumerate(ready)]

    async def wait_log(pred: Callable[[list[tuple[float, str]]], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not pred(transactions(log)):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    try:
        svc_obj = await client.create(services, {
            "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}, "default")
        ip = svc_obj["spec"]["clusterIP"]
        eps = await client.create(slices, {
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints([True, True, True])}, "default")
        await wait_log(lambda t: any(f"{ip} . tcp . 80 : goto svc-default/web/tcp/http" in b
                                     for _, b in t), "the service's rules")
        first = transactions(log)
        assert first[0][1].startswith(f"table ip {config.prefix} {{}}\ndelete table")

        # One endpoint turns unready: an update with only its chain, well within a second.
        before = len(transactions(log))
        eps["endpoints"] = endpoints([True, False, True])
        changed_at = time.time()
        eps = await client.update(slices, eps)
        await wait_log(lambda t: len(t) > before, "the endpoint removed")
        stamp, body = transactions(log)[-1]
        latency = stamp - changed_at
        print(f"endpoint change to nft transaction: {latency * 1000:.0f} ms")
        assert latency < 5  # the 30 s resync is not what applied it
        p = config.prefix
        assert body.splitlines() == [
            f"flush chain ip {p} svc-default/web/tcp/http",
            f"add rule ip {p} svc-default/web/tcp/http meta l4proto tcp dnat to numgen random "
            "mod 2 map { 0 : 10.42.0.10 . 8080, 1 : 10.42.0.12 . 8080 }",
            f"delete element ip {p} hairpin {{ 10.42.0.11 . 10.42.0.11 }}"], body

        # A burst of 20 changes is coalesced into a few transactions ending in the last state.
        before = len(transactions(log))
        for i in range(20):
            eps["endpoints"] = endpoints([True] * (1 + i % 3))
            eps = await client.update(slices, eps)
        final = eps["endpoints"]
        await asyncio.sleep(1.0)
        burst = transactions(log)[before:]
        assert 1 <= len(burst) <= 8, len(burst)
        assert len(final) == 2 and "mod 2 map { 0 : 10.42.0.10 . 8080, 1 : 10.42.0.11 . 8080" \
            in burst[-1][1]
        # An unchanged rendering is not applied again.
        count = len(transactions(log))
        await client.create(services, {"metadata": {"name": "headless"},
                                       "spec": {"clusterIP": "None", "ports": [{"port": 1}]}},
                            "default")
        await asyncio.sleep(0.6)
        assert len(transactions(log)) == count
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
