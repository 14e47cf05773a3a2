"""A multi-node cluster on one machine: each node a "host" of its own (a network namespace).

    root namespace:  bridge <P>mb (10.x.y.1/24) ── control plane (`dockyard server`, 0.0.0.0)
                       │ veth <P>v1     │ veth <P>v2     │ veth <P>v3
    netns <P>h1: eth0 .11   <P>h2: eth0 .12   <P>h3: eth0 .13
                 agent node-1      agent node-2      agent node-3   (Host.argv)

P is the cluster prefix of the server's data directory, so parallel tests never share a name;
the hosts' /24 is picked among ranges no route on this machine overlaps. Agents join with a
token from `dockyard token create` as a user would, each with its own data directory. `stop()`
stops everything, runs `dockyard cleanup` for every node inside its host, removes the hosts and
the bridge, and returns whatever is left (expected: nothing).
"""

from __future__ import annotations

import ipaddress
import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.network.routes import route_protocol
from dockyard.runtime.naming import cluster_prefix
from tests.conftest import ServerProcess
from tests.hostcheck import leftovers

DOCKYARD = [sys.executable, "-m", "dockyard.cli.main"]

# Enter a host: its network namespace and a new mount namespace (slave of the machine's) with a
# sysfs of that network namespace on /sys, so /sys/class/net shows the host's interfaces, and
# the machine's cgroup hierarchies bound under it. (`ip netns exec` mounts a new sysfs too but
# drops /sys/fs/cgroup, and runc needs it.)
_ENTER = ('set -e; t=$(mktemp -d -p "$DY_TMP"); mount -t sysfs sysfs "$t"; '
          'mount --rbind /sys/fs/cgroup "$t/fs/cgroup"; mount --move "$t" /sys; rmdir "$t"; '
          'exec "$@"')


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def _ip_batch(commands: list[str], netns: str = "", force: bool = False) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *(["-force"] if force else []),
            "-batch", "-"]
    result = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0 and not force:
        raise RuntimeError(f"ip {' / '.join(commands)}: {result.stderr.strip()}")


def _routed_networks() -> list[ipaddress.IPv4Network]:
    out = _run("ip", "-4", "route", "show", "table", "all").stdout
    nets = []
    for line in out.splitlines():
        words = line.split()
        word = words[1] if words and words[0] in ("local", "broadcast") else (words or [""])[0]
        try:
            nets.append(ipaddress.ip_network(word if "/" in word else f"{word}/32",
                                             strict=False))
        except ValueError:
            continue
    return [n for n in nets if n.prefixlen > 0 and n.version == 4]


def free_networks(*prefixlens: int) -> list[ipaddress.IPv4Network]:
    """Networks of the given sizes in 10.200.0.0/13, overlapping no route and each other."""
    used = _routed_networks()
    space = ipaddress.ip_network("10.200.0.0/13")
    picked: list[ipaddress.IPv4Network] = []
    for prefixlen in prefixlens:
        candidates = list(space.subnets(new_prefix=prefixlen))
        for _ in range(500):
            net = random.choice(candidates)
            if not any(net.overlaps(other) for other in [*used, *picked]):
                picked.append(net)
                break
        else:
            raise RuntimeError(f"no free /{prefixlen} in {space}")
    return picked


@dataclass
class Host:
    """One node's host: a network namespace on the test bridge, and the agent in it."""

    index: int
    netns: str
    veth: str
    ip: str
    data_dir: Path
    node_name: str
    proc: subprocess.Popen | None = None

    @property
    def prefix(self) -> str:
        return cluster_prefix(self.data_dir)

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.node_name}.log"

    def argv(self, *argv: str) -> list[str]:
        """`argv` run inside this host (see _ENTER)."""
        return ["env", f"DY_TMP={self.data_dir.parent}", "nsenter",
                f"--net=/run/netns/{self.netns}", "unshare", "--mount", "--propagation", "slave",
                "sh", "-c", _ENTER, "sh", *argv]

    def ip_cmd(self, *args: str) -> subprocess.CompletedProcess:
        return _run("ip", "-n", self.netns, *args)

    def pod_routes(self) -> dict[str, str]:
        """This host's routes to other nodes' pods (ours only): dst -> gateway."""
        out = self.ip_cmd("-j", "route", "show", "proto", str(route_protocol(self.prefix)))
        return {r["dst"]: r.get("gateway", "") for r in json.loads(out.stdout or "[]")}

    def sysctl(self, name: str) -> str:
        return _run(*self.argv("cat", f"/proc/sys/{name.replace('.', '/')}")).stdout.strip()


