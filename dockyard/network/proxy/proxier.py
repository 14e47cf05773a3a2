"""The proxy loop: watch what the rules depend on, render, apply with `nft -f`, atomically.

Informers on Services, EndpointSlices, Nodes, Pods, Namespaces and NetworkPolicies only mark
the rules dirty; one task renders (in a thread: 1,000 services take tens of milliseconds) and
applies. Changes are coalesced: a sync starts `coalesce` seconds after the first change and at
least `min_interval` after the previous sync, so an endpoint change reaches the kernel well
within a second while a burst of changes costs one transaction. A render equal to the applied
one is not applied again; every `resync` seconds the table is checked to still exist.

The rules are the data plane: stopping the proxy leaves them in place, so services keep
working while the agent or the API server is down; `cleanup_rules` (called by `dockyard
cleanup`) removes them.

Bridged DNAT needs forwarding on the pod bridge. Since Linux 2.6 br_netfilter re-bridges a
packet DNATed to a pod on the same bridge without forwarding, but on current kernels the
route lookup it relies on no longer fails when forwarding is off, and the packet is dropped
(seen as IpInAddrErrors). So, once the table with its guard is in place, the proxy sets
`net.ipv4.conf.<bridge>.forwarding=1` — on this cluster's bridge only, never the host's
`ip_forward` — and the guard in the forward chain refuses anything from the bridge that would
be routed elsewhere than the cluster's pod networks and node addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.informer import Handlers, Informer
from dockyard.client.rest import Client
from dockyard.kubelet.config import KubeletConfig
from dockyard.network.policy import ipv4, pod_policies
from dockyard.network.proxy.rules import Existing, NodeInfo, Ruleset, render
from dockyard.runtime import naming

log = logging.getLogger("dockyard.network.proxy")

Obj = dict[str, Any]
SERVICES = by_kind("", "Service")
SLICES = by_kind("discovery.k8s.io", "EndpointSlice")
NODES = by_kind("", "Node")
PODS = by_kind("", "Pod")
NAMESPACES = by_kind("", "Namespace")
POLICIES = by_kind("networking.k8s.io", "NetworkPolicy")

BR_NF_CALL_IPTABLES = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def forwarding_path(bridge: str) -> Path:
    return Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding")


class NftError(Exception):
    """nft refused a ruleset (its message names the line)."""


async def nft(*args: str, stdin: str | None = None, binary: str = "nft") -> str:
    """Run nft; its stdout, or NftError with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        binary, *args, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise NftError(err.decode(errors="replace").strip() or f"nft exit {proc.returncode}")
    return out.decode()


async def list_existing(table: str, binary: str = "nft") -> Existing | None:
    """The chains and sets the table holds now; None when it does not exist."""
    try:
        out = await nft("-j", "-t", "list", "table", "ip", table, binary=binary)
    except NftError:
        return None
    chains, sets = set(), set()
    for item in json.loads(out).get("nftables") or []:
        if "chain" in item:
            chains.add(item["chain"]["name"])
        for kind in ("set", "map"):
            if kind in item:
                sets.add((item[kind]["name"], kind))
    return Existing(frozenset(chains), tuple(sorted(sets)))


async def table_exists(table: str, binary: str = "nft") -> bool:
    """Cheap: `nft list tables` names the tables without their contents."""
    try:
        out = await nft("list", "tables", "ip", binary=binary)
    except NftError:
        return False
    return f"table ip {table}" in out.splitlines()


def ensure_br_netfilter() -> bool:
    """Bridged pod-to-pod traffic must pass the IP hooks, or replies of DNATed connections
    between pods on one bridge are not translated back. Load br_netfilter and switch
    bridge-nf-call-iptables on when possible; say clearly when it is not."""
    if not BR_NF_CALL_IPTABLES.exists() and shutil.which("modprobe"):
        import subprocess

        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, timeout=30)
    try:
        if BR_NF_CALL_IPTABLES.read_text().strip() != "1":
            BR_NF_CALL_IPTABLES.write_text("1")
            log.info("proxy: set net.bridge.bridge-nf-call-iptables=1")
        return True
    except OSError as exc:
        log.error("proxy: br_netfilter is not available (%s): a pod reaching a service whose "
                  "endpoint is on the same node will not get replies. Load it with "
                  "`modprobe br_netfilter` and `sysctl net.bridge.bridge-nf-call-iptables=1`.",
                  exc)
        return False


