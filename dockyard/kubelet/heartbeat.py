"""Registration and heartbeats: the Node object, its Lease and its status.

As the kubelet: register (create, or adopt an existing Node of this name), renew the Lease in
kube-node-lease every lease_duration/4 seconds (the cheap heartbeat the node lifecycle
controller watches), and post the full status when something changed or every
node_status_update_frequency seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.nodelease import renew_node_lease
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.kubelet import nodestatus
from dockyard.kubelet.config import KubeletConfig

log = logging.getLogger("dockyard.kubelet.heartbeat")
NODES = by_kind("", "Node")
STATUS_REPORT_SECONDS = 300.0  # nodeStatusReportFrequency: post unchanged status this often

Obj = dict[str, Any]


class NodeHeartbeat:
    """Keeps this node registered and its Lease and status fresh."""

    def __init__(self, client: Client, config: KubeletConfig, *, address: str, port: int,
                 runtime_version: str, ready: Callable[[], tuple[bool, str]],
                 images: Callable[[], list[Obj]] | None = None) -> None:
        self.client = client
        self.config = config
        self.address = address
        self.port = port
        self.runtime_version = runtime_version
        self.ready = ready
        self.images = images or (lambda: [])
        self.node_uid = ""
        self._lease: Obj | None = None
        self._last_post = 0.0

    def _status(self, previous: list[Obj] | None) -> Obj:
        cfg = self.config
        pressure = nodestatus.measure_pressure(cfg.data_dir, cfg.eviction_hard_memory,
                                               cfg.eviction_hard_disk_percent)
        return {
            "capacity": nodestatus.capacity(cfg.data_dir, cfg.max_pods),
            "allocatable": nodestatus.allocatable(cfg.data_dir, cfg.max_pods,
                                                  cfg.eviction_hard_memory,
                                                  cfg.eviction_hard_disk_percent),
            "conditions": nodestatus.conditions(pressure, self.ready(), previous),
            "addresses": nodestatus.addresses(self.address, cfg.node_name),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": nodestatus.node_info(self.runtime_version),
            "images": self.images(),
        }

    async def register(self) -> None:
        """Create the Node, or adopt the one already there; retry while the API is away."""
        assert NODES is not None
        delay = 0.1
        while True:
            try:
                await self._register_once()
                return
            except ApiError as exc:
                if 400 <= exc.code < 500 and exc.code not in (409, 429):
                    raise
                log.warning("registering node %s failed (retry in %.1fs): %s",
                            self.config.node_name, delay, exc)
            except OSError as exc:
                log.warning("registering node %s: API unreachable (retry in %.1fs): %s",
                            self.config.node_name, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _register_once(self) -> None:
        assert NODES is not None
        cfg = self.config
        labels = nodestatus.labels(cfg.node_name, cfg.node_labels)
        body: Obj = {"metadata": {"name": cfg.node_name, "labels": labels},
                     "spec": {"podCIDR": cfg.pod_cidr, "podCIDRs": [cfg.pod_cidr]}}
        try:
            node = await self.client.create(NODES, body)
        except ApiError as exc:
            if exc.code != 409:
                raise
            node = await self.client.patch(NODES, None, cfg.node_name,
                                           {"metadata": {"labels": labels}})
        self.node_uid = node["metadata"]["uid"]
        await self.post_status(force=True)
        await self.renew_lease()

    async def post_status(self, *, force: bool = False) -> None:
        assert NODES is not None
        try:
            current = await self.client.get(NODES, None, self.config.node_name)
        except ApiError as exc:
            if is_not_found(exc):
                await self._register_once()  # deleted behind our back: register again
                return
            raise
        previous = (current.get("status") or {}).get("conditions")
        status = self._status(previous)
        stale = time.monotonic() - self._last_post >= STATUS_REPORT_SECONDS
        if not force and not stale and _same(status, current.get("status") or {}):
            return
        await self.client.patch(NODES, None, self.config.node_name, {"status": status},
                                sub="status")
        self._last_post = time.monotonic()

    async def renew_lease(self) -> None:
        self._lease = await renew_node_lease(self.client, self.config.node_name,
                                             self.config.lease_duration, self.node_uid,
                                             self._lease)

    async def run(self) -> None:
        """Lease every lease_duration/4 s, status every node_status_update_frequency s."""
        lease_every = max(0.5, self.config.lease_duration / 4)
        status_every = self.config.node_status_update_frequency
        loop = asyncio.get_running_loop()
        next_status = loop.time() + status_every
        while True:
            await asyncio.sleep(min(lease_every, max(0.0, next_status - loop.time())))
            try:
                await self.renew_lease()
                if loop.time() >= next_status:
                    await self.post_status()
                    next_status = loop.time() + status_every
            except (ApiError, OSError) as exc:
                log.warning("node heartbeat failed: %s", exc)


def _same(wanted: Obj, current: Obj) -> bool:
    """True when posting `wanted` would change nothing but heartbeat times."""
    def strip(status: Obj) -> Obj:
        out = {k: v for k, v in status.items() if k != "conditions"}
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastHeartbeatTime"}
                             for c in status.get("conditions") or []]
        return out
    return strip(wanted) == strip({k: current.get(k) for k in wanted})
