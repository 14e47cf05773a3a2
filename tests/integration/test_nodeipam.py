"""The node IPAM controller on a real API server: each node its own pod range, never shared.

The controller runs in the test's event loop against the `server` fixture (API only); what is
checked is what a user sees on the Nodes and in the events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.rest import Client
from dockyard.controllers.nodeipam import NodeIpamController
from tests.components import until

NODES = by_kind("", "Node")
EVENTS = by_kind("", "Event")
Obj = dict[str, Any]


@contextlib.asynccontextmanager
async def ipam(client: Client, cidr: str = "10.77.0.0/22") -> AsyncIterator[None]:
    factory = InformerFactory(client)
    recorder = EventRecorder(client, "controller-manager")
    controller = NodeIpamController(client, factory, recorder, cluster_cidr=cidr,
                                    node_cidr_mask_size=24)
    recorder.start()
    factory.start()
    task = asyncio.create_task(controller.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await factory.stop()
        await recorder.stop()


async def cidrs(client: Client) -> dict[str, str | None]:
    assert NODES is not None
    items = (await client.list(NODES))["items"]
    return {n["metadata"]["name"]: (n.get("spec") or {}).get("podCIDR") for n in items}


def node(name: str, cidr: str = "") -> Obj:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}
            if cidr else {}}


async def test_ranges_are_unique_respect_explicit_ones_and_are_released(server,
                                                                        api_client) -> None:
    assert NODES is not None and EVENTS is not None
    # Before the controller starts: a node that chose its range (--pod-cidr), and one whose
    # range lies outside the cluster CIDR (not ours to track).
    await api_client.create(NODES, node("explicit", "10.77.1.0/24"))
    await api_client.create(NODES, node("elsewhere", "192.168.5.0/24"))
    async with ipam(api_client):
        await asyncio.gather(*(api_client.create(NODES, node(f"n{i}")) for i in range(3)))
        got = await until(lambda: _all_assigned(api_client, 5), what="three ranges assigned")
        assigned = [got[f"n{i}"] for i in range(3)]
        assert sorted(assigned) == ["10.77.0.0/24", "10.77.2.0/24", "10.77.3.0/24"]
        assert got["explicit"] == "10.77.1.0/24" and got["elsewhere"] == "192.168.5.0/24"

        # The cluster CIDR is full: the next node waits, with an event saying why.
        await api_client.create(NODES, node("late"))

        async def full_event() -> bool:
            events = (await api_client.list(EVENTS, "default"))["items"]
            return any(e["reason"] == "CIDRNotAvailable" and
                       e["involvedObject"]["name"] == "late" for e in events)
        await until(full_event, what="CIDRNotAvailable event")
        assert (await cidrs(api_client))["late"] is None
        # A deleted node's range is free again: the waiting node gets it.
        freed = got["n1"]
        await api_client.delete(NODES, None, "n1")
        final = await until(lambda: _all_assigned(api_client, 5), what="late node assigned")
        assert final["late"] == freed

    # A new controller rebuilds what is used from the Nodes: with every range held, a new
    # node gets nothing (rather than a range another node has).
    async with ipam(api_client):
        await api_client.create(NODES, node("extra"))

        async def extra_refused() -> bool:
            events = (await api_client.list(EVENTS, "default"))["items"]
            return any(e["reason"] == "CIDRNotAvailable" and
                       e["involvedObject"]["name"] == "extra" for e in events)
        await until(extra_refused, what="CIDRNotAvailable for the extra node")
        now = await cidrs(api_client)
        assert now["extra"] is None
        values = [v for v in now.values() if v]
        assert len(values) == len(set(values)) == 5


async def _all_assigned(client: Client, count: int) -> dict[str, str | None] | None:
    got = await cidrs(client)
    return got if len(got) == count and all(got.values()) else None
