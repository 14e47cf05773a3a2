"""Pod ranges for nodes: Kubernetes' node IPAM controller (its `RangeAllocator`).

Each Node without one gets `spec.podCIDR`/`spec.podCIDRs`: a subnet of `--node-cidr-mask-size`
bits from `--cluster-cidr`, handed out round-robin from the lowest (so a range just freed is
not reused at once while routes to it may linger). The agent waits for it before it makes its
pod bridge (kubelet/agent.py).

The allocation is never stored anywhere else: it is rebuilt from the Nodes at start (every
range a Node holds is marked used, including ranges an agent set itself with `--pod-cidr`, and
ranges outside the cluster CIDR are simply not ours), updated as Nodes come and go, and a
range is free again once no Node holds it. The write is a compare-and-swap on the Node's
resourceVersion, made from a fresh GET, so a lagging cache or a concurrent writer can never make
two nodes share a range: the loser gets 409 and is retried from the newer object. The API
server forbids changing a range once set, so a range never moves under a running node.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer
from dockyard.client.rest import ApiError, Client, is_conflict, is_not_found

log = logging.getLogger("dockyard.controllers.nodeipam")

NODES = by_kind("", "Node")
Obj = dict[str, Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RETRY_FULL_SECONDS = 30.0
MAX_SUBNET_BITS = 16  # as Kubernetes: at most 65,536 node ranges per cluster CIDR


class CidrSet:
    """The node-sized subnets of one cluster CIDR, and which nodes hold each."""

    def __init__(self, cluster_cidr: str, mask_size: int) -> None:
        self.network: Network = ipaddress.ip_network(cluster_cidr, strict=False)
        if not self.network.prefixlen <= mask_size <= self.network.max_prefixlen:
            raise ValueError(f"--node-cidr-mask-size {mask_size} must be between the cluster "
                             f"CIDR's prefix length {self.network.prefixlen} and "
                             f"{self.network.max_prefixlen}")
        if mask_size - self.network.prefixlen > MAX_SUBNET_BITS:
            raise ValueError(f"--node-cidr-mask-size {mask_size} cuts {self.network} into more "
                             f"than 2^{MAX_SUBNET_BITS} ranges")
        self.mask_size = mask_size
        self.size = 1 << (mask_size - self.network.prefixlen)
        self._step = 1 << (self.network.max_prefixlen - mask_size)
        self._holders: dict[int, set[str]] = {}
        self._next = 0

    def subnet(self, index: int) -> Network:
        base = int(self.network.network_address) + index * self._step
        return ipaddress.ip_network((base, self.mask_size))

    def indexes(self, cidr: str) -> list[int]:
        """The node-sized subnets `cidr` overlaps (none when it is outside the cluster CIDR)."""
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return []
        if net.version != self.network.version or not net.overlaps(self.network):
            return []
        first = max(int(net.network_address), int(self.network.network_address))
        last = min(int(net.broadcast_address), int(self.network.broadcast_address))
        start = (first - int(self.network.network_address)) // self._step
        end = (last - int(self.network.network_address)) // self._step
        return list(range(start, end + 1))

    def holders(self, index: int) -> set[str]:
        return self._holders.get(index, set())

    def hold(self, index: int, node: str) -> None:
        self._holders.setdefault(index, set()).add(node)

    def release(self, index: int, node: str) -> None:
        holders = self._holders.get(index)
        if holders is not None:
            holders.discard(node)
            if not holders:
                del self._holders[index]

    def allocate(self) -> int | None:
        """The next free subnet after the last one handed out (wrapping), or None if full."""
        for offset in range(self.size):
            index = (self._next + offset) % self.size
            if index not in self._holders:
                self._next = (index + 1) % self.size
                return index
        return None

    def free(self) -> int:
        return self.size - len(self._holders)


def node_cidrs(node: Obj) -> list[str]:
    spec = node.get("spec") or {}
    return list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))


class NodeIpamController(Controller):
    name = "node-ipam"
    workers = 1  # one allocation at a time: the in-memory set is this worker's alone

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 cluster_cidr: str = "10.42.0.0/16", node_cidr_mask_size: int = 24) -> None:
        super().__init__()
        assert NODES is not None
        self.client = client
        self.recorder = recorder
        self.cidrs = CidrSet(cluster_cidr, node_cidr_mask_size)
        self.nodes = factory.informer(NODES)
        self._held: dict[str, list[int]] = {}  # node -> subnet indexes it holds
        self.nodes.add_handlers(Handlers(
            on_add=self._node_changed,
            on_update=lambda old, new: self._node_changed(new)
            if node_cidrs(old) != node_cidrs(new) or not node_cidrs(new) else None,
            on_delete=lambda node: self.queue.add(node["metadata"]["name"])))

    def informers(self) -> list[Informer]:
        return [self.nodes]

    def _node_changed(self, node: Obj) -> None:
        self.queue.add(node["metadata"]["name"])

    async def run(self) -> None:
        await self.nodes.wait_synced()
        for node in self.nodes.list():  # rebuild the allocation before handing anything out
            self._hold(node["metadata"]["name"], node_cidrs(node))
        log.info("node-ipam: cluster CIDR %s, /%d per node: %d of %d ranges in use",
                 self.cidrs.network, self.cidrs.mask_size, self.cidrs.size - self.cidrs.free(),
                 self.cidrs.size)
        await super().run()

    def _hold(self, name: str, cidrs: list[str]) -> None:
        """Make `cidrs` exactly what `name` holds. A range freed wakes the nodes waiting."""
        released = self._held.pop(name, [])
        for index in released:
            self.cidrs.release(index, name)
        if released and not cidrs:
            for node in self.nodes.list():
                if not node_cidrs(node) and node["metadata"]["name"] != name:
                    self.queue.add(node["metadata"]["name"])
        indexes = sorted({i for cidr in cidrs for i in self.cidrs.indexes(cidr)})
        for index in indexes:
            others = self.cidrs.holders(index) - {name}
            if others:
                log.warning("node %s has pod range %s, which overlaps that of node(s) %s",
                            name, ", ".join(cidrs), ", ".join(sorted(others)))
            self.cidrs.hold(index, name)
        if indexes:
            self._held[name] = indexes

    async def sync(self, key: str) -> None:
        assert NODES is not None
        cached = self.nodes.get(key)
        if cached is None:
            self._hold(key, [])  # deleted: its range is free again
            return
        if node_cidrs(cached):
            self._hold(key, node_cidrs(cached))
            return
        try:  # the cache may lag behind our own last write: decide on the newest object
            node = await self.client.get(NODES, None, key)
        except ApiError as exc:
            if is_not_found(exc):
                self._hold(key, [])
                return
            raise
        if node_cidrs(node):
            self._hold(key, node_cidrs(node))
            return
        index = self.cidrs.allocate()
        if index is None:
            self.recorder.event(node, "Warning", "CIDRNotAvailable",
                                f"Node {key} status is now: CIDRNotAvailable (no free /"
                                f"{self.cidrs.mask_size} left in {self.cidrs.network})")
            log.warning("no pod range left for node %s in %s", key, self.cidrs.network)
            self.queue.add_after(key, RETRY_FULL_SECONDS)
            return
        cidr = str(self.cidrs.subnet(index))
        self._hold(key, [cidr])  # reserved before the write: no other node can get it
        updated = copy.deepcopy(node)
        spec = updated.setdefault("spec", {})
        spec["podCIDR"], spec["podCIDRs"] = cidr, [cidr]
        try:
            await self.client.update(NODES, updated)  # CAS on node's resourceVersion
        except ApiError as exc:
            self._hold(key, [])
            if is_not_found(exc):
                return
            if is_conflict(exc):
                self.queue.add(key)  # changed meanwhile: decide again from the newer object
                return
            raise
        log.info("node %s: pod range %s", key, cidr)
