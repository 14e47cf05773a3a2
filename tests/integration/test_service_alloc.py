"""ClusterIP and NodePort allocation against a real `dockyard server`, as users see it.

Concurrent creates get distinct values, requests for taken or out-of-range values get
Kubernetes' 422s, deletes and type changes free values, and nothing is lost or handed out twice
across a restart or a `kill -9` in the middle of a burst of creates.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_ONLY, ServerProcess

SERVICES = "/api/v1/namespaces/default/services"
CIDR = ipaddress.ip_network("10.43.0.0/16")


def service(name: str, *, type_: str = "ClusterIP", cluster_ip: str | None = None,
            ports: list[dict] | None = None) -> dict:
    spec: dict = {"type": type_, "selector": {"app": name},
                  "ports": ports or [{"port": 80, "targetPort": 8080}]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


async def create_many(server: ServerProcess, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.url, verify=server.tls(), timeout=30,
                                 headers={"Authorization": f"Bearer {server.token}"}) as client:
        return list(await asyncio.gather(*(client.post(SERVICES, json=b) for b in bodies)))


def all_services(server: ServerProcess) -> list[dict]:
    with server.client() as client:
        return client.get(SERVICES).json()["items"]


def node_ports(svc: dict) -> list[int]:
    return [p["nodePort"] for p in svc["spec"]["ports"] if p.get("nodePort")]


def test_concurrent_creates_get_distinct_ips_in_range(server: ServerProcess) -> None:
    responses = asyncio.run(create_many(server, [service(f"s{i}") for i in range(50)]))
    assert [r.status_code for r in responses] == [201] * 50
    ips = [r.json()["spec"]["clusterIP"] for r in responses]
    assert len(set(ips)) == 50
    assert all(ipaddress.ip_address(ip) in CIDR for ip in ips)
    assert "10.43.0.1" not in ips  # the kubernetes service's
    assert all(r.json()["spec"]["clusterIPs"] == [r.json()["spec"]["clusterIP"]]
               for r in responses)


def test_requested_ips_taken_or_out_of_range_are_refused(server: ServerProcess) -> None:
    with server.client() as client:
        first = client.post(SERVICES, json=service("a", cluster_ip="10.43.7.7"))
        assert first.status_code == 201 and first.json()["spec"]["clusterIP"] == "10.43.7.7"
        taken = client.post(SERVICES, json=service("b", cluster_ip="10.43.7.7"))
        assert taken.status_code == 422
        assert taken.json()["message"] == (
            'Service "b" is invalid: spec.clusterIPs: Invalid value: []string{"10.43.7.7"}: '
            "failed to allocate IP 10.43.7.7: provided IP is already allocated")
        assert taken.json()["details"]["causes"][0]["field"] == "spec.clusterIPs"
        outside = client.post(SERVICES, json=service("c", cluster_ip="10.99.0.5"))
        assert outside.status_code == 422
        assert outside.json()["message"].endswith(
            "failed to allocate IP 10.99.0.5: the provided IP (10.99.0.5) is not in the valid "
            "range. The range of valid IPs is 10.43.0.0/16")
        broadcast = client.post(SERVICES, json=service("d", cluster_ip="10.43.255.255"))
        assert broadcast.status_code == 422 and "not in the valid range" in \
            broadcast.json()["message"]
        headless = client.post(SERVICES, json=service("h", cluster_ip="None"))
        assert headless.status_code == 201
        assert headless.json()["spec"]["clusterIPs"] == ["None"]
        # Neither refused request took anything: the IP is still free for a third service.
        assert client.post(SERVICES, json=service("e", cluster_ip="10.99.0.5")).status_code == 422
        # A second create of an existing service is AlreadyExists, not an allocation error.
        again = client.post(SERVICES, json=service("a", cluster_ip="10.43.7.7"))
        assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"


def test_node_ports_allocated_distinct_and_validated(server: ServerProcess) -> None:
    two_ports = [{"name": "http", "port": 80}, {"name": "https", "port": 443}]
    bodies = [service(f"np{i}", type_="NodePort", ports=two_ports) for i in range(20)]
    responses = asyncio.run(create_many(server, bodies))
    assert [r.status_code for r in responses] == [201] * 20
    ports = [p for r in responses for p in node_ports(r.json())]
    assert len(ports) == 40 and len(set(ports)) == 40
    assert all(30000 <= p <= 32767 for p in ports)
    taken = ports[0]
    with server.client() as client:
        clash = client.post(SERVICES, json=service("clash", type_="NodePort", ports=[
            {"port": 80, "nodePort": taken}]))
        assert clash.status_code == 422
        assert clash.json()["message"] == (
            f'Service "clash" is invalid: spec.ports[0].nodePort: Invalid value: {taken}: '
            "provided port is already allocated")
        far = client.post(SERVICES, json=service("far", type_="NodePort", ports=[
            {"port": 80, "nodePort": 8080}]))
        assert far.status_code == 422
        assert far.json()["message"] == (
            'Service "far" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided '
            "port is not in the valid range. The range of valid ports is 30000-32767")
        # TCP and UDP on one port number share one node port, as in Kubernetes.
        dns = client.post(SERVICES, json=service("dns", type_="NodePort", ports=[
            {"name": "udp", "port": 53, "protocol": "UDP"},
            {"name": "tcp", "port": 53, "protocol": "TCP"}]))
        assert dns.status_code == 201
        udp, tcp = node_ports(dns.json())
        assert udp == tcp and udp not in ports


def test_delete_and_type_changes_release(server: ServerProcess) -> None:
    with server.client() as client:
        assert client.post(SERVICES, json=service("one", type_="NodePort", cluster_ip="10.43.9.9",
                                                  ports=[{"port": 80, "nodePort": 30123}])
                           ).status_code == 201
        assert client.delete(f"{SERVICES}/one").status_code == 200
        again = client.post(SERVICES, json=service("two", type_="NodePort",
                                                   cluster_ip="10.43.9.9",
                                                   ports=[{"port": 80, "nodePort": 30123}]))
        assert again.status_code == 201, again.text
        # NodePort -> ClusterIP: the node port is dropped and freed; the clusterIP is kept.
        patch = {"spec": {"type": "ClusterIP"}}
        merge = {"Content-Type": "application/merge-patch+json"}
        turned = client.patch(f"{SERVICES}/two", json=patch, headers=merge)
        assert turned.status_code == 200, turned.text
        assert node_ports(turned.json()) == []
        assert turned.json()["spec"]["clusterIP"] == "10.43.9.9"
        assert "externalTrafficPolicy" not in turned.json()["spec"]
        assert client.post(SERVICES, json=service("three", type_="NodePort", ports=[
            {"port": 80, "nodePort": 30123}])).status_code == 201
        # ClusterIP -> NodePort allocates a new node port; the clusterIP may not change.
        back = client.patch(f"{SERVICES}/two", json={"spec": {"type": "NodePort"}},
                            headers=merge)
        assert back.status_code == 200 and node_ports(back.json())[0] != 30123
        moved = client.patch(f"{SERVICES}/two", json={"spec": {"clusterIP": "10.43.9.10"}},
                             headers=merge)
        assert moved.status_code == 422
        assert "spec.clusterIPs[0]: Invalid value: []string{\"10.43.9.10\"}: may not change " \
            "once set" in moved.json()["message"]
        # -> ExternalName frees the clusterIP too.
        external = client.patch(f"{SERVICES}/two", headers=merge, json={
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}})
        assert external.status_code == 200, external.text
        assert "clusterIP" not in external.json()["spec"]
        assert client.post(SERVICES, json=service("four", cluster_ip="10.43.9.9")
                           ).status_code == 201


def test_dry_run_reserves_nothing(server: ServerProcess) -> None:
    with server.client() as client:
        dry = client.post(f"{SERVICES}?dryRun=All", json=service("dry", cluster_ip="10.43.5.5"))
        assert dry.status_code == 201 and dry.json()["spec"]["clusterIP"] == "10.43.5.5"
        assert client.post(SERVICES, json=service("real", cluster_ip="10.43.5.5")
                           ).status_code == 201
        dry_taken = client.post(f"{SERVICES}?dryRun=All",
                                json=service("dry2", cluster_ip="10.43.5.5"))
        assert dry_taken.status_code == 422


def test_kubectl_shows_cluster_ip_and_node_ports(server: ServerProcess) -> None:
    server.kubectl("create", "service", "nodeport", "web", "--tcp=80:8080")
    server.kubectl("create", "service", "clusterip", "db", "--clusterip=None")
    table = server.kubectl("get", "svc").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    name, kind, ip, external, ports, _age = rows["web"]
    assert kind == "NodePort" and ipaddress.ip_address(ip) in CIDR and external == "<none>"
    port, _, rest = ports.partition(":")
    node_port, _, proto = rest.partition("/")
    assert port == "80" and 30000 <= int(node_port) <= 32767 and proto == "TCP"
    assert rows["db"][2] == "None"
    assert rows["kubernetes"][1:5] == ["ClusterIP", "10.43.0.1", "<none>", "443/TCP"]


def test_kubernetes_service_points_at_the_api_server(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_args=[*API_ONLY, "--advertise-address",
                                                       "192.0.2.10"])
    srv.data_dir.mkdir()
    srv.start()
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        with srv.client() as client:
            svc = client.get(f"{SERVICES}/kubernetes").json()
            assert svc["spec"]["clusterIP"] == "10.43.0.1"
            assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "protocol": "TCP",
                                             "targetPort": port}]
            assert svc["metadata"]["labels"] == {"component": "apiserver",
                                                 "provider": "kubernetes"}
            ep = client.get("/api/v1/namespaces/default/endpoints/kubernetes").json()
            assert ep["subsets"] == [{"addresses": [{"ip": "192.0.2.10"}],
                                      "ports": [{"name": "https", "port": port,
                                                 "protocol": "TCP"}]}]
            eps = client.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/"
                             "kubernetes").json()
            assert eps["endpoints"][0]["addresses"] == ["192.0.2.10"]
            assert eps["ports"][0]["port"] == port
            assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    finally:
        srv.stop()
    # A restart on another port updates the target port and keeps the IP.
    srv.start()
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        with srv.client() as client:
            svc = client.get(f"{SERVICES}/kubernetes").json()
            assert svc["spec"]["clusterIP"] == "10.43.0.1"
            assert svc["spec"]["ports"][0]["targetPort"] == port
            ep = client.get("/api/v1/namespaces/default/endpoints/kubernetes").json()
            assert ep["subsets"][0]["ports"][0]["port"] == port
    finally:
        srv.stop()


def test_restart_keeps_allocations(server: ServerProcess) -> None:
    first = asyncio.run(create_many(server, [
        service(f"a{i}", type_="NodePort") for i in range(20)]))
    assert all(r.status_code == 201 for r in first)
    taken_ip = first[0].json()["spec"]["clusterIP"]
    taken_port = node_ports(first[0].json())[0]
    server.stop()
    server.start()
    with server.client() as client:
        again = client.post(SERVICES, json=service("x", cluster_ip=taken_ip))
        assert again.status_code == 422 and "already allocated" in again.json()["message"]
        clash = client.post(SERVICES, json=service("y", type_="NodePort", ports=[
            {"port": 80, "nodePort": taken_port}]))
        assert clash.status_code == 422 and "already allocated" in clash.json()["message"]
    second = asyncio.run(create_many(server, [
        service(f"b{i}", type_="NodePort") for i in range(20)]))
    assert all(r.status_code == 201 for r in second)
    services = all_services(server)
    ips = [s["spec"]["clusterIP"] for s in services]
    ports = [p for s in services for p in node_ports(s)]
    assert len(ips) == 41 and len(set(ips)) == 41  # 40 + kubernetes
    assert len(ports) == 40 and len(set(ports)) == 40


def test_kill_during_creates_never_duplicates(server: ServerProcess) -> None:
    async def burst_then_kill() -> set[str]:
        """60 creates in flight; SIGKILL as soon as the first one is answered."""
        async with httpx.AsyncClient(base_url=server.url, verify=server.tls(), timeout=30,
                                     headers={"Authorization": f"Bearer {server.token}"}) as c:
            tasks = [asyncio.create_task(c.post(SERVICES, json=service(f"k{i}",
                                                                        type_="NodePort")))
                     for i in range(60)]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks, return_exceptions=True)
            return {t.result().json()["metadata"]["name"] for t in done
                    if not t.exception() and t.result().status_code == 201}

    answered = asyncio.run(burst_then_kill())
    assert server.proc is not None
    server.proc.wait(10)
    server.start()
    after = asyncio.run(create_many(server, [service(f"n{i}", type_="NodePort")
                                             for i in range(30)]))
    assert all(r.status_code == 201 for r in after)
    services = all_services(server)
    ips = [s["spec"]["clusterIP"] for s in services]
    ports = [p for s in services for p in node_ports(s)]
    assert len(ips) == len(set(ips)) and len(ports) == len(set(ports))
    assert answered <= {s["metadata"]["name"] for s in services}  # 201 means it was kept


@pytest.fixture
def small_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = ServerProcess(tmp_path / "data", extra_args=[
        *API_ONLY, "--service-cidr", "10.96.0.0/28", "--service-node-port-range",
        "20000-20003"])
    srv.data_dir.mkdir()
    srv.start()
    yield srv
    srv.stop()


def test_configured_ranges_and_a_full_range(small_server: ServerProcess) -> None:
    srv = small_server
    with srv.client() as client:
        assert client.get(f"{SERVICES}/kubernetes").json()["spec"]["clusterIP"] == "10.96.0.1"
        ok = client.post(SERVICES, json=service("in", type_="NodePort", ports=[
            {"port": 80, "nodePort": 20001}]))
        assert ok.status_code == 201, ok.text
        out = client.post(SERVICES, json=service("out", type_="NodePort", ports=[
            {"port": 80, "nodePort": 30001}]))
        assert out.json()["message"].endswith("The range of valid ports is 20000-20003")
    # 14 usable addresses in a /28: the kubernetes service and "in" hold two of them.
    responses = asyncio.run(create_many(srv, [service(f"f{i}") for i in range(13)]))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 12 + [500]
    full = next(r for r in responses if r.status_code == 500).json()
    assert full["reason"] == "InternalError"
    assert full["message"] == ("Internal error occurred: failed to allocate a serviceIP: "
                               "range is full")
    ips = [s["spec"]["clusterIP"] for s in all_services(srv)]
    assert len(ips) == len(set(ips)) == 14
    # Node ports run out too: three left, a service with four ports cannot be made, and the
    # three it took on the way are given back.
    with srv.client() as client:
        client.delete(f"{SERVICES}/f0")
        many = [{"name": f"p{i}", "port": 80 + i} for i in range(4)]
        refused = client.post(SERVICES, json=service("many", type_="NodePort", ports=many))
        assert refused.status_code == 500
        assert refused.json()["message"].endswith("failed to allocate a nodePort: range is full")
        three = client.post(SERVICES, json=service("three", type_="NodePort", ports=many[:3]))
        assert three.status_code == 201, three.text
        assert sorted(node_ports(three.json())) == [20000, 20002, 20003]


def test_repair_frees_leaks_after_a_crash(tmp_path: Path) -> None:
    """A record left by a crash between taking an IP and writing the Service is freed by the
    repair pass once its grace has passed (here: at the next start, grace forced to 0 by
    writing the record with an old timestamp)."""
    import orjson

    from dockyard.store.sqlite import SQLiteStore

    srv = ServerProcess(tmp_path / "data", extra_args=list(API_ONLY))
    srv.data_dir.mkdir()
    srv.start()
    srv.stop()

    async def leak() -> None:
        store = SQLiteStore(srv.data_dir / "state.db")
        await store.start()
        record = {"kind": "Service", "namespace": "default", "name": "ghost", "uid": "gone",
                  "takenAt": time.time() - 3600}
        await store.create("/registry/ranges/serviceips/10.43.3.3", orjson.dumps(record))
        await store.close()

    asyncio.run(leak())
    srv.start()
    try:
        with srv.client() as client:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                made = client.post(SERVICES, json=service("later", cluster_ip="10.43.3.3"))
                if made.status_code == 201:
                    break
                assert "already allocated" in made.json()["message"]
                time.sleep(0.2)
            assert made.status_code == 201
    finally:
        srv.stop()
