"""The control-plane process: store, API server over HTTPS, bootstrap and compaction.

Lifecycle: open the store → create the system namespaces → serve until SIGTERM/SIGINT →
drain requests (watches are cut after a short grace) → close the store. The kubeconfig is
written before serving, so whoever waits for it then only waits for `/readyz`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from dockyard.api.resources import by_kind
from dockyard.api.scheduling import SYSTEM_PRIORITY_CLASSES
from dockyard.apiserver import bootstrap, errors, pki
from dockyard.apiserver.app import build_app
from dockyard.apiserver.endpointreconciler import LeaseEndpointReconciler, server_identity
from dockyard.apiserver.join import JoinService
from dockyard.apiserver.kubernetesservice import advertise_address as resolve_advertise
from dockyard.apiserver.kubernetesservice import ensure_kubernetes_service
from dockyard.apiserver.nodeproxy import KubeletClientConfig
from dockyard.apiserver.ranges import DEFAULT_NODE_PORT_RANGE, DEFAULT_SERVICE_CIDR, ServiceRanges
from dockyard.apiserver.rest import Registry
from dockyard.apiserver.servicealloc import ServiceAllocator
from dockyard.apiserver.servicerepair import repair_forever
from dockyard.client.rest import Client
from dockyard.controllers.manager import ControllerManager, run_elected
from dockyard.kubelet.config import KubeletConfig
from dockyard.runtime.images import ImageStore
from dockyard.scheduler.app import run_scheduler
from dockyard.store import open_store
from dockyard.store.interface import Store

log = logging.getLogger("dockyard.server")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
COMPACT_EVERY_SECONDS = 300.0
# In-process scheduler and controller manager: a standby takes over at most ~lease + retry
# after the leader's server dies (Kubernetes' 15 s would hand over in 15-17 s).
DEFAULT_LEASE_DURATION = 10.0


async def ensure_namespaces(registry: Registry) -> None:
    info = by_kind("", "Namespace")
    assert info is not None
    for name in SYSTEM_NAMESPACES:
        try:
            await registry.create(info, None, {"metadata": {"name": name}})
        except errors.APIError as exc:
            if exc.code != 409:
                raise
    classes = by_kind("scheduling.k8s.io", "PriorityClass")
    assert classes is not None
    for name, (value, _default) in SYSTEM_PRIORITY_CLASSES.items():
        try:  # the system priority classes, as the apiserver's scheduling post-start hook
            await registry.create(classes, None, {"metadata": {"name": name}, "value": value})
        except errors.APIError as exc:
            if exc.code != 409:
                raise


async def compact_forever(store: Store, keep: int) -> None:
    """Forget history older than the watch window, like the apiserver's 5-minute compactor."""
    while True:
        await asyncio.sleep(COMPACT_EVERY_SECONDS)
        target = store.current_revision() - keep
        if target > 0:
            await store.compact(target)


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


