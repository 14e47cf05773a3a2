"""Per-kind defaulting and validation: the entry points the API server calls.

One `KindRules` per kind in `_RULES` names its object-name rule and its default / validate /
update / status functions; ObjectMeta is checked here for every kind, so the kind modules only
look at their own fields. Errors are de-duplicated like Kubernetes' ErrorList.ToAggregate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockyard.api import misc, networkpolicy, pod, scheduling, service, workloads
from dockyard.api.fielderrors import FieldError
from dockyard.api.meta import (
    NameFn,
    ensure_dict,
    name_is_dns1035_label,
    name_is_dns_label,
    name_is_dns_subdomain,
    validate_object_meta,
    validate_object_meta_update,
)
from dockyard.api.resources import ResourceInfo

Obj = dict[str, Any]
Errors = list[FieldError]


@dataclass(frozen=True)
class KindRules:
    """How one kind is defaulted and validated (any function may be absent)."""

    name_fn: NameFn | None = name_is_dns_subdomain
    default: Callable[[Obj], None] | None = None
    validate: Callable[[Obj], Errors] | None = None  # create
    # Update: validates the new object in full, plus what may not change (replaces `validate`).
    validate_update: Callable[[Obj, Obj], Errors] | None = None
    validate_status: Callable[[Obj, Obj], Errors] | None = None


def _with(check: Callable[[Obj], Errors],
          *extra: Callable[[Obj, Obj], Errors]) -> Callable[[Obj, Obj], Errors]:
    """An update validator: update-only rules first, then the create checks on the new object."""
    return lambda new, old: [e for fn in extra for e in fn(new, old)] + check(new)


def _workload_status(kind: str) -> Callable[[Obj, Obj], Errors]:
    return lambda new, _old: workloads.validate_workload_status(kind, new)


_RULES: dict[tuple[str, str], KindRules] = {
    ("", "Namespace"): KindRules(
        name_is_dns_label, misc.default_namespace, misc.validate_namespace,
        lambda new, old: [], lambda new, old: misc.validate_namespace_status(new)),
    ("", "Pod"): KindRules(
        name_is_dns_subdomain, pod.default_pod, pod.validate_pod, pod.validate_pod_update,
        pod.validate_pod_status_update),
    ("", "Node"): KindRules(
        name_is_dns_subdomain, misc.default_node, misc.validate_node,
        misc.validate_node_update, lambda new, old: misc.validate_node(new)),
    ("", "Service"): KindRules(
        name_is_dns1035_label, service.default_service,
        service.validate_service, service.validate_service_update),
    ("", "Endpoints"): KindRules(
        name_is_dns_subdomain, misc.default_endpoints, misc.validate_endpoints),
    ("", "ConfigMap"): KindRules(
        name_is_dns_subdomain, None, misc.validate_config_map,
        _with(misc.validate_config_map, lambda new, old: misc.validate_immutable_data(
            new, old, ("data", "binaryData")))),
    ("", "Secret"): KindRules(
        name_is_dns_subdomain, misc.default_secret, misc.validate_secret,
        misc.validate_secret_update),
    # Core v1 Events are not name-checked beyond being present.
    ("", "Event"): KindRules(None, None, misc.validate_event),
    ("", "ServiceAccount"): KindRules(name_is_dns_subdomain),
    ("apps", "Deployment"): KindRules(
        name_is_dns_subdomain, workloads.default_deployment,
        workloads.validate_deployment, workloads.validate_deployment_update,
        _workload_status("Deployment")),
    ("apps", "ReplicaSet"): KindRules(
        name_is_dns_subdomain, workloads.default_replicaset,
        workloads.validate_replicaset, workloads.validate_replicaset_update,
        _workload_status("ReplicaSet")),
    ("batch", "Job"): KindRules(
        name_is_dns_subdomain, workloads.default_job, workloads.validate_job,
        workloads.validate_job_update, _workload_status("Job")),
    ("coordination.k8s.io", "Lease"): KindRules(name_is_dns_subdomain, None, misc.validate_lease),
    ("discovery.k8s.io", "EndpointSlice"): KindRules(
        name_is_dns_subdomain, misc.default_endpoint_slice,
        misc.validate_endpoint_slice, misc.validate_endpoint_slice_update),
    ("networking.k8s.io", "NetworkPolicy"): KindRules(
        name_is_dns_subdomain, networkpolicy.default_network_policy,
        networkpolicy.validate_network_policy),
    ("scheduling.k8s.io", "PriorityClass"): KindRules(
        name_is_dns_subdomain, scheduling.default_priority_class,
        scheduling.validate_priority_class, scheduling.validate_priority_class_update),
}


def rules_for(info: ResourceInfo) -> KindRules:
    return _RULES.get((info.group, info.kind), KindRules())


def apply_defaults(info: ResourceInfo, obj: dict) -> None:
    """Fill in what the Kubernetes API server would (defaults.go, create strategy, admission).

    Mutates `obj`; idempotent, and safe on updates too: create-time steps (pod status and
    admission, the namespace finalizer) only fill in what the object does not have yet.
    """
    meta = ensure_dict(obj, "metadata")
    if not info.namespaced:
        meta.pop("namespace", None)  # the API server silently clears it for cluster-scoped kinds
    rules = rules_for(info)
    if rules.default is not None:
        rules.default(obj)


def validate(info: ResourceInfo, obj: dict, old: dict | None = None) -> list[FieldError]:
    """Validate a create (`old` is None) or an update of the stored object `old`."""
    rules = rules_for(info)
    if old is None:
        errs = validate_object_meta(obj.get("metadata"), info.namespaced, rules.name_fn)
        if rules.validate is not None:
            errs += rules.validate(obj)
        return _dedupe(errs)
    errs = validate_object_meta_update(obj.get("metadata"), old.get("metadata"))
    if rules.validate_update is not None:
        errs += rules.validate_update(obj, old)
    elif rules.validate is not None:
        errs += rules.validate(obj)
    return _dedupe(errs)


def validate_status(info: ResourceInfo, obj: dict, old: dict) -> list[FieldError]:
    """Validate an update through the status subresource (metadata rules + light status checks)."""
    errs = validate_object_meta_update(obj.get("metadata"), old.get("metadata"))
    rules = rules_for(info)
    if rules.validate_status is not None:
        errs += rules.validate_status(obj, old)
    return _dedupe(errs)


def _dedupe(errs: Errors) -> Errors:
    seen: set[str] = set()
    out: Errors = []
    for err in errs:
        message = err.message()
        if message not in seen:
            seen.add(message)
            out.append(err)
    return out
