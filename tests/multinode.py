"""A multi-node cluster on one machine for tests: each node a "host" of its own (a network
namespace), as `dockyard cluster up` makes it (dockyard/cluster/), but with the processes as
children of the test so it can stop, restart and read them one by one.

    root namespace:  bridge <P>mb (10.x.y.1/24) ── control plane (`dockyard server`, 0.0.0.0)
                       │ veth <P>v1     │ veth <P>v2     │ veth <P>v3
    netns <P>h1: eth0 .11   <P>h2: eth0 .12   <P>h3: eth0 .13
                 agent node-1      agent node-2      agent node-3   (Host.argv)

P is the cluster prefix of the server's data directory, so parallel tests never share a name;
the hosts' /24 and the pods' /22 are picked among ranges no route on this machine overlaps (the
/22 is then held by an `unreachable` route, dockyard/cluster/hosts.py). Agents join with a
token from `dockyard token create` as a user would, each with its own data directory. `stop()`
stops everything, runs `dockyard cleanup` for every node inside its host, removes the hosts,
the bridge and the routes, and returns whatever is left (expected: nothing).
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

from dockyard.cluster.hosts import DOCKYARD, HostNetwork, NodeHost, free_networks
from dockyard.cluster.local import agent_argv, create_token, node_ready
from dockyard.runtime.naming import cluster_prefix
from tests.conftest import ServerProcess
from tests.hostcheck import leftovers

__all__ = ["DOCKYARD", "Host", "MultiNodeCluster", "free_networks"]


@dataclass
class Host(NodeHost):
    """One node's host (dockyard/cluster/hosts.py) and the agent the test runs in it."""

    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.node_name}.log"


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
        host_net, cluster_net = free_networks(24, 22)
        self.host_net: ipaddress.IPv4Network = host_net
        self.cluster_cidr = str(cluster_net)  # room for four /24 node ranges
        self.network = HostNetwork.plan(self.prefix, host_net, self.base, self.nodes,
                                        pod_net=cluster_net)
        self.hosts = [Host(**{f.name: getattr(h, f.name) for f in fields(NodeHost)})
                      for h in self.network.hosts]
        self.network.hosts = list(self.hosts)
        self.bridge = self.network.bridge
        self.gateway = self.network.gateway
        self.server = ServerProcess(self.server_dir, extra_args=[
            "--bind-address", "0.0.0.0", "--tls-san", self.gateway,
            "--cluster-cidr", self.cluster_cidr, "--node-cidr-mask-size", "24"])

    # -- the network -----------------------------------------------------------------------

    def make_network(self) -> None:
        self.network.create()

    # -- processes -------------------------------------------------------------------------

    def create_token(self, *extra: str) -> list[str]:
        """`dockyard token create`: the printed `dockyard agent ...` command, split."""
        return create_token(self.server_dir, *extra)

    def start_agent(self, h: Host, join: list[str] | None = None) -> None:
        join = self.join_command if join is None else join
        log = open(h.log, "ab")
        h.proc = subprocess.Popen(
            agent_argv(h, join, "--agent-port", "0", "--pod-max-pids", "64",
                       "--crash-backoff", "1s,8s"),
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
            if all(node_ready(n) and n["spec"].get("podCIDR") for n in nodes):
                return nodes
            time.sleep(0.25)
        raise AssertionError("nodes not Ready: " + " | ".join(
            h.log.read_text()[-1500:] for h in self.hosts if h.log.exists()))

    # -- teardown --------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop, clean up, remove the hosts, the bridge and the routes; return what is left."""
        for h in self.hosts:
            if h.proc and h.proc.poll() is None:
                h.proc.send_signal(signal.SIGTERM)
        for h in self.hosts:
            self.stop_agent(h)
        self.server.stop()
        left = self.network.cleanup_nodes()
        self.network.remove()
        left += [f"route {r}" for r in self.network.routes()]
        left += leftovers(self.prefix, self.server_dir)
        for h in self.hosts:
            left += leftovers(h.prefix, h.data_dir)
        return left


def ip_forward() -> str:
    """The machine's own forwarding setting, which no test may change."""
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


@contextmanager
def running_cluster(base: Path, nodes: int = 3) -> Iterator[MultiNodeCluster]:
    """A started cluster whose nodes are Ready; on exit it is stopped, and nothing may be left
    on the host and the machine's ip_forward must be as before."""
    forwarding_before = ip_forward()
    cluster = MultiNodeCluster(base, nodes=nodes)
    try:
        cluster.start()
        cluster.wait_ready()
        yield cluster
    finally:
        left = cluster.stop()
        assert left == [], left
        assert ip_forward() == forwarding_before
