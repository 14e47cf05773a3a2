"""etcd members for a local cluster: 1 or 3 `etcd` processes (Debian's etcd-server) on loopback.

Each member gets free client and peer ports on 127.0.0.1 and its own data directory; the API
servers reach them as `--datastore etcd://127.0.0.1:P1,127.0.0.1:P2,...`. The members run
detached (process.py) so they outlive `dockyard cluster up`.
"""

from __future__ import annotations

import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from dockyard.cluster.process import Proc, log_tail, start_detached, stop


def etcd_binary() -> str:
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError("etcd not found: apt-get install etcd-server")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EtcdMember:
    name: str
    data_dir: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.client_url}/health", timeout=1).json().get(
                "health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def argv(self, initial_cluster: str, token: str) -> list[str]:
        return [etcd_binary(), "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", initial_cluster, "--initial-cluster-token", token,
                "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn"]

    def to_json(self) -> dict:
        return asdict(self)


def datastore_url(members: list[EtcdMember]) -> str:
    """What `dockyard server --datastore` takes for these members."""
    return "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in members)


def start_members(base: Path, size: int, logs: Path, token: str, timeout: float = 30.0
                  ) -> tuple[list[EtcdMember], list[Proc]]:
    """Start `size` members forming one new cluster and wait until each is healthy. A port
    taken by someone else between picking and binding it means new ports and a new try."""
    for attempt in range(3):
        members = [EtcdMember(f"etcd-{i}", str(base / f"etcd-{i}"), free_port(), free_port())
                   for i in range(1, size + 1)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        procs = []
        for m in members:
            shutil.rmtree(m.data_dir, ignore_errors=True)
            procs.append(start_detached(m.name, m.argv(initial, token),
                                        logs / f"{m.name}.log"))
        try:
            _wait_healthy(members, procs, timeout)
            return members, procs
        except RuntimeError as exc:
            stop_members(procs)
            if "address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def stop_members(procs: list[Proc]) -> list[Proc]:
    """Stop members one after the other: all at once, each waits for the others (a leader
    transfer that cannot happen) and takes ~7 s; one by one, ~0.1 s each. Returns the
    members that would not stop."""
    return [p for proc in procs for p in stop([proc])]


def _wait_healthy(members: list[EtcdMember], procs: list[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for member, proc in zip(members, procs, strict=True):
        while not member.healthy():
            if not proc.alive:
                raise RuntimeError(f"etcd {member.name} exited: {log_tail(proc)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd {member.name} not healthy after {timeout}s: "
                                   f"{log_tail(proc)}")
            time.sleep(0.05)
