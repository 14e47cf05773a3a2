"""Hosts on one machine: a bridge in the root namespace and one network namespace per node.

    root namespace:  bridge <P>mb (10.x.y.1/24) ── control plane, bound on the bridge address
                       │ veth <P>v1     │ veth <P>v2     │ veth <P>v3
    netns <P>h1: eth0 .11   <P>h2: eth0 .12   <P>h3: eth0 .13
                 agent node-1      agent node-2      agent node-3   (NodeHost.argv)

P is a cluster prefix (runtime/naming.py), so two clusters on one machine never share a name;
the /24 is picked among ranges that no route on this machine overlaps. Nothing here routes to
the outside: the bridge has no uplink, the hosts have no default route.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.network.routes import route_protocol
from dockyard.runtime.naming import cluster_prefix

DOCKYARD = [sys.executable, "-m", "dockyard.cli.main"]
SPACE = ipaddress.ip_network("10.200.0.0/13")

# Enter a host: its network namespace and a new mount namespace (slave of the machine's) with a
# sysfs of that network namespace on /sys, so /sys/class/net shows the host's interfaces, and
# the machine's cgroup hierarchies bound under it. (`ip netns exec` mounts a new sysfs too but
# drops /sys/fs/cgroup, and runc needs it.) The sysfs is mounted on a temporary directory in
# $DY_TMP first, then moved over /sys.
_ENTER = ('set -e; t=$(mktemp -d -p "$DY_TMP"); mount -t sysfs sysfs "$t"; '
          'mount --rbind /sys/fs/cgroup "$t/fs/cgroup"; mount --move "$t" /sys; rmdir "$t"; '
          'exec "$@"')


def run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def ip_batch(commands: list[str], netns: str = "", force: bool = False) -> None:
    """Several `ip` commands in one process (`-force`: go on past errors, report none)."""
    argv = ["ip", *(["-n", netns] if netns else []), *(["-force"] if force else []),
            "-batch", "-"]
    result = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0 and not force:
        raise RuntimeError(f"ip {' / '.join(commands)}: {result.stderr.strip()}")


def routed_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination in any routing table of this namespace (default routes aside)."""
    out = run("ip", "-4", "route", "show", "table", "all").stdout
    nets = []
    for line in out.splitlines():
        words = line.split()
        word = words[1] if words and words[0] in ("local", "broadcast") else (words or [""])[0]
        try:
            nets.append(ipaddress.ip_network(word if "/" in word else f"{word}/32",
                                             strict=False))
        except ValueError:
            continue
    return [n for n in nets if n.prefixlen > 0 and n.version == 4]  # type: ignore[misc]


def free_networks(*prefixlens: int) -> list[ipaddress.IPv4Network]:
    """Networks of the given sizes in 10.200.0.0/13, overlapping no route and each other."""
    used = routed_networks()
    picked: list[ipaddress.IPv4Network] = []
    for prefixlen in prefixlens:
        candidates = list(SPACE.subnets(new_prefix=prefixlen))
        for _ in range(500):
            net = random.choice(candidates)
            if not any(net.overlaps(other) for other in [*used, *picked]):
                picked.append(net)
                break
        else:
            raise RuntimeError(f"no free /{prefixlen} in {SPACE}")
    return picked


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


@dataclass
class NodeHost:
    """One node's host: a network namespace on the bridge, and the node's data directory."""

    index: int
    netns: str
    veth: str
    ip: str
    data_dir: Path
    node_name: str

    @property
    def prefix(self) -> str:
        """The node's own cluster prefix (its containers, pod bridge, routes)."""
        return cluster_prefix(self.data_dir)

    @property
    def peer(self) -> str:
        """The veth end inside the host before it is renamed eth0."""
        return self.veth.removesuffix(f"v{self.index}") + f"p{self.index}"

    @property
    def exists(self) -> bool:
        return netns_exists(self.netns)

    def argv(self, *argv: str) -> list[str]:
        """`argv` run inside this host (see _ENTER)."""
        return ["env", f"DY_TMP={self.data_dir.parent}", "nsenter",
                f"--net=/run/netns/{self.netns}", "unshare", "--mount", "--propagation", "slave",
                "sh", "-c", _ENTER, "sh", *argv]

    def ip_cmd(self, *args: str) -> subprocess.CompletedProcess:
        return run("ip", "-n", self.netns, *args)

    def pod_routes(self) -> dict[str, str]:
        """This host's routes to other nodes' pods (the agent's only): dst -> gateway."""
        out = self.ip_cmd("-j", "route", "show", "proto", str(route_protocol(self.prefix)))
        return {r["dst"]: r.get("gateway", "") for r in json.loads(out.stdout or "[]")}

    def sysctl(self, name: str) -> str:
        return run(*self.argv("cat", f"/proc/sys/{name.replace('.', '/')}")).stdout.strip()

    def to_json(self) -> dict:
        return {"index": self.index, "netns": self.netns, "veth": self.veth, "ip": self.ip,
                "dataDir": str(self.data_dir), "nodeName": self.node_name}

    @classmethod
    def from_json(cls, data: dict) -> NodeHost:
        return cls(data["index"], data["netns"], data["veth"], data["ip"],
                   Path(data["dataDir"]), data["nodeName"])


