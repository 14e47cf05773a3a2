"""The runtime service the node agent drives: pod sandboxes and containers, CRI-shaped.

The agent (dockyard/kubelet) decides *what* should run; an implementation of
`ContainerRuntime` (runtime/service.py over runc) decides *how*. Everything here is plain
data, so the agent's logic is tested against a fake runtime and the runtime is tested with
real runc, each through this one interface.

Lifecycles:
- sandbox: run_sandbox (pause process holding the pod's IPC and UTS namespaces, joined to the
  network namespace the agent prepared) → stop_sandbox → remove_sandbox.
- container: create_container → start_container → (exits or stop_container) →
  remove_container. A container is never restarted: the agent creates attempt N+1.

Containers outlive the agent: their parent is a tiny native shim (about 1 MB), not the agent.
All state needed to find them again is recorded under the runtime's state directory, so a new
agent process gets the same answers from list_sandboxes/list_containers/container_status.

Log files use the CRI format, one line per chunk, e.g.
`2016-10-06T00:17:09.669794202Z stdout F hello`
(tag `F` for a full line, `P` for a partial one that continues on the next record).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

# Labels every container and sandbox carries (as Kubernetes' CRI runtimes), so anyone holding only
# the runtime (the log/exec server, a restarted agent) can find a pod's containers.
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"


class RuntimeFailure(Exception):
    """A runtime operation failed; the message says why in words a user can act on."""


class NotFound(RuntimeFailure):
    """No sandbox or container by that id."""


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


class SandboxState(StrEnum):
    READY = "ready"
    NOTREADY = "notready"


@dataclass(frozen=True)
class Mount:
    """One mount in a container: a bind of a host path, or a fresh tmpfs."""

    container_path: str
    host_path: str = ""
    readonly: bool = False
    kind: str = "bind"  # "bind" | "tmpfs"
    options: tuple[str, ...] = ()  # extra mount options, e.g. ("size=65536k",) for tmpfs


@dataclass(frozen=True)
class Resources:
    """Linux resources of one container, already converted from the pod spec."""

    cpu_shares: int = 2  # from requests.cpu (1000m -> 1024), minimum 2
    cpu_quota: int | None = None  # microseconds per period, from limits.cpu
    cpu_period: int = 100_000
    memory_limit: int | None = None  # bytes, from limits.memory
    pids_limit: int | None = None  # from the agent's --pod-pids-limit (Kubernetes' podPidsLimit)
    oom_score_adj: int = 0


@dataclass(frozen=True)
class Security:
    """What a container may do; the defaults are Docker's/Kubernetes' defaults."""

    privileged: bool = False
    run_as_user: int | None = None  # None: the image's USER (name or uid), else root
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    capabilities_add: tuple[str, ...] = ()  # "NET_ADMIN" or "CAP_NET_ADMIN"; "ALL" allowed
    capabilities_drop: tuple[str, ...] = ()
    read_only_rootfs: bool = False
    no_new_privileges: bool = False  # allowPrivilegeEscalation: false
    seccomp: str = "RuntimeDefault"  # "RuntimeDefault" | "Unconfined" | path to a profile
    masked_paths: bool = True  # procMount Default; False for Unmasked


@dataclass(frozen=True)
class ImageSpec:
    """The image a container runs, resolved by the agent from the local image store."""

    ref: str  # as the pod spec names it, e.g. "busybox"
    image_id: str  # "sha256:<config digest>"
    layer_dirs: tuple[Path, ...]  # unpacked layers, lowest first (overlay lowerdirs reversed)
    user: str = ""  # the image config's User ("", "1000", "nobody", "1000:1000")


@dataclass(frozen=True)
class SandboxConfig:
    pod_uid: str
    pod_name: str
    namespace: str
    hostname: str
    netns_path: str | None  # a prepared network namespace; None: the host's network
    labels: dict[str, str] = field(default_factory=dict)
    pids_limit: int | None = None


@dataclass(frozen=True)
class ContainerConfig:
    """One attempt of one container of a pod, fully resolved by the agent."""

    name: str
    attempt: int  # = restartCount at creation
    image: ImageSpec
    argv: tuple[str, ...]  # entrypoint+cmd already merged with command/args
    env: tuple[str, ...] = ()  # "KEY=value", image env first, pod env after
    working_dir: str = ""  # "" -> the image's WorkingDir or "/"
    mounts: tuple[Mount, ...] = ()
    resources: Resources = Resources()
    security: Security = Security()
    tty: bool = False
    stdin: bool = False
    log_path: Path = Path()  # where the shim writes the CRI-format log
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # recorded, returned in status


@dataclass(frozen=True)
class SandboxStatus:
    id: str
    pod_uid: str
    pod_name: str
    namespace: str
    state: SandboxState
    created_at: float  # epoch seconds
    pid: int = 0
    netns_path: str | None = None


@dataclass(frozen=True)
class ContainerStatus:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    state: ContainerState
    image_ref: str
    image_id: str
    created_at: float = 0.0
    started_at: float = 0.0  # 0.0: never started
    finished_at: float = 0.0  # 0.0: not finished
    exit_code: int = 0
    reason: str = ""  # for EXITED: "Completed" (0), "Error", "OOMKilled"
    message: str = ""
    pid: int = 0
    log_path: Path = Path()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


class ExecSession(Protocol):
    """A running `exec` in a container, streamed (kubectl exec).

    With tty=True there is no separate stderr (a terminal merges them).
    """

    async def write_stdin(self, data: bytes) -> None: ...
    async def close_stdin(self) -> None: ...
    def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """(stream, bytes) chunks: 1 = stdout, 2 = stderr, until both streams end."""
        ...
    async def resize(self, width: int, height: int) -> None: ...
    async def wait(self) -> int:
        """The exit code of the command."""
        ...
    async def kill(self) -> None: ...


@dataclass(frozen=True)
class ContainerStats:
    cpu_usage_ns: int
    memory_usage_bytes: int
    memory_working_set_bytes: int
    pids: int


class ContainerRuntime(Protocol):
    """The operations the node agent needs; runtime/service.py implements them over runc."""

    name: str  # "runc"
    version: str  # e.g. "runc 1.1.5"

    async def start(self) -> None:
        """Prepare state directories and native helpers; adopt what a previous process ran."""
        ...

    async def close(self) -> None:
        """Stop watching; containers keep running."""
        ...

    # Sandboxes
    async def run_sandbox(self, config: SandboxConfig) -> str: ...
    async def stop_sandbox(self, sandbox_id: str) -> None:
        """Kill every container of the sandbox and its pause process (idempotent)."""
        ...
    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Forget a stopped sandbox: runc state, cgroups, records (idempotent)."""
        ...
    async def sandbox_status(self, sandbox_id: str) -> SandboxStatus: ...
    async def list_sandboxes(self) -> list[SandboxStatus]: ...

    # Containers
    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        """Root filesystem (overlay), bundle, `runc create` under the shim; not started."""
        ...
    async def start_container(self, container_id: str) -> None: ...
    async def stop_container(self, container_id: str, timeout: float) -> None:
        """SIGTERM (or the image's StopSignal), SIGKILL after `timeout` seconds; returns once
        the container has exited. Idempotent."""
        ...
    async def remove_container(self, container_id: str) -> None:
        """Delete runc state, unmount and remove the upper directory (keeps the log file)."""
        ...
    async def container_status(self, container_id: str) -> ContainerStatus: ...
    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]: ...
    async def wait_any_exit(self, timeout: float) -> list[str]:
        """Ids of containers that exited since the last call (waits up to `timeout` for one);
        lets the agent react to exits at once instead of polling (PLEG)."""
        ...

    # Exec, stats, freeze
    async def exec_sync(self, container_id: str, argv: list[str], timeout: float,
                        ) -> ExecResult: ...
    async def exec(self, container_id: str, argv: list[str], *, tty: bool, stdin: bool,
                   width: int = 80, height: int = 24) -> ExecSession: ...
    async def stats(self, container_id: str) -> ContainerStats: ...
    async def pause(self, container_id: str) -> None: ...
    async def resume(self, container_id: str) -> None: ...

    # Host hygiene
    async def cleanup_all(self) -> None:
        """Remove every container, sandbox, mount and cgroup of this cluster (prefix)."""
        ...
