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
from pathlib import Path

import uvicorn

from dockyard.api.resources import by_kind
from dockyard.apiserver import errors, pki
from dockyard.apiserver.app import build_app
from dockyard.apiserver.rest import Registry
from dockyard.store import open_store
from dockyard.store.interface import Store

log = logging.getLogger("dockyard.server")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
COMPACT_EVERY_SECONDS = 300.0


async def ensure_namespaces(registry: Registry) -> None:
    info = by_kind("", "Namespace")
    assert info is not None
    for name in SYSTEM_NAMESPACES:
        try:
            await registry.create(info, None, {"metadata": {"name": name}})
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
    sock.set_inheritable(True)
    return sock


async def serve(
    *,
    data_dir: Path,
    bind_address: str = "0.0.0.0",
    api_port: int = 6443,
    datastore: str = "",
    tls_sans: list[str] | None = None,
    watch_window: int = 20_000,
) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    sans = list(tls_sans or [])
    if bind_address not in ("0.0.0.0", "::", "127.0.0.1"):
        sans.append(bind_address)
    cluster = pki.ensure_pki(data_dir, sans)
    store = open_store(datastore or "sqlite://", data_dir=data_dir, watch_window=watch_window)
    await store.start()
    registry = Registry(store)
    await ensure_namespaces(registry)

    sock = listen(bind_address, api_port)
    port = sock.getsockname()[1]
    host = "127.0.0.1" if bind_address in ("0.0.0.0", "127.0.0.1") else bind_address
    if bind_address == "::":
        host = "::1"
    url = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
    tokens = pki.load_tokens(cluster)
    app = build_app(registry, tokens=lambda: tokens, server_address=f"{host}:{port}")
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
    server = uvicorn.Server(config)
    kubeconfig = pki.write_kubeconfig(data_dir, cluster, url)
    log.info("serving api=%s kubeconfig=%s", url, kubeconfig)
    print(f"dockyard: API server at {url}", flush=True)
    print(f"dockyard: export KUBECONFIG={kubeconfig}", flush=True)
    compactor = asyncio.create_task(compact_forever(store, watch_window), name="compactor")
    try:
        await server.serve(sockets=[sock])
    finally:
        compactor.cancel()
        await store.close()
        log.info("stopped")
