"""Strategic-merge-patch metadata (patch strategy, merge key) for the kinds we serve.

Like Kubernetes, the metadata hangs off *types* (PodSpec, Container, ...), transcribed from the
`patchStrategy`/`patchMergeKey` struct tags in k8s.io/api; kinds only name their root type, so a
pod template inside a Deployment or Job gets exactly the same answers as a Pod's spec.
"""

from __future__ import annotations

from dataclasses import dataclass

# (patchStrategy, patchMergeKey) as in the Go tags; the key is None for lists of primitives.
PatchMeta = tuple[str, str | None]


@dataclass(frozen=True)
class _Field:
    """One struct field: the type of its value (of its elements, for a list) and its tags."""

    type: str | None = None  # None: nothing below this field carries metadata
    strategy: str | None = None
    merge_key: str | None = None


def _merge(merge_key: str | None = None, type_: str | None = None) -> _Field:
    return _Field(type_, "merge", merge_key)


_METADATA = _Field("ObjectMeta")
_TEMPLATE = _Field("PodTemplateSpec")

# Only fields that carry a tag, or lead to a type that has tagged fields, are listed: anything
# else has no strategic metadata (maps merge key by key, lists are replaced whole). Fields that
# are deliberately *untagged* in k8s.io/api are noted, since they are easy to get wrong.
_TYPES: dict[str, dict[str, _Field]] = {
    # k8s.io/apimachinery meta/v1
    "ObjectMeta": {
        "finalizers": _merge(),  # a set of strings: union on merge
        "ownerReferences": _merge("uid"),
    },
    # core/v1 workloads
    "PodTemplateSpec": {"metadata": _METADATA, "spec": _Field("PodSpec")},
    "PodSpec": {
        # retainKeys: a volume's entry keeps only the source named in the patch's $retainKeys.
        "volumes": _Field(None, "merge,retainKeys", "name"),
        "initContainers": _merge("name", "Container"),
        "containers": _merge("name", "Container"),
        "ephemeralContainers": _merge("name", "Container"),  # EphemeralContainerCommon tags
        "imagePullSecrets": _merge("name"),
        "hostAliases": _merge("ip"),
        "topologySpreadConstraints": _merge("topologyKey"),
        "schedulingGates": _merge("name"),
        "resourceClaims": _Field(None, "merge,retainKeys", "name"),
        # tolerations, readinessGates: untagged (atomic), replaced whole.
    },
    "Container": {
        "ports": _merge("containerPort"),
        "env": _merge("name"),
        "volumeMounts": _merge("mountPath"),
        "volumeDevices": _merge("devicePath"),
        # envFrom, resizePolicy, command, args: untagged (atomic).
    },
    "PodStatus": {
        "conditions": _merge("type"),
        "podIPs": _merge("ip"),
        "hostIPs": _merge("ip"),
        "resourceClaimStatuses": _Field(None, "merge,retainKeys", "name"),
        # The status lists themselves are atomic; their element type still carries tags.
        "initContainerStatuses": _Field("ContainerStatus"),
        "containerStatuses": _Field("ContainerStatus"),
        "ephemeralContainerStatuses": _Field("ContainerStatus"),
    },
    "ContainerStatus": {
        "volumeMounts": _merge("mountPath"),
        "allocatedResourcesStatus": _merge("name"),
    },
    "Pod": {"metadata": _METADATA, "spec": _Field("PodSpec"), "status": _Field("PodStatus")},
    # apps/v1
    "Deployment": {
        "metadata": _METADATA,
        "spec": _Field("DeploymentSpec"),
        "status": _Field("DeploymentStatus"),
    },
    "DeploymentSpec": {
        "template": _TEMPLATE,
        # retainKeys: switching type to Recreate must be able to drop rollingUpdate.
        "strategy": _Field(None, "retainKeys"),
    },
    "DeploymentStatus": {"conditions": _merge("type")},
    "ReplicaSet": {
        "metadata": _METADATA,
        "spec": _Field("ReplicaSetSpec"),
        "status": _Field("ReplicaSetStatus"),
    },
    "ReplicaSetSpec": {"template": _TEMPLATE},
    "ReplicaSetStatus": {"conditions": _merge("type")},
    # batch/v1
    "Job": {"metadata": _METADATA, "spec": _Field("JobSpec"), "status": _Field("JobStatus")},
    "JobSpec": {"template": _TEMPLATE},
    "JobStatus": {"conditions": _merge("type")},
    # core/v1 others
    "Service": {
        "metadata": _METADATA,
        "spec": _Field("ServiceSpec"),
        "status": _Field("ServiceStatus"),
    },
    # Merge key is port alone although ports are unique by (port, protocol): same as k8s.
    "ServiceSpec": {"ports": _merge("port")},
    "ServiceStatus": {"conditions": _merge("type")},
    "Node": {"metadata": _METADATA, "spec": _Field("NodeSpec"), "status": _Field("NodeStatus")},
    "NodeSpec": {
        "podCIDRs": _merge(),
        # taints: untagged (atomic) — `kubectl taint` sends the whole list.
    },
    "NodeStatus": {"conditions": _merge("type"), "addresses": _merge("type")},
    "Namespace": {"metadata": _METADATA, "status": _Field("NamespaceStatus")},
    "NamespaceStatus": {"conditions": _merge("type")},
    "ServiceAccount": {
        "metadata": _METADATA,
        "secrets": _merge("name"),
        # imagePullSecrets: untagged (atomic) here, unlike PodSpec.imagePullSecrets.
    },
    # Endpoints.subsets, EndpointSlice.endpoints/ports, Event, Lease, ConfigMap and Secret
    # have no tagged fields: only their ObjectMeta does.
    "Endpoints": {"metadata": _METADATA},
    "EndpointSlice": {"metadata": _METADATA},
    "Event": {"metadata": _METADATA},
    "Lease": {"metadata": _METADATA},
    "ConfigMap": {"metadata": _METADATA},
    "Secret": {"metadata": _METADATA},
    # networking/v1: the ingress/egress rules, peers and ports are untagged (atomic lists).
    "NetworkPolicy": {"metadata": _METADATA},
    # autoscaling/v1 Scale, for PATCH on the scale subresource.
    "Scale": {"metadata": _METADATA},
}

