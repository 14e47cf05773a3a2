"""What the runtime started, on disk, so a new agent process adopts it with the same answers.

Layout under the runtime's state directory:

    sandboxes/<id>/record.json   the sandbox (pod uid, names, netns, pause pid, shim pid)
    containers/<id>/             the container's bundle: record.json, config.json, rootfs
                                 (the overlay mount point), upper/, work/, runc.log
    exits/<id>.json              written by the shim of a container or pause process when
                                 it exits

An exit record is the only place an exit is known, so it is written by the shim (not the
agent) and survives any number of agent restarts. Exit records sit in one directory so one
inotify watch sees every exit. Records are replaced atomically
(write + rename): a crash leaves the old or the new record, never half of one. They are not
fsynced: a power loss ends the containers too, and the agent recreates pods from the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dockyard.runtime.cri import ContainerState, ContainerStatus, SandboxState, SandboxStatus


@dataclass
class SandboxRecord:
    id: str
    pod_uid: str
    pod_name: str
    namespace: str
    hostname: str
    netns_path: str | None
    cgroups_path: str
    created_at: float
    labels: dict[str, str] = field(default_factory=dict)
    pid: int = 0  # the pause process, as the host sees it
    shim_pid: int = 0
    shim_start: int = 0  # the shim's start time (/proc/<pid>/stat), tells it from a reused pid
    stopped: bool = False


@dataclass
class ContainerRecord:
    id: str
    sandbox_id: str
    pod_uid: str
    name: str
    attempt: int
    image_ref: str
    image_id: str
    log_path: str
    cgroups_path: str
    created_at: float
    labels: dict[str, str] = field(default_factory=dict)
    tty: bool = False
    paused: bool = False
    started_at: float = 0.0
    pid: int = 0
    shim_pid: int = 0
    shim_start: int = 0


@dataclass(frozen=True)
class ExitRecord:
    """How a container's init ended, as its shim saw it (or as the runtime inferred it)."""

    pid: int
    exit_code: int  # the exit status, or 128 + the signal that killed it
    signal: int = 0
    oom_killed: bool = False
    finished_at: float = 0.0  # epoch seconds
    message: str = ""

    @property
    def reason(self) -> str:
        if self.oom_killed:
            return "OOMKilled"
        return "Completed" if self.exit_code == 0 else "Error"

    @classmethod
    def parse(cls, text: str) -> ExitRecord:
        raw = json.loads(text)
        return cls(pid=int(raw.get("pid", 0)), exit_code=int(raw["exit_code"]),
                   signal=int(raw.get("signal", 0)), oom_killed=bool(raw.get("oom_killed")),
                   finished_at=int(raw.get("finished_ns", 0)) / 1e9,
                   message=str(raw.get("message", "")))

    def dump(self) -> str:
        return json.dumps({"pid": self.pid, "exit_code": self.exit_code, "signal": self.signal,
                           "oom_killed": self.oom_killed,
                           "finished_ns": int(self.finished_at * 1e9),
                           "message": self.message}) + "\n"


def container_status(rec: ContainerRecord, exit: ExitRecord | None) -> ContainerStatus:
    """A container's CRI status from its record and its exit record (if it exited)."""
    common: dict[str, Any] = dict(
        id=rec.id, sandbox_id=rec.sandbox_id, name=rec.name, attempt=rec.attempt,
        image_ref=rec.image_ref, image_id=rec.image_id, created_at=rec.created_at,
        started_at=rec.started_at, pid=rec.pid, log_path=Path(rec.log_path),
        labels=dict(rec.labels))
    if exit is not None:
        return ContainerStatus(state=ContainerState.EXITED, finished_at=exit.finished_at,
                               exit_code=exit.exit_code, reason=exit.reason,
                               message=exit.message, **common)
    state = ContainerState.RUNNING if rec.started_at else ContainerState.CREATED
    return ContainerStatus(state=state, **common)


def sandbox_status(rec: SandboxRecord, exit: ExitRecord | None) -> SandboxStatus:
    ready = not rec.stopped and exit is None and rec.pid > 0
    return SandboxStatus(id=rec.id, pod_uid=rec.pod_uid, pod_name=rec.pod_name,
                         namespace=rec.namespace,
                         state=SandboxState.READY if ready else SandboxState.NOTREADY,
                         created_at=rec.created_at, pid=rec.pid, netns_path=rec.netns_path)


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _load(cls: Any, path: Path) -> Any:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in known})  # newer fields: ignored


