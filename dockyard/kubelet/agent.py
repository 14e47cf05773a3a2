"""The node agent's process-level wiring: build the parts, register, watch this node's pods.

Everything it learns about the cluster comes from the API server (a watch on the pods bound to
this node, GETs of ConfigMaps and Secrets for volumes); everything it knows about what runs here
comes from the runtime's on-disk records. So the agent can be stopped and started at any time:
running containers keep running, and a new agent process adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.events import EventRecorder
from dockyard.client.informer import Handlers, Informer
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.kubelet import nodestatus
from dockyard.kubelet.config import KubeletConfig
from dockyard.kubelet.context import AgentContext
from dockyard.kubelet.heartbeat import NodeHeartbeat

log = logging.getLogger("dockyard.kubelet")
PODS = by_kind("", "Pod")
NODES = by_kind("", "Node")
RESYNC_SECONDS = 30.0  # every pod is synced at least this often, even without events

Obj = dict[str, Any]

_KINDS = {"ConfigMap": by_kind("", "ConfigMap"), "Secret": by_kind("", "Secret")}


@dataclass(frozen=True)
class ServingCredentials:
    """How the agent's HTTPS port (logs, exec) proves itself and whom it lets in."""

    cert: Path
    key: Path
    token: str  # the API server's kubelet-client token


class Kubelet:
    """One node: the parts of AgentContext, the heartbeat, the pod watch and the workers."""

    def __init__(self, client: Client, config: KubeletConfig,
                 serving: ServingCredentials, *, enable_pod_routing: bool = False) -> None:
        self.client = client
        self.config = config
        self.serving = serving
        # Switch ip_forward on even in the host's root network namespace (network/routes.py).
        self.enable_pod_routing = enable_pod_routing
        self.address = config.address or nodestatus.detect_address()
        self.ctx: AgentContext | None = None
        self.port = 0
        self._problems: list[str] = []

    async def _get_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        info = _KINDS.get(kind)
        if info is None:
            raise ValueError(f"the agent does not read {kind} objects")
        try:
            return await self.client.get(info, namespace, name)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise

    async def _build(self) -> AgentContext:
        from dockyard.kubelet.images import LocalImageProvider
        from dockyard.kubelet.volumes import HostVolumeManager
        from dockyard.network.podnet import CniPodNetwork
        from dockyard.runtime.images import ImageStore
        from dockyard.runtime.registryclient import RegistryConfig
        from dockyard.runtime.service import RuncRuntime

        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        runtime = RuncRuntime(cfg.state_dir / "runtime", cfg.prefix,
                              log_max_size=cfg.log_max_size, log_max_files=cfg.log_max_files)
        await runtime.start()
        network = CniPodNetwork(cfg)
        await network.start()
        store = ImageStore(cfg.data_dir / "images")
        self._image_store = store
        # Images this node lacks come from the cluster registry (the API server's /v2/).
        self._image_provider = LocalImageProvider(
            store, registry=RegistryConfig.from_client(self.client))
        recorder = EventRecorder(self.client, "kubelet", host=cfg.node_name)
        recorder.start()
        return AgentContext(config=cfg, client=self.client, runtime=runtime,
                            images=self._image_provider, network=network,
                            volumes=HostVolumeManager(cfg, self._get_object),
                            recorder=recorder, node_ip=self.address)

    def _ready(self) -> tuple[bool, str]:
        if self._problems:
            return False, "; ".join(self._problems)
        return True, ""

    def _images(self) -> list[Obj]:
        out = []
        try:
            for image in self._image_store.list():
                names = list(image.repo_tags) + list(image.repo_digests)
                if names:
                    out.append({"names": names, "sizeBytes": image.size})
        except OSError:
            pass
        return out[:50]  # nodeStatusMaxImages

    async def run(self) -> None:
        """Run until cancelled; containers keep running after it returns."""
        from dockyard.kubelet.podworker import PodWorkers
        from dockyard.kubelet.server import build_agent_app, serve_agent
        from dockyard.network.routes import PodRoutes

        if not self.config.pod_cidr:
            await self._await_pod_cidr()
        ctx = self.ctx = await self._build()
        app = build_agent_app(ctx.runtime, token=self.serving.token)
        server, self.port = await serve_agent(app, host="0.0.0.0",
                                              port=self.config.serving_port,
                                              cert=self.serving.cert, key=self.serving.key)
        heartbeat = NodeHeartbeat(self.client, self.config, address=self.address,
                                  port=self.port, runtime_version=_runtime_version(ctx.runtime.name,
                                                                   ctx.runtime.version),
                                  ready=self._ready, images=self._images)
        workers = PodWorkers(ctx)
        tasks: list[asyncio.Task[Any]] = []
        try:
            await heartbeat.register()
            await workers.start()
            assert PODS is not None
            pods = Informer(self.client, PODS,
                            field_selector=f"spec.nodeName={self.config.node_name}")
            pods.add_handlers(Handlers(on_add=workers.update,
                                       on_update=lambda _old, new: workers.update(new),
                                       on_delete=workers.deleted))
            tasks.append(asyncio.create_task(pods.run(), name="kubelet-pods"))
            tasks.append(asyncio.create_task(heartbeat.run(), name="kubelet-heartbeat"))
            routes = PodRoutes(self.client, node_name=self.config.node_name,
                               pod_cidr=self.config.pod_cidr, prefix=self.config.prefix,
                               state_dir=self.config.state_dir,
                               enable_forwarding=self.enable_pod_routing)
            tasks.append(asyncio.create_task(routes.run(), name="kubelet-pod-routes"))
            await pods.wait_synced()
            await workers.reconcile({p["metadata"]["uid"] for p in pods.list()})
            log.info("node %s ready: agent on %s:%d", self.config.node_name, self.address,
                     self.port)
            while True:  # the periodic resync: level-triggered, catches anything missed
                await asyncio.sleep(RESYNC_SECONDS)
                for pod in pods.list():
                    workers.update(pod)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await workers.stop()
            with contextlib.suppress(Exception):
                await server.stop()
            await ctx.recorder.stop()
            await self._image_provider.close()
            await ctx.runtime.close()

    async def _await_pod_cidr(self) -> None:
        """Register the Node without a pod range and wait until the cluster assigns one
        (controllers/nodeipam.py); the pod bridge is made from it. The Node is created with
        its labels only; the heartbeat adopts it and posts the status."""
        assert NODES is not None
        cfg = self.config
        body: Obj = {"metadata": {"name": cfg.node_name,
                                  "labels": nodestatus.labels(cfg.node_name, cfg.node_labels)}}
        started = next_log = asyncio.get_running_loop().time()
        delay = 0.1
        while True:
            node: Obj | None = None
            try:
                node = await self.client.get(NODES, None, cfg.node_name)
            except ApiError as exc:
                if not is_not_found(exc):
                    raise
                with contextlib.suppress(ApiError):  # 409: made meanwhile; read it next time
                    node = await self.client.create(NODES, body)
            except OSError as exc:
                log.warning("node %s: API unreachable while registering: %s", cfg.node_name, exc)
            cidr = ((node or {}).get("spec") or {}).get("podCIDR")
            if cidr:
                cfg.pod_cidr = cidr
                if not cfg.cluster_dns:  # network/dns serves on the bridge's address
                    from dockyard.network.dns import node_dns_address

                    cfg.cluster_dns = [node_dns_address(cidr)]
                log.info("node %s: pod CIDR %s assigned by the cluster", cfg.node_name, cidr)
                return
            now = asyncio.get_running_loop().time()
            if now >= next_log:
                log.info("node %s: waiting for the cluster to assign a pod CIDR (%.0fs so far; "
                         "the controller manager's node-ipam controller does it, or pass "
                         "--pod-cidr)", cfg.node_name, now - started)
                next_log = now + 5.0
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def _runtime_version(name: str, version: str) -> str:
    """`runc://1.1.5`, as nodeInfo.containerRuntimeVersion reads `containerd://1.7.2`."""
    number = version.split()[1] if version.startswith(name + " ") else version
    return f"{name}://{number.split('+')[0]}"


