"""The scheduler against a real API server: nodes are plain Node objects, binding is real."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from dockyard.api.resources import by_kind
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.rest import ApiError, Client
from dockyard.scheduler import Scheduler
from tests.conftest import ServerProcess

NODES = by_kind("", "Node")
PODS = by_kind("", "Pod")
EVENTS = by_kind("", "Event")
CLASSES = by_kind("scheduling.k8s.io", "PriorityClass")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The API server alone: the scheduler under test is the only one, and no controller
    (node lifecycle) reacts to these agent-less nodes."""
    srv = ServerProcess(tmp_path / "data",
                        extra_args=["--disable-scheduler", "--disable-controller-manager"])
    srv.data_dir.mkdir()
    srv.start()
    yield srv
    srv.stop()


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def add_node(client: Client, name: str, zone: str, *, cpu: str = "4",
                   taints: list[dict[str, str]] | None = None) -> None:
    resources = {"cpu": cpu, "memory": "8Gi", "pods": "110"}
    await client.create(NODES, {  # type: ignore[arg-type]
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone,
                                              "kubernetes.io/hostname": name}},
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": resources, "allocatable": resources,
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })


async def add_pod(client: Client, name: str, *, cpu: str = "100m", **spec: Any) -> None:
    labels = spec.pop("labels", {})
    await client.create(PODS, {  # type: ignore[arg-type]
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "nginx",
                                 "resources": {"requests": {"cpu": cpu}}}], **spec},
    })


async def node_of(client: Client, name: str) -> str | None:
    pod = await client.get(PODS, "default", name)  # type: ignore[arg-type]
    return pod["spec"].get("nodeName")


async def events_for(client: Client, name: str) -> list[dict[str, Any]]:
    page = await client.list(EVENTS, "default",  # type: ignore[arg-type]
                             field_selector=f"involvedObject.name={name}")
    return page["items"]


@asynccontextmanager
async def scheduler(client: Client, **options: Any) -> AsyncIterator[Scheduler]:
    factory = InformerFactory(client)
    recorder = EventRecorder(client, "default-scheduler")
    recorder.start()
    sched = Scheduler(client, factory, recorder, **options)
    task = asyncio.create_task(sched.run())
    try:
        yield sched
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await factory.stop()
        await recorder.stop()


async def three_nodes(client: Client) -> None:
    for i, zone in enumerate("abc", start=1):
        await add_node(client, f"node-{i}", zone)


async def test_topology_spread_places_pods_evenly(api_client: Client) -> None:
    await three_nodes(api_client)
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
               "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "web"}}}]
    async with scheduler(api_client):
        await asyncio.gather(*(add_pod(api_client, f"web-{i}", labels={"app": "web"},
                                       topologySpreadConstraints=spread) for i in range(9)))

        async def all_bound() -> bool:
            return all([await node_of(api_client, f"web-{i}") for i in range(9)])
        await until(all_bound)
        placed = Counter([await node_of(api_client, f"web-{i}") for i in range(9)])
        assert placed == {"node-1": 3, "node-2": 3, "node-3": 3}
        events = await events_for(api_client, "web-0")
        assert any(e["reason"] == "Scheduled" and e["message"].startswith(
            "Successfully assigned default/web-0 to node-") for e in events)