# Kind -> root type. Every kind is its own root type today; the indirection keeps kinds and
# types apart, as in Go (e.g. a future PodTemplate kind would reuse PodTemplateSpec).
_KINDS: dict[str, str] = {
    kind: kind
    for kind in (
        "Pod", "Deployment", "ReplicaSet", "Job", "Service", "Endpoints", "Node", "Namespace",
        "ConfigMap", "Secret", "Event", "ServiceAccount", "Lease", "EndpointSlice", "Scale",
        "NetworkPolicy",
    )
}

SUPPORTED_KINDS: frozenset[str] = frozenset(_KINDS)


def patch_meta(kind: str, path: tuple[str, ...]) -> PatchMeta | None:
    """(patchStrategy, mergeKey) of the field at `path` in `kind`, or None if it has none.

    `path` holds field names from the object root; list elements are transparent, so the ports
    of a Deployment's containers are ("spec", "template", "spec", "containers", "ports").
    Unknown kinds and fields have no metadata.
    """
    field = _field(kind, path)
    if field is None or field.strategy is None:
        return None
    return field.strategy, field.merge_key


def list_paths(kind: str) -> dict[tuple[str, ...], PatchMeta]:
    """Every path in `kind` that carries strategic metadata, in declaration order."""
    root = _KINDS.get(kind)
    return {} if root is None else dict(_walk(root, ()))


def _field(kind: str, path: tuple[str, ...]) -> _Field | None:
    type_name = _KINDS.get(kind)
    field: _Field | None = None
    for name in path:
        if type_name is None:
            return None
        field = _TYPES[type_name].get(name)
        if field is None:
            return None
        type_name = field.type
    return field


def _walk(type_name: str, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], PatchMeta]]:
    found: list[tuple[tuple[str, ...], PatchMeta]] = []
    for name, field in _TYPES[type_name].items():
        path = (*prefix, name)
        if field.strategy is not None:
            found.append((path, (field.strategy, field.merge_key)))
        if field.type is not None:
            found.extend(_walk(field.type, path))
    return found
