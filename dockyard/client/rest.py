"""The async REST client every component uses: typed verbs over the Kubernetes API paths.

One `Client` holds one `httpx.AsyncClient` (keep-alive TLS, the cluster CA, a bearer token from
a kubeconfig). Verbs take a `ResourceInfo` so callers never build paths; errors arrive as
`ApiError` carrying the server's `Status`. Watches are async iterators of (type, object).
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from dockyard.api.resources import ResourceInfo

Obj = dict[str, Any]

PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


class ApiError(Exception):
    """A non-2xx answer; `status` is the server's `Status` object."""

    def __init__(self, code: int, status: Obj) -> None:
        super().__init__(f"{code} {status.get('reason', '')}: {status.get('message', '')}")
        self.code = code
        self.status = status

    @property
    def reason(self) -> str:
        return str(self.status.get("reason", ""))


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.code == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.code == 409


class Client:
    def __init__(self, base_url: str, *, token: str = "", ca_file: str | None = None,
                 ca_pem: str | None = None, user_agent: str = "dockyard") -> None:
        verify: ssl.SSLContext | bool = True
        if ca_file or ca_pem:
            verify = ssl.create_default_context(cafile=ca_file, cadata=ca_pem)
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url
        self._http = httpx.AsyncClient(
            base_url=base_url, verify=verify, headers=headers, timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    @classmethod
    def from_kubeconfig(cls, path: str | Path, *, user_agent: str = "dockyard") -> Client:
        """The current context of a kubeconfig (token auth, CA data or file)."""
        config = yaml.safe_load(Path(path).read_text())
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"]
                       if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        ca_data = cluster.get("certificate-authority-data")
        return cls(cluster["server"], token=user.get("token", ""),
                   ca_file=cluster.get("certificate-authority"),
                   ca_pem=base64.b64decode(ca_data).decode() if ca_data else None,
                   user_agent=user_agent)

    async def close(self) -> None:
        await self._http.aclose()

    # -- paths -----------------------------------------------------------------------------

    @staticmethod
    def path(info: ResourceInfo, namespace: str | None = None, name: str | None = None,
             sub: str = "") -> str:
        root = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
        if info.namespaced and namespace:
            root += f"/namespaces/{namespace}"
        root += f"/{info.plural}"
        if name:
            root += f"/{name}"
        if sub:
            root += f"/{sub}"
        return root

    # -- verbs -----------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json") -> Any:
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if content is not None else None
        response = await self._http.request(method, path, params=params, content=content,
                                            headers=headers)
        data = orjson.loads(response.content) if response.content else {}
        if response.status_code >= 400:
            if not isinstance(data, dict) or data.get("kind") != "Status":
                data = {"kind": "Status", "code": response.status_code,
                        "message": response.text}
            raise ApiError(response.status_code, data)
        return data

    async def get(self, info: ResourceInfo, namespace: str | None, name: str) -> Obj:
        return await self.request("GET", self.path(info, namespace, name))

    async def list(self, info: ResourceInfo, namespace: str | None = None, *,
                   label_selector: str = "", field_selector: str = "", limit: int = 0,
                   continue_token: str = "") -> Obj:
        params: dict[str, Any] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if limit:
            params["limit"] = limit
        if continue_token:
            params["continue"] = continue_token
        return await self.request("GET", self.path(info, namespace), params=params)

    async def create(self, info: ResourceInfo, obj: Obj, namespace: str | None = None) -> Obj:
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        return await self.request("POST", self.path(info, ns), body=obj)

    async def update(self, info: ResourceInfo, obj: Obj, *, sub: str = "") -> Obj:
        meta = obj["metadata"]
        return await self.request("PUT", self.path(info, meta.get("namespace"), meta["name"],
                                                   sub), body=obj)

    async def update_status(self, info: ResourceInfo, obj: Obj) -> Obj:
        return await self.update(info, obj, sub="status")

    async def patch(self, info: ResourceInfo, namespace: str | None, name: str, patch: Any, *,
                    patch_type: str = "merge", sub: str = "") -> Obj:
        return await self.request("PATCH", self.path(info, namespace, name, sub), body=patch,
                                  content_type=PATCH_CONTENT_TYPES[patch_type])

    async def delete(self, info: ResourceInfo, namespace: str | None, name: str, *,
                     grace_period_seconds: int | None = None, propagation_policy: str = "",
                     preconditions: Obj | None = None) -> Obj:
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = preconditions
        return await self.request("DELETE", self.path(info, namespace, name), body=options)

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str = "") -> None:
        binding: Obj = {"apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": pod, "namespace": namespace},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        if uid:
            binding["metadata"]["uid"] = uid
        await self.request("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/binding",
                           body=binding)

    async def watch(self, info: ResourceInfo, namespace: str | None = None, *,
                    resource_version: str = "", label_selector: str = "",
                    field_selector: str = "", timeout_seconds: int = 300,
                    bookmarks: bool = True) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) pairs, including BOOKMARK and ERROR, until the server ends it."""
        params: dict[str, Any] = {"watch": "1", "timeoutSeconds": timeout_seconds,
                                  "allowWatchBookmarks": "true" if bookmarks else "false"}
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        timeout = httpx.Timeout(30.0, read=timeout_seconds + 30.0)
        async with self._http.stream("GET", self.path(info, namespace), params=params,
                                     timeout=timeout) as response:
            if response.status_code >= 400:
                body = await response.aread()
                raise ApiError(response.status_code, orjson.loads(body) if body else {})
            async for line in response.aiter_lines():
                if line:
                    event = orjson.loads(line)
                    yield event["type"], event["object"]
