"""Unit tests for kubelet/probes.py: probe actions against real local sockets and the probe
workers' thresholds, timing and gating, with the fake runtime for exec."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dockyard.kubelet.config import KubeletConfig
from dockyard.kubelet.context import AgentContext
from dockyard.kubelet.probes import HttpGetter, ProbeManager, tcp_action
from dockyard.runtime.cri import (
    ContainerConfig,
    ExecResult,
    ImageSpec,
    SandboxConfig,
)
from tests.fakeruntime import FakeImages, FakeNetwork, FakeRecorder, FakeRuntime, FakeVolumes

Obj = dict[str, Any]


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, list[Obj]]]:
    """A local HTTP server: /ok 200, /fail 500, /moved 302 -> /ok; records request headers."""
    seen: list[Obj] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        if request.path == "/ok":
            return web.Response(text="fine")
        if request.path == "/moved":
            raise web.HTTPFound("/ok")
        if request.path == "/slow":
            await asyncio.sleep(0.5)
        return web.Response(status=500, text="broken")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, seen
    await runner.cleanup()


async def test_http_get_success_failure_and_headers(http_server: tuple[int, list[Obj]]) -> None:
    port, seen = http_server
    getter = HttpGetter()
    container = {"name": "web", "ports": [{"name": "http", "containerPort": port}]}
    try:
        ok, _ = await getter.get({"path": "/ok", "port": "http", "httpHeaders": [
            {"name": "X-Probe", "value": "yes"}]}, container, "127.0.0.1", 1)
        assert ok
        assert seen[-1]["X-Probe"] == "yes"
        assert seen[-1]["User-Agent"].startswith("kube-probe/")
        assert (await getter.get({"path": "/moved", "port": port}, container, "127.0.0.1",
                                 1))[0]
        assert await getter.get({"path": "/fail", "port": port}, container, "127.0.0.1", 1) == \
            (False, "HTTP probe failed with statuscode: 500")
        ok, message = await getter.get({"path": "/slow", "port": port}, container,
                                       "127.0.0.1", 0.2)
        assert not ok and "context deadline exceeded" in message
        ok, message = await getter.get({"path": "/x", "port": "nope"}, container, "127.0.0.1", 1)
        assert (ok, message) == (False, 'couldn\'t find port "nope" in container ports')
    finally:
        await getter.close()


async def test_http_get_connection_refused() -> None:
    port = _free_port()
    getter = HttpGetter()
    try:
        ok, message = await getter.get({"path": "/healthz", "port": port}, {}, "127.0.0.1", 1)
    finally:
        await getter.close()
    assert not ok
    assert message == (f'Get "http://127.0.0.1:{port}/healthz": dial tcp 127.0.0.1:{port}: '
                       "connect: connection refused")


async def test_tcp_socket(http_server: tuple[int, list[Obj]]) -> None:
    port, _ = http_server
    assert await tcp_action({"port": port}, {}, "127.0.0.1", 1) == (True, "")
    closed = _free_port()
    assert await tcp_action({"port": closed}, {}, "127.0.0.1", 1) == (
        False, f"dial tcp 127.0.0.1:{closed}: connect: connection refused")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- workers ---------------------------------------------------------------------------------


class Probed:
    """A ProbeManager over the fake runtime with one running container."""

    def __init__(self, tmp_path: Path) -> None:
        self.runtime = FakeRuntime()
        self.recorder = FakeRecorder()
        config = KubeletConfig(node_name="n", data_dir=tmp_path, prefix="dyfake00")
        self.ctx = AgentContext(config=config, client=None,  # type: ignore[arg-type]
                                runtime=self.runtime, images=FakeImages(),
                                network=FakeNetwork(), volumes=FakeVolumes(tmp_path),
                                recorder=self.recorder)  # type: ignore[arg-type]
        self.changes: list[str] = []
        self.manager = ProbeManager(self.ctx, self.changes.append)
        self.pod = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"}}
        self.healthy: dict[str, bool] = {}  # command word -> succeeds?
        self.runtime.exec_handler = self._exec

    def _exec(self, name: str, argv: list[str]) -> ExecResult:
        if self.healthy.get(argv[0], True):
            return ExecResult(0, b"", b"")
        return ExecResult(1, f"{argv[0]} is unhappy".encode(), b"")

    async def run_container(self, container: Obj, started_at: float | None = None) -> str:
        sid = await self.runtime.run_sandbox(SandboxConfig("u1", "p", "default", "p", None))
        cid = await self.runtime.create_container(sid, ContainerConfig(
            name=container["name"], attempt=0, image=ImageSpec("busybox", "sha256:1", ()),
            argv=("sleep",), labels={"io.kubernetes.pod.uid": "u1"}))
        await self.runtime.start_container(cid)
        self.manager.ensure(self.pod, container, cid, started_at or time.time(), "127.0.0.1")
        return cid

    def execs(self, word: str) -> int:
        return sum(1 for call in self.runtime.calls if call[0] == "exec" and call[2][0] == word)


PERIOD = 0.1  # the API allows whole seconds only; the workers take any number


def exec_probe(word: str, **kw: Any) -> Obj:
    return {"exec": {"command": [word]}, "periodSeconds": PERIOD, **kw}


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_liveness_fails_after_threshold_then_holds(tmp_path: Path) -> None:
    p = Probed(tmp_path)
    p.healthy["live"] = False
    cid = await p.run_container({"name": "c", "livenessProbe": exec_probe(
        "live", failureThreshold=2)})
    try:
        assert p.manager.failed(cid) is None
        await wait_until(lambda: p.manager.failed(cid) is not None, 3)
        kind, probe = p.manager.failed(cid)  # type: ignore[misc]
        assert kind == "liveness" and probe["failureThreshold"] == 2
        assert p.changes == ["u1"]
        assert p.recorder.of("p") == [("Warning", "Unhealthy",
                                       "Liveness probe failed: live is unhappy")] * 2
        await asyncio.sleep(3 * PERIOD)
        assert p.execs("live") == 2  # on hold until the container is replaced
    finally:
        await p.manager.stop()


async def test_readiness_starts_unready_and_needs_success_threshold(tmp_path: Path) -> None:
    p = Probed(tmp_path)
    cid = await p.run_container({"name": "c", "readinessProbe": exec_probe(
        "ready", successThreshold=2)})
    try:
        assert p.manager.status(cid) == (True, False)
        await wait_until(lambda: p.execs("ready") == 1)
        assert p.manager.status(cid) == (True, False)  # one success is not enough
        await wait_until(lambda: p.manager.status(cid) == (True, True), 3)
        assert p.changes == ["u1"]
        p.healthy["ready"] = False
        await wait_until(lambda: p.manager.status(cid) == (True, False), 5)
        assert p.changes == ["u1", "u1"]
        assert p.manager.failed(cid) is None  # readiness never restarts a container
    finally:
        await p.manager.stop()


async def test_startup_probe_gates_liveness_and_readiness(tmp_path: Path) -> None:
    p = Probed(tmp_path)
    p.healthy.update(start=False, live=False)
    cid = await p.run_container({
        "name": "c", "startupProbe": exec_probe("start", failureThreshold=30),
        "livenessProbe": exec_probe("live", failureThreshold=1),
        "readinessProbe": exec_probe("ready")})
    try:
        await wait_until(lambda: p.execs("start") >= 2, 3)
        assert p.execs("live") == 0 and p.execs("ready") == 0
        assert p.manager.status(cid) == (False, False)
        assert p.manager.failed(cid) is None
        p.healthy["start"] = True
        await wait_until(lambda: p.manager.failed(cid) is not None, 3)
        assert p.manager.failed(cid)[0] == "liveness"  # type: ignore[index]
        runs = p.execs("start")
        await asyncio.sleep(3 * PERIOD)
        assert p.execs("start") == runs  # a startup probe stops once it succeeded
        assert p.manager.status(cid)[0] is True  # type: ignore[index]
    finally:
        await p.manager.stop()


async def test_startup_failure_asks_for_a_restart(tmp_path: Path) -> None:
    p = Probed(tmp_path)
    p.healthy["start"] = False
    cid = await p.run_container({"name": "c", "startupProbe": exec_probe(
        "start", failureThreshold=1)})
    try:
        await wait_until(lambda: p.manager.failed(cid) is not None, 3)
        assert p.manager.failed(cid)[0] == "startup"  # type: ignore[index]
        assert ("Warning", "Unhealthy", "Startup probe failed: start is unhappy") in \
            p.recorder.of("p")
    finally:
        await p.manager.stop()


async def test_initial_delay_counts_from_container_start(tmp_path: Path) -> None:
    p = Probed(tmp_path)
    started = time.time() - 0.5
    await p.run_container({"name": "c", "readinessProbe": exec_probe(
        "ready", initialDelaySeconds=1)}, started_at=started)
    try:
        await asyncio.sleep(0.3)
        assert p.execs("ready") == 0
        await wait_until(lambda: p.execs("ready") == 1, 1)
        assert time.time() - started >= 1.0
    finally:
        await p.manager.stop()


async def test_exec_timeout_is_a_failure(tmp_path: Path) -> None:
    p = Probed(tmp_path)
    p.runtime.exec_handler = lambda name, argv: ExecResult(-1, b"", b"", timed_out=True)
    cid = await p.run_container({"name": "c", "readinessProbe": exec_probe("sh")})
    try:
        await wait_until(lambda: p.execs("sh") == 1)
        await asyncio.sleep(0.05)
        assert ("Warning", "Unhealthy", 'Readiness probe failed: command "sh" timed out') in \
            p.recorder.of("p")
        assert p.manager.status(cid) == (True, False)
    finally:
        await p.manager.stop()


async def test_removed_container_is_no_longer_probed(tmp_path: Path) -> None:
    p = Probed(tmp_path)
    cid = await p.run_container({"name": "c", "readinessProbe": exec_probe("ready")})
    await wait_until(lambda: p.execs("ready") == 1)
    p.manager.remove_container(cid)
    assert p.manager.status(cid) is None
    await asyncio.sleep(3 * PERIOD)
    assert p.execs("ready") == 1
    await p.manager.stop()
