"""In-memory fakes of the node agent's dependencies, for unit tests of the pod lifecycle.

`FakeRuntime` implements `ContainerRuntime` without processes: a started container "runs"
until the test (or its `Behavior`) makes it exit; stopping follows SIGTERM/SIGKILL rules
(a container that ignores SIGTERM exits with 137 after the timeout, else with 143); every
operation is appended to `calls`, so tests can check ordering (preStop before SIGTERM).
State lives in the object, so a second agent built on the same runtime sees what the first
one left running (adoption).

`FakeImages`, `FakeNetwork`, `FakeVolumes` stand in for the image store, CNI and volumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.kubelet.context import (
    ImagePullError,
    PodNetworkStatus,
    VolumeSetupError,
)
from dockyard.runtime import naming
from dockyard.runtime.cri import (
    ContainerConfig,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    ImageSpec,
    Mount,
    NotFound,
    RuntimeFailure,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
)

Obj = dict[str, Any]


@dataclass
class Behavior:
    """How a container named so behaves once started."""

    exit_code: int | None = None  # None: runs until stopped
    run_for: float = 0.0  # seconds before it exits with exit_code
    ignore_sigterm: bool = False
    reason: str = ""  # e.g. "OOMKilled"
    attempts: int | None = None  # only attempts below this exit; later ones keep running


@dataclass
class _Sandbox:
    config: SandboxConfig
    id: str
    state: SandboxState = SandboxState.READY
    created_at: float = field(default_factory=time.time)


@dataclass
class _Container:
    id: str
    sandbox_id: str
    config: ContainerConfig
    state: ContainerState = ContainerState.CREATED
    created_at: float = field(default_factory=time.time)
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    reason: str = ""
    timer: asyncio.TimerHandle | None = None

    @property
    def pod_uid(self) -> str:
        return self.config.labels.get("io.kubernetes.pod.uid", "")

    def status(self) -> ContainerStatus:
        return ContainerStatus(
            id=self.id, sandbox_id=self.sandbox_id, name=self.config.name,
            attempt=self.config.attempt, state=self.state, image_ref=self.config.image.ref,
            image_id=self.config.image.image_id, created_at=self.created_at,
            started_at=self.started_at, finished_at=self.finished_at, exit_code=self.exit_code,
            reason=self.reason, log_path=self.config.log_path, labels=dict(self.config.labels))


class FakeRuntime:
    name = "runc"
    version = "fake 1.0"

    def __init__(self, prefix: str = "dyfake00") -> None:
        self.prefix = prefix
        self.sandboxes: dict[str, _Sandbox] = {}
        self.containers: dict[str, _Container] = {}
        self.behaviors: dict[str, Behavior] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.call_times: list[float] = []  # time.monotonic() of each entry of `calls`
        # (container name, argv) -> ExecResult; default: success with no output
        self.exec_handler: Callable[[str, list[str]], ExecResult] | None = None
        self.fail_create: dict[str, str] = {}  # container name -> error message
        self.fail_start: dict[str, str] = {}
        self._exited: list[str] = []
        self._exit_event = asyncio.Event()

    # -- test controls ---------------------------------------------------------------------

    def _call(self, entry: tuple[Any, ...]) -> None:
        self.calls.append(entry)
        self.call_times.append(time.monotonic())

    def find(self, pod_uid: str, name: str) -> list[_Container]:
        """The attempts of one container of a pod, oldest first."""
        return sorted((c for c in self.containers.values()
                       if c.pod_uid == pod_uid and c.config.name == name),
                      key=lambda c: c.config.attempt)

    def running(self, pod_uid: str | None = None) -> list[_Container]:
        return [c for c in self.containers.values() if c.state == ContainerState.RUNNING
                and (pod_uid is None or c.pod_uid == pod_uid)]

    def exit(self, container_id: str, code: int, reason: str = "") -> None:
        """Make a running container exit now."""
        c = self.containers[container_id]
        if c.state != ContainerState.RUNNING:
            return
        if c.timer is not None:
            c.timer.cancel()
        c.state = ContainerState.EXITED
        c.exit_code = code
        c.reason = reason or ("Completed" if code == 0 else "Error")
        c.finished_at = time.time()
        self._call(("exited", c.config.name, code))
        self._exited.append(container_id)
        self._exit_event.set()

    def kill_sandbox(self, pod_uid: str) -> None:
        """The pause process died (the sandbox is not ready any more)."""
        sid = naming.sandbox_id(self.prefix, pod_uid)
        self.sandboxes[sid].state = SandboxState.NOTREADY

    # -- ContainerRuntime ------------------------------------------------------------------

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def run_sandbox(self, config: SandboxConfig) -> str:
        sid = naming.sandbox_id(self.prefix, config.pod_uid)
        self._call(("run_sandbox", config.pod_name))
        old = self.sandboxes.get(sid)
        if old is not None and old.state == SandboxState.READY:
            return sid
        if old is not None:
            await self.remove_sandbox(sid)
        self.sandboxes[sid] = _Sandbox(config, sid)
        return sid

    async def stop_sandbox(self, sandbox_id: str) -> None:
        sb = self._sandbox(sandbox_id)
        self._call(("stop_sandbox", sb.config.pod_name))
        for c in list(self.containers.values()):
            if c.sandbox_id == sandbox_id and c.state == ContainerState.RUNNING:
                self.exit(c.id, 137)
        sb.state = SandboxState.NOTREADY

    async def remove_sandbox(self, sandbox_id: str) -> None:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            return
        await self.stop_sandbox(sandbox_id)
        self._call(("remove_sandbox", sb.config.pod_name))
        for c in list(self.containers.values()):
            if c.sandbox_id == sandbox_id:
                await self.remove_container(c.id)
        del self.sandboxes[sandbox_id]

    async def sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        sb = self._sandbox(sandbox_id)
        return SandboxStatus(id=sb.id, pod_uid=sb.config.pod_uid, pod_name=sb.config.pod_name,
                             namespace=sb.config.namespace, state=sb.state,
                             created_at=sb.created_at, netns_path=sb.config.netns_path)

    async def list_sandboxes(self) -> list[SandboxStatus]:
        return [await self.sandbox_status(sid) for sid in self.sandboxes]

    def _sandbox(self, sandbox_id: str) -> _Sandbox:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise NotFound(f"pod sandbox {sandbox_id} not found")
        return sb

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        sb = self._sandbox(sandbox_id)
        if sb.state != SandboxState.READY:
            raise RuntimeFailure(f"pod sandbox {sandbox_id} is not ready")
        cid = naming.container_id(self.prefix, sb.config.pod_uid, config.name, config.attempt)
        if cid in self.containers:
            raise RuntimeFailure(f"container {config.name} attempt {config.attempt} exists")
        self._call(("create", config.name, config.attempt))
        if config.name in self.fail_create:
            raise RuntimeFailure(self.fail_create[config.name])
        if str(config.log_path) not in ("", "."):
            config.log_path.parent.mkdir(parents=True, exist_ok=True)
            config.log_path.touch()  # the runtime's shim creates the log file
        self.containers[cid] = _Container(cid, sandbox_id, config)
        return cid

    async def start_container(self, container_id: str) -> None:
        c = self._container(container_id)
        self._call(("start", c.config.name, c.config.attempt))
        if c.config.name in self.fail_start:
            raise RuntimeFailure(self.fail_start[c.config.name])
        if c.state != ContainerState.CREATED:
            raise RuntimeFailure(f"container {container_id} is {c.state.value}")
        c.state = ContainerState.RUNNING
        c.started_at = time.time()
        behavior = self.behaviors.get(c.config.name)
        if behavior is not None and behavior.exit_code is not None and \
                (behavior.attempts is None or c.config.attempt < behavior.attempts):
            loop = asyncio.get_running_loop()
            c.timer = loop.call_later(behavior.run_for, self.exit, container_id,
                                      behavior.exit_code, behavior.reason)

    async def stop_container(self, container_id: str, timeout: float) -> None:
        c = self._container(container_id)
        if c.state != ContainerState.RUNNING:
            if c.state == ContainerState.CREATED:
                c.state = ContainerState.EXITED
                c.exit_code, c.reason, c.finished_at = 137, "Error", time.time()
            return
        self._call(("stop", c.config.name, timeout))
        behavior = self.behaviors.get(c.config.name) or Behavior()
        if timeout > 0 and not behavior.ignore_sigterm:
            self.exit(container_id, 143)
            return
        if timeout > 0:
            await asyncio.sleep(timeout)
        self._call(("sigkill", c.config.name))
        self.exit(container_id, 137)

    async def remove_container(self, container_id: str) -> None:
        c = self.containers.get(container_id)
        if c is None:
            return
        if c.state == ContainerState.RUNNING:
            await self.stop_container(container_id, 0)
        self._call(("remove", c.config.name, c.config.attempt))
        del self.containers[container_id]

    async def container_status(self, container_id: str) -> ContainerStatus:
        return self._container(container_id).status()

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        return [c.status() for c in self.containers.values()
                if sandbox_id is None or c.sandbox_id == sandbox_id]

    def _container(self, container_id: str) -> _Container:
        c = self.containers.get(container_id)
        if c is None:
            raise NotFound(f"container {container_id} not found")
        return c

    async def wait_any_exit(self, timeout: float) -> list[str]:
        if not self._exited:
            self._exit_event.clear()
            try:
                await asyncio.wait_for(self._exit_event.wait(), timeout)
            except TimeoutError:
                return []
        out, self._exited = self._exited, []
        return out

    async def exec_sync(self, container_id: str, argv: list[str], timeout: float) -> ExecResult:
        c = self._container(container_id)
        self._call(("exec", c.config.name, tuple(argv)))
        if c.state != ContainerState.RUNNING:
            raise RuntimeFailure(f"container {c.config.name} is not running")
        if self.exec_handler is None:
            return ExecResult(0, b"", b"")
        result = self.exec_handler(c.config.name, list(argv))
        if asyncio.iscoroutine(result):
            result = await result
        return result

    async def exec(self, container_id: str, argv: list[str], *, tty: bool, stdin: bool,
                   width: int = 80, height: int = 24) -> Any:
        raise RuntimeFailure("exec sessions are not faked")

    async def stats(self, container_id: str) -> ContainerStats:
        return ContainerStats(0, 0, 0, 1)

    async def pause(self, container_id: str) -> None:
        pass

    async def resume(self, container_id: str) -> None:
        pass

    async def cleanup_all(self) -> None:
        self.containers.clear()
        self.sandboxes.clear()


class FakeImages:
    """`present` images resolve at once; `pullable` ones are "pulled" on first use."""

    def __init__(self, present: tuple[str, ...] = ("busybox",), pullable: tuple[str, ...] = (),
                 pull_seconds: float = 0.0) -> None:
        self.present = set(present)
        self.pullable = set(pullable)
        self.pull_seconds = pull_seconds
        self.ensured: list[tuple[str, str]] = []

    @staticmethod
    def spec(ref: str) -> ImageSpec:
        return ImageSpec(ref=ref, image_id=f"sha256:{abs(hash(ref)):064x}"[:71], layer_dirs=())

    async def ensure(self, ref: str, pull_policy: str) -> tuple[ImageSpec, bool]:
        self.ensured.append((ref, pull_policy))
        if ref in self.present:
            return self.spec(ref), True
        if pull_policy == "Never":
            raise ImagePullError("ErrImageNeverPull", f'Container image "{ref}" is not present '
                                 "with pull policy of Never")
        if ref not in self.pullable:
            raise ImagePullError("ErrImagePull", f"image {ref} is not known to this node")
        await asyncio.sleep(self.pull_seconds)
        self.present.add(ref)
        return self.spec(ref), False

    def image_config(self, spec: ImageSpec) -> Obj:
        return {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "WorkingDir": "/"}


class FakeNetwork:
    """Every pod gets `ip` (127.0.0.1 by default, so HTTP probes reach a local server)."""

    def __init__(self, ip: str = "127.0.0.1") -> None:
        self.ip = ip
        self.pods: dict[str, PodNetworkStatus] = {}
        self.torn_down: list[str] = []

    async def start(self) -> None:
        pass

    async def setup(self, pod: Obj) -> PodNetworkStatus:
        uid = pod["metadata"]["uid"]
        if uid not in self.pods:
            self.pods[uid] = PodNetworkStatus(netns_path=f"/run/netns/fake-{uid}",
                                              ips=(self.ip,))
        return self.pods[uid]

    async def teardown(self, pod_uid: str) -> None:
        self.torn_down.append(pod_uid)
        self.pods.pop(pod_uid, None)

    async def status(self, pod_uid: str) -> PodNetworkStatus | None:
        return self.pods.get(pod_uid)

    async def cleanup_all(self) -> None:
        self.pods.clear()


class FakeVolumes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.fail: str = ""  # a message: setup raises VolumeSetupError with it
        self.set_up: list[str] = []
        self.torn_down: list[str] = []

    async def setup(self, pod: Obj) -> dict[str, Path]:
        if self.fail:
            raise VolumeSetupError(self.fail)
        uid = pod["metadata"]["uid"]
        self.set_up.append(uid)
        out = {}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            path = self.root / uid / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            out[volume["name"]] = path
        return out

    def mounts(self, pod: Obj, container: Obj, volumes: dict[str, Path],
               pod_ip: str = "") -> list[Mount]:
        return [Mount(container_path=m["mountPath"], host_path=str(volumes[m["name"]]))
                for m in container.get("volumeMounts") or [] if m["name"] in volumes]

    async def teardown(self, pod_uid: str) -> None:
        self.torn_down.append(pod_uid)


class FakeRecorder:
    """Collects events as (type, reason, message) per pod name."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        self.events.append((name, type_, reason, message))

    def of(self, pod: str) -> list[tuple[str, str, str]]:
        return [(t, r, m) for n, t, r, m in self.events if n == pod]

    def reasons(self, pod: str) -> list[str]:
        return [r for _, r, _ in self.of(pod)]

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