def set_bridge_forwarding(bridge: str, on: bool) -> bool:
    """Forwarding on the pod bridge only (see the module doc); False if the bridge is absent."""
    path = forwarding_path(bridge)
    want = "1" if on else "0"
    try:
        if path.read_text().strip() != want:
            path.write_text(want)
            log.info("proxy: net.ipv4.conf.%s.forwarding=%s", bridge, want)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.error("proxy: cannot set forwarding on %s (%s): pods will not reach services "
                  "whose endpoints share their bridge", bridge, exc)
        return False


def _pod_fingerprint(pod: Obj) -> tuple[Any, ...]:
    """What policy rules read of a pod; other changes (status churn) do not re-render."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ports = tuple((p.get("name"), p.get("containerPort"), p.get("protocol"))
                  for c in spec.get("containers") or [] for p in c.get("ports") or [])
    return (meta.get("namespace"), tuple(sorted((meta.get("labels") or {}).items())),
            ipv4(pod), spec.get("nodeName"), spec.get("hostNetwork"),
            (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"), ports)


def _node_fingerprint(node: Obj) -> tuple[Any, ...]:
    spec, status = node.get("spec") or {}, node.get("status") or {}
    return (tuple(spec.get("podCIDRs") or [spec.get("podCIDR")]),
            tuple(a.get("address") for a in status.get("addresses") or []))


class Proxier:
    """One node's service proxy and policy enforcer over one nftables table."""

    def __init__(self, client: Client, config: KubeletConfig, *, coalesce: float = 0.05,
                 min_interval: float = 0.2, resync: float = 30.0, nft_binary: str = "nft"
                 ) -> None:
        assert SERVICES and SLICES and NODES and PODS and NAMESPACES
        self.client = client
        self.config = config
        self.table = config.prefix
        self.bridge = naming.bridge_name(config.prefix)
        self.coalesce = coalesce
        self.min_interval = min_interval
        self.resync = resync
        self.nft_binary = nft_binary
        self.services = Informer(client, SERVICES)
        self.slices = Informer(client, SLICES)
        self.nodes = Informer(client, NODES)
        self.pods = Informer(client, PODS)
        self.namespaces = Informer(client, NAMESPACES)
        self.policies = Informer(client, POLICIES) if POLICIES is not None else None
        self._dirty = asyncio.Event()
        self._existing: Existing | None = None  # the table's objects, by name
        self._applied: Ruleset | None = None  # what the table holds, when we know it exactly
        self.last_sync: dict[str, float] = {}  # render/apply seconds of the last sync
        self.syncs = 0
        always = Handlers(on_add=lambda _o: self.mark(), on_update=lambda _a, _b: self.mark(),
                          on_delete=lambda _o: self.mark())
        self.services.add_handlers(always)
        self.slices.add_handlers(always)
        if self.policies is not None:
            self.policies.add_handlers(always)
        self.nodes.add_handlers(self._filtered(_node_fingerprint, policy_only=False))
        self.pods.add_handlers(self._filtered(_pod_fingerprint, policy_only=True))
        self.namespaces.add_handlers(self._filtered(
            lambda ns: tuple(sorted(((ns.get("metadata") or {}).get("labels") or {}).items())),
            policy_only=True))

    def informers(self) -> list[Informer]:
        out = [self.services, self.slices, self.nodes, self.pods, self.namespaces]
        return out + ([self.policies] if self.policies is not None else [])

    def _filtered(self, fingerprint: Callable[[Obj], tuple[Any, ...]], *,
                  policy_only: bool) -> Handlers:
        def relevant() -> bool:
            return not policy_only or bool(self.policies and self.policies.keys())

        def added_or_deleted(_obj: Obj) -> None:
            if relevant():
                self.mark()

        def changed(old: Obj, new: Obj) -> None:
            if relevant() and fingerprint(old) != fingerprint(new):
                self.mark()

        return Handlers(on_add=added_or_deleted, on_update=changed, on_delete=added_or_deleted)

    def mark(self) -> None:
        self._dirty.set()

    # -- one sync --------------------------------------------------------------------------

    def node_info(self) -> NodeInfo:
        networks = []
        for node in self.nodes.list():
            spec, status = node.get("spec") or {}, node.get("status") or {}
            networks += [c for c in spec.get("podCIDRs") or [spec.get("podCIDR")] if c]
            networks += [a["address"] for a in status.get("addresses") or []
                         if a.get("type") in ("InternalIP", "ExternalIP") and a.get("address")]
        if self.config.pod_cidr:
            networks.append(self.config.pod_cidr)
        return NodeInfo(table=self.table, bridge=self.bridge, node_name=self.config.node_name,
                        cluster_networks=tuple(sorted(set(networks))))

    async def sync(self, *, force: bool = False) -> bool:
        """Render and apply if different from what is applied; True if nft ran."""
        started = time.perf_counter()
        policies = self.policies.list() if self.policies is not None else []
        pods = self.pods.list() if policies else []
        namespaces = self.namespaces.list() if policies else []
        services, slices, node = self.services.list(), self.slices.list(), self.node_info()

        def work() -> Ruleset:
            isolated = pod_policies(policies, pods, namespaces, node.node_name)
            return render(services, slices, node, isolated)

        ruleset = await asyncio.to_thread(work)
        rendered = time.perf_counter()
        if ruleset == self._applied and not force:
            return False
        await self.apply(ruleset)
        applied = time.perf_counter()
        self.last_sync = {"render": rendered - started, "apply": applied - rendered}
        self.syncs += 1
        log.debug("proxy: synced %s in %.1f ms (render %.1f ms)", self.table,
                  (applied - started) * 1000, (rendered - started) * 1000)
        set_bridge_forwarding(self.bridge, True)
        return True

    async def apply(self, ruleset: Ruleset) -> None:
        """One nft transaction: the changes since the last one when the table's content is
        known, else a full replacement. If nft refuses a change, the table is not what we
        think: replace it whole (this loses the affinity of current clients)."""
        previous: Ruleset | Existing | None = self._applied or self._existing
        self._applied = None  # unknown until this transaction succeeds
        try:
            await nft("-f", "-", stdin=ruleset.transaction(previous), binary=self.nft_binary)
        except NftError as exc:
            if previous is None:
                raise
            log.warning("proxy: updating table %s failed (%s); replacing it", self.table,
                        str(exc).splitlines()[0] if str(exc) else exc)
            self._existing = None
            await nft("-f", "-", stdin=ruleset.transaction(None), binary=self.nft_binary)
        self._existing = ruleset.existing()
        self._applied = ruleset

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled; the rules stay when it returns."""
        tasks = [asyncio.create_task(i.run(), name=f"proxy-{i.info.plural}")
                 for i in self.informers()]
        try:
            await self._wait_synced()
            self._existing = await list_existing(self.table, self.nft_binary)
            last = 0.0
            delay = 1.0
            next_check = time.monotonic() + self.resync
            while True:
                self._dirty.clear()
                try:
                    await self.sync()
                    delay = 1.0
                except (NftError, OSError) as exc:
                    log.error("proxy: applying the rules of %s failed: %s (retrying in %.0fs)",
                              self.table, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    self.mark()
                last = time.monotonic()
                next_check = await self._wait(next_check)
                pause = max(self.coalesce, last + self.min_interval - time.monotonic())
                await asyncio.sleep(pause)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait_synced(self) -> None:
        """Services, slices and nodes first: without them no rule is right. Policies and what
        they read may lag (or be unavailable on an older API server) for a while; when they
        arrive, their handlers mark the rules dirty."""
        await asyncio.gather(self.services.wait_synced(), self.slices.wait_synced(),
                             self.nodes.wait_synced())
        optional = [i for i in self.informers() if not i.has_synced()]
        try:
            await asyncio.wait_for(asyncio.gather(*(i.wait_synced() for i in optional)), 10.0)
        except TimeoutError:
            late = ", ".join(i.info.plural for i in optional if not i.has_synced())
            log.warning("proxy: %s not listed after 10s; writing service rules without them "
                        "(network policies are not enforced until they are)", late)

    async def _wait(self, next_check: float) -> float:
        """Until something changed; on the way, keep the bridge forwarding and check every
        `resync` seconds that the table is still there (someone may have flushed it)."""
        while not self._dirty.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), 2.0)
            if self._existing is not None:
                set_bridge_forwarding(self.bridge, True)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.resync
                if not await table_exists(self.table, self.nft_binary):
                    log.warning("proxy: table %s disappeared; writing it again", self.table)
                    self._existing, self._applied = None, None
                    self.mark()
        return next_check


async def cleanup_rules(prefix: str, nft_binary: str = "nft") -> None:
    """Remove a cluster's table (and the bridge forwarding the proxy switched on)."""
    set_bridge_forwarding(naming.bridge_name(prefix), False)
    if shutil.which(nft_binary) is None:
        return
    if await list_existing(prefix, nft_binary) is not None:
        await nft("delete", "table", "ip", prefix, binary=nft_binary)
