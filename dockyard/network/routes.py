"""Routes to the other nodes' pod ranges: the multi-node pod network, without an overlay.

Each agent watches the Nodes and keeps one kernel route per other node, `<podCIDR> via
<InternalIP>` (flannel's host-gw backend, Calico without encapsulation). It needs the nodes on
one layer-2 segment, which is what the test hosts (network namespaces on one bridge) and most
small clusters have. A pod's packet to another node's pod leaves by its default route (the node
bridge's address, podnet.py), is forwarded by this host to the other node, and forwarded there
onto its bridge.

Only our routes are ever touched: each carries a protocol number derived from the cluster's
prefix and a metric of the same number (`ip route ... proto N metric N`: `replace` only ever
replaces a route with that metric), and every route we may have added is written to
`state_dir/routes.json` *before* it is added, so a route is deleted only if it is in that
record and still carries our protocol — never an administrator's route to the same range.
`cleanup()` removes them all.

Forwarding (`net.ipv4.ip_forward`) is what turns a host into a router, so it is switched on
only where that is contained: inside a network namespace other than the machine's root one (a
node host in tests, a container), or when the user asks with `--enable-pod-routing`. In the
root namespace the agent never flips it by itself and says so in its log. When it did switch it
on, it records the old value and `cleanup()` puts it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
from pathlib import Path
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.informer import Handlers, Informer
from dockyard.client.rest import Client

log = logging.getLogger("dockyard.network.routes")

Obj = dict[str, Any]
NODES = by_kind("", "Node")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
STATE_FILE = "routes.json"
SIMULATED = "dockyard.io/simulated"
NET_NS_INIT_INO = 0xEFFFFFF9  # the root network namespace's inode on recent kernels
RESYNC_SECONDS = 30.0  # put back routes someone removed, even without a Node change
# Route protocols 100..179: clear of the numbers iproute2 reserves (rt_protos: <= 99, 186+).
PROTO_BASE, PROTO_COUNT = 100, 80


def route_protocol(prefix: str) -> int:
    """The `proto` number of one cluster's routes."""
    return PROTO_BASE + int(hashlib.sha256(prefix.encode()).hexdigest(), 16) % PROTO_COUNT


def route_tag(proto: int) -> str:
    """What marks our routes: the protocol, and a metric of the same number so that
    `route replace` can never overwrite someone else's route to the same range (the kernel
    keys routes by destination and metric; another route keeps its own)."""
    return f"proto {proto} metric {proto}"


def netns_id() -> str:
    """Identity of this process's network namespace (device and inode of its nsfs file)."""
    st = os.stat("/proc/self/ns/net")
    return f"{st.st_dev}:{st.st_ino}"


def in_root_netns() -> bool:
    """Whether this is the machine's root network namespace: that of PID 1 or of PID 2
    (kthreadd, always in the root one; readable where PID 1 is protected), or, when neither can
    be read, the root namespace's fixed inode number (Linux 6.18+). When it cannot be told,
    assume it is: the cautious answer."""
    for reference in ("/proc/1/ns/net", "/proc/2/ns/net"):
        try:
            return netns_id() == _id_of(reference)
        except OSError:
            continue
    try:
        return os.stat("/proc/self/ns/net").st_ino == NET_NS_INIT_INO
    except OSError:
        return True


