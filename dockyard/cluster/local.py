"""`dockyard cluster up|down|status`: a multi-node cluster on one machine, made and removed.

    D/cluster.json         what `up` made (network, hosts, processes by pid): `down` and
                           `status` work from any later process
    D/kubeconfig.yaml      the admin kubeconfig (server 1, at its address on the bridge)
    D/logs/*.log           every process's output
    D/etcd/etcd-<i>/       etcd members (--datastore etcd), on loopback
    D/server<i>/           API servers, in the root namespace, bound on the bridge address
    D/node<i>/data/        node agents, each in its own host (hosts.py), joined with a token

`up` records each piece in cluster.json before making it, so whatever a failed `up` made,
`down` removes. The processes run detached (process.py) and outlive the command.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from dockyard.cluster import etcd, process
from dockyard.cluster.hosts import DOCKYARD, HostNetwork, NodeHost, free_networks, run
from dockyard.cluster.process import Proc
from dockyard.runtime.naming import cluster_prefix

STATE_FILE = "cluster.json"
Say = Callable[[str], None]


class ClusterError(Exception):
    """`up`/`down` cannot go on; the message says why and what to do."""


# -- the pieces every multi-node setup shares (tests/multinode.py uses them too) -------------


def server_argv(data_dir: Path, network: HostNetwork, *extra: str) -> list[str]:
    """An API server in the root namespace on the bridge address (so it is reachable from
    every host and from this machine), assigning node pod ranges from the pod network."""
    assert network.pod_net is not None
    return [*DOCKYARD, "server", "--data-dir", str(data_dir), "--api-port", "0",
            "--bind-address", network.gateway, "--cluster-cidr", str(network.pod_net),
            "--node-cidr-mask-size", "24", *extra]


def agent_argv(host: NodeHost, join: list[str], *extra: str) -> list[str]:
    """`dockyard agent` inside `host`, joining with `join` (--server, --token, ...)."""
    return host.argv(*DOCKYARD, "agent", *join, "--node-name", host.node_name,
                     "--node-ip", host.ip, "--data-dir", str(host.data_dir), *extra)


def create_token(server_dir: Path, *extra: str) -> list[str]:
    """`dockyard token create` on a server's data directory: the printed `dockyard agent`
    command's arguments (--server URL --token T --ca-cert-hash H)."""
    out = run(*DOCKYARD, "token", "create", "--data-dir", str(server_dir), *extra)
    words = out.stdout.split()
    if words[:2] != ["dockyard", "agent"]:
        raise ClusterError(f"unexpected output of `dockyard token create`: {out.stdout!r}")
    return words[2:]


def with_server(join: list[str], url: str) -> list[str]:
    """The join arguments with another server's URL (all servers share the CA)."""
    out = list(join)
    out[out.index("--server") + 1] = url
    return out


def pod_network_size(nodes: int) -> int:
    """Prefix length of the cluster's pod range: a /24 per node, room for twice the nodes
    (a node that leaves and joins again gets a new range before the old one is reused)."""
    return 24 - max(1, math.ceil(math.log2(2 * nodes)))


@dataclass
class Api:
    """What a client needs from a kubeconfig: URL, CA, admin token (plain httpx)."""

    url: str
    ca_pem: str
    token: str

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Api:
        config = yaml.safe_load(path.read_text())
        cluster = config["clusters"][0]["cluster"]
        return cls(cluster["server"],
                   base64.b64decode(cluster["certificate-authority-data"]).decode(),
                   config["users"][0]["user"]["token"])

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=5,
                            verify=ssl.create_default_context(cadata=self.ca_pem),
                            headers={"Authorization": f"Bearer {self.token}"})

    def ready(self) -> bool:
        try:
            with self.client() as http:
                return http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def nodes(self) -> list[dict]:
        with self.client() as http:
            answer = http.get("/api/v1/nodes")
            answer.raise_for_status()
            return answer.json()["items"]


def node_ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


# -- the recorded state ------------------------------------------------------------------------