def local_serving_credentials(data_dir: Path, cluster: Any, config: KubeletConfig,
                              ) -> ServingCredentials:
    """Credentials for an agent on the control plane's host (`dockyard up`): a serving
    certificate signed by the cluster CA for the node's name and address, and the token the
    API server presents."""
    from dockyard.apiserver import pki

    address = config.address or nodestatus.detect_address()
    cert = pki.issue_agent_cert(data_dir, config.state_dir / "pki", node_name=config.node_name,
                                addresses=sorted({address, "127.0.0.1", config.node_name}))
    return ServingCredentials(cert=cert.cert, key=cert.key, token=cluster.kubelet_client_token)


async def cleanup(data_dir: Path, prefix: str) -> None:
    """Remove everything a cluster's agent made on this host: containers, sandboxes, mounts,
    cgroups, network namespaces, veths, the bridge, IPAM state."""
    from dockyard.kubelet.volumes import unmount_all
    from dockyard.network.podnet import CniPodNetwork
    from dockyard.network.proxy import cleanup_rules
    from dockyard.network.routes import cleanup as cleanup_routes
    from dockyard.runtime.service import RuncRuntime

    config = KubeletConfig(node_name="cleanup", data_dir=data_dir, prefix=prefix)
    runtime = RuncRuntime(config.state_dir / "runtime", prefix)
    await runtime.cleanup_all()
    await cleanup_rules(prefix)  # the proxy's table (network/proxy)
    await CniPodNetwork(config).cleanup_all()
    await cleanup_routes(config.state_dir)
    unmount_all(config.pods_dir)
