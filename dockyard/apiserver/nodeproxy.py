"""`pods/log` and `pods/exec`: the API server's way through to the node agent of a pod.

As kube-apiserver does: check the request against the Pod (which container; is the pod on a
node), find the agent from the Node (status.addresses: InternalIP, then Hostname;
status.daemonEndpoints.kubeletEndpoint.Port) and call it over HTTPS with the kubelet-client
token, trusting only certificates of the cluster CA. Logs pass through as they come (chunked)
and the agent's stream is closed as soon as the client goes away; exec is a WebSocket relayed
frame by frame, accepted with the subprotocol the agent chose. Errors the agent answers are
Kubernetes Status objects and reach the user unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from dockyard.api.fielderrors import FORBIDDEN, INVALID, FieldError
from dockyard.api.resources import by_kind
from dockyard.apiserver import errors
from dockyard.apiserver.rest import Registry

Obj = dict[str, Any]
PODS, NODES = by_kind("", "Pod"), by_kind("", "Node")
assert PODS is not None and NODES is not None

DEFAULT_AGENT_PORT = 10250
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")  # what node agents speak
LOG_FLAGS = ("follow", "previous", "timestamps")
LOG_NUMBERS = ("tailLines", "limitBytes", "sinceSeconds")
EXEC_PARAMS = ("command", "stdin", "stdout", "stderr", "tty")
# The agent's answer to an exec request without an upgrade when nothing else is wrong.
_UPGRADE_REQUIRED = "Upgrade request required"
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable"}


@dataclass(frozen=True)
class KubeletClientConfig:
    """How the API server reaches node agents (kube-apiserver's --kubelet-* flags)."""

    ca_file: Path  # the CA that signed the agents' serving certificates
    token: str  # the bearer token agents require


@dataclass(frozen=True)
class _Target:
    pod: Obj
    container: str
    url: str  # the agent's URL for this container, without the query
    node: str


class NodeProxy:
    def __init__(self, registry: Registry, config: KubeletClientConfig) -> None:
        self.registry = registry
        self.config = config
        self._tls: ssl.SSLContext | None = None

    def _ssl(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=str(self.config.ca_file))
        return self._tls

    def _session(self) -> aiohttp.ClientSession:
        # One per call: logs and exec are rare and long, and nothing outlives the request.
        return aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.config.token}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None))

    # -- pods/log --------------------------------------------------------------------------

    async def logs(self, request: Request, namespace: str, name: str) -> Response:
        q = request.query_params
        params = _log_params(name, q)
        target = await self._target(namespace, name, q.get("container", ""), "containerLogs")
        if "previous" not in params:
            _check_started(target.pod, target.container)
        params["podUID"] = target.pod["metadata"].get("uid", "")
        session = self._session()
        try:
            upstream = await session.get(target.url, params=params, ssl=self._ssl())
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await session.close()
            raise _unreachable(target, exc) from None
        if upstream.status != 200:
            body = await upstream.read()
            upstream.close()
            await session.close()
            raise _agent_error(target, upstream.status, body)

        async def close() -> None:
            upstream.close()
            await session.close()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
            except aiohttp.ClientError:
                return  # the agent went away mid-stream: end the stream as it did
            finally:
                await close()  # also when the client disconnected (the stream is cancelled)

        return StreamingResponse(chunks(), media_type="text/plain",
                                 background=BackgroundTask(close))

    # -- pods/exec -------------------------------------------------------------------------

    async def exec_http(self, request: Request, namespace: str, name: str) -> Response:
        """exec without a WebSocket upgrade (kubectl's SPDY fallback after a refused upgrade):
        the reason the upgrade was refused, or that only WebSocket is served."""
        target = await self._target(namespace, name, request.query_params.get("container", ""),
                                    "exec")
        async with self._session() as session:
            raise await self._refusal(session, target, _exec_params(request.query_params, target))

    async def exec_websocket(self, ws: WebSocket, namespace: str, name: str) -> None:
        try:
            offered = ws.scope.get("subprotocols", [])
            if not any(p in EXEC_PROTOCOLS for p in offered):
                raise errors.bad_request(
                    f"exec is served over the WebSocket subprotocols {', '.join(EXEC_PROTOCOLS)}"
                    f"; the client offered {', '.join(offered) or 'none'}")
            target = await self._target(namespace, name, ws.query_params.get("container", ""),
                                        "exec")
        except errors.APIError as exc:
            await deny(ws, exc)
            return
        params = _exec_params(ws.query_params, target)
        async with self._session() as session:
            try:
                upstream = await session.ws_connect(target.url, params=params, ssl=self._ssl(),
                                                    protocols=offered, autoclose=True,
                                                    max_msg_size=0)
            except aiohttp.WSServerHandshakeError:
                await deny(ws, await self._refusal(session, target, params))
                return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                await deny(ws, _unreachable(target, exc))
                return
            async with upstream:
                await ws.accept(subprotocol=upstream.protocol)
                await _relay(ws, upstream)

    async def _refusal(self, session: aiohttp.ClientSession, target: _Target,
                       params: list[tuple[str, str]]) -> errors.APIError:
        """Why the agent refuses this exec: the same request without the upgrade."""
        try:
            async with session.get(target.url, params=params, ssl=self._ssl()) as answer:
                body = await answer.read()
                code = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return _unreachable(target, exc)
        error = _agent_error(target, code, body)
        if code == 400 and error.message == _UPGRADE_REQUIRED:
            return errors.bad_request(
                "exec needs a WebSocket upgrade (subprotocol v5.channel.k8s.io or "
                "v4.channel.k8s.io); SPDY is not served")
        return error

    # -- finding the agent -----------------------------------------------------------------

    async def _target(self, namespace: str, name: str, container: str, kind: str) -> _Target:
        assert PODS is not None and NODES is not None
        pod = await self.registry.get(PODS, namespace, name)
        container = choose_container(pod, container)
        node_name = (pod.get("spec") or {}).get("nodeName") or ""
        if not node_name:
            raise errors.bad_request(f"pod {name} does not have a host assigned")
        try:
            node = await self.registry.get(NODES, None, node_name)
        except errors.APIError as exc:
            if exc.code != 404:
                raise
            raise errors.service_unavailable(
                f'node "{node_name}" of pod "{name}" is not registered: there is no node '
                "agent to ask") from None
        host, port = agent_endpoint(node)
        if not host:
            known = [a.get("address") for a in (node.get("status") or {}).get("addresses", [])]
            raise errors.service_unavailable(
                f'no preferred addresses found for node "{node_name}" (InternalIP, Hostname); '
                f"known addresses: {known}")
        authority = f"[{host}]" if ":" in host else host
        return _Target(pod, container,
                       f"https://{authority}:{port}/{kind}/{namespace}/{name}/{container}",
                       node_name)