@dataclass
class ClusterState:
    data_dir: Path
    network: HostNetwork
    datastore: str = "sqlite"
    servers: int = 1
    etcd_members: list[dict] = field(default_factory=list)
    server_urls: list[str] = field(default_factory=list)
    processes: list[Proc] = field(default_factory=list)
    phase: str = "starting"

    @property
    def path(self) -> Path:
        return self.data_dir / STATE_FILE

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    def save(self) -> None:
        doc = {"version": 1, "phase": self.phase, "datastore": self.datastore,
               "servers": self.servers, "network": self.network.to_json(),
               "etcdMembers": self.etcd_members, "serverURLs": self.server_urls,
               "processes": [p.to_json() for p in self.processes]}
        partial = self.path.with_name(STATE_FILE + ".tmp")
        partial.write_text(json.dumps(doc, indent=2) + "\n")
        partial.replace(self.path)

    @classmethod
    def load(cls, data_dir: Path) -> ClusterState:
        path = data_dir / STATE_FILE
        if not path.exists():
            raise ClusterError(f"no cluster in {data_dir} ({path} does not exist)")
        doc = json.loads(path.read_text())
        return cls(data_dir, HostNetwork.from_json(doc["network"]), doc["datastore"],
                   doc["servers"], doc["etcdMembers"], doc["serverURLs"],
                   [Proc.from_json(p) for p in doc["processes"]], doc["phase"])

    def add(self, proc: Proc) -> Proc:
        self.processes.append(proc)
        self.save()
        return proc

    def kind(self, prefix: str) -> list[Proc]:
        return [p for p in self.processes if p.name.startswith(prefix)]


# -- up ----------------------------------------------------------------------------------------


def up(data_dir: Path, nodes: int, servers: int = 1, datastore: str = "sqlite",
       say: Say = print, timeout: float = 90.0) -> ClusterState:
    """Make the cluster and wait until every node is Ready with its pod range. On failure,
    remove what was made and raise ClusterError (with the logs' tails)."""
    if nodes < 1:
        raise ClusterError("--nodes must be at least 1")
    if servers not in (1, 3):
        raise ClusterError("--servers must be 1 or 3")
    if datastore not in ("sqlite", "etcd"):
        raise ClusterError("--datastore must be sqlite or etcd")
    if servers > 1 and datastore != "etcd":
        raise ClusterError("--servers 3 needs --datastore etcd: the servers share one store "
                           "(SQLite is one server's file)")
    if os.geteuid() != 0:
        raise ClusterError("making network namespaces and running containers needs root")
    data_dir = data_dir.resolve()
    if (data_dir / STATE_FILE).exists():
        raise ClusterError(f"a cluster is already recorded in {data_dir / STATE_FILE}: "
                           f"`dockyard cluster down --data-dir {data_dir}` first")
    data_dir.mkdir(parents=True, exist_ok=True)
    prefix = cluster_prefix(data_dir)
    host_net, pod_net = free_networks(24, pod_network_size(nodes))
    state = ClusterState(data_dir, HostNetwork.plan(prefix, host_net, data_dir, nodes, pod_net),
                         datastore, servers)
    state.save()
    try:
        _up(state, say, timeout)
    except BaseException as exc:
        say("dockyard: cluster up failed; removing what was made")
        left = down(data_dir, say=lambda _: None, keep_logs=True)
        if left:
            say("dockyard: could not remove: " + "; ".join(left))
        if isinstance(exc, ClusterError | RuntimeError):
            raise ClusterError(str(exc)) from None
        raise
    return state