async def serve(
    *,
    data_dir: Path,
    bind_address: str = "0.0.0.0",
    api_port: int = 6443,
    datastore: str = "",
    tls_sans: list[str] | None = None,
    watch_window: int = 20_000,
    scheduler: bool = True,
    controller_manager: bool = True,
    controller_options: dict[str, dict[str, Any]] | None = None,
    agent: KubeletConfig | None = None,
    service_cidr: str = DEFAULT_SERVICE_CIDR,
    service_node_port_range: str = DEFAULT_NODE_PORT_RANGE,
    advertise_address: str = "",
    token: str = "",
    lease_duration: float = DEFAULT_LEASE_DURATION,
) -> None:
    """Serve the API until SIGTERM/SIGINT; with `agent`, also be that node (`dockyard up`).

    `token` is the server token that seals the cluster's PKI in a shared (etcd) datastore;
    raises `bootstrap.BootstrapError` when it does not open the PKI already there."""
    ranges = ServiceRanges.parse(service_cidr, service_node_port_range)  # ValueError: a bad flag
    data_dir.mkdir(parents=True, exist_ok=True)
    sans = list(tls_sans or [])
    if bind_address not in ("0.0.0.0", "::", "127.0.0.1"):
        sans.append(bind_address)
    store = open_store(datastore or "sqlite://", data_dir=data_dir, watch_window=watch_window)
    await store.start()
    try:
        if bootstrap.uses_shared_store(datastore):  # every server takes the cluster's PKI
            token, generated = await bootstrap.join_cluster_pki(store, data_dir, token)
            if generated:
                print(f"dockyard: server token (start the other servers with --token): "
                      f"{token}", flush=True)
        cluster = pki.ensure_pki(data_dir, sans)
    except BaseException:
        await store.close()
        raise
    registry = Registry(store, hooks={("", "Service"): ServiceAllocator(store, ranges)})
    await ensure_namespaces(registry)

    sock = listen(bind_address, api_port)
    port = sock.getsockname()[1]
    host = "127.0.0.1" if bind_address in ("0.0.0.0", "127.0.0.1") else bind_address
    if bind_address == "::":
        host = "::1"
    await ensure_kubernetes_service(registry, ranges, port=port)
    endpoints = LeaseEndpointReconciler(
        registry, identity=server_identity(data_dir), port=port, address=resolve_advertise(
            bind_address, advertise_address or (agent.address if agent is not None else "")))
    await endpoints.start()
    url = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
    tokens = pki.load_tokens(cluster)
    app = build_app(registry, tokens=lambda: tokens, server_address=f"{host}:{port}",
                    kubelet_client=KubeletClientConfig(cluster.ca_cert,
                                                       cluster.kubelet_client_token),
                    join=JoinService(registry, data_dir, cluster),
                    images=ImageStore(data_dir / "images"))  # the registry's (/v2/)
    config = uvicorn.Config(
        app,
        ssl_certfile=str(cluster.server_cert),
        ssl_keyfile=str(cluster.server_key),
        ssl_cert_reqs=ssl.CERT_NONE,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=120,
    )
    components = _Components(url, cluster)
    server = _Server(config, on_exit=components.stop_soon)
    kubeconfig = pki.write_kubeconfig(data_dir, cluster, url)
    log.info("serving api=%s kubeconfig=%s", url, kubeconfig)
    print(f"dockyard: API server at {url}", flush=True)
    print(f"dockyard: export KUBECONFIG={kubeconfig}", flush=True)
    compactor = asyncio.create_task(compact_forever(store, watch_window), name="compactor")
    repair = asyncio.create_task(repair_forever(store, ranges), name="service-range-repair")
    # The socket already listens, so in-process components can connect before uvicorn runs.
    election = {"lease_duration": lease_duration, "renew_deadline": lease_duration * 2 / 3,
                "retry_period": lease_duration / 7.5}  # client-go's 15/10/2 proportions
    if scheduler:
        components.start("scheduler", lambda client: run_scheduler(client, **election))
    if controller_manager:
        options = controller_options or {}
        components.start("controller-manager", lambda client: run_elected(
            client, "kube-controller-manager",
            ControllerManager(client, options=options).run, **election))
    if agent is not None:
        from dockyard.kubelet.agent import Kubelet, local_serving_credentials
        from dockyard.network.dns import run_dns
        from dockyard.network.proxy import run_proxy

        serving = local_serving_credentials(data_dir, cluster, agent)
        components.start("kubelet", lambda client: Kubelet(client, agent, serving).run())
        components.start("dns", lambda client: run_dns(client, agent))
        components.start("proxy", lambda client: run_proxy(client, agent))
    try:
        await server.serve(sockets=[sock])
    finally:
        await components.stop()
        await endpoints.stop()
        compactor.cancel()
        repair.cancel()
        await store.close()
        log.info("stopped")


class _Server(uvicorn.Server):
    """uvicorn, but in-process components stop first on SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


class _Components:
    """Scheduler and controller manager running in this process, each with its own client
    to the API (they use nothing else of the server's)."""

    def __init__(self, url: str, cluster: pki.ClusterPKI) -> None:
        self.url = url
        self.cluster = cluster
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[Client] = []

    def start(self, name: str, run: Callable[[Client], Awaitable[None]]) -> None:
        client = Client(self.url, token=self.cluster.admin_token,
                        ca_file=str(self.cluster.ca_cert), user_agent=f"dockyard/{name}")
        self._clients.append(client)
        self._tasks.append(asyncio.create_task(self._supervise(name, run, client), name=name))

    @staticmethod
    async def _supervise(name: str, run: Callable[[Client], Awaitable[None]],
                         client: Client) -> None:
        """Restart a crashed component after a pause; the API is its only state."""
        while True:
            try:
                await run(client)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a component crash must not stop the server
                log.exception("component %s crashed; restarting in 1s", name)
                await asyncio.sleep(1.0)

    def stop_soon(self) -> None:
        loop = asyncio.get_event_loop()
        for task in self._tasks:
            loop.call_soon_threadsafe(task.cancel)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            await client.close()