def agent_endpoint(node: Obj) -> tuple[str, int]:
    """(address, port) of a node's agent; address "" when the node reports none."""
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    host = ""
    for kind in ("InternalIP", "Hostname"):
        host = next((a.get("address", "") for a in addresses if a.get("type") == kind), "")
        if host:
            break
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    return host, int(port or DEFAULT_AGENT_PORT)


def choose_container(pod: Obj, requested: str) -> str:
    """The container a request means, with kube-apiserver's messages when it cannot tell."""
    spec, name = pod.get("spec") or {}, pod["metadata"]["name"]
    containers = spec.get("containers") or []
    everything = [c["name"] for key in ("initContainers", "containers", "ephemeralContainers")
                  for c in spec.get(key) or []]
    if not requested:
        if len(containers) == 1:
            return containers[0]["name"]
        if not containers:
            raise errors.bad_request(f"a container name must be specified for pod {name}")
        raise errors.bad_request(f"a container name must be specified for pod {name}, "
                                 f"choose one of: [{' '.join(everything)}]")
    if requested not in everything:
        raise errors.bad_request(f"container {requested} is not valid for pod {name}")
    return requested


def _check_started(pod: Obj, container: str) -> None:
    """A container that never ran has no logs: say why, as the kubelet does."""
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses"):
        for found in status.get(key) or []:
            if found.get("name") != container:
                continue
            waiting = (found.get("state") or {}).get("waiting")
            if waiting is None or (found.get("lastState") or {}).get("terminated"):
                return
            reason = waiting.get("reason") or "ContainerCreating"
            name = pod["metadata"]["name"]
            why = {"ErrImagePull": "image can't be pulled",
                   "ImagePullBackOff": "trying and failing to pull image"}.get(reason, reason)
            raise errors.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {why}')