async def test_tainted_node_is_avoided_unless_tolerated(api_client: Client) -> None:
    await add_node(api_client, "node-1", "a",
                   taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    await add_node(api_client, "node-2", "b")
    async with scheduler(api_client):
        for i in range(6):
            await add_pod(api_client, f"plain-{i}")
        await add_pod(api_client, "gpu-job", nodeSelector={"kubernetes.io/hostname": "node-1"},
                      tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                    "effect": "NoSchedule"}])
        await add_pod(api_client, "intruder",
                      nodeSelector={"kubernetes.io/hostname": "node-1"})

        async def bound() -> bool:
            names = [f"plain-{i}" for i in range(6)] + ["gpu-job"]
            return all([await node_of(api_client, n) for n in names])
        await until(bound)
        assert {await node_of(api_client, f"plain-{i}") for i in range(6)} == {"node-2"}
        assert await node_of(api_client, "gpu-job") == "node-1"

        async def refused() -> bool:
            return any(e["reason"] == "FailedScheduling"
                       for e in await events_for(api_client, "intruder"))
        await until(refused)
        [event] = [e for e in await events_for(api_client, "intruder")
                   if e["reason"] == "FailedScheduling"]
        assert event["message"] == (
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
            "1 node(s) had untolerated taint {dedicated: gpu}. preemption: 0/2 nodes are "
            "available: 2 Preemption is not helpful for scheduling.")


async def test_unfittable_pod_waits_and_a_new_node_unblocks_another(
        server: Any, api_client: Client) -> None:
    await three_nodes(api_client)
    async with scheduler(api_client):
        await add_pod(api_client, "huge", cpu="100")
        await add_pod(api_client, "big", cpu="6")
        expected = ("0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are "
                    "available: 3 No preemption victims found for incoming pod.")

        async def failed() -> bool:
            pod = await api_client.get(PODS, "default", "huge")  # type: ignore[arg-type]
            conditions = pod.get("status", {}).get("conditions") or []
            events = await events_for(api_client, "huge")
            return any(c.get("reason") == "Unschedulable" for c in conditions) and any(
                e["reason"] == "FailedScheduling" for e in events)
        await until(failed)
        [event] = [e for e in await events_for(api_client, "huge")
                   if e["reason"] == "FailedScheduling"]
        assert event["message"] == expected and event["type"] == "Warning"
        assert event["source"]["component"] == "default-scheduler"
        pod = await api_client.get(PODS, "default", "huge")  # type: ignore[arg-type]
        [cond] = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
        assert (cond["status"], cond["reason"], cond["message"]) == (
            "False", "Unschedulable", expected)
        described = server.kubectl("describe", "pod", "huge").stdout
        assert "FailedScheduling" in described and "default-scheduler" in described
        assert "3 No preemption victims found for incoming pod." in described

        async def big_refused() -> bool:
            return any(e["reason"] == "FailedScheduling"
                       for e in await events_for(api_client, "big"))
        await until(big_refused)
        started = time.monotonic()
        await add_node(api_client, "node-4", "a", cpu="8")

        async def big_bound() -> bool:
            return await node_of(api_client, "big") == "node-4"
        await until(big_bound, timeout=15)
        assert time.monotonic() - started < 10  # a node event, not the 60 s flush
        assert await node_of(api_client, "huge") is None


