"""What the node agent's parts share, and the interfaces between them.

agent.py builds one `AgentContext` and hands it to the pod workers. Each dependency is a
Protocol so the pod lifecycle is unit-tested with fakes and run with the real parts:

- `ContainerRuntime` (runtime/cri.py): sandboxes and containers over runc.
- `ImageProvider` (kubelet/images.py over runtime/images.py): image references to unpacked
  layers, honouring imagePullPolicy.
- `PodNetwork` (network/podnet.py): a network namespace with an IP from the CNI plugins.
- `VolumeManager` (kubelet/volumes.py): pod volumes as host directories, and the mounts of
  each container.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dockyard.client.events import EventRecorder
from dockyard.client.rest import Client
from dockyard.kubelet.config import KubeletConfig
from dockyard.runtime.cri import ContainerRuntime, ImageSpec, Mount

Obj = dict[str, Any]


class ImagePullError(Exception):
    """An image could not be made available. `reason` is the waiting reason the pod shows
    (ErrImageNeverPull, ErrImagePull, InvalidImageName); `message` says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ImageProvider(Protocol):
    async def ensure(self, ref: str, pull_policy: str) -> tuple[ImageSpec, bool]:
        """The image for `ref` (building/pulling it if the policy allows), and whether it was
        already present (for the event: 'Container image "x" already present on machine' vs
        'Successfully pulled image "x" in 1.2s'). Raises ImagePullError."""
        ...

    def image_config(self, spec: ImageSpec) -> Obj:
        """The OCI image config's `config` object (Entrypoint, Cmd, Env, WorkingDir, User,
        StopSignal) for merging with the container spec."""
        ...


@dataclass(frozen=True)
class PodNetworkStatus:
    netns_path: str
    ips: tuple[str, ...]  # pod IPs, first is status.podIP
    gateway: str = ""


class PodNetwork(Protocol):
    async def start(self) -> None:
        """Create the node bridge and CNI configuration (idempotent)."""
        ...

    async def setup(self, pod: Obj) -> PodNetworkStatus:
        """A network namespace for the pod with its interface from the CNI plugins
        (idempotent: a pod already set up gets its existing status)."""
        ...

    async def teardown(self, pod_uid: str) -> None:
        """CNI DEL, then remove the namespace (idempotent)."""
        ...

    async def status(self, pod_uid: str) -> PodNetworkStatus | None:
        """What setup made, from the agent's records (survives an agent restart)."""
        ...

    async def cleanup_all(self) -> None:
        """Remove every namespace, veth and the bridge of this cluster."""
        ...


class VolumeSetupError(Exception):
    """A volume could not be prepared (event FailedMount with this message)."""


class VolumeManager(Protocol):
    async def setup(self, pod: Obj) -> dict[str, Path]:
        """Prepare every volume of the pod (idempotent; configMap/secret/downward API content
        refreshed); volume name -> host path. Raises VolumeSetupError."""
        ...

    def mounts(self, pod: Obj, container: Obj, volumes: dict[str, Path],
               pod_ip: str = "") -> list[Mount]:
        """The container's mounts: its volumeMounts plus /etc/hosts, /etc/hostname,
        /etc/resolv.conf and /dev/shm for the pod."""
        ...

    async def teardown(self, pod_uid: str) -> None:
        """Unmount (tmpfs) and remove every volume directory of the pod (idempotent)."""
        ...


@dataclass
class AgentContext:
    config: KubeletConfig
    client: Client
    runtime: ContainerRuntime
    images: ImageProvider
    network: PodNetwork
    volumes: VolumeManager
    recorder: EventRecorder
    node_ip: str = ""
