"""Simulated nodes, node lifecycle, taint eviction, endpoints, slices and pod GC on a real server.

Each test runs the components it needs as tasks against the `server` fixture, talking to the
API only through `Client`, and checks what a user would see with the API or kubectl.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.rest import ApiError, Client
from dockyard.controllers.endpoints import EndpointsController
from dockyard.controllers.endpointslice import EndpointSliceController
from dockyard.controllers.nodelifecycle import NodeLifecycleController
from dockyard.controllers.podgc import PodGCController
from dockyard.controllers.taintmanager import TaintEvictionController
from dockyard.sim import SimulatedNodes

PODS = by_kind("", "Pod")
NODES = by_kind("", "Node")
LEASES = by_kind("coordination.k8s.io", "Lease")
SERVICES = by_kind("", "Service")
ENDPOINTS = by_kind("", "Endpoints")
SLICES = by_kind("discovery.k8s.io", "EndpointSlice")
Obj = dict[str, Any]


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy (returned) or `timeout` passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = await check()
        except ApiError:
            result = None
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached in {timeout}s: {check.__name__}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(client: Client, *controllers: Callable[[InformerFactory, EventRecorder],
                                                          Controller],
                  sim: SimulatedNodes | None = None) -> AsyncIterator[list[Controller]]:
    """Run the controllers (built on one shared factory) and the simulator; stop them all."""
    factory = InformerFactory(client)
    recorder = EventRecorder(client, "test-controller-manager")
    built = [make(factory, recorder) for make in controllers]
    factory.start()
    recorder.start()
    tasks = [asyncio.create_task(c.run()) for c in built]
    if sim is not None:
        tasks.append(asyncio.create_task(sim.run()))
        await asyncio.wait_for(sim.wait_registered(), 20)
    try:
        yield built
    finally:
        if sim is not None:
            sim.stop()
        for task in tasks[:len(built)]:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        await factory.stop()
        await recorder.stop()


def pod(name: str, *, labels: dict[str, str] | None = None, tolerations: list[Obj] | None = None,
        ports: list[Obj] | None = None, **spec: Any) -> Obj:
    container: Obj = {"name": "app", "image": "nginx:1.27"}
    if ports:
        container["ports"] = ports
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [container], "tolerations": tolerations or [], **spec}}


async def create_bound(client: Client, body: Obj, node: str, namespace: str = "default") -> Obj:
    assert PODS is not None
    created = await client.create(PODS, body, namespace)
    await client.bind(namespace, body["metadata"]["name"], node)
    return created


def cond(obj: Obj, type_: str) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return ""


async def get_pod(client: Client, name: str) -> Obj:
    assert PODS is not None
    return await client.get(PODS, "default", name)


async def running_and_ready(client: Client, name: str) -> Obj | None:
    p = await get_pod(client, name)
    return p if p["status"].get("phase") == "Running" and cond(p, "Ready") == "True" else None


# -------------------------------------------------------------------- simulated nodes


async def test_simulated_nodes_register_heartbeat_and_run_pods(server, api_client) -> None:
    assert NODES is not None and LEASES is not None and PODS is not None
    sim = SimulatedNodes(api_client, count=3, zones=2, heartbeat_seconds=0.3,
                         labels={"pool": "sim"}, remove_nodes_on_exit=True)
    async with running(api_client, sim=sim):
        nodes = (await api_client.list(NODES))["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == [
            "sim-node-0", "sim-node-1", "sim-node-2"]
        node0 = next(n for n in nodes if n["metadata"]["name"] == "sim-node-0")
        labels = node0["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == "sim-node-0"
        assert labels["kubernetes.io/os"] == "linux" and labels["type"] == "dockyard-sim"
        assert labels["pool"] == "sim"
        assert [n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in
                sorted(nodes, key=lambda n: n["metadata"]["name"])] == [
            "zone-0", "zone-1", "zone-0"]
        status = node0["status"]
        assert status["nodeInfo"]["kubeletVersion"] == "v1.32.0-dockyard-sim"
        assert status["capacity"]["pods"] == "110" and status["allocatable"]["cpu"] == "8"
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "Ready": "True", "MemoryPressure": "False", "DiskPressure": "False",
            "PIDPressure": "False"}
        internal = next(a["address"] for a in status["addresses"] if a["type"] == "InternalIP")
        assert ipaddress.ip_address(internal) in ipaddress.ip_network("198.18.0.0/15")

        out = server.kubectl("get", "nodes", "-o", "wide").stdout
        assert out.count(" Ready ") == 3 and "v1.32.0-dockyard-sim" in out, out

        # The Lease is renewed every heartbeat.
        first = await api_client.get(LEASES, "kube-node-lease", "sim-node-1")
        assert first["spec"]["holderIdentity"] == "sim-node-1"
        assert first["metadata"]["ownerReferences"][0]["kind"] == "Node"

        async def renewed() -> bool:
            lease = await api_client.get(LEASES, "kube-node-lease", "sim-node-1")
            return lease["spec"]["renewTime"] != first["spec"]["renewTime"]
        await until(renewed, 5)

        # Pods bound to a simulated node run at once, with a podIP from the node's range.
        await create_bound(api_client, pod("web-a", initContainers=[
            {"name": "init", "image": "busybox"}]), "sim-node-0")
        await create_bound(api_client, pod("web-b"), "sim-node-0")
        await create_bound(api_client, pod("web-c"), "sim-node-2")
        a = await until(lambda: running_and_ready(api_client, "web-a"))
        b = await until(lambda: running_and_ready(api_client, "web-b"))
        await until(lambda: running_and_ready(api_client, "web-c"))
        assert a["status"]["hostIP"] == internal
        assert a["status"]["podIP"] != b["status"]["podIP"]
        assert ipaddress.ip_address(a["status"]["podIP"]) in ipaddress.ip_network(
            node0["spec"]["podCIDR"])
        assert {c["type"] for c in a["status"]["conditions"]} >= {
            "PodScheduled", "Initialized", "ContainersReady", "Ready"}
        (ctr,) = a["status"]["containerStatuses"]
        assert ctr["containerID"].startswith("sim://") and ctr["ready"] and ctr["started"]
        assert ctr["restartCount"] == 0 and "running" in ctr["state"]
        assert a["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        out = server.kubectl("get", "pods", "-o", "wide").stdout
        assert out.count("Running") == 3, out

        # Graceful deletion is finished by the node, like a kubelet does.
        await api_client.delete(PODS, "default", "web-b")

        async def gone() -> bool:
            try:
                await get_pod(api_client, "web-b")
            except ApiError as exc:
                return exc.code == 404
            return False
        await until(gone)
        # Heartbeats do not re-post an unchanged status (only leases move).
        posts = sim.stats["status_posts"]
        await asyncio.sleep(1.0)
        assert sim.stats["status_posts"] == posts and sim.stats["lease_renewals"] > 10
    assert (await api_client.list(NODES))["items"] == []  # remove_nodes_on_exit


# -------------------------------------------------------------- node lifecycle, eviction


async def test_silent_node_goes_unknown_is_tainted_and_pods_are_evicted(server,
                                                                         api_client) -> None:
    assert NODES is not None and PODS is not None
    sim = SimulatedNodes(api_client, count=2, heartbeat_seconds=0.3)
    unreachable = "node.kubernetes.io/unreachable"
    async with running(
        api_client,
        lambda f, r: NodeLifecycleController(api_client, f, r, node_monitor_grace_period=2,
                                             node_monitor_period=0.2),
        lambda f, r: TaintEvictionController(api_client, f, r),
        sim=sim,
    ):
        await create_bound(api_client, pod("short", tolerations=[
            {"key": unreachable, "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 1}]), "sim-node-0")
        await create_bound(api_client, pod("forever", tolerations=[
            {"key": unreachable, "operator": "Exists", "effect": "NoExecute"}]), "sim-node-0")
        await create_bound(api_client, pod("elsewhere"), "sim-node-1")
        for name in ("short", "forever", "elsewhere"):
            await until(lambda name=name: running_and_ready(api_client, name))
        await asyncio.sleep(0.5)
        node = await api_client.get(NODES, None, "sim-node-0")
        assert not node["spec"].get("taints")  # healthy nodes stay untainted

        sim.stop_node("sim-node-0")
        loop = asyncio.get_running_loop()
        stopped = loop.time()

        async def unknown() -> Obj | None:
            n = await api_client.get(NODES, None, "sim-node-0")
            taints = {(t["key"], t["effect"]) for t in n["spec"].get("taints") or []}
            if cond(n, "Ready") == "Unknown" and (unreachable, "NoExecute") in taints and \
                    (unreachable, "NoSchedule") in taints:
                return n
            return None
        node = await until(unknown, 8)
        tainted = loop.time()
        detected = tainted - stopped
        assert 1.5 < detected < 6, detected
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "NodeStatusUnknown"
        assert ready["message"] == "Kubelet stopped posting node status."
        assert all(c["status"] == "Unknown" for c in node["status"]["conditions"])
        assert "NotReady" in server.kubectl("get", "node", "sim-node-0").stdout

        async def not_ready(name: str) -> bool:
            return cond(await get_pod(api_client, name), "Ready") == "False"
        await until(lambda: not_ready("forever"))

        async def evicted() -> Obj | None:
            p = await get_pod(api_client, "short")
            return p if p["metadata"].get("deletionTimestamp") else None
        short = await until(evicted, 5)
        assert 0.8 < loop.time() - tainted < 3, loop.time() - tainted  # tolerationSeconds=1
        assert cond(short, "DisruptionTarget") == "True"
        await asyncio.sleep(1.5)
        forever = await get_pod(api_client, "forever")
        assert not forever["metadata"].get("deletionTimestamp")
        # The dead node cannot finish the deletion: the pod stays Terminating, as in k8s.
        assert (await get_pod(api_client, "short"))["metadata"]["deletionTimestamp"]
        other = await api_client.get(NODES, None, "sim-node-1")
        assert cond(other, "Ready") == "True" and not other["spec"].get("taints")
        assert cond(await get_pod(api_client, "elsewhere"), "Ready") == "True"

        # The node comes back: Ready again, taints gone, the evicted pod finally deleted.
        sim.start_node("sim-node-0")

        async def recovered() -> bool:
            n = await api_client.get(NODES, None, "sim-node-0")
            return cond(n, "Ready") == "True" and not n["spec"].get("taints")
        await until(recovered, 5)
        await until(lambda: running_and_ready(api_client, "forever"))

        async def short_gone() -> bool:
            try:
                await get_pod(api_client, "short")
            except ApiError as exc:
                return exc.code == 404
            return False
        await until(short_gone)


# ------------------------------------------------------------ endpoints and endpoint slices


def service(name: str, selector: dict[str, str] | None, ports: list[Obj], **spec: Any) -> Obj:
    body: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                 "spec": {"ports": ports, **spec}}
    if selector is not None:
        body["spec"]["selector"] = selector
    return body


async def test_endpoints_and_slices_follow_pod_readiness(server, api_client) -> None:
    assert SERVICES is not None and ENDPOINTS is not None and SLICES is not None
    assert PODS is not None
    sim = SimulatedNodes(api_client, count=2, zones=2, heartbeat_seconds=0.5)
    web_ports = [{"name": "web", "containerPort": 8080}]
    async with running(api_client,
                       lambda f, r: EndpointsController(api_client, f, r),
                       lambda f, r: EndpointSliceController(api_client, f, r),
                       sim=sim):
        await api_client.create(SERVICES, service("web", {"app": "web"}, [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "metrics", "port": 9090, "targetPort": 9100}]), "default")
        await api_client.create(SERVICES, service("manual", None, [{"port": 80}]), "default")
        await api_client.create(ENDPOINTS, {"metadata": {"name": "manual"}, "subsets": [
            {"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 80}]}]}, "default")
        await create_bound(api_client, pod("web-0", labels={"app": "web"}, ports=web_ports),
                           "sim-node-0")
        await create_bound(api_client, pod("web-1", labels={"app": "web"}, ports=web_ports,
                                           hostname="web-1", subdomain="web"), "sim-node-1")
        await create_bound(api_client, pod("db", labels={"app": "db"}), "sim-node-0")
        ips = {}
        for name in ("web-0", "web-1", "db"):
            ips[name] = (await until(lambda name=name: running_and_ready(api_client, name)))[
                "status"]["podIP"]

        async def endpoints(ready: set[str], not_ready: set[str]) -> Obj | None:
            ep = await api_client.get(ENDPOINTS, "default", "web")
            subsets = ep.get("subsets") or []
            got_ready = {a["ip"] for s in subsets for a in s.get("addresses") or []}
            got_not = {a["ip"] for s in subsets for a in s.get("notReadyAddresses") or []}
            want = ({ips[n] for n in ready}, {ips[n] for n in not_ready})
            return ep if (got_ready, got_not) == want else None
        ep = await until(lambda: endpoints({"web-0", "web-1"}, set()))
        (subset,) = ep["subsets"]
        assert sorted((p["name"], p["port"]) for p in subset["ports"]) == [
            ("http", 8080), ("metrics", 9100)]  # a named targetPort resolved per pod
        by_ip = {a["ip"]: a for a in subset["addresses"]}
        assert by_ip[ips["web-0"]]["targetRef"]["name"] == "web-0"
        assert by_ip[ips["web-0"]]["nodeName"] == "sim-node-0"
        assert by_ip[ips["web-1"]]["hostname"] == "web-1"
        assert "hostname" not in by_ip[ips["web-0"]]
        out = server.kubectl("get", "endpoints", "web").stdout
        assert ips["web-0"] in out or "more" in out, out

        async def slices(expect: dict[str, Obj]) -> list[Obj] | None:
            items = (await api_client.list(
                SLICES, "default", label_selector="kubernetes.io/service-name=web"))["items"]
            got = {e["targetRef"]["name"]: e["conditions"] for s in items
                   for e in s.get("endpoints") or []}
            return items if got == expect else None
        up = {"ready": True, "serving": True, "terminating": False}
        (eps,) = await until(lambda: slices({"web-0": up, "web-1": up}))
        meta = eps["metadata"]
        assert meta["name"].startswith("web-") and meta["generateName"] == "web-"
        assert meta["labels"]["endpointslice.kubernetes.io/managed-by"] == \
            "endpointslice-controller.k8s.io"
        assert meta["ownerReferences"][0]["kind"] == "Service"
        assert meta["ownerReferences"][0]["controller"] is True
        assert eps["addressType"] == "IPv4"
        assert sorted((p["name"], p["port"]) for p in eps["ports"]) == [
            ("http", 8080), ("metrics", 9100)]
        zones = {e["targetRef"]["name"]: e.get("zone") for e in eps["endpoints"]}
        assert zones == {"web-0": "zone-0", "web-1": "zone-1"}

        # web-1's node goes silent and its pod is reported not ready (nobody reverts it).
        sim.stop_node("sim-node-1")
        web1 = await get_pod(api_client, "web-1")
        for c in web1["status"]["conditions"]:
            if c["type"] == "Ready":
                c["status"] = "False"
        await api_client.update_status(PODS, web1)
        await until(lambda: endpoints({"web-0"}, {"web-1"}))
        down = {"ready": False, "serving": False, "terminating": False}
        await until(lambda: slices({"web-0": up, "web-1": down}))

        # A terminating pod leaves Endpoints but stays in the slice, marked terminating.
        sim.stop_node("sim-node-0")
        await api_client.delete(PODS, "default", "web-0")
        await until(lambda: endpoints(set(), {"web-1"}))
        leaving = {"ready": False, "serving": True, "terminating": True}
        await until(lambda: slices({"web-0": leaving, "web-1": down}))

        # publishNotReadyAddresses lists not-ready pods as ready addresses.
        await api_client.create(SERVICES, service(
            "web-all", {"app": "web"}, [{"name": "http", "port": 80, "targetPort": "web"}],
            publishNotReadyAddresses=True), "default")

        async def publish() -> bool:
            ep = await api_client.get(ENDPOINTS, "default", "web-all")
            return [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []
                    ] == [ips["web-1"]]
        await until(publish)

        # The selector-less service's Endpoints are the user's own: untouched, and no slices.
        manual = await api_client.get(ENDPOINTS, "default", "manual")
        assert manual["subsets"][0]["addresses"][0]["ip"] == "192.0.2.10"
        assert (await api_client.list(SLICES, "default", label_selector=(
            "kubernetes.io/service-name=manual")))["items"] == []

        # The service goes: its Endpoints and slices go with it.
        await api_client.delete(SERVICES, "default", "web")

        async def cleaned() -> bool:
            try:
                await api_client.get(ENDPOINTS, "default", "web")
                return False
            except ApiError as exc:
                if exc.code != 404:
                    raise
            return not (await api_client.list(
                SLICES, "default", label_selector="kubernetes.io/service-name=web"))["items"]
        await until(cleaned)


# ------------------------------------------------------------------------------- pod GC


async def test_pod_gc_trims_terminated_pods_and_removes_orphans(server, api_client) -> None:
    assert PODS is not None and NODES is not None
    async with running(api_client, lambda f, r: PodGCController(
            api_client, f, r, terminated_pod_gc_threshold=2, gc_check_period=0.1,
            orphan_quarantine=0.3)):
        for i in range(4):
            created = await api_client.create(PODS, pod(f"done-{i}"), "default")
            created["status"]["phase"] = "Succeeded"
            await api_client.update_status(PODS, created)
        await api_client.create(PODS, pod("pending"), "default")

        async def trimmed() -> list[str] | None:
            names = sorted(p["metadata"]["name"] for p in (
                await api_client.list(PODS, "default"))["items"])
            return names if len(names) == 3 else None
        # Oldest first (same second: by name); non-terminated pods are never counted.
        assert await until(trimmed) == ["done-2", "done-3", "pending"]

        # A pod bound to a node that is deleted is force-deleted after the quarantine.
        await api_client.create(NODES, {"metadata": {"name": "doomed"}})
        await create_bound(api_client, pod("orphan"), "doomed")
        await asyncio.sleep(0.3)
        assert (await get_pod(api_client, "orphan"))["spec"]["nodeName"] == "doomed"
        await api_client.delete(NODES, None, "doomed")

        async def orphan_gone() -> bool:
            try:
                await get_pod(api_client, "orphan")
            except ApiError as exc:
                return exc.code == 404
            return False
        await until(orphan_gone, 5)


# -------------------------------------------------------------------------- the CLI


def test_sim_command_runs_until_sigterm(server) -> None:
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from dockyard.cli.sim import sim_command; sim_command()",
         "--nodes", "2", "--zones", "2", "--cpu", "4", "--name-prefix", "cli",
         "--remove-nodes-on-exit"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = server.kubectl("get", "nodes", "--no-headers", check=False).stdout
            if out.count(" Ready ") == 2:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"nodes not Ready: {out}")
        assert "cli-0" in out and "cli-1" in out
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
        assert "No resources found" in server.kubectl("get", "nodes").stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
