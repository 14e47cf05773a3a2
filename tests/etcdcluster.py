"""Real etcd members on loopback for tests: 1 or 3 `etcd` processes in a temporary directory.

Each member gets free client and peer ports on 127.0.0.1 and its own data directory, so tests
running in parallel never share an etcd. `stop()` (or leaving the `with` block) ends every
member this helper started, by pid; `kill(i)` / `start_member(i)` simulate a member failure.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dockyard.cluster.etcd import EtcdMember, free_port


def etcd_binary() -> str | None:
    """The etcd binary, or None (tests that need it are skipped)."""
    return shutil.which("etcd")


@dataclass
class ChildMember(EtcdMember):
    """A member this helper runs as a child process (so tests can kill and restart it)."""

    proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return Path(self.data_dir).parent / f"{self.name}.log"


@dataclass
class EtcdCluster:
    """`size` members forming one cluster; `datastore` is the URL `dockyard server` takes."""

    base_dir: Path
    size: int = 1
    members: list[ChildMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        if etcd_binary() is None:
            raise RuntimeError("etcd not found: apt-get install etcd-server")
        self.token = f"dockyard-test-{self.base_dir.name}"
        self.members = [
            ChildMember(f"m{i}", str(self.base_dir / f"m{i}"), free_port(), free_port())
            for i in range(self.size)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def datastore(self) -> str:
        return "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for attempt in range(3):
            for index in range(self.size):
                self.start_member(index, wait=False)
            try:
                self.wait_healthy(timeout)
                return self
            except RuntimeError as exc:
                self.stop()
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
            # Another process took a port between free_port() and etcd's bind: new ports.
            for member in self.members:
                shutil.rmtree(member.data_dir, ignore_errors=True)
                member.client_port, member.peer_port = free_port(), free_port()
        return self

    def start_member(self, index: int, *, wait: bool = True, timeout: float = 20.0) -> None:
        """(Re)start one member from its data directory (a restart rejoins the cluster)."""
        member = self.members[index]
        member.log_path.parent.mkdir(parents=True, exist_ok=True)
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        log = open(member.log_path, "ab")
        member.proc = subprocess.Popen(member.argv(initial, self.token), stdout=log,
                                       stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self._wait(lambda: member.healthy(), timeout, member)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        for member in self.members:
            if member.proc is not None:
                self._wait(member.healthy, timeout, member)

    def _wait(self, ready, timeout: float, member: ChildMember) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not member.running:
                raise RuntimeError(f"etcd {member.name} exited: {self.log(member)}")
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd {member.name} not healthy after {timeout}s: {self.log(member)}")

    def log(self, member: ChildMember) -> str:
        path = member.log_path
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def status(self, index: int) -> dict:
        member = self.members[index]
        return httpx.post(f"{member.client_url}/v3/maintenance/status", json={},
                          timeout=2).json()

    def leader(self, timeout: float = 10.0) -> int:
        """Index of the running member that is the raft leader (waits out an election)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, member in enumerate(self.members):
                if not member.running:
                    continue
                try:
                    status = self.status(index)
                except (httpx.HTTPError, ValueError):
                    continue
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return index
            if time.monotonic() > deadline:
                raise RuntimeError("no etcd member is the leader")
            time.sleep(0.05)

    def make_leader(self, index: int, timeout: float = 10.0) -> None:
        """Move raft leadership to member `index` (etcdctl move-leader)."""
        deadline = time.monotonic() + timeout
        while (current := self.leader()) != index:
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd member {index} did not become leader")
            target = self.status(index)["header"]["member_id"]
            httpx.post(f"{self.members[current].client_url}/v3/maintenance/transfer-leadership",
                       json={"targetID": target}, timeout=5)
            time.sleep(0.1)

    def kill(self, index: int) -> None:
        """SIGKILL one member, as a crash would."""
        self._end(self.members[index], signal.SIGKILL)

    def stop(self) -> None:
        for member in self.members:
            self._end(member, signal.SIGTERM)

    @staticmethod
    def _end(member: ChildMember, sig: int) -> None:
        proc, member.proc = member.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