async def test_preemption_evicts_the_lowest_priority_pods(server: Any,
                                                          api_client: Client) -> None:
    assert CLASSES is not None
    for name, value in (("low", 10), ("mid", 100), ("high", 1000)):
        await api_client.create(CLASSES, {"apiVersion": "scheduling.k8s.io/v1",
                                          "kind": "PriorityClass", "metadata": {"name": name},
                                          "value": value})
    table = server.kubectl("get", "priorityclasses").stdout
    assert table.split("\n")[0].split() == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE",
                                            "PREEMPTIONPOLICY"]
    assert "system-node-critical" in table and "2000001000" in table
    with pytest.raises(ApiError) as missing:
        await add_pod(api_client, "orphan", priorityClassName="nope")
    assert missing.value.code == 403
    assert missing.value.status["message"] == (
        'pods "orphan" is forbidden: no PriorityClass with name nope was found')
    await add_node(api_client, "node-1", "a")
    async with scheduler(api_client):
        for name, cls in (("low-1", "low"), ("low-2", "low"), ("mid-1", "mid"),
                          ("mid-2", "mid")):
            await add_pod(api_client, name, cpu="1", priorityClassName=cls)

        async def filled() -> bool:
            return all([await node_of(api_client, n)
                        for n in ("low-1", "low-2", "mid-1", "mid-2")])
        await until(filled)
        await add_pod(api_client, "vip", cpu="2", priorityClassName="high")
        vip = await api_client.get(PODS, "default", "vip")  # type: ignore[arg-type]
        assert vip["spec"]["priority"] == 1000

        async def victims_marked() -> bool:
            pods = [await api_client.get(PODS, "default", n)  # type: ignore[arg-type]
                    for n in ("low-1", "low-2")]
            return all(p["metadata"].get("deletionTimestamp") for p in pods)
        await until(victims_marked)
        for name in ("mid-1", "mid-2"):
            mid = await api_client.get(PODS, "default", name)  # type: ignore[arg-type]
            assert not mid["metadata"].get("deletionTimestamp")
        vip = await api_client.get(PODS, "default", "vip")  # type: ignore[arg-type]
        assert vip["status"].get("nominatedNodeName") == "node-1"
        assert vip["spec"].get("nodeName") is None  # the victims still hold the room
        for name in ("low-1", "low-2"):  # the node agent finishes the deletions
            await api_client.delete(PODS, "default", name,  # type: ignore[arg-type]
                                    grace_period_seconds=0)

        async def vip_bound() -> bool:
            return await node_of(api_client, "vip") == "node-1"
        await until(vip_bound)
        preempted = [e for e in await events_for(api_client, "low-1")
                     if e["reason"] == "Preempted"]
        assert preempted and preempted[0]["message"] == (
            f"Preempted by pod {vip['metadata']['uid']} on node node-1")


async def test_pods_for_another_scheduler_are_ignored(api_client: Client) -> None:
    await three_nodes(api_client)
    async with scheduler(api_client):
        await add_pod(api_client, "theirs", schedulerName="other")
        await add_pod(api_client, "ours")

        async def ours_bound() -> bool:
            return bool(await node_of(api_client, "ours"))
        await until(ours_bound)
        await asyncio.sleep(0.5)
        assert await node_of(api_client, "theirs") is None
        assert await events_for(api_client, "theirs") == []


async def test_priority_classes_resolve_at_pod_create(server: Any, api_client: Client) -> None:
    server.kubectl("create", "priorityclass", "batch", "--value=500", "--global-default",
                   "--preemption-policy=Never", "--description=default for batch")
    assert server.kubectl("get", "pc", "batch", "-o", "jsonpath={.value}").stdout == "500"
    second = server.kubectl("create", "priorityclass", "other", "--value=5",
                            "--global-default", check=False)
    assert second.returncode != 0
    assert "PriorityClass batch is already marked as default. Only one default can exist" in \
        second.stderr
    too_high = server.kubectl("create", "priorityclass", "huge", "--value=1000000001",
                              check=False)
    assert "maximum allowed value of a user defined priority is 1000000000" in too_high.stderr
    reserved = server.kubectl("create", "priorityclass", "system-mine", "--value=1",
                              check=False)
    assert "priority class names with 'system-' prefix are reserved for system use only" in \
        reserved.stderr
    await add_pod(api_client, "defaulted")
    pod = await api_client.get(PODS, "default", "defaulted")  # type: ignore[arg-type]
    assert (pod["spec"]["priorityClassName"], pod["spec"]["priority"],
            pod["spec"]["preemptionPolicy"]) == ("batch", 500, "Never")
    await add_pod(api_client, "critical", priorityClassName="system-cluster-critical")
    pod = await api_client.get(PODS, "default", "critical")  # type: ignore[arg-type]
    assert pod["spec"]["priority"] == 2000000000
    with pytest.raises(ApiError) as wrong:
        await add_pod(api_client, "liar", priorityClassName="batch", priority=7)
    assert wrong.value.code == 403 and "must not be provided in pod spec" in \
        wrong.value.status["message"]
