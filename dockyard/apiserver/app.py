"""The API server as an ASGI app: authentication, discovery, OpenAPI and resource routes.

Routes are few because Kubernetes paths are regular: `/api/v1/...` and
`/apis/<group>/<version>/...` both go to `ResourceHandlers` through `parse_target`.
Every `APIError` becomes its `Status` JSON here, in one place.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from dockyard.apiserver import discovery, errors, openapi
from dockyard.apiserver.handlers import ResourceHandlers, parse_target
from dockyard.apiserver.join import PATHS as JOIN_PATHS
from dockyard.apiserver.join import JoinService
from dockyard.apiserver.negotiation import JSON
from dockyard.apiserver.nodeproxy import KubeletClientConfig, NodeProxy, deny
from dockyard.apiserver.registry import with_registry
from dockyard.apiserver.rest import Registry
from dockyard.runtime.images import ImageStore

log = logging.getLogger("dockyard.apiserver")

# What the real apiserver lets anyone read (system:public-info-viewer).
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")


def _json(body: Any, code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=code, media_type=JSON)


def _error(exc: errors.APIError) -> Response:
    return _json(exc.status(), exc.code)


class BearerTokenAuth:
    """ASGI middleware: a request needs `Authorization: Bearer <known token>` (else 401).

    Tokens are looked up in `tokens()` (the tokens file), then in `fallback` (node tokens in
    the store, apiserver/join.py). `public` paths pass without a token (the join endpoints
    check their bootstrap token themselves)."""

    def __init__(self, app: ASGIApp, tokens: Callable[[], dict[str, dict]], *,
                 fallback: Callable[[str], Awaitable[dict | None]] | None = None,
                 public: tuple[str, ...] = PUBLIC_PATHS) -> None:
        self.app = app
        self.tokens = tokens
        self.fallback = fallback
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or (
                scope["type"] == "http" and scope["path"] in self.public):
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        scheme, _, token = header.decode("latin-1").partition(" ")
        token = token.strip()
        user = self.tokens().get(token) if scheme.lower() == "bearer" else None
        if user is None and self.fallback is not None and scheme.lower() == "bearer" and token:
            user = await self.fallback(token)
        if user is None:
            # For a WebSocket upgrade Starlette sends this as the handshake's denial response.
            await _error(errors.unauthorized())(scope, receive, send)
            return
        scope["user"] = user
        await self.app(scope, receive, send)


def _guard(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except errors.APIError as exc:
            return _error(exc)
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.url.path)
            return _json(errors.APIError(500, "InternalError",
                                         "an internal error occurred").status(), 500)

    return guarded


def build_app(
    registry: Registry, *, tokens: Callable[[], dict[str, dict]], server_address: str,
    kubelet_client: KubeletClientConfig | None = None, join: JoinService | None = None,
    images: ImageStore | None = None,
) -> ASGIApp:
    """`kubelet_client`: how to reach node agents for pods/log and pods/exec (else 503).
    `join`: serve the join endpoints and accept node tokens (apiserver/join.py).
    `images`: serve this store as the cluster's image registry under /v2/ (registry.py)."""
    nodes = NodeProxy(registry, kubelet_client) if kubelet_client is not None else None
    resources = ResourceHandlers(registry, nodes)

    async def version(_: Request) -> Response:
        return _json(discovery.version_info())

    async def health(_: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    async def api(_: Request) -> Response:
        return _json(discovery.api_versions(server_address))

    async def apis(_: Request) -> Response:
        return _json(discovery.api_group_list())

    async def core_resources(request: Request) -> Response:
        found = discovery.resource_list("", request.path_params["version"])
        if found is None:
            raise errors.path_not_found(request.url.path)
        return _json(found)

    async def group(request: Request) -> Response:
        found = discovery.api_group(request.path_params["group"])
        if found is None:
            raise errors.path_not_found(request.url.path)
        return _json(found)

    async def group_resources(request: Request) -> Response:
        p = request.path_params
        found = discovery.resource_list(p["group"], p["version"])
        if found is None:
            raise errors.path_not_found(request.url.path)
        return _json(found)

    async def core(request: Request) -> Response:
        p = request.path_params
        target = parse_target("", p["version"], p["rest"].strip("/").split("/"))
        return await resources.handle(request, target)

    async def grouped(request: Request) -> Response:
        p = request.path_params
        target = parse_target(p["group"], p["version"], p["rest"].strip("/").split("/"))
        return await resources.handle(request, target)

    async def openapi_v2(_: Request) -> Response:
        return Response(openapi.openapi_v2(), media_type=JSON)

    async def openapi_v3(_: Request) -> Response:
        return Response(openapi.openapi_v3_index(), media_type=JSON)

    async def openapi_v3_gv(request: Request) -> Response:
        doc = openapi.openapi_v3_group_version(request.path_params["path"])
        if doc is None:
            raise errors.path_not_found(request.url.path)
        return Response(doc, media_type=JSON)

    def no_agents(name: str) -> errors.APIError:
        return errors.service_unavailable(
            f'no node agent serves exec for pod "{name}": this API server has no kubelet '
            "client configured")

    async def pod_exec(request: Request) -> Response:
        p = request.path_params
        if nodes is None:
            raise no_agents(p["name"])
        return await nodes.exec_http(request, p["namespace"], p["name"])

    async def pod_exec_websocket(ws: WebSocket) -> None:
        p = ws.path_params
        if nodes is None:
            await deny(ws, no_agents(p["name"]))
            return
        try:
            await nodes.exec_websocket(ws, p["namespace"], p["name"])
        except Exception:
            log.exception("internal error serving exec for %s/%s", p["namespace"], p["name"])
            with contextlib.suppress(Exception):
                await ws.close(1011)

    all_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    exec_path = "/api/v1/namespaces/{namespace}/pods/{name}/exec"
    routes = [
        *(join.routes() if join is not None else []),
        Route("/version", _guard(version)),
        Route("/healthz", health), Route("/livez", health), Route("/readyz", health),
        Route("/api", _guard(api)),
        Route("/api/{version}", _guard(core_resources)),
        Route(exec_path, _guard(pod_exec), methods=["GET", "POST"]),
        WebSocketRoute(exec_path, pod_exec_websocket),
        Route("/api/{version}/{rest:path}", _guard(core), methods=all_methods),
        Route("/apis", _guard(apis)),
        Route("/apis/{group}", _guard(group)),
        Route("/apis/{group}/{version}", _guard(group_resources)),
        Route("/apis/{group}/{version}/{rest:path}", _guard(grouped), methods=all_methods),
        Route("/openapi/v2", _guard(openapi_v2)),
        Route("/openapi/v3", _guard(openapi_v3)),
        Route("/openapi/v3/{path:path}", _guard(openapi_v3_gv)),
    ]

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await _error(errors.path_not_found(scope["path"]))(scope, receive, send)

    # A bare Router: `_guard` already renders every error, so Starlette's exception
    # middleware would only add cost to each request.
    if join is None:
        auth = BearerTokenAuth(Router(routes=routes, default=not_found), tokens)
    else:
        auth = BearerTokenAuth(Router(routes=routes, default=not_found), tokens,
                               fallback=join.authenticate, public=(*PUBLIC_PATHS, *JOIN_PATHS))
    if images is None:
        return auth
    return with_registry(auth, images, tokens=tokens, fallback=auth.fallback)