class RecordStore:
    """Records of one runtime state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sandboxes = root / "sandboxes"
        self.containers = root / "containers"
        self.exits = root / "exits"

    def create_dirs(self) -> None:
        for d in (self.sandboxes, self.containers, self.exits):
            d.mkdir(parents=True, exist_ok=True)

    # Sandboxes
    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.sandboxes / sandbox_id

    def sandbox_exit_path(self, sandbox_id: str) -> Path:
        return self.exits / f"{sandbox_id}.json"

    def save_sandbox(self, rec: SandboxRecord) -> None:
        self.sandbox_dir(rec.id).mkdir(parents=True, exist_ok=True)
        write_atomic(self.sandbox_dir(rec.id) / "record.json", json.dumps(asdict(rec)))

    def load_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        return _load(SandboxRecord, self.sandbox_dir(sandbox_id) / "record.json")

    def list_sandboxes(self) -> list[SandboxRecord]:
        return [r for d in _subdirs(self.sandboxes) if (r := self.load_sandbox(d))]

    def delete_sandbox(self, sandbox_id: str) -> None:
        self.sandbox_exit_path(sandbox_id).unlink(missing_ok=True)
        shutil.rmtree(self.sandbox_dir(sandbox_id), ignore_errors=True)

    # Containers
    def container_dir(self, container_id: str) -> Path:
        return self.containers / container_id

    def exit_path(self, container_id: str) -> Path:
        return self.exits / f"{container_id}.json"

    def save_container(self, rec: ContainerRecord) -> None:
        self.container_dir(rec.id).mkdir(parents=True, exist_ok=True)
        write_atomic(self.container_dir(rec.id) / "record.json", json.dumps(asdict(rec)))

    def load_container(self, container_id: str) -> ContainerRecord | None:
        return _load(ContainerRecord, self.container_dir(container_id) / "record.json")

    def list_containers(self) -> list[ContainerRecord]:
        return [r for d in _subdirs(self.containers) if (r := self.load_container(d))]

    def delete_container(self, container_id: str) -> None:
        """Forget a container (its directory must not hold a mount any more)."""
        self.exit_path(container_id).unlink(missing_ok=True)
        shutil.rmtree(self.container_dir(container_id), ignore_errors=True)

    # Exits
    def exited_container_ids(self) -> set[str]:
        try:
            names = os.listdir(self.exits)
        except FileNotFoundError:
            return set()
        return {n[:-5] for n in names if n.endswith(".json") and not n.startswith(".")}

    @staticmethod
    def read_exit(path: Path) -> ExitRecord | None:
        try:
            return ExitRecord.parse(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError) as e:  # only a foreign hand can produce this
            return ExitRecord(pid=0, exit_code=255, message=f"unreadable exit record: {e}")

    @staticmethod
    def write_exit(path: Path, exit: ExitRecord) -> None:
        """For exits the shim could not record (it was killed): the runtime records them."""
        write_atomic(path, exit.dump())


def _subdirs(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir())
    except FileNotFoundError:
        return []


class ExitWatcher:
    """Wakes waiters when an exit record appears (inotify on the exits directory).

    The shim writes `<id>.json.tmp` and renames it to `<id>.json`, so IN_MOVED_TO marks a
    complete record. Waiters compare a generation counter, so an exit that lands between a
    scan and the wait is never missed. Without inotify, a 100 ms poll bumps the counter.
    """

    IN_MOVED_TO = 0x00000080
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.generation = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._fd = -1
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(self.directory),
                                              self.IN_MOVED_TO) >= 0:
            self._fd = fd
            loop.add_reader(fd, self._on_events)
            return
        if fd >= 0:
            os.close(fd)
        self._poller = asyncio.create_task(self._poll())

    def close(self) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        self._wake()

    def _on_events(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fd, 65536):
                pass
        self._wake()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self._wake()

    def _wake(self) -> None:
        self.generation += 1
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def changed(self, since: int, timeout: float) -> bool:
        """Wait until the generation moves past `since`; False on timeout."""
        if self.generation != since:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, max(timeout, 0))
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def wait_for(self, path: Path, timeout: float) -> bool:
        """Wait until `path` (an exit record in the watched directory) exists."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            since = self.generation
            if path.exists():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self.changed(since, remaining):
                return path.exists()
