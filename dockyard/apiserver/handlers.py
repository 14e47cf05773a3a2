"""HTTP handlers for resource paths: map a Kubernetes REST request onto the `Registry`.

`parse_target` turns `/api/v1/namespaces/ns/pods/name/status` into a `Target`; `handle`
dispatches on method and subresource; responses are JSON, a `Table` or metadata only, as the
client's Accept header asks. Every error is raised as `APIError` and rendered by the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dockyard.api.resources import ResourceInfo, lookup
from dockyard.apiserver import errors, fieldvalidation, patch, tables
from dockyard.apiserver.negotiation import (
    JSON,
    PATCH_TYPES,
    media_type,
    parse_body,
    partial_metadata,
    wanted_shape,
)
from dockyard.apiserver.nodeproxy import NodeProxy
from dockyard.apiserver.rest import DeleteOptions, Registry
from dockyard.apiserver.selectors import combine, field_matcher, label_matcher
from dockyard.apiserver.subresources import bind_pod, scale_of, set_scale
from dockyard.apiserver.watch import watch_events

Obj = dict[str, Any]


@dataclass(frozen=True)
class Target:
    info: ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str = ""
    watch: bool = False  # the legacy `/watch/` path prefix


def parse_target(group: str, version: str, segments: list[str]) -> Target:
    """Resolve the path after `/api/v1` or `/apis/<group>/<version>` (404 when unknown)."""
    watch = bool(segments) and segments[0] == "watch"
    if watch:
        segments = segments[1:]
    namespace: str | None = None
    if len(segments) >= 3 and segments[0] == "namespaces":
        info = lookup(group, version, segments[2])
        if info is not None and info.namespaced:
            namespace, segments = segments[1], segments[2:]
    if not segments or len(segments) > 3:
        raise errors.path_not_found("/".join(segments))
    info = lookup(group, version, segments[0])
    if info is None:
        raise errors.path_not_found(segments[0])
    name = segments[1] if len(segments) > 1 else None
    sub = segments[2] if len(segments) > 2 else ""
    if sub and sub not in info.subresources:
        raise errors.path_not_found(f"{info.plural}/{sub}")
    if info.namespaced and name is not None and namespace is None:
        raise errors.path_not_found("/".join(segments))
    return Target(info, namespace, name, sub, watch)


class ResourceHandlers:
    """The verbs of every resource, over one `Registry`."""

    def __init__(self, registry: Registry, node_proxy: NodeProxy | None = None) -> None:
        self.registry = registry
        self.node_proxy = node_proxy  # pods/log and pods/exec go through to the node agent

    async def handle(self, request: Request, target: Target) -> Response:
        method = request.method
        if target.name is None:
            if method == "GET":
                watching = target.watch or request.query_params.get("watch") in ("1", "true")
                if watching:
                    return self._watch(request, target)
                return await self._list(request, target)
            if method == "POST":
                return await self._create(request, target)
            if method == "DELETE":
                return await self._delete_collection(request, target)
            raise errors.method_not_allowed()
        if target.subresource:
            return await self._subresource(request, target)
        if method == "GET":
            obj = await self.registry.get(target.info, target.namespace, target.name)
            return self._render(request, target.info, obj)
        if method == "PUT":
            body = await self._object_body(request, target.info)
            obj = await self.registry.update(target.info, target.namespace, target.name, body,
                                             dry_run=_dry_run(request))
            return self._render(request, target.info, obj)
        if method == "PATCH":
            obj = await self._patch(request, target)
            return self._render(request, target.info, obj)
        if method == "DELETE":
            opts = await _delete_options(request)
            obj, gone = await self.registry.delete(target.info, target.namespace, target.name,
                                                   opts)
            return self._render(request, target.info, obj, 200 if gone else 202)
        raise errors.method_not_allowed()

    # -- collections -----------------------------------------------------------------------

    async def _list(self, request: Request, target: Target) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise errors.bad_request("limit must be an integer") from None
        page = await self.registry.list(
            target.info, target.namespace, match=_matcher(request, target.info),
            limit=max(limit, 0), continue_token=q.get("continue", ""),
        )
        list_meta: Obj = {"resourceVersion": str(page.revision)}
        if page.continue_token:
            list_meta["continue"] = page.continue_token
        shape = wanted_shape(request.headers.get("accept"))
        if shape == "Table":
            body = _table(target.info, page.items, q.get("includeObject", "Metadata"),
                          list_meta)
        elif shape == "PartialObjectMetadata":
            body = {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                    "metadata": list_meta, "items": [partial_metadata(o) for o in page.items]}
        else:
            body = {"kind": target.info.list_kind, "apiVersion": target.info.api_version,
                    "metadata": list_meta, "items": page.items}
        return _json(body)

    def _watch(self, request: Request, target: Target) -> Response:
        q = request.query_params
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        except ValueError:
            raise errors.bad_request("timeoutSeconds must be a number") from None
        events = watch_events(
            self.registry, target.info, target.namespace,
            match=_matcher(request, target.info),
            resource_version=q.get("resourceVersion", ""),
            bookmarks=q.get("allowWatchBookmarks") in ("1", "true"),
            timeout=timeout,
        )
        shape = wanted_shape(request.headers.get("accept"))
        include = q.get("includeObject", "Metadata")
        info = target.info
        if shape == "Table":
            _table(info, [], include)  # refuse a bad includeObject before streaming

        async def lines() -> AsyncIterator[bytes]:
            async for kind, obj in events:
                if kind not in ("ERROR", "BOOKMARK"):
                    if shape == "Table":
                        obj = _table(info, [obj], include)
                    elif shape == "PartialObjectMetadata":
                        obj = partial_metadata(obj)
                yield orjson.dumps({"type": kind, "object": obj}) + b"\n"

        return StreamingResponse(lines(), media_type=JSON)

    async def _create(self, request: Request, target: Target) -> Response:
        body = await self._object_body(request, target.info)
        obj = await self.registry.create(target.info, target.namespace, body,
                                         dry_run=_dry_run(request))
        return self._render(request, target.info, obj, 201)

    async def _delete_collection(self, request: Request, target: Target) -> Response:
        opts = await _delete_options(request)
        page = await self.registry.list(target.info, target.namespace,
                                        match=_matcher(request, target.info))
        deleted = []
        for obj in page.items:
            meta = obj["metadata"]
            try:
                gone, _ = await self.registry.delete(target.info, meta.get("namespace"),
                                                     meta["name"], opts)
            except errors.APIError as exc:
                if exc.code == 404:
                    continue
                raise
            deleted.append(gone)
        return _json({"kind": target.info.list_kind, "apiVersion": target.info.api_version,
                      "metadata": {}, "items": deleted})

    # -- objects ---------------------------------------------------------------------------

    async def _object_body(self, request: Request, info: ResourceInfo) -> Obj:
        body = parse_body(await request.body(), request.headers.get("content-type"))
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if (api_version and api_version != info.api_version) or (kind and kind != info.kind):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) and kind ({kind}) do not match "
                f"the expected {info.api_version} {info.kind}"
            )
        body.setdefault("metadata", {})
        self._check_fields(request, info, body)
        return body

    @staticmethod
    def _check_fields(request: Request, info: ResourceInfo, obj: Obj) -> None:
        warnings = fieldvalidation.check(info, obj, request.query_params.get("fieldValidation"))
        request.state.warnings = warnings

    async def _patch(self, request: Request, target: Target, subresource: str = "") -> Obj:
        kind = PATCH_TYPES.get(media_type(request.headers.get("content-type")))
        if kind is None:
            raise errors.unsupported_media_type(request.headers.get("content-type", ""))
        if kind == "apply":
            raise errors.APIError(
                415, "UnsupportedMediaType",
                "server-side apply is not supported by this server; use client-side "
                "`kubectl apply` (without --server-side)")
        body = parse_body(await request.body(), request.headers.get("content-type"))
        info = target.info

        def transform(current: Obj) -> Obj:
            rv = current["metadata"].get("resourceVersion")
            patched = _apply_patch(kind, current, body, info.kind)
            self._check_fields(request, info, patched)
            wanted_rv = (patched.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != rv:
                raise errors.conflict(info, target.name or "")
            return patched

        return await self.registry.guaranteed_update(
            info, target.namespace, target.name or "", transform,
            subresource=subresource, dry_run=_dry_run(request))

    async def _subresource(self, request: Request, target: Target) -> Response:
        info, ns, name, sub = target.info, target.namespace, target.name or "", target.subresource
        method = request.method
        if sub in ("status", "finalize"):
            if method == "GET" and sub == "status":
                return self._render(request, info, await self.registry.get(info, ns, name))
            if method == "PUT":
                body = await self._object_body(request, info)
                obj = await self.registry.update(info, ns, name, body, subresource=sub,
                                                 dry_run=_dry_run(request))
                return self._render(request, info, obj)
            if method == "PATCH" and sub == "status":
                return self._render(request, info, await self._patch(request, target, sub))
        elif sub == "scale":
            return await self._scale(request, target)
        elif sub == "binding" and method == "POST":
            body = parse_body(await request.body(), request.headers.get("content-type"))
            await bind_pod(self.registry, info, ns, name, body)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "code": 201}, 201)
        elif sub == "log" and method == "GET":
            if self.node_proxy is None:
                raise errors.service_unavailable(
                    f'no node agent serves logs for pod "{name}": this API server has no '
                    "kubelet client configured")
            return await self.node_proxy.logs(request, ns or "", name)
        raise errors.method_not_allowed()

    async def _scale(self, request: Request, target: Target) -> Response:
        info, ns, name = target.info, target.namespace, target.name or ""
        if request.method == "GET":
            return _json(scale_of(await self.registry.get(info, ns, name)))
        if request.method == "PUT":
            body = parse_body(await request.body(), request.headers.get("content-type"))
            wanted_rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
            obj = await self.registry.guaranteed_update(
                info, ns, name, lambda cur: set_scale(cur, body), precondition_rv=wanted_rv)
            return _json(scale_of(obj))
        if request.method == "PATCH":
            kind = PATCH_TYPES.get(media_type(request.headers.get("content-type")))
            if kind is None or kind == "apply":
                raise errors.unsupported_media_type(request.headers.get("content-type", ""))
            body = parse_body(await request.body(), request.headers.get("content-type"))
            obj = await self.registry.guaranteed_update(
                info, ns, name,
                lambda cur: set_scale(cur, _apply_patch(kind, scale_of(cur), body, "Scale")))
            return _json(scale_of(obj))
        raise errors.method_not_allowed()

    def _render(self, request: Request, info: ResourceInfo, obj: Obj, code: int = 200) -> Response:
        shape = wanted_shape(request.headers.get("accept"))
        if shape == "Table":
            body = _table(info, [obj], request.query_params.get("includeObject", "Metadata"))
        elif shape == "PartialObjectMetadata":
            body = partial_metadata(obj)
        else:
            body = obj
        response = _json(body, code)
        for warning in getattr(request.state, "warnings", []):
            escaped = warning.replace('"', '\\"')
            response.headers.append("Warning", f'299 - "{escaped}"')
        return response


def _table(info: ResourceInfo, objects: list[Obj], include: str,
           list_meta: Obj | None = None) -> Obj:
    try:
        return tables.to_table(info, objects, now=datetime.now(UTC), include_object=include,
                               list_meta=list_meta)
    except ValueError as exc:
        raise errors.bad_request(str(exc)) from exc


def _apply_patch(kind: str, current: Obj, body: Any, object_kind: str) -> Obj:
    try:
        if kind == "json":
            if not isinstance(body, list):
                raise patch.PatchError("a JSON patch must be a list of operations")
            return patch.apply_json_patch(current, body)
        if kind == "merge":
            return patch.apply_merge_patch(current, body)
        if not isinstance(body, dict):
            raise patch.PatchError("a strategic merge patch must be a JSON object")
        return patch.apply_strategic_merge_patch(current, body, object_kind)
    except patch.PatchError as exc:
        raise errors.APIError(422, "Invalid", f"the patch could not be applied: {exc}") from exc


def _matcher(request: Request, info: ResourceInfo):  # type: ignore[no-untyped-def]
    q = request.query_params
    return combine(
        label_matcher(q.get("labelSelector")),
        field_matcher(q.get("fieldSelector"), info.field_selectors, info.kind),
    )


def _dry_run(request: Request) -> bool:
    values = request.query_params.getlist("dryRun")
    if any(v != "All" for v in values):
        raise errors.bad_request(f"dryRun: Unsupported value: {values!r}: supported values: "
                                 '"All"')
    return bool(values)


async def _delete_options(request: Request) -> DeleteOptions:
    q = request.query_params
    raw = await request.body()
    body: Obj = {}
    if raw.strip():
        parsed = parse_body(raw, request.headers.get("content-type"))
        body = parsed if isinstance(parsed, dict) else {}
    pre = body.get("preconditions") or {}
    grace = body.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
    policy = body.get("propagationPolicy") or q.get("propagationPolicy")
    orphan = body.get("orphanDependents", q.get("orphanDependents"))
    if policy is None and orphan is not None:
        policy = "Orphan" if str(orphan).lower() == "true" else "Background"
    if policy not in (None, "Background", "Foreground", "Orphan"):
        raise errors.bad_request(
            f'propagationPolicy: Unsupported value: "{policy}": supported values: '
            '"Background", "Foreground", "Orphan"')
    dry = body.get("dryRun") or q.getlist("dryRun")
    try:
        grace_value = int(grace) if grace is not None else None
    except ValueError:
        raise errors.bad_request("gracePeriodSeconds must be an integer") from None
    return DeleteOptions(
        grace_period_seconds=grace_value,
        propagation_policy=policy,
        precondition_uid=pre.get("uid"),
        precondition_rv=pre.get("resourceVersion"),
        dry_run=bool(dry),
    )


def _json(body: Any, code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=code, media_type=JSON)
