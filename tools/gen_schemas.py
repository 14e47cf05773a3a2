"""Generate dockyard/api/schemas.json: OpenAPI definitions for the kinds dockyard serves.

Walks the official `kubernetes` Python client's models (a dev/test dependency only) from the
kinds in RESOURCES, and writes Swagger 2.0 style definitions keyed by Kubernetes' definition
names, annotated with GVKs and, from `dockyard.api.patchmeta`, the strategic-merge-patch
extensions. The server reads only the JSON file. Run: `.venv/bin/python tools/gen_schemas.py`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kubernetes  # noqa: E402
from kubernetes.client import models  # noqa: E402

from dockyard.api.resources import RESOURCES, group_versions  # noqa: E402

OUT = ROOT / "dockyard" / "api" / "schemas.json"

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
TIME, MICRO_TIME = f"{META}.Time", f"{META}.MicroTime"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
FIELDS_V1, RAW = f"{META}.FieldsV1", "io.k8s.apimachinery.pkg.runtime.RawExtension"

# The client's class names drop the API group, so membership outside core/v1 is listed here.
GROUP_OF_CLASS: dict[str, str] = {
    **dict.fromkeys((
        "ObjectMeta", "ListMeta", "LabelSelector", "LabelSelectorRequirement", "OwnerReference",
        "ManagedFieldsEntry", "Condition", "DeleteOptions", "Preconditions", "Status",
        "StatusCause", "StatusDetails", "ShardInfo",
    ), "meta"),
    **dict.fromkeys((
        "Deployment", "DeploymentList", "DeploymentSpec", "DeploymentStatus",
        "DeploymentCondition", "DeploymentStrategy", "RollingUpdateDeployment", "ReplicaSet",
        "ReplicaSetList", "ReplicaSetSpec", "ReplicaSetStatus", "ReplicaSetCondition",
    ), "apps"),
    **dict.fromkeys((
        "Job", "JobList", "JobSpec", "JobStatus", "JobCondition", "JobSchedulingConfiguration",
        "PodFailurePolicy", "PodFailurePolicyRule", "PodFailurePolicyOnExitCodesRequirement",
        "PodFailurePolicyOnPodConditionsPattern", "SuccessPolicy", "SuccessPolicyRule",
        "UncountedTerminatedPods",
    ), "batch"),
    **dict.fromkeys(("Lease", "LeaseList", "LeaseSpec"), "coordination"),
    **dict.fromkeys((
        "EndpointSlice", "EndpointSliceList", "Endpoint", "EndpointConditions", "EndpointHints",
        "ForNode", "ForZone",
    ), "discovery"),
    **dict.fromkeys((
        "NetworkPolicy", "NetworkPolicyList", "NetworkPolicySpec", "NetworkPolicyIngressRule",
        "NetworkPolicyEgressRule", "NetworkPolicyPeer", "NetworkPolicyPort", "IPBlock",
    ), "networking"),
    **dict.fromkeys(("Scale", "ScaleSpec", "ScaleStatus"), "autoscaling"),
    **dict.fromkeys(("PriorityClass", "PriorityClassList"), "scheduling"),
}
PACKAGES = {
    "core": "io.k8s.api.core.v1",
    "meta": META,
    "apps": "io.k8s.api.apps.v1",
    "batch": "io.k8s.api.batch.v1",
    "coordination": "io.k8s.api.coordination.v1",
    "discovery": "io.k8s.api.discovery.v1",
    "networking": "io.k8s.api.networking.v1",
    "autoscaling": "io.k8s.api.autoscaling.v1",
    "scheduling": "io.k8s.api.scheduling.v1",
}
# Classes whose name carries the group, to tell apart same-named types of two groups.
_PREFIXED = re.compile(r"^(Core|Discovery)V1(?!alpha|beta)([A-Z]\w*)$")
_PLAIN = re.compile(r"^V1(?!alpha|beta)([A-Z]\w*)$")

# The client types these as plain strings; Kubernetes as resource.Quantity.
QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests"),
    ("V1VolumeResourceRequirements", "limits"), ("V1VolumeResourceRequirements", "requests"),
    ("V1ResourceFieldSelector", "divisor"), ("V1EmptyDirVolumeSource", "size_limit"),
    ("V1PodSpec", "overhead"), ("V1PodStatus", "allocated_resources"),
    ("V1ContainerStatus", "allocated_resources"), ("V1NodeStatus", "allocatable"),
    ("V1NodeStatus", "capacity"), ("V1NodeAllocatableMappedResources", "quantity"),
    ("V1NodeAllocatableOverheadResources", "per_container"),
    ("V1NodeAllocatableOverheadResources", "per_pod"),
}
# ...and these as datetime, which is metav1.Time elsewhere.
MICRO_TIME_FIELDS = {
    ("V1LeaseSpec", "acquire_time"), ("V1LeaseSpec", "renew_time"),
    ("CoreV1Event", "event_time"), ("CoreV1EventSeries", "last_observed_time"),
}
# Keys of `x-kubernetes-list-map-keys` where the merge key alone is not the list's key.
LIST_MAP_KEYS = {
    ("io.k8s.api.core.v1.Container", "ports"): ["containerPort", "protocol"],
    ("io.k8s.api.core.v1.EphemeralContainer", "ports"): ["containerPort", "protocol"],
    ("io.k8s.api.core.v1.ServiceSpec", "ports"): ["port", "protocol"],
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints"):
        ["topologyKey", "whenUnsatisfiable"],
}
# Merge keys Kubernetes itself calls not unique: patchable, but no list-map semantics.
NOT_A_LIST_MAP = {("io.k8s.api.core.v1.NodeStatus", "addresses")}

REQUIRED_NOT_IN_1_32 = ("io.k8s.api.apps.v1.Deployment", "io.k8s.api.apps.v1.ReplicaSet")
# ...and fields Kubernetes 1.32 requires that the client leaves optional.
REQUIRED_IN_1_32 = {"io.k8s.api.scheduling.v1.PriorityClass": ["value"]}

_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "Ex.", "approx.")


def first_sentence(text: str | None) -> str:
    """The first sentence of a Go doc comment, which keeps the generated file small."""
    text = " ".join((text or "").split())
    start = 0
    while True:
        end = text.find(". ", start)
        if end < 0:
            return text
        if not any(text[: end + 1].endswith(a) for a in _ABBREVIATIONS):
            return text[: end + 1]
        start = end + 1


def definition_name(class_name: str) -> str | None:
    """`V1PodSpec` -> `io.k8s.api.core.v1.PodSpec`; None for non-v1 (alpha/beta) classes."""
    if m := _PREFIXED.match(class_name):
        group = "core" if m.group(1) == "Core" else "discovery"
        return f"{PACKAGES[group]}.{m.group(2)}"
    if m := _PLAIN.match(class_name):
        return f"{PACKAGES[GROUP_OF_CLASS.get(m.group(1), 'core')]}.{m.group(1)}"
    return None


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def _is_int_or_string(annotation: Any) -> bool:
    """Whether a pydantic annotation is `Union[StrictInt, StrictStr]` (maybe Optional)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    # Strict types are Annotated[int, Strict()]: compare the underlying types.
    bases = {typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
             for a in args}
    return bases == {int, str}


