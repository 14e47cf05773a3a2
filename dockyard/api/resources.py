"""The resource kinds the API serves: one `ResourceInfo` per kind, looked up by path or kind.

This table is what discovery, routing, storage keys, tables and OpenAPI all read, so a kind is
added in exactly one place. Per-kind behaviour (defaults, validation) lives in `dockyard.api.kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ResourceInfo:
    """What the API needs to know about one resource (Kubernetes' APIResource plus storage)."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "binding", "log"
    categories: tuple[str, ...] = ()
    # Kinds whose spec/status split matters: updates to the main resource keep status and
    # bump metadata.generation when anything but metadata/status changed.
    has_status: bool = True
    # Field selectors this kind accepts besides metadata.name and metadata.namespace.
    field_selectors: tuple[str, ...] = ()
    verbs: tuple[str, ...] = field(
        default=(
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        )
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def group_version(self) -> str:
        return self.api_version

    def key_prefix(self, namespace: str | None = None) -> str:
        """Store key prefix: `/registry/<group>/<plural>/[<ns>/]` (like the real apiserver)."""
        base = f"/registry/{self.group or 'core'}/{self.plural}/"
        if self.namespaced and namespace:
            return f"{base}{namespace}/"
        return base

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"{self.key_prefix(namespace)}{name}"
        return f"{self.key_prefix()}{name}"


CORE = ""
APPS = "apps"
BATCH = "batch"
COORDINATION = "coordination.k8s.io"
DISCOVERY = "discovery.k8s.io"
NETWORKING = "networking.k8s.io"
SCHEDULING = "scheduling.k8s.io"

RESOURCES: tuple[ResourceInfo, ...] = (
    ResourceInfo(CORE, "v1", "Namespace", "namespaces", False, ("ns",), ("status", "finalize"),
                 field_selectors=("status.phase",)),
    ResourceInfo(CORE, "v1", "Pod", "pods", True, ("po",), ("status", "binding", "log"), ("all",),
                 field_selectors=("spec.nodeName", "status.phase", "spec.restartPolicy",
                                  "spec.schedulerName", "spec.serviceAccountName",
                                  "status.podIP", "status.nominatedNodeName")),
    ResourceInfo(CORE, "v1", "Node", "nodes", False, ("no",), ("status",),
                 field_selectors=("spec.unschedulable",)),
    ResourceInfo(CORE, "v1", "Service", "services", True, ("svc",), ("status",), ("all",),
                 field_selectors=("spec.clusterIP", "spec.type")),
    ResourceInfo(CORE, "v1", "Endpoints", "endpoints", True, ("ep",), has_status=False),
    ResourceInfo(CORE, "v1", "ConfigMap", "configmaps", True, ("cm",), has_status=False),
    ResourceInfo(CORE, "v1", "Secret", "secrets", True, has_status=False,
                 field_selectors=("type",)),
    ResourceInfo(CORE, "v1", "Event", "events", True, ("ev",), has_status=False,
                 field_selectors=("involvedObject.kind", "involvedObject.namespace",
                                  "involvedObject.name", "involvedObject.uid",
                                  "involvedObject.apiVersion",
                                  "involvedObject.resourceVersion",
                                  "involvedObject.fieldPath", "reason", "reportingComponent",
                                  "source", "type")),
    ResourceInfo(CORE, "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), has_status=False),
    ResourceInfo(APPS, "v1", "Deployment", "deployments", True, ("deploy",), ("status", "scale"),
                 ("all",)),
    ResourceInfo(APPS, "v1", "ReplicaSet", "replicasets", True, ("rs",), ("status", "scale"),
                 ("all",)),
    ResourceInfo(BATCH, "v1", "Job", "jobs", True, (), ("status",), ("all",)),
    ResourceInfo(COORDINATION, "v1", "Lease", "leases", True, has_status=False),
    ResourceInfo(DISCOVERY, "v1", "EndpointSlice", "endpointslices", True, has_status=False,
                 field_selectors=("addressType",)),
    ResourceInfo(NETWORKING, "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",),
                 has_status=False),
    ResourceInfo(SCHEDULING, "v1", "PriorityClass", "priorityclasses", False, ("pc",),
                 has_status=False),
)

_BY_PATH: dict[tuple[str, str, str], ResourceInfo] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
_BY_KIND: dict[tuple[str, str], ResourceInfo] = {(r.group, r.kind): r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> ResourceInfo | None:
    """The resource served at `/api[s]/<group>/<version>/<plural>`, or None."""
    return _BY_PATH.get((group, version, plural))


def by_kind(group: str, kind: str) -> ResourceInfo | None:
    return _BY_KIND.get((group, kind))


def group_versions() -> dict[str, list[str]]:
    """Served versions by group, in RESOURCES order (the core group is "")."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def in_group_version(group: str, version: str) -> list[ResourceInfo]:
    return [r for r in RESOURCES if r.group == group and r.version == version]
