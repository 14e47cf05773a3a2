"""The service proxy (kube-proxy's job) and NetworkPolicy enforcement, in nftables rules.

rules.py renders one table per cluster from Services, EndpointSlices and policies (pure);
proxier.py keeps it applied from informers. `run_proxy` is the node component; `cleanup_rules`
removes the table when the cluster is cleaned up.
"""

from __future__ import annotations

import logging
import shutil

from dockyard.client.rest import Client
from dockyard.kubelet.config import KubeletConfig
from dockyard.network.proxy.proxier import Proxier, cleanup_rules, ensure_br_netfilter

__all__ = ["Proxier", "cleanup_rules", "run_proxy"]

log = logging.getLogger("dockyard.network.proxy")


async def run_proxy(client: Client, config: KubeletConfig) -> None:
    """Keep this node's service and policy rules in sync until cancelled (rules stay)."""
    if shutil.which("nft") is None:
        log.error("proxy: `nft` not found: services and network policies do not work on node "
                  "%s. Install the Debian package nftables.", config.node_name)
        return
    ensure_br_netfilter()
    await Proxier(client, config).run()
