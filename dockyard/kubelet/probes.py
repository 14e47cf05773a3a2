"""Liveness, readiness and startup probes of running containers (the kubelet's prober).

One worker per (container id, probe kind), driven by the event loop's timers (no task or
loop per container while idle): a probe runs `initialDelaySeconds` after the container
started, then every `periodSeconds`. A result changes only after `failureThreshold`
consecutive failures or `successThreshold` consecutive successes, and each change calls
`on_change(pod_uid)` so the pod is synced and its status written at once. Until a startup
probe succeeds the other two do not run; a liveness or startup probe that fails is put on
hold until the pod worker replaced the container (as Kubernetes does).

The actions (exec, HTTP GET, TCP connect) are shared with the lifecycle hooks.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from dockyard.kubelet.context import AgentContext
from dockyard.runtime.cri import RuntimeFailure

log = logging.getLogger("dockyard.kubelet.probes")

Obj = dict[str, Any]
KINDS = ("startup", "liveness", "readiness")
MAX_OUTPUT = 10 * 1024
USER_AGENT = "kube-probe/1.32"


# -- actions ---------------------------------------------------------------------------------


def resolve_port(port: Any, container: Obj) -> int:
    """A probe or hook port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    text = str(port)
    for p in container.get("ports") or []:
        if p.get("name") == text:
            return int(p["containerPort"])
    if text.isdigit():
        return int(text)
    raise ValueError(f'couldn\'t find port "{text}" in container ports')


async def exec_action(ctx: AgentContext, container_id: str, command: list[str],
                      timeout: float) -> tuple[bool, str]:
    """Run `command` in the container; success is exit code 0. The output is the message."""
    try:
        result = await ctx.runtime.exec_sync(container_id, list(command), timeout)
    except RuntimeFailure as exc:
        return False, str(exc)
    if result.timed_out:
        return False, f'command "{" ".join(command)}" timed out'
    output = (result.stdout + result.stderr)[:MAX_OUTPUT].decode(errors="replace")
    return result.exit_code == 0, output


