"""Pod networks made by the real CNI plugins (bridge, host-local, loopback, portmap).

Each test gets its own data directory (so its own prefix, bridge and namespaces) and a random
/24 (or smaller) from 10.200.0.0/13 that no route or address on the host overlaps, so tests in
parallel never share a subnet. Traffic stays on the test's bridge: pod to pod, host to pod.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.kubelet.config import KubeletConfig
from dockyard.network import netns
from dockyard.network.cni import CniError
from dockyard.network.podnet import CniPodNetwork, PodNetworkError
from dockyard.runtime import naming
from tests import hostcheck

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, bridges)")
needs_plugins = pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"),
                                   reason="needs containernetworking-plugins")


def free_subnet(prefixlen: int = 24) -> str:
    """A random subnet of 10.200.0.0/13 overlapping no address or route of the host."""
    used = []
    for what in (["-j", "route", "show", "table", "all"], ["-j", "addr"]):
        out = subprocess.run(["ip", *what], capture_output=True, text=True, check=True).stdout
        for entry in json.loads(out or "[]"):
            if "dst" in entry and entry["dst"] not in ("default", "") and ":" not in entry["dst"]:
                used.append(ipaddress.ip_network(entry["dst"], strict=False))
            for addr in entry.get("addr_info") or []:
                if addr.get("family") == "inet":
                    used.append(ipaddress.ip_network(
                        f"{addr['local']}/{addr['prefixlen']}", strict=False))
    space = ipaddress.ip_network("10.200.0.0/13")
    count = 2 ** (prefixlen - space.prefixlen)
    for _ in range(100):
        index = random.randrange(count)
        candidate = ipaddress.ip_network(
            (int(space.network_address) + index * 2 ** (32 - prefixlen), prefixlen))
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise RuntimeError("no free subnet in 10.200.0.0/13")


def make_config(data_dir: Path, cidr: str) -> KubeletConfig:
    return KubeletConfig(node_name="node-1", data_dir=data_dir,
                         prefix=naming.cluster_prefix(data_dir), pod_cidr=cidr)


def make_pod(name: str, host_ports: list[tuple[int, int, str]] | None = None) -> dict:
    ports = [{"containerPort": c, "hostPort": h, "hostIP": ip, "protocol": "TCP"}
             for h, c, ip in host_ports or []]
    return {"metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {"containers": [{"name": "c", "image": "busybox", "ports": ports}]}}


def ping_argv() -> list[str]:
    return [shutil.which("ping") or "/bin/busybox", *([] if shutil.which("ping") else ["ping"])]


def ping(ip: str, from_ns: str | None = None) -> bool:
    argv = [*ping_argv(), "-c1", "-W1", ip]
    if from_ns:
        argv = ["ip", "netns", "exec", from_ns, *argv]
    return subprocess.run(argv, capture_output=True).returncode == 0


def host_leftovers(net: CniPodNetwork) -> list[str]:
    """Anything of this cluster still on the host: namespaces, links, IPAM data, records."""
    left = [f"netns {n}" for n in netns.list_names(net.prefix)]
    left += [f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith(net.prefix)]
    if net.ipam_dir.exists():
        left += [f"ipam {p}" for p in net.ipam_dir.rglob("*")]
    if net.records_dir.exists():
        left += [f"record {p}" for p in net.records_dir.iterdir()]
    return left + hostcheck.leftovers(net.prefix, net.config.data_dir)


def ipam_ips(net: CniPodNetwork) -> set[str]:
    """The addresses host-local has handed out (one file per address)."""
    folder = net.ipam_dir / net.prefix
    if not folder.exists():
        return set()
    out = set()
    for p in folder.iterdir():
        try:
            ipaddress.ip_address(p.name)
        except ValueError:
            continue
        out.add(p.name)
    return out


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[CniPodNetwork]:
    network = CniPodNetwork(make_config(tmp_path, free_subnet()))
    await network.start()
    try:
        yield network
    finally:
        await network.cleanup_all()
        assert host_leftovers(network) == []


@root_only
@needs_plugins
async def test_two_pods_reach_each_other_and_the_host_reaches_them(
        net: CniPodNetwork, tmp_path: Path) -> None:
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    a, b = make_pod("a"), make_pod("b")
    started = time.perf_counter()
    sa = await net.setup(a)
    setup_ms = (time.perf_counter() - started) * 1000
    sb = await net.setup(b)
    subnet = ipaddress.ip_network(net.config.pod_cidr)
    ip_a, ip_b = sa.ips[0], sb.ips[0]
    assert ip_a != ip_b
    assert ipaddress.ip_address(ip_a) in subnet and ipaddress.ip_address(ip_b) in subnet
    assert sa.gateway == sb.gateway == str(next(subnet.hosts()))
    assert sa.netns_path == f"/run/netns/{naming.netns_name(net.prefix, a['metadata']['uid'])}"
    assert netns.is_netns(sa.netns_path)

    ns_a = os.path.basename(sa.netns_path)
    assert ping(ip_b, from_ns=ns_a), "pod A cannot reach pod B"
    assert ping(ip_a), "the host cannot reach pod A"
    assert ping("127.0.0.1", from_ns=ns_a), "lo is not up in the pod"
    # Inside the pod: its subnet (from the address) and the default route via the bridge.
    routes = subprocess.run(["ip", "netns", "exec", ns_a, "ip", "-4", "route"],
                            capture_output=True, text=True, check=True).stdout
    assert f"default via {sa.gateway} dev eth0" in routes
    assert f"{subnet} dev eth0" in routes
    # The pods' gateway keeps its MAC whatever ports the bridge has.
    assert Path(f"/sys/class/net/{net.bridge}/address").read_text().strip() == net.bridge_mac
    # The host: no forwarding switched on, and no NAT.
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward_before
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert str(subnet) not in nat

    # setup is idempotent; status survives an agent restart (a new object, same state dir).
    assert await net.setup(a) == sa
    fresh = CniPodNetwork(make_config(tmp_path, net.config.pod_cidr))
    assert await fresh.status(a["metadata"]["uid"]) == sa
    assert await fresh.status(str(uuid.uuid4())) is None
    print(f"\nsetup of one pod (netns + bridge + loopback): {setup_ms:.1f} ms")


@root_only
@needs_plugins
async def test_teardown_removes_namespace_and_veth_and_releases_the_ip(tmp_path: Path) -> None:
    # A /30 leaves exactly one address for pods after the gateway: reuse is observable.
    network = CniPodNetwork(make_config(tmp_path, free_subnet(30)))
    await network.start()
    try:
        first, second = make_pod("first"), make_pod("second")
        status = await network.setup(first)
        brif = Path(f"/sys/class/net/{network.bridge}/brif")
        assert len(os.listdir(brif)) == 1
        assert ipam_ips(network) == {status.ips[0]}

        with pytest.raises(CniError) as info:
            await network.setup(second)
        assert "no IP addresses available" in str(info.value)
        assert not netns.exists(naming.netns_name(network.prefix, second["metadata"]["uid"]))
        assert await network.status(second["metadata"]["uid"]) is None

        # Teardown from the records alone: a fresh object, as after an agent restart.
        restarted = CniPodNetwork(make_config(tmp_path, network.config.pod_cidr))
        started = time.perf_counter()
        await restarted.teardown(first["metadata"]["uid"])
        teardown_ms = (time.perf_counter() - started) * 1000
        await restarted.teardown(first["metadata"]["uid"])  # idempotent
        assert not os.path.exists(status.netns_path)
        assert os.listdir(brif) == []
        assert ipam_ips(network) == set()
        assert await restarted.status(first["metadata"]["uid"]) is None

        again = await restarted.setup(second)
        assert again.ips == status.ips  # the released address is handed out again
        print(f"\nteardown of one pod: {teardown_ms:.1f} ms")
    finally:
        await network.cleanup_all()
        assert host_leftovers(network) == []


@root_only
@needs_plugins
async def test_many_pods_at_once_get_distinct_addresses(net: CniPodNetwork) -> None:
    pods = [make_pod(f"p{i}") for i in range(8)]
    statuses = await asyncio.gather(*(net.setup(p) for p in pods))
    ips = [s.ips[0] for s in statuses]
    assert len(set(ips)) == len(pods)
    assert ping(ips[-1], from_ns=os.path.basename(statuses[0].netns_path))
    await asyncio.gather(*(net.teardown(p["metadata"]["uid"]) for p in pods[:4]))
    assert ipam_ips(net) == set(ips[4:])


@root_only
@needs_plugins
async def test_half_done_setup_is_redone_without_leaking_an_address(
        net: CniPodNetwork) -> None:
    pod = make_pod("crashy")
    uid = pod["metadata"]["uid"]
    await net.setup(pod)
    # As if the agent died after the ADD but before recording its result.
    record_path = net.records_dir / f"{uid}.json"
    record = json.loads(record_path.read_text())
    record["state"] = "pending"
    record_path.write_text(json.dumps(record))
    restarted = CniPodNetwork(net.config)
    assert await restarted.status(uid) is None
    status = await restarted.setup(pod)
    assert ipam_ips(net) == set(status.ips)
    assert ping(status.ips[0])


@root_only
@needs_plugins
async def test_cleanup_all_removes_everything_even_without_records(
        net: CniPodNetwork) -> None:
    statuses = [await net.setup(make_pod(f"p{i}")) for i in range(2)]
    shutil.rmtree(net.records_dir)  # lost records: cleanup goes by prefix and bridge
    await net.cleanup_all()
    assert host_leftovers(net) == []
    assert not os.path.exists(f"/sys/class/net/{net.bridge}")
    assert all(not os.path.exists(s.netns_path) for s in statuses)


@root_only
@needs_plugins
@pytest.mark.skipif(shutil.which("iptables-save") is None, reason="portmap needs iptables")
async def test_host_port_reaches_the_pod_and_its_rules_go_with_it(
        net: CniPodNetwork) -> None:
    gateway = str(next(net.subnet.hosts()))
    with socket.socket() as probe:  # a free port on the bridge address
        probe.bind((gateway, 0))
        host_port = probe.getsockname()[1]
    pod = make_pod("web", host_ports=[(host_port, 8080, gateway)])
    status = await net.setup(pod)
    ns = os.path.basename(status.netns_path)
    server = subprocess.Popen(["ip", "netns", "exec", ns, "/bin/busybox", "nc", "-l", "-p",
                               "8080", "-e", "/bin/busybox", "echo", "hello from the pod"])
    try:
        answer = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not answer:
            try:
                with socket.create_connection((gateway, host_port), timeout=1) as conn:
                    answer = conn.recv(100)
            except OSError:
                await asyncio.sleep(0.05)
        assert answer == b"hello from the pod\n"
    finally:
        server.kill()
        server.wait()
    container_id = naming.netns_name(net.prefix, pod["metadata"]["uid"])
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert container_id in nat  # the pod's DNAT rule
    # snat off: portmap adds no masquerading for the pod subnet.
    assert "CNI-HOSTPORT-MASQ" not in nat
    assert not [line for line in nat.splitlines()
                if "MASQUERADE" in line and str(net.subnet) in line]
    await net.teardown(pod["metadata"]["uid"])
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert container_id not in nat and f"{status.ips[0]}:8080" not in nat


async def test_missing_plugins_are_named_with_their_package(tmp_path: Path) -> None:
    network = CniPodNetwork(make_config(tmp_path, "10.200.0.0/24"), plugin_dirs=(str(tmp_path),))
    with pytest.raises(PodNetworkError) as info:
        await network.start()
    assert "containernetworking-plugins" in str(info.value)
    assert '"bridge" not found' in str(info.value)
