"""The node agent's HTTPS port: container logs and exec, for the API server.

Like the kubelet's port 10250: `GET /containerLogs/{ns}/{pod}/{container}` streams a log
(kubelet/logs.py); the WebSocket `/exec/{ns}/{pod}/{container}?command=...` runs a command in
the container speaking the channel.k8s.io protocol (v5, v4) that the API server relays from
kubectl. Every request carries the API server's kubelet-client bearer token. Containers are
found through the runtime alone, by their io.kubernetes.* labels, so the answers are the same
after an agent restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import shlex
import socket
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, Router, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from dockyard.kubelet.logs import LogOptions, parse_timestamp, read_logs
from dockyard.runtime.cri import (
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    ContainerRuntime,
    ContainerState,
    ContainerStatus,
    ExecSession,
    RuntimeFailure,
)

log = logging.getLogger("dockyard.kubelet.server")

# channel.k8s.io: every binary message starts with its stream's byte.
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"  # v5 adds CLOSE (stdin's end)
PROTOCOLS = (V5, V4)


class AgentError(Exception):
    """An answer that is a Kubernetes Status (the API server passes it on to the user)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def response(self) -> Response:
        return Response(orjson.dumps(status(self.code, self.reason, self.message)),
                        status_code=self.code, media_type="application/json")


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def bad_request(message: str) -> AgentError:
    return AgentError(400, "BadRequest", message)