class Walker:
    """Builds definitions for every model class reachable from the roots."""

    def __init__(self) -> None:
        self.definitions: dict[str, dict[str, Any]] = {}
        self.pending: list[str] = []
        self.skipped: set[str] = set()

    def add(self, class_name: str) -> str | None:
        name = definition_name(class_name)
        if name is None:
            self.skipped.add(class_name)
            return None
        if name not in self.definitions:
            self.definitions[name] = {}
            self.pending.append(class_name)
        return name

    def run(self) -> None:
        while self.pending:
            class_name = self.pending.pop()
            self.definitions[definition_name(class_name)] = self.schema(class_name)

    def schema(self, class_name: str) -> dict[str, Any]:
        cls = getattr(models, class_name)
        fields = cls.model_fields
        props: dict[str, Any] = {}
        required: list[str] = []
        for attr, py_type in cls.openapi_types.items():
            field = fields.get(attr) or fields.get("var_" + attr.lstrip("_"))
            prop = self.prop(class_name, attr, py_type, field.annotation)
            if prop is None:
                continue  # an alpha/beta type Kubernetes 1.32 does not serve
            json_name = cls.attribute_map[attr]
            desc = first_sentence(field.description) or self.missing_doc(cls, json_name, prop)
            if desc:
                prop["description"] = desc
            props[json_name] = prop
            if field.is_required():
                required.append(json_name)
        out: dict[str, Any] = {"type": "object"}
        doc = first_sentence((cls.__doc__ or "").split("Attributes:")[0])
        if doc:
            out["description"] = doc
        if props:
            out["properties"] = dict(sorted(props.items()))
        if required:
            out["required"] = required
        return out

    def missing_doc(self, cls: type, json_name: str, prop: dict[str, Any]) -> str:
        """A description for an object-typed field, which the client does not keep."""
        if "$ref" not in prop:
            return ""
        if "kind" in cls.openapi_types:  # a top-level kind or list: Kubernetes' phrasing
            kind = cls.__name__.removeprefix("CoreV1").removeprefix("V1")
            if json_name == "metadata":
                return ("Standard list metadata." if kind.endswith("List")
                        else "Standard object's metadata.")
            if json_name == "spec":
                return f"Specification of the desired behavior of the {kind}."
            if json_name == "status":
                return f"Most recently observed status of the {kind}."
        return self.definitions_doc(prop["$ref"])

    def definitions_doc(self, reference: str) -> str:
        name = reference.rsplit("/", 1)[-1]
        if name in STATIC:
            return STATIC[name].get("description", "")
        cls = _classes_by_definition().get(name)
        return first_sentence((cls.__doc__ or "").split("Attributes:")[0]) if cls else ""

    def prop(self, owner: str, attr: str, py_type: str, annotation: Any) -> dict | None:
        if m := re.fullmatch(r"List\[(.+)\]", py_type):
            items = self.prop(owner, attr, m.group(1), None)
            return None if items is None else {"type": "array", "items": items}
        if m := re.fullmatch(r"Dict\[str, (.+)\]", py_type):
            values = self.prop(owner, attr, m.group(1), None)
            return None if values is None else {"type": "object", "additionalProperties": values}
        if (owner, attr) in QUANTITY_FIELDS:
            return ref(QUANTITY)
        if py_type == "datetime":
            return ref(MICRO_TIME if (owner, attr) in MICRO_TIME_FIELDS else TIME)
        if py_type == "object":
            if annotation is not None and _is_int_or_string(annotation):
                return ref(INT_OR_STRING)
            if (owner, attr) == ("V1ManagedFieldsEntry", "fields_v1"):
                return ref(FIELDS_V1)
            return {"type": "object"}
        scalar = SCALARS.get(py_type)
        if scalar is not None:
            return dict(scalar)
        name = self.add(py_type)
        return None if name is None else ref(name)