def _id_of(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def desired_routes(nodes: list[Obj], own_node: str, own_cidr: str) -> dict[str, str]:
    """podCIDR -> InternalIP of every other node that has both (same IP family)."""
    own = ipaddress.ip_network(own_cidr, strict=False) if own_cidr else None
    out: dict[str, str] = {}
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        meta = node["metadata"]
        if meta["name"] == own_node or meta.get("deletionTimestamp") or \
                (meta.get("annotations") or {}).get(SIMULATED) == "true":
            continue  # (a simulated node has no host to route to: dockyard/sim)
        spec = node.get("spec") or {}
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        addresses = [a.get("address", "") for a in (node.get("status") or {}).get("addresses")
                     or [] if a.get("type") == "InternalIP"]
        for cidr in cidrs:
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                continue
            if own is not None and net.version == own.version and net.overlaps(own):
                continue  # never route our own range away
            via = next((a for a in addresses if _family(a) == net.version), None)
            if via and str(net) not in out:
                out[str(net)] = via
    return out


def _family(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0


class PodRoutes:
    """Keeps this host's routes to the other nodes' pod ranges in line with the Nodes."""

    def __init__(self, client: Client, *, node_name: str, pod_cidr: str, prefix: str,
                 state_dir: Path, enable_forwarding: bool = False) -> None:
        self.client = client
        self.node_name = node_name
        self.pod_cidr = pod_cidr
        self.proto = route_protocol(prefix)
        self.tag = route_tag(self.proto)
        self.state_path = state_dir / STATE_FILE
        self.enable_forwarding = enable_forwarding
        self._changed = asyncio.Event()
        self._applied: dict[str, str] | None = None
        self._failed: set[str] = set()
        self._warned_forwarding = False

    # -- state ------------------------------------------------------------------------------

    def _load(self) -> Obj:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save(self, state: Obj) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    # -- forwarding -------------------------------------------------------------------------

    def setup_forwarding(self) -> None:
        """Switch IPv4 forwarding on where that is contained (see the module doc)."""
        current = _read(IP_FORWARD)
        root = in_root_netns()
        if current == "1":
            return
        if root and not self.enable_forwarding:
            log.info("IPv4 forwarding is off (net.ipv4.ip_forward=0); the agent never switches "
                     "it on in the host's root network namespace by itself "
                     "(--enable-pod-routing lets it)")
            return
        state = self._load()
        state.update(forwardingWas=current, netns=netns_id(), proto=self.proto)
        self._save(state)  # first the record, so cleanup can always put it back
        IP_FORWARD.write_text("1\n")
        log.info("enabled IPv4 forwarding in this %s (was %s; cleanup restores it)",
                 "network namespace (not the host's root one)" if not root
                 else "host's root network namespace, as --enable-pod-routing asked", current)

    # -- routes -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch the Nodes and keep the routes until cancelled (the routes stay)."""
        assert NODES is not None
        self.setup_forwarding()
        nodes = Informer(self.client, NODES)
        nodes.add_handlers(Handlers(on_add=lambda _n: self._changed.set(),
                                    on_update=lambda _o, _n: self._changed.set(),
                                    on_delete=lambda _n: self._changed.set()))
        watch = asyncio.create_task(nodes.run(), name="pod-routes-nodes")
        try:
            await nodes.wait_synced()
            resync = True
            while True:
                self._changed.clear()
                await self.sync(nodes.list(), check_kernel=resync)
                try:
                    await asyncio.wait_for(self._changed.wait(), RESYNC_SECONDS)
                    resync = False
                    await asyncio.sleep(0.05)  # let a burst of node changes land together
                except TimeoutError:
                    resync = True
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def sync(self, nodes: list[Obj], *, check_kernel: bool = False) -> None:
        want = desired_routes(nodes, self.node_name, self.pod_cidr)
        if want == self._applied and not check_kernel and not self._failed:
            return
        state = self._load()
        recorded: dict[str, str] = dict(state.get("routes") or {})
        if not self._warned_forwarding and want and _read(IP_FORWARD) != "1":
            log.warning(
                "IPv4 forwarding is off on this host (net.ipv4.ip_forward=0) and the agent does "
                "not switch it on in the host's root network namespace by itself: pods on the "
                "%d other node(s) cannot reach pods on this one. Pass --enable-pod-routing to "
                "let it.", len(want))
            self._warned_forwarding = True
        present = await self._kernel_routes() if check_kernel or self._failed else {}
        add = {cidr: via for cidr, via in want.items()
               if recorded.get(cidr) != via or cidr in self._failed
               or (check_kernel and present.get(cidr) != via)}
        remove = [cidr for cidr in recorded if cidr not in want]
        if add:
            state.update(routes={**recorded, **add}, netns=netns_id(), proto=self.proto)
            self._save(state)  # the intent first: cleanup knows every route we may have made
        adds = {cidr: f"route replace {cidr} via {via} {self.tag}"
                for cidr, via in sorted(add.items())}
        commands = [f"route del {cidr} {self.tag}" for cidr in remove]
        failed = await _ip_batch(commands + list(adds.values())) if add or remove else set()
        failed_adds = {cidr for cidr, command in adds.items() if command in failed}
        newly = sorted(failed_adds - self._failed)
        if newly:
            log.warning("routes to the pods of %d node(s) could not be set, e.g. %s via %s "
                        "(is that node address on a network this host reaches directly?)",
                        len(newly), newly[0], add[newly[0]])
        self._failed = failed_adds
        state["routes"] = {cidr: via for cidr, via in want.items()}
        state.update(netns=netns_id(), proto=self.proto)
        self._save(state)
        self._applied = want
        if add or remove:
            log.info("pod routes: %d to other nodes (%d set, %d removed)", len(want),
                     len(add) - len(failed_adds), len(remove))

    async def _kernel_routes(self) -> dict[str, str]:
        """Our routes as the kernel has them: dst -> gateway."""
        out = await _ip_json(["route", "show", "proto", str(self.proto)])
        out += await _ip_json(["-6", "route", "show", "proto", str(self.proto)])
        return {r["dst"] if "/" in r["dst"] else _host_net(r["dst"]): r.get("gateway", "")
                for r in out if r.get("dst")}


def _host_net(dst: str) -> str:
    return str(ipaddress.ip_network(dst, strict=False))


async def cleanup(state_dir: Path) -> None:
    """Remove the routes this cluster's agent made here and restore ip_forward, if this is
    the network namespace it ran in (else leave everything: it is someone else's)."""
    path = state_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except ValueError:
        path.unlink(missing_ok=True)
        return
    if state.get("netns") and state["netns"] != netns_id():
        log.warning("the pod routes of %s were made in another network namespace; run "
                    "cleanup there (nothing removed here)", state_dir)
        return
    proto = int(state.get("proto") or 0)
    if proto and state.get("routes"):
        await _ip_batch([f"route del {cidr} {route_tag(proto)}" for cidr in state["routes"]])
    if state.get("forwardingWas") == "0":
        with contextlib.suppress(OSError):
            IP_FORWARD.write_text("0\n")
    path.unlink(missing_ok=True)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


async def _ip_batch(commands: list[str]) -> set[str]:
    """Run `ip -force -batch` (go on after a failed line); returns the failed commands."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "-force", "-batch", "-", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate("\n".join(commands).encode() + b"\n")
    failed = set()
    for line in err.decode(errors="replace").splitlines():
        # "Command failed -:3" names the 1-based line of the batch.
        if line.startswith("Command failed -:"):
            with contextlib.suppress(ValueError, IndexError):
                number = int(line.rsplit(":", 1)[1])
                failed.add(commands[number - 1])
    deletes_missing = {c for c in failed if c.startswith("route del ")}
    return failed - deletes_missing  # deleting a route that is already gone is fine


async def _ip_json(args: list[str]) -> list[Obj]:
    proc = await asyncio.create_subprocess_exec(
        "ip", "-j", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    try:
        return json.loads(out or b"[]")
    except ValueError:
        return []