@dataclass
class MultiNodeCluster:
    base: Path
    nodes: int = 3
    server: ServerProcess = field(init=False)
    hosts: list[Host] = field(default_factory=list)
    join_command: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server_dir = self.base / "server"
        self.server_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = cluster_prefix(self.server_dir)
        self.bridge = f"{self.prefix}mb"
        host_net, cluster_net = free_networks(24, 22)
        self.host_net = host_net
        self.cluster_cidr = str(cluster_net)  # room for four /24 node ranges
        self.gateway = str(host_net.network_address + 1)
        for i in range(1, self.nodes + 1):
            self.hosts.append(Host(
                index=i, netns=f"{self.prefix}h{i}", veth=f"{self.prefix}v{i}",
                ip=str(host_net.network_address + 10 + i),
                data_dir=self.base / f"node{i}" / "data", node_name=f"node-{i}"))
        self.server = ServerProcess(self.server_dir, extra_args=[
            "--bind-address", "0.0.0.0", "--tls-san", self.gateway,
            "--cluster-cidr", self.cluster_cidr, "--node-cidr-mask-size", "24"])

    # -- the network -----------------------------------------------------------------------

    def make_network(self) -> None:
        bits = self.host_net.prefixlen
        _ip_batch([f"link add name {self.bridge} type bridge",
                   f"addr add {self.gateway}/{bits} dev {self.bridge}",
                   f"link set dev {self.bridge} up"])
        for h in self.hosts:
            peer = f"{self.prefix}p{h.index}"
            _run("ip", "netns", "add", h.netns)
            _ip_batch([f"link add name {h.veth} type veth peer name {peer}",
                       f"link set dev {peer} netns {h.netns}",
                       f"link set dev {h.veth} master {self.bridge}",
                       f"link set dev {h.veth} up"])
            _ip_batch([f"link set dev {peer} name eth0",
                       f"addr add {h.ip}/{bits} dev eth0",
                       "link set dev eth0 up", "link set dev lo up"], netns=h.netns)
            h.data_dir.mkdir(parents=True, exist_ok=True)

    # -- processes -------------------------------------------------------------------------

    def create_token(self, *extra: str) -> list[str]:
        """`dockyard token create`: the printed `dockyard agent ...` command, split."""
        out = _run(*DOCKYARD, "token", "create", "--data-dir", str(self.server_dir), *extra)
        words = out.stdout.split()
        assert words[:2] == ["dockyard", "agent"], out.stdout
        return words[2:]

    def start_agent(self, h: Host, join: list[str] | None = None) -> None:
        join = self.join_command if join is None else join
        log = open(h.log, "ab")
        h.proc = subprocess.Popen(
            h.argv(*DOCKYARD, "agent", *join,
             "--node-name", h.node_name, "--node-ip", h.ip, "--data-dir", str(h.data_dir),
             "--agent-port", "0", "--pod-max-pids", "64", "--crash-backoff", "1s,8s"),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop_agent(self, h: Host) -> None:
        if h.proc and h.proc.poll() is None:
            h.proc.send_signal(signal.SIGTERM)
            try:
                h.proc.wait(15)
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait()

    def start(self) -> None:
        self.make_network()
        self.server.start(timeout=30)
        self.join_command = self.create_token()
        for h in self.hosts:
            self.start_agent(h)

    def kubectl(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.server.kubectl(*args, **kwargs)  # type: ignore[arg-type]

    def node(self, name: str) -> dict:
        out = self.kubectl("get", "node", name, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def wait_ready(self, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for h in self.hosts:
                if h.proc and h.proc.poll() is not None:
                    raise RuntimeError(f"agent {h.node_name} exited: {h.log.read_text()[-3000:]}")
            nodes = [self.node(h.node_name) for h in self.hosts]
            if all(_ready(n) and n["spec"].get("podCIDR") for n in nodes):
                return nodes
            time.sleep(0.25)
        raise AssertionError("nodes not Ready: " + " | ".join(
            h.log.read_text()[-1500:] for h in self.hosts if h.log.exists()))

    # -- teardown --------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop, clean up, remove the hosts and the bridge; return what is left behind."""
        for h in self.hosts:
            if h.proc and h.proc.poll() is None:
                h.proc.send_signal(signal.SIGTERM)
        for h in self.hosts:
            self.stop_agent(h)
        self.server.stop()
        left: list[str] = []
        cleanups = []
        for h in self.hosts:  # all at once: each is mostly Python starting up
            cleanup = [*DOCKYARD, "cleanup", "--data-dir", str(h.data_dir)]
            if Path(f"/run/netns/{h.netns}").exists():
                cleanup = h.argv(*cleanup)
            # (else the host was never made: clean what the root namespace may hold)
            cleanups.append((h, subprocess.Popen(cleanup, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.PIPE, text=True)))
        for h, proc in cleanups:
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                left.append(f"cleanup of {h.node_name} failed: {err[-500:]}")
            if Path(f"/run/netns/{h.netns}").exists():
                left += [f"route in {h.netns}: {dst}" for dst in h.pod_routes()]
        for h in self.hosts:
            _run("ip", "netns", "del", h.netns, check=False)
        _ip_batch([f"link del dev {h.veth}" for h in self.hosts]
                  + [f"link del dev {self.bridge}"], force=True)
        left += leftovers(self.prefix, self.server_dir)
        for h in self.hosts:
            left += leftovers(h.prefix, h.data_dir)
        return left


def _ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])