SCALARS = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "bool": {"type": "boolean"},
    "float": {"type": "number", "format": "double"},
    "bytes": {"type": "string", "format": "byte"},
}

# Types with custom JSON marshalling that the client flattens: written as Kubernetes has them.
STATIC: dict[str, dict[str, Any]] = {
    TIME: {"type": "string", "format": "date-time", "description":
           "Time is a wrapper around time.Time which supports correct marshaling to YAML and "
           "JSON."},
    MICRO_TIME: {"type": "string", "format": "date-time", "description":
                 "MicroTime is version of Time with microsecond level precision."},
    QUANTITY: {"type": "string", "description":
               "Quantity is a fixed-point representation of a number."},
    INT_OR_STRING: {"type": "string", "format": "int-or-string", "description":
                    "IntOrString is a type that can hold an int32 or a string."},
    FIELDS_V1: {"type": "object", "description":
                "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON "
                "format."},
    RAW: {"type": "object", "description":
          "RawExtension is used to hold extensions in external versions."},
    f"{META}.Patch": {"type": "object", "description":
                      "Patch is provided to give a concrete name and type to the Kubernetes "
                      "PATCH request body."},
    f"{META}.WatchEvent": {
        "type": "object",
        "description": "Event represents a single event to a watched resource.",
        "properties": {
            "object": {**ref(RAW), "description": "Object is: * If Type is Added or Modified: "
                       "the new state of the object."},
            "type": {"type": "string"},
        },
        "required": ["type", "object"],
    },
}


@functools.cache
def _classes_by_definition() -> dict[str, type]:
    out = {}
    for class_name in dir(models):
        cls = getattr(models, class_name)
        name = definition_name(class_name)
        if name and isinstance(cls, type) and hasattr(cls, "openapi_types"):
            out[name] = cls
    return out


def root_class(kind: str) -> str:
    # Event exists in core/v1 and events.k8s.io/v1; the client prefixes the group.
    return f"CoreV1{kind}" if kind in ("Event", "EventList") else f"V1{kind}"


def gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


def annotate_gvks(defs: dict[str, dict]) -> None:
    def tag(name: str, entries: list[dict[str, str]]) -> None:
        defs[name]["x-kubernetes-group-version-kind"] = entries

    for r in RESOURCES:
        for kind in (r.kind, r.list_kind):
            name = definition_name(root_class(kind))
            tag(name, [gvk(r.group, r.version, kind)])
    tag(f"{PACKAGES['autoscaling']}.Scale", [gvk("autoscaling", "v1", "Scale")])
    tag(f"{PACKAGES['core']}.Binding", [gvk("", "v1", "Binding")])
    tag(f"{META}.Status", [gvk("", "v1", "Status")])
    # Shared meta types belong to every group-version, as in Kubernetes' own documents.
    served = [(g, v) for g, versions in group_versions().items() for v in versions]
    served += [("autoscaling", "v1")]
    for shared in ("DeleteOptions", "WatchEvent"):
        tag(f"{META}.{shared}", [gvk(g, v, shared) for g, v in sorted(served)])


def _resolve(defs: dict[str, dict], schema: dict) -> dict:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _property(defs: dict[str, dict], name: str, path: tuple[str, ...]) -> tuple[str, dict] | None:
    """(owning definition, property schema) at `path` from definition `name`, lists see-through."""
    owner, schema = name, defs[name]
    prop = None
    for i, segment in enumerate(path):
        if i:
            while prop.get("type") == "array":
                prop = prop["items"]
            if "$ref" not in prop:
                return None
            owner = prop["$ref"].rsplit("/", 1)[-1]
            schema = _resolve(defs, prop)
        prop = (schema.get("properties") or {}).get(segment)
        if prop is None:
            return None
    return owner, prop


def drop_required(defs: dict[str, dict]) -> None:
    # Newer clients mark these required; Kubernetes 1.32's own documents do not.
    for name in REQUIRED_NOT_IN_1_32:
        defs[name].pop("required", None)
    for name, fields in REQUIRED_IN_1_32.items():
        defs[name]["required"] = fields


def annotate_patch_meta(defs: dict[str, dict]) -> None:
    try:
        from dockyard.api import patchmeta
    except ImportError:
        print("warning: dockyard.api.patchmeta missing; no patch extensions", file=sys.stderr)
        return
    for r in RESOURCES:
        root = definition_name(root_class(r.kind))
        for path, (strategy, merge_key) in sorted(patchmeta.list_paths(r.kind).items()):
            found = _property(defs, root, path)
            if found is None:
                print(f"warning: {r.kind} {'.'.join(path)} not in schema", file=sys.stderr)
                continue
            owner, prop = found
            _set_patch_extensions(owner, path[-1], prop, strategy, merge_key)


def _set_patch_extensions(owner: str, field: str, prop: dict, strategy: str | None,
                          merge_key: str | None) -> None:
    if strategy:
        prop["x-kubernetes-patch-strategy"] = strategy
    if merge_key:
        prop["x-kubernetes-patch-merge-key"] = merge_key
    if prop.get("type") != "array" or "merge" not in (strategy or "").split(","):
        return
    if merge_key and (owner, field) not in NOT_A_LIST_MAP:
        prop["x-kubernetes-list-type"] = "map"
        prop["x-kubernetes-list-map-keys"] = LIST_MAP_KEYS.get((owner, field), [merge_key])
    elif not merge_key and "$ref" not in prop["items"]:
        prop["x-kubernetes-list-type"] = "set"  # e.g. metadata.finalizers


def build() -> dict[str, Any]:
    walker = Walker()
    for r in RESOURCES:
        walker.add(root_class(r.kind))
        walker.add(root_class(r.list_kind))
    for extra in ("V1DeleteOptions", "V1Status", "V1Scale", "V1Binding"):
        walker.add(extra)
    walker.run()
    defs = {**walker.definitions, **STATIC}
    annotate_gvks(defs)
    drop_required(defs)
    annotate_patch_meta(defs)
    if walker.skipped:
        print(f"note: left out non-v1 types {sorted(walker.skipped)}", file=sys.stderr)
    return {
        "source": f"kubernetes python client {kubernetes.__version__}",
        "definitions": dict(sorted(defs.items())),
    }


def main() -> None:
    data = json.dumps(build(), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    OUT.write_text(data + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(data.encode())} bytes)")


if __name__ == "__main__":
    main()