def _up(state: ClusterState, say: Say, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    data_dir, network, logs = state.data_dir, state.network, state.data_dir / "logs"
    say(f"dockyard: bridge {network.bridge} {network.gateway}/{network.net.prefixlen}, "
        f"pods {network.pod_net}, {len(network.hosts)} hosts")
    network.create()

    extra: list[str] = []
    if state.datastore == "etcd":
        members, procs = etcd.start_members(data_dir / "etcd", state.servers, logs,
                                            token=f"dockyard-{network.prefix}")
        state.etcd_members = [m.to_json() for m in members]
        for proc in procs:
            state.add(proc)
        url = etcd.datastore_url(members)
        say(f"dockyard: etcd {url} ({len(members)} member{'s' * (len(members) > 1)})")
        extra = ["--datastore", url]

    # Every server gets the same server token: it seals the cluster PKI in etcd (the first
    # server to start publishes it, the others take it).
    env = dict(os.environ)
    if state.datastore == "etcd":
        env["DOCKYARD_TOKEN"] = secrets.token_hex(24)
    for i in range(1, state.servers + 1):
        server_dir = data_dir / f"server{i}"
        server_dir.mkdir(parents=True, exist_ok=True)
        (server_dir / "kubeconfig.yaml").unlink(missing_ok=True)
        state.add(process.start_detached(f"server-{i}", server_argv(server_dir, network, *extra),
                                         logs / f"server-{i}.log", env=env))
    for i, proc in enumerate(state.kind("server-"), 1):
        api = _wait_server(data_dir / f"server{i}", proc, deadline)
        state.server_urls.append(api.url)
        state.save()
        say(f"dockyard: server-{i} at {api.url} (pid {proc.pid})")
    shutil.copyfile(data_dir / "server1" / "kubeconfig.yaml", state.kubeconfig)
    os.chmod(state.kubeconfig, 0o600)

    join = create_token(data_dir / "server1", "--ttl", "1h",
                        "--description", "dockyard cluster up")
    # The join token goes in the environment (DOCKYARD_JOIN_TOKEN), not on command lines.
    token = join.pop(join.index("--token") + 1)
    join.remove("--token")
    agent_env = {**os.environ, "DOCKYARD_JOIN_TOKEN": token}
    for h in network.hosts:  # spread over the servers: any of them answers a join
        url = state.server_urls[(h.index - 1) % len(state.server_urls)]
        state.add(process.start_detached(h.node_name, agent_argv(h, with_server(join, url)),
                                         logs / f"{h.node_name}.log", env=agent_env))
    ready = _wait_nodes(state, deadline)
    network.route_pods({n["spec"]["podCIDR"]: _internal_ip(n) for n in ready})
    for n in ready:
        say(f"dockyard: {n['metadata']['name']} Ready, address {_internal_ip(n)}, "
            f"pods {n['spec']['podCIDR']}")
    state.phase = "up"
    state.save()


def _internal_ip(node: dict) -> str:
    return next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")


def _wait_server(server_dir: Path, proc: Proc, deadline: float) -> Api:
    kubeconfig = server_dir / "kubeconfig.yaml"
    while time.monotonic() < deadline:
        if not proc.alive:
            process.reap([proc])
            raise ClusterError(f"{proc.name} exited:\n{process.log_tail(proc)}")
        if kubeconfig.exists():
            try:
                api = Api.from_kubeconfig(kubeconfig)
            except (yaml.YAMLError, KeyError, IndexError, TypeError):
                api = None  # (still being written)
            if api is not None and api.ready():
                return api
        time.sleep(0.1)
    raise ClusterError(f"{proc.name} not ready in time:\n{process.log_tail(proc)}")


def _wait_nodes(state: ClusterState, deadline: float) -> list[dict]:
    api = Api.from_kubeconfig(state.kubeconfig)
    names = [h.node_name for h in state.network.hosts]
    agents = [p for p in state.processes if p.name in names]
    while True:
        for proc in state.processes:
            if not proc.alive:
                process.reap([proc])
                raise ClusterError(f"{proc.name} exited:\n{process.log_tail(proc)}")
        try:
            by_name = {n["metadata"]["name"]: n for n in api.nodes()}
        except httpx.HTTPError:
            by_name = {}
        ready = [by_name[name] for name in names if name in by_name
                 and node_ready(by_name[name]) and by_name[name]["spec"].get("podCIDR")]
        if len(ready) == len(names):
            return ready
        if time.monotonic() > deadline:
            waiting = [p for p in agents if p.name not in {n["metadata"]["name"] for n in ready}]
            raise ClusterError("nodes not Ready in time: " + " | ".join(
                f"{p.name}: {process.log_tail(p, 1500)}" for p in waiting))
        time.sleep(0.25)


# -- down --------------------------------------------------------------------------------------


def down(data_dir: Path, say: Say = print, keep_logs: bool = True) -> list[str]:
    """Stop every process, clean up every node inside its host, remove hosts, veths, bridge
    and routes, then the cluster's files (not the logs, unless `keep_logs` is false). Returns
    what could not be removed (expected: nothing)."""
    data_dir = data_dir.resolve()
    state = ClusterState.load(data_dir)
    left: list[str] = []
    # Agents and servers first (an agent leaves its containers running; `cleanup` ends them),
    # etcd last, so that no server loses its store while stopping.
    first = [p for p in state.processes if not p.name.startswith("etcd-")]
    last = [p for p in state.processes if p.name.startswith("etcd-")]
    for group, stop in ((first, process.stop), (last, etcd.stop_members)):
        for proc in group:
            if proc.alive:
                say(f"dockyard: stopping {proc.name} (pid {proc.pid})")
        left += [f"process {p.name} (pid {p.pid}) would not stop" for p in stop(group)]
    left += state.network.cleanup_nodes()
    state.network.remove()
    say(f"dockyard: removed hosts {', '.join(h.netns for h in state.network.hosts)}, "
        f"bridge {state.network.bridge} and routes")
    left += [f"route {r}" for r in state.network.routes()]
    left += [f"netns {h.netns}" for h in state.network.hosts if h.exists]
    if not left:
        _remove_files(state, keep_logs)
    return left


def _remove_files(state: ClusterState, keep_logs: bool) -> None:
    """Delete the cluster's data, unless a mount is still under it (never delete through a
    mount: it could be a node's bind mount of anything)."""
    real = os.path.realpath(state.data_dir)
    with open("/proc/self/mountinfo") as mounts:
        if any(line.split()[4].startswith(real + "/") for line in mounts):
            return
    names = [f"node{h.index}" for h in state.network.hosts]
    names += [f"server{i}" for i in range(1, state.servers + 1)] + ["etcd", "kubeconfig.yaml"]
    names += [] if keep_logs else ["logs"]
    for name in names:
        path = state.data_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    state.path.unlink(missing_ok=True)


# -- status ------------------------------------------------------------------------------------


def status_rows(data_dir: Path) -> list[tuple[str, str, str, str, str]]:
    """(KIND, NAME, PID, STATE, DETAIL) of each piece of the cluster."""
    state = ClusterState.load(data_dir.resolve())
    net = state.network
    bridge = Path(f"/sys/class/net/{net.bridge}").exists()
    rows = [("cluster", net.prefix, "-", state.phase,
             f"{len(net.hosts)} nodes, {state.servers} server(s), {state.datastore}"),
            ("bridge", net.bridge, "-", "present" if bridge else "missing",
             f"{net.gateway}/{net.net.prefixlen}")]
    for route in net.routes():
        rows.append(("route", route.removeprefix("unreachable ").split()[0], "-", "present",
                     route))
    by_name = {p.name: p for p in state.processes}

    def proc_row(kind: str, name: str, detail: str) -> tuple[str, str, str, str, str]:
        proc = by_name.get(name)
        if proc is None:
            return (kind, name, "-", "not started", detail)
        return (kind, name, str(proc.pid), "running" if proc.alive else "exited", detail)

    for m in state.etcd_members:
        rows.append(proc_row("etcd", m["name"], f"http://127.0.0.1:{m['client_port']}"))
    for i in range(1, state.servers + 1):
        url = state.server_urls[i - 1] if i <= len(state.server_urls) else ""
        rows.append(proc_row("server", f"server-{i}", url))
    rows.append(("kubeconfig", "admin", "-",
                 "present" if state.kubeconfig.exists() else "missing", str(state.kubeconfig)))
    for h in net.hosts:
        rows.append(("host", h.netns, "-", "present" if h.exists else "missing",
                     f"{h.ip} ({h.veth})"))
        rows.append(proc_row("agent", h.node_name, f"in {h.netns}, {h.data_dir}"))
    return rows
