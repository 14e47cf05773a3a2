"""OpenAPI documents (/openapi/v2, /openapi/v3 and its group-versions) for the served kinds.

Schemas come from the generated `dockyard/api/schemas.json`; paths and operations are derived
from RESOURCES. Every document is built once and cached as ready-to-send JSON bytes. kubectl
reads the PATCH operations' GVK, `fieldValidation` parameter and strategic-merge-patch request
body (server-side validation, apply) and the schemas' GVK lists (apply, explain).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dockyard.api.resources import ResourceInfo, group_versions, in_group_version

SCHEMAS_FILE = Path(__file__).resolve().parent.parent / "api" / "schemas.json"
INFO = {"title": "Kubernetes", "version": "v1.32.0"}
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"

PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
PRODUCES = ("application/json", "application/yaml")
PRODUCES_WATCH = (*PRODUCES, "application/json;stream=watch")
_STATUS_TEXT = {"200": "OK", "201": "Created", "202": "Accepted"}


# --- parameters ------------------------------------------------------------------------------

# name -> (in, type, description); descriptions are the first sentence of Kubernetes' own.
PARAMETERS: dict[str, tuple[str, str, str]] = {
    "name": ("path", "string", "name of the resource"),
    "namespace": ("path", "string", "object name and auth scope, such as for teams and projects"),
    "pretty": ("query", "string", "If 'true', then the output is pretty printed."),
    "allowWatchBookmarks": ("query", "boolean",
                            'allowWatchBookmarks requests watch events with type "BOOKMARK".'),
    "continue": ("query", "string", "The continue option should be set when retrieving more "
                 "results from the server."),
    "fieldSelector": ("query", "string", "A selector to restrict the list of returned objects "
                      "by their fields."),
    "labelSelector": ("query", "string", "A selector to restrict the list of returned objects "
                      "by their labels."),
    "limit": ("query", "integer", "limit is a maximum number of responses to return for a "
              "list call."),
    "resourceVersion": ("query", "string", "resourceVersion sets a constraint on what resource "
                        "versions a request may be served from."),
    "resourceVersionMatch": ("query", "string", "resourceVersionMatch determines how "
                             "resourceVersion is applied to list calls."),
    "sendInitialEvents": ("query", "boolean", "`sendInitialEvents=true` may be set together "
                          "with `watch=true`."),
    "timeoutSeconds": ("query", "integer", "Timeout for the list/watch call."),
    "watch": ("query", "boolean", "Watch for changes to the described resources and return "
              "them as a stream of add, update, and remove notifications."),
    "dryRun": ("query", "string", "When present, indicates that modifications should not be "
               "persisted."),
    "fieldManager": ("query", "string", "fieldManager is a name associated with the actor or "
                     "entity that is making these changes."),
    "fieldValidation": ("query", "string", "fieldValidation instructs the server on how to "
                        "handle objects in the request (POST/PUT/PATCH) containing unknown or "
                        "duplicate fields."),
    "force": ("query", "boolean", 'Force is going to "force" Apply requests.'),
    "gracePeriodSeconds": ("query", "integer", "The duration in seconds before the object "
                           "should be deleted."),
    "orphanDependents": ("query", "boolean", "Deprecated: please use the PropagationPolicy, "
                         "this field will be deprecated in 1.7."),
    "propagationPolicy": ("query", "string", "Whether and how garbage collection will be "
                          "performed."),
    "container": ("query", "string", "The container for which to stream logs."),
    "follow": ("query", "boolean", "Follow the log stream of the pod."),
    "limitBytes": ("query", "integer", "If set, the number of bytes to read from the server "
                   "before terminating the log output."),
    "previous": ("query", "boolean", "Return previous terminated container logs."),
    "sinceSeconds": ("query", "integer", "A relative time in seconds before the current time "
                     "from which to show logs."),
    "tailLines": ("query", "integer", "If set, the number of lines from the end of the logs to "
                  "show."),
    "timestamps": ("query", "boolean", "If true, add an RFC3339 or RFC3339Nano timestamp at the "
                   "beginning of every line of log output."),
}
LIST = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit",
        "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds",
        "watch")
# kubectl decides whether the server validates fields by looking for `fieldValidation`.
WRITE = ("dryRun", "fieldManager", "fieldValidation")
PATCH = (*WRITE, "force")
DELETE = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")
DELETECOLLECTION = (*DELETE, *(p for p in LIST if p not in ("watch", "allowWatchBookmarks")))
LOG = ("container", "follow", "limitBytes", "previous", "sinceSeconds", "tailLines",
       "timestamps")


def param_v2(name: str) -> dict[str, Any]:
    where, kind, description = PARAMETERS[name]
    out = {"name": name, "in": where, "type": kind, "uniqueItems": True,
           "description": description}
    if where == "path":
        out["required"] = True
    return out


def param_v3(name: str) -> dict[str, Any]:
    where, kind, description = PARAMETERS[name]
    out = {"name": name, "in": where, "schema": {"type": kind, "uniqueItems": True},
           "description": description}
    if where == "path":
        out["required"] = True
    return out


@dataclass(frozen=True)
class Operation:
    """One HTTP operation, independent of the OpenAPI version it is rendered into."""

    method: str
    action: str  # x-kubernetes-action
    operation_id: str
    description: str
    gvk: dict[str, str]
    params: tuple[str, ...] = ()
    body: str | None = None  # request body definition
    response: str | None = None  # response definition; None: a plain string (logs)
    statuses: tuple[str, ...] = ("200",)
    stream: bool = False  # list/watch: also answers with a watch stream
    tag: str = ""


@dataclass
class PathItem:
    params: tuple[str, ...]  # path-level parameters (path segments, pretty)
    operations: list[Operation] = field(default_factory=list)


# --- schemas ---------------------------------------------------------------------------------

@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    """The generated definitions, `$ref`s in Swagger 2.0 form (`#/definitions/<name>`)."""
    return orjson.loads(SCHEMAS_FILE.read_bytes())["definitions"]


@functools.cache
def _definition_by_gvk() -> dict[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            out.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return out


def definition_for(group: str, version: str, kind: str) -> str:
    return _definition_by_gvk()[(group, version, kind)]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _closure(roots: set[str]) -> list[str]:
    """Every definition reachable from `roots`, sorted."""
    defs, seen, todo = definitions(), set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_refs(defs[name]))
    return sorted(seen)


def _to_v3(node: Any) -> Any:
    """A definition with `$ref`s pointing into `components/schemas`.

    A `$ref` with siblings (a field's description) is wrapped in `allOf`, as Kubernetes does:
    `kubectl explain` then shows the field's own description, not just its type's.
    """
    if isinstance(node, dict):
        out = {k: _to_v3(v) for k, v in node.items()}
        ref = out.pop("$ref", None)
        if isinstance(ref, str):
            target = {"$ref": "#/components/schemas/" + ref.rsplit("/", 1)[-1]}
            if not out:
                return target
            out["allOf"] = [target]
        return out
    if isinstance(node, list):
        return [_to_v3(v) for v in node]
    return node


def _schema_v3(name: str) -> dict[str, Any]:
    schema = _to_v3(definitions()[name])
    # OpenAPI v3 can say what v2 could only hint at with a format, as Kubernetes does.
    if name == QUANTITY:
        schema.pop("type", None)
        schema["oneOf"] = [{"type": "string"}, {"type": "number"}]
    elif name == INT_OR_STRING:
        schema.pop("type", None)
        schema["oneOf"] = [{"type": "integer"}, {"type": "string"}]
    return schema


# --- paths -----------------------------------------------------------------------------------

def _camel(group: str) -> str:
    """"coordination.k8s.io" -> "Coordination", "" -> "Core" (operationId style)."""
    if not group:
        return "Core"
    parts = group.removesuffix(".k8s.io").replace("-", ".").split(".")
    return "".join(p[:1].upper() + p[1:] for p in parts)


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


_WATCH_ONE = ("watch changes to an object of kind {}. deprecated: use the 'watch' parameter "
              "with a list operation instead, filtered to a single item with the "
              "'fieldSelector' parameter.")
_WATCH_LIST = ("watch individual changes to a list of {}. deprecated: use the 'watch' "
               "parameter with a list operation instead.")


class _Resource:
    """What every operation on one resource shares: names, GVK, definitions, paths."""

    def __init__(self, info: ResourceInfo) -> None:
        self.info, self.kind = info, info.kind
        self.gv = _camel(info.group) + info.version.capitalize()  # "CoreV1"
        self.ns = "Namespaced" if info.namespaced else ""
        self.stem = f"{self.gv}{self.ns}{self.kind}"  # "CoreV1NamespacedPod"
        self.prefix = f"/api/{info.version}" if not info.group else (
            f"/apis/{info.group}/{info.version}")
        self.scope = (f"/namespaces/{{namespace}}/{info.plural}" if info.namespaced
                      else f"/{info.plural}")
        self.scope_params = ("namespace", "pretty") if info.namespaced else ("pretty",)
        self.item_path = f"{self.prefix}{self.scope}/{{name}}"
        self.item_params = ("name", *self.scope_params)
        self.obj = definition_for(info.group, info.version, info.kind)
        self.list = definition_for(info.group, info.version, info.list_kind)
        camel = _camel(info.group)
        self.tag = f"{camel[:1].lower()}{camel[1:]}_{info.version}"

    def op(self, method: str, action: str, operation_id: str, description: str,
           gvk: dict[str, str] | None = None, **kw: Any) -> Operation:
        gvk = gvk or _gvk(self.info.group, self.info.version, self.kind)
        return Operation(method, action, operation_id, description, gvk, tag=self.tag, **kw)


def resource_paths(info: ResourceInfo) -> dict[str, PathItem]:
    """Every path serving `info`, laid out as the real apiserver does."""
    r, verbs = _Resource(info), set(info.verbs)
    paths = {
        f"{r.prefix}{r.scope}": PathItem(r.scope_params, _collection_operations(r, verbs)),
        r.item_path: PathItem(r.item_params, _item_operations(r, verbs, r.obj)),
    }
    for sub in info.subresources:
        ops = _subresource_operations(r, sub)
        if ops:
            paths[f"{r.item_path}/{sub}"] = PathItem(r.item_params, ops)
    if info.namespaced and "list" in verbs:
        paths[f"{r.prefix}/{info.plural}"] = PathItem(("pretty", *LIST), [r.op(
            "get", "list", f"list{r.gv}{r.kind}ForAllNamespaces",
            f"list or watch objects of kind {r.kind}", response=r.list, stream=True)])
    if "watch" in verbs:
        paths.update(_watch_paths(r))
    return paths


def _collection_operations(r: _Resource, verbs: set[str]) -> list[Operation]:
    ops = []
    if "list" in verbs:
        ops.append(r.op("get", "list", f"list{r.stem}", f"list or watch objects of kind {r.kind}",
                        params=LIST, response=r.list, stream=True))
    if "create" in verbs:
        ops.append(r.op("post", "post", f"create{r.stem}", f"create a {r.kind}", params=WRITE,
                        body=r.obj, response=r.obj, statuses=("200", "201", "202")))
    if "deletecollection" in verbs:
        ops.append(r.op("delete", "deletecollection", f"delete{r.gv}Collection{r.ns}{r.kind}",
                        f"delete collection of {r.kind}", params=DELETECOLLECTION,
                        body=f"{META}.DeleteOptions", response=f"{META}.Status"))
    return ops


def _item_operations(r: _Resource, verbs: set[str], obj: str, sub: str = "",
                     gvk: dict[str, str] | None = None) -> list[Operation]:
    """read/replace/patch/delete of one object, or read/replace/patch of a subresource."""
    what = f"{sub.lower()} of " if sub else ""
    ops = []
    if "get" in verbs:
        ops.append(r.op("get", "get", f"read{r.stem}{sub}",
                        f"read {what}the specified {r.kind}", gvk, response=obj))
    if "update" in verbs:
        ops.append(r.op("put", "put", f"replace{r.stem}{sub}",
                        f"replace {what}the specified {r.kind}", gvk, params=WRITE, body=obj,
                        response=obj, statuses=("200", "201")))
    if "patch" in verbs:
        ops.append(r.op("patch", "patch", f"patch{r.stem}{sub}",
                        f"partially update {what}the specified {r.kind}", gvk, params=PATCH,
                        body=f"{META}.Patch", response=obj, statuses=("200", "201")))
    if "delete" in verbs and not sub:
        ops.append(r.op("delete", "delete", f"delete{r.stem}", f"delete a {r.kind}",
                        params=DELETE, body=f"{META}.DeleteOptions", response=f"{META}.Status",
                        statuses=("200", "202")))
    return ops


def _subresource_operations(r: _Resource, sub: str) -> list[Operation]:
    verbs = {"get", "update", "patch"}
    if sub == "status":  # same kind as the resource itself
        return _item_operations(r, verbs, r.obj, "Status")
    if sub == "scale":
        scale = definition_for("autoscaling", "v1", "Scale")
        return _item_operations(r, verbs, scale, "Scale", _gvk("autoscaling", "v1", "Scale"))
    if sub == "binding":
        binding = definition_for("", "v1", "Binding")
        return [r.op("post", "post", f"create{r.stem}Binding", f"create binding of a {r.kind}",
                     _gvk("", "v1", "Binding"), params=WRITE, body=binding, response=binding,
                     statuses=("200", "201", "202"))]
    if sub == "log":
        return [r.op("get", "get", f"read{r.stem}Log", f"read log of the specified {r.kind}",
                     params=LOG, response=None)]
    return []


def _watch_paths(r: _Resource) -> dict[str, PathItem]:
    """The deprecated /watch/ paths, still served (and documented) by Kubernetes."""
    event, info = f"{META}.WatchEvent", r.info
    paths = {
        f"{r.prefix}/watch{r.scope}": PathItem((*r.scope_params, *LIST), [r.op(
            "get", "watchlist", f"watch{r.stem}List", _WATCH_LIST.format(r.kind),
            response=event, stream=True)]),
        f"{r.prefix}/watch{r.scope}/{{name}}": PathItem((*r.item_params, *LIST), [r.op(
            "get", "watch", f"watch{r.stem}", _WATCH_ONE.format(r.kind), response=event,
            stream=True)]),
    }
    if info.namespaced:
        paths[f"{r.prefix}/watch/{info.plural}"] = PathItem(("pretty", *LIST), [r.op(
            "get", "watchlist", f"watch{r.gv}{r.kind}ListForAllNamespaces",
            _WATCH_LIST.format(r.kind), response=event, stream=True)])
    return paths


@functools.cache
def _paths_by_group_version() -> dict[str, dict[str, PathItem]]:
    """`api/v1` / `apis/<group>/<version>` -> that group-version's paths."""
    out: dict[str, dict[str, PathItem]] = {}
    for group, versions in group_versions().items():
        for version in versions:
            key = f"api/{version}" if not group else f"apis/{group}/{version}"
            paths: dict[str, PathItem] = {}
            for info in in_group_version(group, version):
                paths.update(resource_paths(info))
            out[key] = paths
    return out


# --- rendering -------------------------------------------------------------------------------

def _ref_v2(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def _ref_v3(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation_v2(op: Operation) -> dict[str, Any]:
    params = [param_v2(p) for p in op.params]
    if op.body:
        params.insert(0, {"name": "body", "in": "body", "required": op.method != "delete",
                          "schema": _ref_v2(op.body)})
    schema = _ref_v2(op.response) if op.response else {"type": "string"}
    responses: dict[str, Any] = {s: {"description": _STATUS_TEXT[s], "schema": schema}
                                 for s in op.statuses}
    responses["401"] = {"description": "Unauthorized"}
    out: dict[str, Any] = {
        "description": op.description,
        "operationId": op.operation_id,
        "consumes": list(PATCH_TYPES) if op.method == "patch" else ["*/*"],
        "produces": list(PRODUCES_WATCH if op.stream else PRODUCES),
        "schemes": ["https"],
        "tags": [op.tag],
        "responses": responses,
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": op.gvk,
    }
    if params:
        out["parameters"] = params
    return out


def _operation_v3(op: Operation) -> dict[str, Any]:
    schema = _ref_v3(op.response) if op.response else {"type": "string"}
    media = PRODUCES_WATCH if op.stream else PRODUCES
    if op.response is None:
        media = ("text/plain", *PRODUCES)
    out: dict[str, Any] = {
        "description": op.description,
        "operationId": op.operation_id,
        "tags": [op.tag],
        "responses": {s: {"description": _STATUS_TEXT[s],
                          "content": {m: {"schema": schema} for m in media}}
                      for s in op.statuses},
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": op.gvk,
    }
    if op.params:
        out["parameters"] = [param_v3(p) for p in op.params]
    if op.body:
        # kubectl apply computes a strategic merge patch only if PATCH accepts that type.
        types = PATCH_TYPES if op.method == "patch" else ("application/json", "application/yaml")
        out["requestBody"] = {"content": {t: {"schema": _ref_v3(op.body)} for t in types},
                              "required": op.method != "delete"}
    return out


def _render_paths(paths: dict[str, PathItem], render: Any, param: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, item in sorted(paths.items()):
        rendered: dict[str, Any] = {op.method: render(op) for op in item.operations}
        rendered["parameters"] = [param(p) for p in item.params]
        out[path] = rendered
    return out


def _dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


@functools.cache
def openapi_v2() -> bytes:
    """The Swagger 2.0 document served at /openapi/v2 (JSON)."""
    paths: dict[str, PathItem] = {}
    for gv_paths in _paths_by_group_version().values():
        paths.update(gv_paths)
    return _dumps({
        "swagger": "2.0",
        "info": INFO,
        "paths": _render_paths(paths, _operation_v2, param_v2),
        "definitions": definitions(),
    })


def _group_version_roots(paths: dict[str, PathItem]) -> set[str]:
    roots: set[str] = set()
    for item in paths.values():
        for op in item.operations:
            roots.update(n for n in (op.body, op.response) if n)
    return roots


@functools.cache
def openapi_v3_group_version(path: str) -> bytes | None:
    """The OpenAPI 3.0 document for `api/v1` or `apis/<group>/<version>`; None if not served."""
    paths = _paths_by_group_version().get(path.strip("/"))
    if paths is None:
        return None
    schemas = {name: _schema_v3(name) for name in _closure(_group_version_roots(paths))}
    return _dumps({
        "openapi": "3.0.0",
        "info": INFO,
        "paths": _render_paths(paths, _operation_v3, param_v3),
        "components": {"schemas": schemas},
    })


def openapi_v3_hash(path: str) -> str | None:
    """The `hash` query value of a group-version document: its SHA-512, upper-case hex."""
    doc = openapi_v3_group_version(path)
    return None if doc is None else hashlib.sha512(doc).hexdigest().upper()


@functools.cache
def openapi_v3_index() -> bytes:
    """The /openapi/v3 discovery document: each group-version's URL, pinned by hash."""
    paths = {
        gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={openapi_v3_hash(gv)}"}
        for gv in _paths_by_group_version()
    }
    return _dumps({"paths": paths})


def served_group_versions() -> list[str]:
    """Paths listed in the v3 index (`api/v1`, `apis/apps/v1`, ...)."""
    return list(_paths_by_group_version())


__all__ = [
    "definitions",
    "openapi_v2",
    "openapi_v3_group_version",
    "openapi_v3_hash",
    "openapi_v3_index",
    "resource_paths",
    "served_group_versions",
]