async def deny(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """Refuse a WebSocket handshake with an HTTP answer (close it if the server cannot)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await response(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": ""})


class TokenAuth:
    """Every request (HTTP or WebSocket upgrade) must carry `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not hmac.compare_digest(header, self.expected):
                answer = AgentError(401, "Unauthorized", "Unauthorized").response()
                if scope["type"] == "websocket":
                    await deny(scope, receive, send, answer)
                else:
                    await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- finding containers ----------------------------------------------------------------------

async def find_container(runtime: ContainerRuntime, namespace: str, pod: str, container: str,
                         *, previous: bool = False, pod_uid: str = "") -> ContainerStatus:
    """The current attempt (highest) of a pod's container, or the one before it."""
    try:
        containers = await runtime.list_containers()
    except RuntimeFailure as exc:
        raise AgentError(500, "InternalError", f"the runtime cannot list containers: {exc}"
                         ) from None
    found = [c for c in containers
             if c.labels.get(LABEL_POD_NAMESPACE) == namespace
             and c.labels.get(LABEL_POD_NAME) == pod
             and c.labels.get(LABEL_CONTAINER_NAME, c.name) == container]
    if pod_uid:
        found = [c for c in found if c.labels.get(LABEL_POD_UID, pod_uid) == pod_uid]
    elif found:  # a pod deleted and made again under its name: the newest one
        newest = max(found, key=lambda c: c.created_at)
        uid = newest.labels.get(LABEL_POD_UID)
        found = [c for c in found if c.labels.get(LABEL_POD_UID) == uid]
    found.sort(key=lambda c: c.attempt, reverse=True)
    if previous:
        if len(found) < 2:
            raise bad_request(
                f'previous terminated container "{container}" in pod "{pod}" not found')
        return found[1]
    if not found:
        raise bad_request(
            f'container "{container}" in pod "{pod}" is waiting to start - no logs yet')
    return found[0]


def _flag(params: Any, name: str) -> bool:
    return params.get(name, "").lower() in ("true", "1")


def _int(params: Any, name: str) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name}: invalid integer {value!r}") from None


def log_options(params: Any) -> LogOptions:
    since_ns = None
    since_seconds = _int(params, "sinceSeconds")
    if since_seconds is not None:
        since_ns = time.time_ns() - since_seconds * 1_000_000_000
    elif params.get("sinceTime"):
        since_ns = parse_timestamp(params["sinceTime"].encode())
        if since_ns is None:
            raise bad_request(f"sinceTime: not an RFC 3339 time: {params['sinceTime']!r}")
    return LogOptions(follow=_flag(params, "follow"), tail_lines=_int(params, "tailLines"),
                      since_ns=since_ns, timestamps=_flag(params, "timestamps"),
                      limit_bytes=_int(params, "limitBytes"))


# -- the app ----------------------------------------------------------------------------------

def build_agent_app(runtime: ContainerRuntime, *, token: str) -> ASGIApp:
    async def healthz(_: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    async def container_logs(request: Request) -> Response:
        p, q = request.path_params, request.query_params
        try:
            opts = log_options(q)
            found = await find_container(runtime, p["namespace"], p["pod"], p["container"],
                                         previous=_flag(q, "previous"),
                                         pod_uid=q.get("podUID", ""))
        except AgentError as exc:
            return exc.response()
        if found.state == ContainerState.CREATED:
            return bad_request(f'container "{p["container"]}" in pod "{p["pod"]}" is waiting '
                               "to start: ContainerCreating").response()

        async def running() -> bool:
            try:
                state = (await runtime.container_status(found.id)).state
            except RuntimeFailure:
                return False
            return state in (ContainerState.RUNNING, ContainerState.CREATED)

        return StreamingResponse(read_logs(found.log_path, opts, running=running),
                                 media_type="text/plain")

    async def exec_plain(request: Request) -> Response:
        """A request that is not a WebSocket upgrade: the same checks, then the refusal the
        API server relays (it asks this way to learn why an upgrade was refused)."""
        try:
            await _exec_target(runtime, request.path_params, request.query_params)
        except AgentError as exc:
            return exc.response()
        return bad_request("Upgrade request required").response()

    async def exec_websocket(ws: WebSocket) -> None:
        protocol = next((p for p in ws.scope.get("subprotocols", []) if p in PROTOCOLS), None)
        try:
            if protocol is None:
                raise bad_request(f"exec needs one of the WebSocket subprotocols "
                                  f"{', '.join(PROTOCOLS)}")
            target = await _exec_target(runtime, ws.path_params, ws.query_params)
        except AgentError as exc:
            await deny(ws.scope, ws.receive, ws.send, exc.response())
            return
        await ws.accept(subprotocol=protocol)
        await ExecStream(ws, runtime, protocol, **target).run()

    routes = [
        Route("/healthz", healthz),
        Route("/containerLogs/{namespace}/{pod}/{container}", container_logs),
        Route("/exec/{namespace}/{pod}/{container}", exec_plain, methods=["GET", "POST"]),
        WebSocketRoute("/exec/{namespace}/{pod}/{container}", exec_websocket),
    ]

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        answer = AgentError(404, "NotFound", f"no such path: {scope['path']}").response()
        if scope["type"] == "websocket":
            await deny(scope, receive, send, answer)
        else:
            await answer(scope, receive, send)

    return TokenAuth(Router(routes=routes, default=not_found), token)


async def _exec_target(runtime: ContainerRuntime, path: Any, params: Any) -> dict[str, Any]:
    argv = params.getlist("command")
    if not argv:
        raise bad_request("you must specify at least one command for the container")
    stdin, stdout, stderr, tty = (_flag(params, n) for n in ("stdin", "stdout", "stderr", "tty"))
    if not (stdin or stdout or stderr):
        raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
    try:
        found = await find_container(runtime, path["namespace"], path["pod"], path["container"],
                                     pod_uid=params.get("podUID", ""))
    except AgentError:
        raise AgentError(404, "NotFound", f'container not found ("{path["container"]}")') from None
    if found.state != ContainerState.RUNNING:
        raise bad_request(f'container "{path["container"]}" in pod "{path["pod"]}" is not '
                          f"running ({found.state.value})")
    return {"container_id": found.id, "argv": argv, "stdin": stdin, "stdout": stdout,
            "stderr": stderr and not tty, "tty": tty}


class ExecStream:
    """One exec over channel.k8s.io: client frames → the command's stdin and terminal size,
    its output → frames, then its exit as a Status on the error channel and a normal close."""

    def __init__(self, ws: WebSocket, runtime: ContainerRuntime, protocol: str, *,
                 container_id: str, argv: list[str], stdin: bool, stdout: bool,
                 stderr: bool, tty: bool) -> None:
        self.ws, self.runtime, self.protocol = ws, runtime, protocol
        self.container_id, self.argv = container_id, argv
        self.stdin, self.stdout, self.stderr, self.tty = stdin, stdout, stderr, tty

    async def run(self) -> None:
        try:
            session = await self.runtime.exec(self.container_id, self.argv, tty=self.tty,
                                              stdin=self.stdin)
        except RuntimeFailure as exc:
            await self._finish(status(500, "InternalError", str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - the user gets a Status, the log the details
            log.exception("exec %s in %s failed", self.argv, self.container_id)
            await self._finish(status(500, "InternalError", f"exec failed: {exc}"))
            return
        reader = asyncio.create_task(self._read_client(session), name="exec-stdin")
        try:
            async for stream, data in session.output():
                if (stream == STDOUT and self.stdout) or (stream == STDERR and self.stderr):
                    await self.ws.send_bytes(bytes((stream,)) + data)
            code = await session.wait()
        except (WebSocketDisconnect, OSError, RuntimeError):  # the client went away
            await session.kill()
            return
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self._finish(self._exit_status(code))

    async def _read_client(self, session: ExecSession) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                await session.kill()
                return
            data = message.get("bytes") or b""
            if not data:
                continue
            if data[0] == STDIN and self.stdin:
                await session.write_stdin(data[1:])
            elif data[0] == RESIZE:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    size = orjson.loads(data[1:])
                    await session.resize(int(size["Width"]), int(size["Height"]))
            elif data[0] == CLOSE and self.protocol == V5 and data[1:2] == bytes((STDIN,)):
                await session.close_stdin()

    def _exit_status(self, code: int) -> dict[str, Any]:
        if code == 0:
            return {"metadata": {}, "status": "Success"}
        return {
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{shlex.join(self.argv)}], exit code {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }

    async def _finish(self, outcome: dict[str, Any]) -> None:
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await self.ws.send_bytes(bytes((ERROR,)) + orjson.dumps(outcome))
            await self.ws.close(1000)


# -- serving ----------------------------------------------------------------------------------

class AgentServer(uvicorn.Server):
    """uvicorn inside the agent's process: the process owner handles signals, `stop` ends it."""

    task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def stop(self) -> None:
        self.should_exit = True
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


async def serve_agent(app: ASGIApp, *, host: str, port: int, cert: Path | str,
                      key: Path | str) -> tuple[AgentServer, int]:
    """Serve `app` over HTTPS on host:port (0: any free port) until `stop`; the bound port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(256)
    config = uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key),
                            log_level="warning", access_log=False, lifespan="off",
                            proxy_headers=False, timeout_graceful_shutdown=1)
    server = AgentServer(config)
    server.task = asyncio.create_task(server.serve(sockets=[sock]), name="agent-https")
    while not server.started:
        if server.task.done():
            sock.close()
            server.task.result()  # raises what stopped it
            raise RuntimeError("the agent's HTTPS server stopped while starting")
        await asyncio.sleep(0.01)
    return server, sock.getsockname()[1]
