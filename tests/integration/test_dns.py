"""Cluster DNS as pods see it: a real single-node cluster (`dockyard up`), busybox pods asking
the node's DNS server on the bridge address with `nslookup`, through their resolv.conf.

One cluster for the module (tests in order on one worker); the last test stops it, cleans up
and checks nothing is left. A separate, unprivileged test shows the server answering from its
caches after the API server has gone away.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.query
import dns.rcode
import httpx
import pytest
import yaml

from dockyard.client.rest import Client
from dockyard.network.dns import node_dns_address
from dockyard.network.dns.records import ClusterZone
from dockyard.network.dns.server import DnsServer
from dockyard.network.dns.watch import ZoneWatcher
from dockyard.runtime.naming import cluster_prefix
from tests.conftest import ServerProcess
from tests.hostcheck import leftovers
from tests.nodecluster import single_node, wait_for

Obj = dict[str, Any]
NODE = "dns-node"
pytestmark = [pytest.mark.xdist_group("dns-cluster")]  # one cluster, tests in order
real_cluster = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runc") is None,
                                  reason="real containers need root and runc")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("dns") / "data"
    data.mkdir()
    with single_node(data, NODE) as srv:
        yield srv


def sleeper(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}


SERVICES = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "web"},
              "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
     "spec": {"clusterIP": "None", "selector": {"app": "db"},
              "ports": [{"name": "pg", "port": 5432}]}},
]


def nslookup(cluster: ServerProcess, name: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("exec", "client", "--", "nslookup", name, check=False)


@pytest.fixture(scope="module")
def workload(cluster: ServerProcess) -> Obj:
    """The services, two pods behind the headless one, a client pod; their addresses."""
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        [*SERVICES, sleeper("db-0", app="db"), sleeper("db-1", app="db"), sleeper("client")]))

    def pods_running() -> dict[str, str] | None:
        items = json.loads(cluster.kubectl("get", "pods", "-o", "json").stdout)["items"]
        ips = {p["metadata"]["name"]: p["status"].get("podIP") for p in items
               if p["status"].get("phase") == "Running"}
        return ips if len(ips) == 3 and all(ips.values()) else None

    ips = wait_for(pods_running, 60, "3 pods Running with IPs")
    cluster_ip = cluster.kubectl("get", "service", "web", "-o",
                                 "jsonpath={.spec.clusterIP}").stdout.strip()
    assert cluster_ip and cluster_ip != "None", "the web service got no ClusterIP"
    return {"ips": ips, "cluster_ip": cluster_ip}


@real_cluster
def test_pods_get_the_node_dns_in_resolv_conf(cluster: ServerProcess, workload: Obj) -> None:
    resolv = cluster.kubectl("exec", "client", "--", "cat", "/etc/resolv.conf").stdout
    gateway = node_dns_address(cluster.pod_cidr)  # type: ignore[attr-defined]
    assert resolv.splitlines() == [
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        f"nameserver {gateway}",
        "options ndots:5"]


@real_cluster
def test_service_name_full_and_through_the_search_path(cluster: ServerProcess,
                                                       workload: Obj) -> None:
    ip = workload["cluster_ip"]
    full = wait_for(lambda: (lambda out: out if out.returncode == 0 else None)(
        nslookup(cluster, "web.default.svc.cluster.local")), 20, "web resolves")
    assert "Name:\tweb.default.svc.cluster.local" in full.stdout
    assert f"Address: {ip}" in full.stdout
    # busybox nslookup tries every search domain and prints each miss (and exits 1 for
    # them): what matters is that the first, <ns>.svc.cluster.local, finds the service.
    short = nslookup(cluster, "web").stdout
    assert "Name:\tweb.default.svc.cluster.local" in short and f"Address: {ip}" in short
    assert "web.svc.cluster.local: NXDOMAIN" in short


@real_cluster
def test_headless_service_answers_both_pod_ips(cluster: ServerProcess, workload: Obj) -> None:
    wanted = {workload["ips"]["db-0"], workload["ips"]["db-1"]}

    def both() -> set[str] | None:
        out = nslookup(cluster, "db.default.svc.cluster.local").stdout
        found = {line.split()[-1] for line in out.splitlines() if line.startswith("Address: ")}
        return found if found == wanted else None

    wait_for(both, 30, "the headless name answering both pod IPs")


@real_cluster
def test_unknown_names_fail_with_nxdomain_and_outside_names_are_refused(
        cluster: ServerProcess, workload: Obj) -> None:
    missing = nslookup(cluster, "nothing.default.svc.cluster.local")
    assert missing.returncode != 0
    assert "can't find nothing.default.svc.cluster.local: NXDOMAIN" in missing.stdout
    outside = nslookup(cluster, "example.com")  # nothing is forwarded out of the cluster
    assert outside.returncode != 0 and "REFUSED" in outside.stdout


@real_cluster
def test_pod_names_and_reverse_lookups(cluster: ServerProcess, workload: Obj) -> None:
    client_ip = workload["ips"]["client"]
    dashed = client_ip.replace(".", "-")
    out = nslookup(cluster, f"{dashed}.default.pod.cluster.local")
    assert out.returncode == 0 and f"Address: {client_ip}" in out.stdout
    reverse = nslookup(cluster, workload["cluster_ip"])
    assert "name = web.default.svc.cluster.local" in reverse.stdout


@real_cluster
def test_srv_and_tcp_from_the_node(cluster: ServerProcess, workload: Obj) -> None:
    """The host reaches the bridge address too; SRV of the named port, over TCP."""
    gateway = node_dns_address(cluster.pod_cidr)  # type: ignore[attr-defined]
    query = dns.message.make_query("_http._tcp.web.default.svc.cluster.local", "SRV")
    response = dns.query.tcp(query, gateway, port=53, timeout=5)
    assert [rdata.to_text() for rrset in response.answer for rdata in rrset] == [
        "0 100 80 web.default.svc.cluster.local."]
    assert [r.to_text() for rrset in response.additional for r in rrset] == [
        workload["cluster_ip"]]


@real_cluster
def test_zz_stop_and_cleanup_leave_nothing(cluster: ServerProcess, workload: Obj) -> None:
    gateway = node_dns_address(cluster.pod_cidr)  # type: ignore[attr-defined]
    cluster.stop()
    listening = subprocess.run(["ss", "-Hlun", "src", f"{gateway}:53"], capture_output=True,
                               text=True).stdout
    assert listening.strip() == ""
    data = Path(cluster.data_dir)
    result = subprocess.run([sys.executable, "-m", "dockyard.cli.main", "cleanup",
                             "--data-dir", str(data)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert leftovers(cluster_prefix(data), data) == []


# -- the server without the control plane (no root needed) ---------------------------------


async def test_answers_from_cache_after_the_api_server_stops(server: ServerProcess) -> None:
    http = server.client()
    response = http.post("/api/v1/namespaces/default/services", json={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.43.7.7", "ports": [{"port": 80}]}})
    assert response.status_code == 201, response.text
    client = Client(server.url, token=server.token, ca_file=str(server.ca))
    zone = ClusterZone()
    dns_server = DnsServer(zone)
    watcher = asyncio.create_task(ZoneWatcher(client, zone).run())
    await dns_server.start("127.0.0.1", 0)
    query = dns.message.make_query("web.default.svc.cluster.local", "A")

    async def ask() -> dns.message.Message:
        return await dns.asyncquery.udp(query, "127.0.0.1", port=dns_server.port, timeout=2)

    try:
        deadline = time.monotonic() + 10
        while not (await ask()).answer and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [str(r) for r in (await ask()).answer[0]] == ["10.43.7.7"]
        server.stop()
        with pytest.raises(httpx.HTTPError):
            http.get("/readyz")
        await asyncio.sleep(0.5)  # the informers notice and keep retrying
        again = await ask()
        assert again.rcode() == dns.rcode.NOERROR
        assert [str(r) for r in again.answer[0]] == ["10.43.7.7"]
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await dns_server.close()
        await client.close()
        http.close()
