"""OpenAPI documents: well-formed, self-contained, and carrying what kubectl 1.32 reads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.api.resources import RESOURCES, ResourceInfo, group_versions
from dockyard.apiserver import openapi

SMP = "application/strategic-merge-patch+json"


def gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def v3(path: str) -> dict[str, Any]:
    doc = openapi.openapi_v3_group_version(path)
    assert doc is not None, path
    return json.loads(doc)


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def served() -> list[str]:
    return [gv_path(g, v) for g, versions in group_versions().items() for v in versions]


def gvk(info: ResourceInfo, kind: str | None = None) -> dict[str, str]:
    return {"group": info.group, "kind": kind or info.kind, "version": info.version}


def test_v3_index_lists_every_served_group_version_pinned_by_hash() -> None:
    index = json.loads(openapi.openapi_v3_index())
    assert sorted(index["paths"]) == sorted(served())
    for path, entry in index["paths"].items():
        digest = hashlib.sha512(openapi.openapi_v3_group_version(path)).hexdigest().upper()
        assert entry["serverRelativeURL"] == f"/openapi/v3/{path}?hash={digest}"


def test_unknown_group_version_is_none() -> None:
    assert openapi.openapi_v3_group_version("apis/example.com/v1") is None
    assert openapi.openapi_v3_group_version("api/v2") is None


@pytest.mark.parametrize("path", served())
def test_v3_document_parses_and_every_ref_resolves(path: str) -> None:
    doc = v3(path)
    assert doc["openapi"].startswith("3.0")
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        resolve(doc, ref)
    # Only what this group-version reaches is included.
    assert "io.k8s.api.core.v1.Pod" in doc["components"]["schemas"] or path != "api/v1"


def test_v2_document_parses_and_every_ref_resolves() -> None:
    doc = json.loads(openapi.openapi_v2())
    assert doc["swagger"] == "2.0"
    for ref in refs(doc):
        assert ref.startswith("#/definitions/"), ref
        resolve(doc, ref)
    item = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]
    assert {"get", "put", "patch", "delete"} <= set(item)
    patch = item["patch"]
    assert SMP in patch["consumes"] and "application/apply-patch+yaml" in patch["consumes"]
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    assert patch["x-kubernetes-action"] == "patch"
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "kind": "Pod",
                                                       "version": "v1"}
    for method in ("post",):
        names = {p["name"] for p in doc["paths"]["/api/v1/namespaces/{namespace}/pods"][method]
                 ["parameters"]}
        assert "fieldValidation" in names


def test_pod_schema_has_gvk_and_container_merge_metadata() -> None:
    schemas = v3("api/v1")["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod",
                                                       "version": "v1"}]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-type"] == "map"
    assert containers["x-kubernetes-list-map-keys"] == ["name"]
    ports = schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == "containerPort"
    assert ports["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]
    assert "name" in schemas["io.k8s.api.core.v1.Container"]["required"]
    finalizers = schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"][
        "finalizers"]
    assert finalizers["x-kubernetes-list-type"] == "set"


def test_special_scalar_types_as_kubernetes_writes_them() -> None:
    schemas = v3("api/v1")["components"]["schemas"]
    quantity = schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert quantity["oneOf"] == [{"type": "string"}, {"type": "number"}]
    int_or_string = schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string["format"] == "int-or-string"
    assert schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["format"] == "date-time"
    target_port = schemas["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"]
    assert target_port["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]
    limits = schemas["io.k8s.api.core.v1.ResourceRequirements"]["properties"]["limits"]
    assert limits["additionalProperties"]["$ref"].endswith("resource.Quantity")
    definitions = json.loads(openapi.openapi_v2())["definitions"]
    assert definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"


def test_pod_patch_supports_field_validation_and_strategic_merge() -> None:
    item = v3("api/v1")["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "kind": "Pod",
                                                       "version": "v1"}
    assert any(p["name"] == "fieldValidation" and p["in"] == "query"
               for p in patch["parameters"])
    assert SMP in patch["requestBody"]["content"]
    assert {p["name"] for p in item["parameters"]} == {"name", "namespace", "pretty"}


@pytest.mark.parametrize("info", RESOURCES, ids=lambda r: r.kind)
def test_what_kubectl_reads_for_each_kind(info: ResourceInfo) -> None:
    doc = v3(gv_path(info.group, info.version))
    # query_param_verifier_v3 / apply's gvkSupportsPatchOpenAPIV3: some PATCH for the GVK.
    patches = [item["patch"] for item in doc["paths"].values()
               if item.get("patch", {}).get("x-kubernetes-group-version-kind") == gvk(info)]
    assert patches
    for patch in patches:
        assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
        assert SMP in patch["requestBody"]["content"]
    # explain: the resource path's operations name the GVK...
    scope = f"namespaces/{{namespace}}/{info.plural}" if info.namespaced else info.plural
    prefix = f"/{gv_path(info.group, info.version)}/{scope}"
    for path in (prefix, prefix + "/{name}"):
        for op in doc["paths"][path].values():
            if isinstance(op, dict):
                assert op["x-kubernetes-group-version-kind"] == gvk(info)
    # ...and exactly one schema lists it (apply's patch metadata comes from that schema).
    owners = [name for name, s in doc["components"]["schemas"].items()
              if gvk(info) in s.get("x-kubernetes-group-version-kind", [])]
    assert len(owners) == 1
    lists = [name for name, s in doc["components"]["schemas"].items()
             if gvk(info, info.list_kind) in s.get("x-kubernetes-group-version-kind", [])]
    assert len(lists) == 1


def test_operations_carry_actions_and_subresources() -> None:
    paths = v3("apis/apps/v1")["paths"]
    base = "/apis/apps/v1/namespaces/{namespace}/deployments"
    actions = {m: op["x-kubernetes-action"] for m, op in paths[base].items() if m != "parameters"}
    assert actions == {"get": "list", "post": "post", "delete": "deletecollection"}
    assert paths[base]["get"]["operationId"] == "listAppsV1NamespacedDeployment"
    scale = paths[base + "/{name}/scale"]["patch"]
    assert scale["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "kind": "Scale",
                                                       "version": "v1"}
    status = paths[base + "/{name}/status"]["put"]
    assert status["operationId"] == "replaceAppsV1NamespacedDeploymentStatus"
    assert "/apis/apps/v1/deployments" in paths  # across namespaces
    assert "/apis/apps/v1/watch/namespaces/{namespace}/deployments/{name}" in paths
    core = v3("api/v1")["paths"]
    assert "/api/v1/nodes/{name}" in core and "/api/v1/namespaces/{namespace}/nodes" not in core
    assert core["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"][
        "x-kubernetes-group-version-kind"]["kind"] == "Binding"
    assert "/api/v1/namespaces/{namespace}/pods/{name}/log" in core


def test_documents_are_cached_bytes() -> None:
    assert openapi.openapi_v2() is openapi.openapi_v2()
    assert openapi.openapi_v3_index() is openapi.openapi_v3_index()
    assert isinstance(openapi.openapi_v3_group_version("api/v1"), bytes)


def test_generated_schemas_are_current() -> None:
    """schemas.json matches tools/gen_schemas.py (when the same client version is installed)."""
    kubernetes = pytest.importorskip("kubernetes")
    recorded = json.loads(openapi.SCHEMAS_FILE.read_bytes())
    if recorded["source"] != f"kubernetes python client {kubernetes.__version__}":
        pytest.skip(f"schemas.json was generated from {recorded['source']}")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gen_schemas", openapi.SCHEMAS_FILE.parents[2] / "tools" / "gen_schemas.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.build() == recorded, "stale: run tools/gen_schemas.py"