class HttpGetter:
    """HTTP GETs for probes and hooks: no keep-alive (like the kubelet), certificates of
    HTTPS targets not checked, success for 200-399."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0), trust_env=False)
        return self._session

    async def get(self, action: Obj, container: Obj, pod_ip: str,
                  timeout: float) -> tuple[bool, str]:
        scheme = str(action.get("scheme") or "HTTP").lower()
        host = action.get("host") or pod_ip
        try:
            port = resolve_port(action.get("port"), container)
        except ValueError as exc:
            return False, str(exc)
        path = str(action.get("path") or "/")
        if not path.startswith("/"):
            path = "/" + path
        shown_host = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{shown_host}:{port}{path}"
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        for header in action.get("httpHeaders") or []:
            headers[str(header.get("name"))] = str(header.get("value", ""))
        try:
            async with self._http().get(
                url, headers=headers, ssl=self._insecure if scheme == "https" else False,
                timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=True,
            ) as response:
                body = await response.content.read(MAX_OUTPUT)
                code = response.status
        except TimeoutError:
            return False, (f'Get "{url}": context deadline exceeded (Client.Timeout exceeded '
                           "while awaiting headers)")
        except aiohttp.ClientConnectorError as exc:
            return False, f'Get "{url}": dial tcp {shown_host}:{port}: {_dial_error(exc.os_error)}'
        except (aiohttp.ClientError, OSError) as exc:
            return False, f'Get "{url}": {exc}'
        if 200 <= code < 400:
            return True, body.decode(errors="replace")
        return False, f"HTTP probe failed with statuscode: {code}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _dial_error(exc: OSError | None) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect: connection refused"
    if exc is not None and exc.errno == 113:
        return "connect: no route to host"
    return f"connect: {exc.strerror if exc is not None and exc.strerror else exc}"


async def tcp_action(action: Obj, container: Obj, pod_ip: str,
                     timeout: float) -> tuple[bool, str]:
    """Success when a TCP connection to the port opens."""
    host = action.get("host") or pod_ip
    try:
        port = resolve_port(action.get("port"), container)
    except ValueError as exc:
        return False, str(exc)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return False, f"dial tcp {host}:{port}: i/o timeout"
    except OSError as exc:
        return False, f"dial tcp {host}:{port}: {_dial_error(exc)}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True, ""


# -- workers ---------------------------------------------------------------------------------


@dataclass
class _Worker:
    kind: str
    uid: str
    pod: Obj
    container: Obj
    container_id: str
    probe: Obj
    pod_ip: str
    started_at: float
    result: bool | None
    last: bool | None = None
    run: int = 0
    on_hold: bool = False
    stopped: bool = False
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def seconds(self, name: str, default: int) -> float:
        value = self.probe.get(name)
        return float(value if value is not None else default)


def _probe_spec(container: Obj, kind: str) -> Obj | None:
    probe = container.get(f"{kind}Probe")
    if not probe or not any(k in probe for k in ("exec", "httpGet", "tcpSocket")):
        return None  # absent, or only grpc (not supported: treated as no probe)
    return probe


class ProbeManager:
    def __init__(self, ctx: AgentContext, on_change: Callable[[str], None], *,
                 concurrency: int = 32) -> None:
        self.ctx = ctx
        self.on_change = on_change
        self.http = HttpGetter()
        self._workers: dict[tuple[str, str], _Worker] = {}
        self._by_pod: dict[str, set[str]] = {}
        self._slots = asyncio.Semaphore(concurrency)

    # -- registration ----------------------------------------------------------------------

    def ensure(self, pod: Obj, container: Obj, container_id: str, started_at: float,
               pod_ip: str, *, seed_started: bool = False, seed_ready: bool = False) -> None:
        """Probe a running container (idempotent). `seed_*`: what the API showed for this
        very container before an agent restart, so adoption does not flap readiness."""
        uid = str(pod["metadata"]["uid"])
        for kind in KINDS:
            probe = _probe_spec(container, kind)
            if probe is None or (container_id, kind) in self._workers:
                continue
            initial: bool | None = {"liveness": True, "readiness": False, "startup": None}[kind]
            if kind == "startup" and seed_started:
                initial = True
            if kind == "readiness" and seed_ready:
                initial = True
            worker = _Worker(kind, uid, pod, container, container_id, probe, pod_ip,
                             started_at or time.time(), initial)
            self._workers[(container_id, kind)] = worker
            self._by_pod.setdefault(uid, set()).add(container_id)
            delay = worker.started_at + worker.seconds("initialDelaySeconds", 0) - time.time()
            self._schedule(worker, max(0.0, delay))

    def has_probes(self, container_id: str) -> bool:
        return any((container_id, kind) in self._workers for kind in KINDS)

    def remove_container(self, container_id: str) -> None:
        for kind in KINDS:
            worker = self._workers.pop((container_id, kind), None)
            if worker is not None:
                self._stop(worker)
                ids = self._by_pod.get(worker.uid)
                if ids is not None:
                    ids.discard(container_id)
                    if not ids:
                        del self._by_pod[worker.uid]

    def remove_pod(self, uid: str, keep: set[str] | None = None) -> None:
        """Stop the probes of a pod's containers (all, or all but `keep`)."""
        for cid in list(self._by_pod.get(uid, ())):
            if keep is None or cid not in keep:
                self.remove_container(cid)

    def container_ids(self, uid: str) -> set[str]:
        return set(self._by_pod.get(uid, ()))

    async def stop(self) -> None:
        workers = list(self._workers.values())
        self._workers.clear()
        self._by_pod.clear()
        for worker in workers:
            self._stop(worker)
        tasks = [w.task for w in workers if w.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.close()

    # -- results ---------------------------------------------------------------------------

    def status(self, container_id: str) -> tuple[bool, bool] | None:
        """(started, ready) of a running container with probes; None: no probes."""
        if not self.has_probes(container_id):
            return None
        startup = self._workers.get((container_id, "startup"))
        started = startup is None or startup.result is True
        readiness = self._workers.get((container_id, "readiness"))
        ready = started and (readiness is None or readiness.result is True)
        return started, ready

    def failed(self, container_id: str) -> tuple[str, Obj] | None:
        """('liveness'|'startup', probe) when that probe decided the container must restart."""
        for kind in ("liveness", "startup"):
            worker = self._workers.get((container_id, kind))
            if worker is not None and worker.result is False:
                return kind, worker.probe
        return None

    # -- running ---------------------------------------------------------------------------

    def _schedule(self, worker: _Worker, delay: float) -> None:
        if worker.stopped:
            return
        loop = asyncio.get_running_loop()
        worker.timer = loop.call_later(delay, self._fire, worker)

    def _fire(self, worker: _Worker) -> None:
        worker.timer = None
        if not worker.stopped:
            worker.task = asyncio.create_task(self._run(worker),
                                              name=f"probe-{worker.kind}-{worker.container_id}")

    @staticmethod
    def _stop(worker: _Worker) -> None:
        worker.stopped = True
        if worker.timer is not None:
            worker.timer.cancel()
            worker.timer = None
        if worker.task is not None and not worker.task.done():
            worker.task.cancel()

    def _gated(self, worker: _Worker) -> bool:
        """Whether this round is skipped: on hold, a finished startup probe, or the startup
        probe has not succeeded yet (it gates liveness and readiness)."""
        if worker.on_hold:
            return True
        if worker.kind == "startup":
            return worker.result is True
        startup = self._workers.get((worker.container_id, "startup"))
        return startup is not None and startup.result is not True

    async def _run(self, worker: _Worker) -> None:
        started = time.monotonic()
        try:
            if not self._gated(worker):
                async with self._slots:
                    ok, output = await self._probe(worker)
                if not worker.stopped:
                    self._record(worker, ok, output)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a broken probe must not stop probing
            log.exception("probe %s of %s failed", worker.kind, worker.container_id)
        period = worker.seconds("periodSeconds", 10)
        self._schedule(worker, max(0.0, period - (time.monotonic() - started)))

    async def _probe(self, worker: _Worker) -> tuple[bool, str]:
        probe, timeout = worker.probe, worker.seconds("timeoutSeconds", 1)
        if "exec" in probe:
            command = [str(a) for a in (probe["exec"] or {}).get("command") or []]
            return await exec_action(self.ctx, worker.container_id, command, timeout)
        if "httpGet" in probe:
            return await self.http.get(probe["httpGet"] or {}, worker.container, worker.pod_ip,
                                       timeout)
        return await tcp_action(probe.get("tcpSocket") or {}, worker.container, worker.pod_ip,
                                timeout)

    def _record(self, worker: _Worker, ok: bool, output: str) -> None:
        if not ok:
            self.ctx.recorder.event(_pod_ref(worker.pod), "Warning", "Unhealthy",
                                    f"{worker.kind.capitalize()} probe failed: {output}")
        if worker.last == ok:
            worker.run += 1
        else:
            worker.last, worker.run = ok, 1
        threshold = "successThreshold" if ok else "failureThreshold"
        if worker.run < worker.seconds(threshold, 1 if ok else 3):
            return
        changed = worker.result != ok
        worker.result = ok
        if worker.kind in ("liveness", "startup") and not ok:
            worker.on_hold = True  # until the pod worker replaces the container
            worker.run = 0
        if changed:
            self.on_change(worker.uid)


def _pod_ref(pod: Obj) -> Obj:
    return {"kind": "Pod", "apiVersion": "v1", "metadata": pod.get("metadata") or {}}