def _log_params(name: str, q: Any) -> dict[str, str]:
    """PodLogOptions from the query, validated as kube-apiserver does."""
    params: dict[str, str] = {}
    for flag in LOG_FLAGS:
        value = q.get(flag, "").lower()
        if value not in ("", "true", "false", "1", "0"):
            raise errors.bad_request(f'{flag}: invalid boolean value "{q.get(flag)}"')
        if value in ("true", "1"):
            params[flag] = "true"
    problems: list[FieldError] = []
    for number in LOG_NUMBERS:
        if q.get(number) in (None, ""):
            continue
        try:
            value = int(q[number])
        except ValueError:
            raise errors.bad_request(f'{number}: invalid integer value "{q[number]}"') from None
        if number == "tailLines" and value < 0:
            problems.append(FieldError(number, INVALID, value,
                                       "must be greater than or equal to 0"))
        elif number != "tailLines" and value < 1:
            problems.append(FieldError(number, INVALID, value, "must be greater than 0"))
        params[number] = str(value)
    if q.get("sinceTime"):
        try:
            datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00"))
        except ValueError:
            raise errors.bad_request(
                f'sinceTime: invalid RFC 3339 time "{q["sinceTime"]}"') from None
        if "sinceSeconds" in params:
            problems.append(FieldError("", FORBIDDEN, detail="at most one of `sinceTime` or "
                                       "`sinceSeconds` may be specified"))
        params["sinceTime"] = q["sinceTime"]
    if problems:
        messages = [e.message() for e in problems]
        summary = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
        causes = [{"reason": e.reason, "message": e.message().split(": ", 1)[1],
                   "field": e.field} for e in problems]
        raise errors.APIError(422, "Invalid", f'PodLogOptions "{name}" is invalid: {summary}',
                              {"name": name, "kind": "PodLogOptions", "causes": causes})
    return params


def _exec_params(q: Any, target: _Target) -> list[tuple[str, str]]:
    params = [(k, v) for k, v in q.multi_items() if k in EXEC_PARAMS]
    return [*params, ("podUID", target.pod["metadata"].get("uid", ""))]


def _agent_error(target: _Target, code: int, body: bytes) -> errors.APIError:
    """The agent's answer as the user's error: its Status when it sent one."""
    with contextlib.suppress(ValueError):
        status = orjson.loads(body)
        if isinstance(status, dict) and status.get("kind") == "Status":
            message = str(status.get("message", ""))
            if code in (401, 403):
                message = (f'the node agent on node "{target.node}" refused the API server\'s '
                           f"credentials ({message}): the agent must be given the cluster's "
                           "kubelet client token")
            return errors.APIError(code, str(status.get("reason") or _REASONS.get(code, "")),
                                   message, status.get("details"))
    text = body.decode(errors="replace").strip()[:1000]
    return errors.APIError(code, _REASONS.get(code, "InternalError"),
                           f'the node agent on node "{target.node}" answered {code}: {text}')


def _unreachable(target: _Target, exc: BaseException) -> errors.APIError:
    return errors.service_unavailable(
        f'the node agent on node "{target.node}" cannot be reached at '
        f"{target.url.split('/', 3)[2]}: {exc or type(exc).__name__}")


async def deny(ws: WebSocket, exc: errors.APIError) -> None:
    """Refuse a WebSocket upgrade with the Status as an HTTP answer (kubectl shows it)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(Response(orjson.dumps(exc.status()), exc.code,
                                               media_type="application/json"))
    else:
        await ws.close(1008)


async def _relay(ws: WebSocket, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Frames both ways until one side closes; then close the other (with the agent's code)."""

    async def from_client() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await upstream.send_bytes(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send_str(message["text"])

    async def from_agent() -> None:
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_text(message.data)

    client = asyncio.create_task(from_client(), name="exec-from-client")
    agent = asyncio.create_task(from_agent(), name="exec-from-agent")
    try:
        await asyncio.wait({client, agent}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (client, agent):
            task.cancel()
        await asyncio.gather(client, agent, return_exceptions=True)
    if agent.done() and not agent.cancelled() and agent.exception() is None:
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await ws.close(upstream.close_code or 1000)
    await upstream.close()
