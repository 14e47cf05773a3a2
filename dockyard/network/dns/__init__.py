"""Cluster DNS: one server per node, on the node's pod-bridge address, answering from caches.

Like NodeLocal DNSCache, each node runs its own server where its pods reach it without leaving
the node: the first host address of the node's pod CIDR, which the pod network gives the CNI
bridge (network/podnet.py) and which the agent writes into ClusterFirst pods' resolv.conf
(`KubeletConfig.cluster_dns`). Records come from informers (watch.py → records.py), so the
server keeps answering while the control plane is down.

Importing this package does not import dnspython; `run_dns` does.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockyard.client.rest import Client
    from dockyard.kubelet.config import KubeletConfig

DNS_PORT = 53


def node_dns_address(pod_cidr: str) -> str:
    """The bridge's gateway address of a node with this pod CIDR (podnet's choice too)."""
    return str(next(ipaddress.ip_network(pod_cidr, strict=False).hosts()))


def parse_upstream(text: str) -> tuple[str, int]:
    """`10.0.0.2`, `10.0.0.2:5353` or `[fd00::2]:53` → (host, port)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return host, int(port.lstrip(":") or DNS_PORT)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, DNS_PORT


async def run_dns(client: Client, config: KubeletConfig, upstream: str | None = None, *,
                  host: str | None = None, port: int = DNS_PORT) -> None:
    """Serve the cluster's names on this node until cancelled.

    `upstream` (host[:port]) answers names outside the cluster's zones; without it they are
    refused. `host` defaults to the node's bridge address (waited for until it exists, and
    until the node has a pod CIDR: a joining node may get its CIDR from the control plane).
    """
    import asyncio

    from dockyard.network.dns.records import ClusterZone
    from dockyard.network.dns.server import DnsServer
    from dockyard.network.dns.watch import ZoneWatcher

    zone = ClusterZone(config.cluster_domain)
    server = DnsServer(zone, parse_upstream(upstream) if upstream else None)
    watcher = asyncio.create_task(ZoneWatcher(client, zone).run(), name="dns-watch")
    try:
        while not (host or config.pod_cidr):
            await asyncio.sleep(0.5)
        await server.start(host or node_dns_address(config.pod_cidr), port)
        await watcher
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await server.close()


__all__ = ["DNS_PORT", "node_dns_address", "parse_upstream", "run_dns"]