@dataclass
class HostNetwork:
    """The bridge `<prefix>mb` with address .1 of `net`, node hosts at .11, .12, ..., and
    the cluster's pod range `pod_net` held in the root namespace by an `unreachable` route:
    no other cluster picks it (free_networks), nothing sent to it leaves the machine, and the
    node ranges routed to their hosts (`route_pods`) are more specific."""

    prefix: str
    net: ipaddress.IPv4Network
    hosts: list[NodeHost] = field(default_factory=list)
    pod_net: ipaddress.IPv4Network | None = None

    @classmethod
    def plan(cls, prefix: str, net: ipaddress.IPv4Network, base: Path, nodes: int,
             pod_net: ipaddress.IPv4Network | None = None) -> HostNetwork:
        """Names and addresses of `nodes` hosts; node i keeps its data in base/node<i>/data."""
        if not 1 <= nodes <= net.num_addresses - 12:
            raise ValueError(f"{nodes} nodes do not fit in {net}")
        hosts = [NodeHost(index=i, netns=f"{prefix}h{i}", veth=f"{prefix}v{i}",
                          ip=str(net.network_address + 10 + i),
                          data_dir=base / f"node{i}" / "data", node_name=f"node-{i}")
                 for i in range(1, nodes + 1)]
        return cls(prefix, net, hosts, pod_net)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}mb"

    @property
    def gateway(self) -> str:
        """The bridge's address: where the control plane listens, reachable from every host."""
        return str(self.net.network_address + 1)

    @property
    def proto(self) -> int:
        """The protocol (and metric) number of this network's routes in the root namespace."""
        return route_protocol(self.prefix)

    def create(self) -> None:
        """Make the bridge and every host (a failure part-way leaves what `remove` removes)."""
        bits = self.net.prefixlen
        ip_batch([f"link add name {self.bridge} type bridge",
                  f"addr add {self.gateway}/{bits} dev {self.bridge}",
                  f"link set dev {self.bridge} up"])
        if self.pod_net is not None:
            ip_batch([f"route add unreachable {self.pod_net} proto {self.proto} "
                      f"metric {self.proto}"])
        for h in self.hosts:
            run("ip", "netns", "add", h.netns)
            ip_batch([f"link add name {h.veth} type veth peer name {h.peer}",
                      f"link set dev {h.peer} netns {h.netns}",
                      f"link set dev {h.veth} master {self.bridge}",
                      f"link set dev {h.veth} up"])
            ip_batch([f"link set dev {h.peer} name eth0",
                      f"addr add {h.ip}/{bits} dev eth0",
                      "link set dev eth0 up", "link set dev lo up"], netns=h.netns)
            h.data_dir.mkdir(parents=True, exist_ok=True)

    def route_pods(self, routes: dict[str, str]) -> None:
        """Route node pod ranges (podCIDR -> host address) from the root namespace, so pods
        answer from the machine itself. Only ranges inside `pod_net`, only via our hosts."""
        ours = {h.ip for h in self.hosts}
        commands = []
        for cidr, via in routes.items():
            net = ipaddress.ip_network(cidr, strict=False)
            if self.pod_net is None or not net.subnet_of(self.pod_net) or via not in ours:  # type: ignore[arg-type]
                raise ValueError(f"{cidr} via {via} is not a pod range of this network")
            commands.append(f"route replace {net} via {via} proto {self.proto} "
                            f"metric {self.proto}")
        if commands:
            ip_batch(commands)

    def routes(self) -> list[str]:
        """This network's routes in the root namespace (`dst` or `unreachable dst`)."""
        if self.pod_net is None:
            return []
        out = run("ip", "-4", "-j", "route", "show", "proto", str(self.proto)).stdout
        found = []
        for route in json.loads(out or "[]"):
            try:
                dst = ipaddress.ip_network(route.get("dst", ""), strict=False)
            except ValueError:
                continue
            if dst.subnet_of(self.pod_net) and route.get("metric") == self.proto:  # type: ignore[arg-type]
                found.append(("unreachable " if route.get("type") == "unreachable" else "")
                             + str(dst) + (f" via {route['gateway']}"
                                           if route.get("gateway") else ""))
        return found

    def cleanup_nodes(self, timeout: float = 120) -> list[str]:
        """`dockyard cleanup` for every node, inside its host (all at once: each is mostly
        Python starting up); what failed, and agent routes still in a host."""
        left: list[str] = []
        procs = []
        for h in self.hosts:
            cleanup = [*DOCKYARD, "cleanup", "--data-dir", str(h.data_dir)]
            if h.exists:
                cleanup = h.argv(*cleanup)
            # (else the host was never made: clean what the root namespace may hold)
            procs.append((h, subprocess.Popen(cleanup, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, text=True)))
        for h, proc in procs:
            _, err = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                left.append(f"cleanup of {h.node_name} failed: {err[-500:]}")
            if h.exists:
                left += [f"route in {h.netns}: {dst}" for dst in h.pod_routes()]
        return left

    def remove(self) -> None:
        """Delete our root-namespace routes, the hosts, their veths and the bridge (whatever
        of them exists)."""
        routes = self.routes()
        if routes:
            ip_batch([f"route del {r.removeprefix('unreachable ').split()[0]} "
                      f"proto {self.proto} metric {self.proto}" for r in routes], force=True)
        for h in self.hosts:
            if h.exists:
                run("ip", "netns", "del", h.netns, check=False)
        ip_batch([f"link del dev {h.veth}" for h in self.hosts]
                 + [f"link del dev {self.bridge}"], force=True)

    def to_json(self) -> dict:
        return {"prefix": self.prefix, "net": str(self.net),
                "podNet": str(self.pod_net) if self.pod_net else "",
                "hosts": [h.to_json() for h in self.hosts]}

    @classmethod
    def from_json(cls, data: dict) -> HostNetwork:
        return cls(data["prefix"], ipaddress.ip_network(data["net"]),  # type: ignore[arg-type]
                   [NodeHost.from_json(h) for h in data["hosts"]],
                   ipaddress.ip_network(data["podNet"]) if data.get("podNet") else None)  # type: ignore[arg-type]
