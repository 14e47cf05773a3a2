"""Pods: defaulting (SetDefaults_Pod plus the ServiceAccount, Priority and
DefaultTolerationSeconds admission plugins) and the pod-level validation entry points
(ValidatePodSpec with its scheduling and DNS checks, pod templates, create and updates).
"""

from __future__ import annotations

from typing import Any

import orjson

from dockyard.api.container import (
    CONTAINER_KINDS,
    QOS_RESOURCES,
    default_container,
    id_range,
    image_pull_policy,
    validate_containers,
    validate_enum,
    validate_ids,
    validate_resources,
    validate_seccomp,
)
from dockyard.api.fielderrors import (
    FieldError,
    GoValue,
    duplicate,
    forbidden,
    go_quote,
    invalid,
    not_supported,
    required,
)
from dockyard.api.meta import (
    as_dict,
    as_int,
    as_list,
    as_str,
    child,
    details_to_errors,
    ensure_dict,
    inclusive_range_error,
    index,
    ip_errors,
    name_is_dns_subdomain,
    normalize,
    validate_annotations,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_label_selector,
    validate_labels,
    validate_qualified_name,
    validate_tolerations,
)
from dockyard.api.quantity import Quantity
from dockyard.api.volume import default_volume, try_quantity, validate_volumes

__all__ = [
    "CONTAINER_KINDS", "compute_qos_class", "default_pod", "default_pod_spec",
    "image_pull_policy", "validate_pod", "validate_pod_spec", "validate_pod_status_update",
    "validate_pod_template", "validate_pod_update", "validate_resources",
]

_PRIORITY_CLASSES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}


# ---------------------------------------------------------------------------- defaults


def default_pod_spec(spec: dict[str, Any]) -> None:
    """SetDefaults_PodSpec and friends: applies to Pods and pod templates alike."""
    for field, value in (("dnsPolicy", "ClusterFirst"), ("restartPolicy", "Always"),
                         ("schedulerName", "default-scheduler")):
        if not spec.get(field):
            spec[field] = value
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    # v1 conversion keeps the deprecated `serviceAccount` as a mirror of serviceAccountName.
    if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    for vol in map(as_dict, as_list(spec.get("volumes"))):
        default_volume(vol)
    for kind in CONTAINER_KINDS:
        for ctr in map(as_dict, as_list(spec.get(kind))):
            default_container(ctr)


def default_pod(pod: dict[str, Any]) -> None:
    """SetDefaults_Pod, the create strategy and the admission plugins that touch pods.

    The API server also calls this on updates, so create-time steps only fill what is absent:
    a stored pod keeps its status, service account and priority.
    """
    spec = ensure_dict(pod, "spec")
    default_pod_spec(spec)
    for kind in ("containers", "initContainers"):
        for ctr in map(as_dict, as_list(spec.get(kind))):
            res = as_dict(ctr.get("resources"))
            # Only real pods (not templates) get requests defaulted from limits.
            if isinstance(res.get("limits"), dict):
                requests = ensure_dict(res, "requests")
                for name, value in res["limits"].items():
                    if try_quantity(value) is not None:  # bad ones are reported once, as limits
                        requests.setdefault(name, value)
            if spec.get("hostNetwork"):
                for port in map(as_dict, as_list(ctr.get("ports"))):
                    if not port.get("hostPort"):
                        port["hostPort"] = port.get("containerPort")
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    _default_tolerations(spec)
    _admit_pod(pod, spec)


def _admit_pod(pod: dict[str, Any], spec: dict[str, Any]) -> None:
    annotations = as_dict(as_dict(pod.get("metadata")).get("annotations"))
    if not spec.get("serviceAccountName") and "kubernetes.io/config.mirror" not in annotations:
        spec["serviceAccountName"] = spec["serviceAccount"] = "default"
    class_name = as_str(spec.get("priorityClassName"))
    if spec.get("priority") is None and (not class_name or class_name in _PRIORITY_CLASSES):
        spec["priority"] = _PRIORITY_CLASSES.get(class_name, 0)
    if spec.get("preemptionPolicy") is None:
        spec["preemptionPolicy"] = "PreemptLowerPriority"
    if as_dict(pod.get("status")).get("phase"):
        return  # a stored pod: its status belongs to the kubelet
    # A new pod: the create strategy replaces whatever status the client sent.
    status: dict[str, Any] = {"phase": "Pending", "qosClass": compute_qos_class(spec)}
    if spec.get("schedulingGates"):
        status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                 "reason": "SchedulingGated",
                                 "message": "Scheduling is blocked due to non-empty scheduling "
                                            "gates"}]
    pod["status"] = status


def _default_tolerations(spec: dict[str, Any]) -> None:
    """DefaultTolerationSeconds admission: tolerate not-ready/unreachable for 300s."""
    tolerations = as_list(spec.get("tolerations"))
    for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(as_dict(t).get("key") in (taint, None, "")
                   and as_dict(t).get("effect") in ("NoExecute", None, "") for t in tolerations):
            tolerations.append({"key": taint, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300})
    spec["tolerations"] = tolerations

def compute_qos_class(spec: dict[str, Any]) -> str:
    """ComputePodQOS: Guaranteed, Burstable or BestEffort from container cpu/memory."""
    requests: dict[str, Quantity] = {}
    limits: dict[str, Quantity] = {}
    guaranteed = True
    for ctr in (*as_list(spec.get("containers")), *as_list(spec.get("initContainers"))):
        res = as_dict(as_dict(ctr).get("resources"))
        for bucket, totals in (("requests", requests), ("limits", limits)):
            found = set()
            for name, raw in as_dict(res.get(bucket)).items():
                q = try_quantity(raw)
                if name in QOS_RESOURCES and q is not None and q.value > 0:
                    found.add(name)
                    totals[name] = totals[name] + q if name in totals else q
            if bucket == "limits" and found != set(QOS_RESOURCES):
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(n in limits and limits[n] == q for n, q in requests.items()) \
            and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


# -------------------------------------------------------------------------- validation


def validate_pod_spec(spec: Any, path: str) -> list[FieldError]:
    """ValidatePodSpec: everything a Pod and a pod template share."""
    spec = as_dict(spec)
    errs: list[FieldError] = []
    grace = as_int(spec.get("terminationGracePeriodSeconds"))
    if spec.get("terminationGracePeriodSeconds") is None:
        errs.append(required(child(path, "terminationGracePeriodSeconds")))
    volumes, vol_errs = validate_volumes(spec.get("volumes"), child(path, "volumes"))
    errs += vol_errs
    errs += validate_containers(spec, volumes, grace, path)
    errs += validate_enum(spec.get("restartPolicy"), child(path, "restartPolicy"),
                          ["Always", "OnFailure", "Never"])
    errs += validate_enum(spec.get("dnsPolicy"), child(path, "dnsPolicy"),
                          ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"])
    errs += validate_labels(spec.get("nodeSelector"), child(path, "nodeSelector"))
    errs += _validate_pod_security_context(as_dict(spec.get("securityContext")),
                                           child(path, "securityContext"))
    for i, secret in enumerate(as_list(spec.get("imagePullSecrets"))):
        if set(as_dict(secret)) - {"name"}:
            errs.append(invalid(index(child(path, "imagePullSecrets"), i), secret,
                                "only name may be set"))
    errs += _validate_affinity(as_dict(spec.get("affinity")), child(path, "affinity"))
    errs += _validate_dns_config(spec, child(path, "dnsConfig"))
    errs += _validate_topology_spread(spec.get("topologySpreadConstraints"),
                                      child(path, "topologySpreadConstraints"))
    for field in ("serviceAccountName", "nodeName", "priorityClassName"):
        if as_str(spec.get(field)):
            errs += details_to_errors(child(path, field), spec[field],
                                      name_is_dns_subdomain(spec[field]))
    deadline = as_int(spec.get("activeDeadlineSeconds"))
    if deadline is not None and not 1 <= deadline <= 2**31 - 1:
        errs.append(invalid(child(path, "activeDeadlineSeconds"), deadline,
                            inclusive_range_error(1, 2**31 - 1)))
    for field in ("hostname", "subdomain"):
        if as_str(spec.get(field)):
            errs += validate_dns1123_label(spec[field], child(path, field))
    errs += validate_tolerations(spec.get("tolerations"), child(path, "tolerations"))
    for i, alias in enumerate(map(as_dict, as_list(spec.get("hostAliases")))):
        p = index(child(path, "hostAliases"), i)
        errs += ip_errors(child(p, "ip"), as_str(alias.get("ip")))
        for j, host in enumerate(as_list(alias.get("hostnames"))):
            errs += validate_dns1123_subdomain(as_str(host), index(child(p, "hostnames"), j))
    for i, gate in enumerate(map(as_dict, as_list(spec.get("readinessGates")))):
        errs += validate_qualified_name(as_str(gate.get("conditionType")),
                                        child(index(child(path, "readinessGates"), i),
                                              "conditionType"))
    seen: set[str] = set()
    for i, gate in enumerate(map(as_dict, as_list(spec.get("schedulingGates")))):
        name, p = as_str(gate.get("name")), index(child(path, "schedulingGates"), i)
        errs += validate_qualified_name(name, p)
        errs += [duplicate(p, name)] if name in seen else []
        seen.add(name)
    if spec.get("preemptionPolicy") is not None:
        errs += validate_enum(spec.get("preemptionPolicy"), child(path, "preemptionPolicy"),
                              ["PreemptLowerPriority", "Never"])
    return errs


def validate_pod_template(template: Any, path: str) -> list[FieldError]:
    """ValidatePodTemplateSpec (note Kubernetes' `<path>.labels`, not `.metadata.labels`)."""
    template = as_dict(template)
    meta = as_dict(template.get("metadata"))
    errs = validate_labels(meta.get("labels"), child(path, "labels"))
    errs += validate_annotations(meta.get("annotations"), child(path, "annotations"))
    spec = as_dict(template.get("spec"))
    errs += validate_pod_spec(spec, child(path, "spec"))
    if spec.get("ephemeralContainers"):
        errs.append(forbidden(child(child(path, "spec"), "ephemeralContainers"),
                              "ephemeral containers not allowed in pod template"))
    return errs


def validate_pod(pod: dict[str, Any], creating: bool = True) -> list[FieldError]:
    """The pod-only checks on top of ValidatePodSpec (validatePodMetadataAndSpec + create)."""
    spec = as_dict(pod.get("spec"))
    errs = validate_pod_spec(spec, "spec")
    if not spec.get("serviceAccountName"):
        for vi, vol in enumerate(map(as_dict, as_list(spec.get("volumes")))):
            for si, src in enumerate(as_list(as_dict(vol.get("projected")).get("sources"))):
                if as_dict(src).get("serviceAccountToken") is not None:
                    errs.append(forbidden(f"spec.volumes[{vi}].projected.sources[{si}]."
                                          "serviceAccountToken",
                                          "must not be specified when serviceAccountName is not "
                                          "set"))
    for kind in ("containers", "initContainers"):
        for i, ctr in enumerate(map(as_dict, as_list(spec.get(kind)))):
            image = as_str(ctr.get("image"))
            if image != image.strip():
                errs.append(invalid(f"spec.{kind}[{i}].image", image,
                                    "must not have leading or trailing whitespace"))
    if creating and spec.get("ephemeralContainers"):
        errs.append(forbidden("spec.ephemeralContainers", "cannot be set on create"))
    if creating and spec.get("nodeName") and spec.get("schedulingGates"):
        errs.append(forbidden("spec.nodeName",
                              "cannot be set until all schedulingGates have been cleared"))
    if spec.get("hostNetwork"):
        for i, ctr in enumerate(map(as_dict, as_list(spec.get("containers")))):
            for j, port in enumerate(map(as_dict, as_list(ctr.get("ports")))):
                if port.get("hostPort", 0) != port.get("containerPort"):
                    errs.append(invalid(f"spec.containers[{i}].ports[{j}].hostPort",
                                        port.get("hostPort", 0),
                                        "must match `containerPort` when `hostNetwork` is true"))
    return errs


_UPDATABLE = ("`spec.containers[*].image`,`spec.initContainers[*].image`,"
              "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
              "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
              "was previously negative)")


def validate_pod_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    """ValidatePodUpdate's spec part: only images, deadline, toleration additions may change."""
    spec, old_spec = as_dict(new.get("spec")), as_dict(old.get("spec"))
    errs = validate_pod(new, creating=False)
    for kind in ("containers", "initContainers"):
        ctrs, old_ctrs = as_list(spec.get(kind)), as_list(old_spec.get(kind))
        if len(ctrs) != len(old_ctrs):
            return errs + [forbidden(f"spec.{kind}", "pod updates may not add or remove "
                                                     "containers")]
        for i, ctr in enumerate(map(as_dict, ctrs)):
            if not ctr.get("image"):
                errs.append(required(f"spec.{kind}[{i}].image"))
    deadline = spec.get("activeDeadlineSeconds")
    old_deadline = old_spec.get("activeDeadlineSeconds")
    if deadline is not None:
        if not isinstance(deadline, int) or not 0 <= deadline <= 2**31 - 1:
            return errs + [invalid("spec.activeDeadlineSeconds", deadline,
                                   inclusive_range_error(0, 2**31 - 1))]
        if isinstance(old_deadline, int) and old_deadline < deadline:
            return errs + [invalid("spec.activeDeadlineSeconds", deadline,
                                   "must be less than or equal to previous value")]
    elif old_deadline is not None:
        errs.append(invalid("spec.activeDeadlineSeconds", None,
                            "must not update from a positive integer to nil value"))
    errs += _validate_toleration_additions(spec, old_spec)
    new_gates = {as_str(as_dict(g).get("name")) for g in as_list(old_spec.get("schedulingGates"))}
    for i, gate in enumerate(map(as_dict, as_list(spec.get("schedulingGates")))):
        if as_str(gate.get("name")) not in new_gates:
            errs.append(forbidden(f"spec.schedulingGates[{i}].name", "only deletion is allowed, "
                                  f"but found new scheduling gate '{gate.get('name')}'"))
    if normalize(spec) == normalize(old_spec):
        return errs
    if compute_qos_class(spec) != compute_qos_class(old_spec):
        errs.append(invalid("metadata", as_dict(new.get("status")).get("qosClass", ""),
                            "Pod QoS is immutable"))
    munged = _munge_updatable(spec, old_spec)
    if normalize(munged) != normalize(old_spec):
        errs.append(forbidden("spec", "pod updates may not change fields other than "
                              f"{_UPDATABLE}\n{_spec_diff(old_spec, munged)}"))
    return errs


def _validate_toleration_additions(spec: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    new_tols = [normalize({**as_dict(t), "tolerationSeconds": None})
                for t in as_list(spec.get("tolerations"))]
    for tol in as_list(old.get("tolerations")):
        if normalize({**as_dict(tol), "tolerationSeconds": None}) not in new_tols:
            return [forbidden("spec.tolerations",
                              "existing toleration can not be modified except its "
                              "tolerationSeconds")]
    return []


def _munge_updatable(spec: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    munged = orjson.loads(orjson.dumps(spec))
    for kind in ("containers", "initContainers"):
        for ctr, old_ctr in zip(as_list(munged.get(kind)), as_list(old.get(kind)), strict=True):
            if isinstance(ctr, dict):
                ctr["image"] = as_dict(old_ctr).get("image")
    for field in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
        munged[field] = old.get(field)
    old_grace = old.get("terminationGracePeriodSeconds")
    if isinstance(old_grace, int) and old_grace < 0 and munged.get(
            "terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    return munged


def _spec_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """A cmp.Diff-shaped summary of the changed top-level PodSpec fields."""
    lines = ["  core.PodSpec{"]
    for name in sorted(set(old) | set(new)):
        if normalize(old.get(name)) != normalize(new.get(name)):
            go_name = name[:1].upper() + name[1:]
            if name in old:
                lines.append(f"- \t{go_name}: {orjson.dumps(old[name]).decode()},")
            if name in new:
                lines.append(f"+ \t{go_name}: {orjson.dumps(new[name]).decode()},")
    return "\n".join([*lines, "  }"])


def validate_pod_status_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    if as_dict(new.get("spec")).get("nodeName") != as_dict(old.get("spec")).get("nodeName"):
        errs.append(forbidden("status.nodeName", "may not be changed directly"))
    for i, pod_ip in enumerate(as_list(as_dict(new.get("status")).get("podIPs"))):
        errs += ip_errors(f"status.podIPs[{i}]", as_str(as_dict(pod_ip).get("ip")))
    return errs


def _validate_pod_security_context(sc: dict[str, Any], path: str) -> list[FieldError]:
    errs = validate_ids(sc, path)
    if sc.get("fsGroup") is not None:
        errs += id_range(sc["fsGroup"], child(path, "fsGroup"))
    for i, gid in enumerate(as_list(sc.get("supplementalGroups"))):
        errs += id_range(gid, index(child(path, "supplementalGroups"), i))
    if sc.get("fsGroupChangePolicy") is not None and \
            sc["fsGroupChangePolicy"] not in ("Always", "OnRootMismatch"):
        errs.append(not_supported(child(path, "fsGroupChangePolicy"), sc["fsGroupChangePolicy"],
                                  ["Always", "OnRootMismatch"]))
    return errs + validate_seccomp(sc.get("seccompProfile"), child(path, "seccompProfile"))


# ------------------------------------------------------------------- scheduling, DNS


_NODE_OPS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")


def _validate_affinity(affinity: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    node = as_dict(affinity.get("nodeAffinity"))
    req = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    if req is not None:
        p = child(child(child(path, "nodeAffinity"),
                        "requiredDuringSchedulingIgnoredDuringExecution"), "nodeSelectorTerms")
        terms = as_list(as_dict(req).get("nodeSelectorTerms"))
        if not terms:
            errs.append(required(p, "must have at least one node selector term"))
        for i, term in enumerate(terms):
            errs += _validate_node_term(as_dict(term), index(p, i))
    p = child(child(path, "nodeAffinity"), "preferredDuringSchedulingIgnoredDuringExecution")
    for i, pref in enumerate(map(as_dict, as_list(node.get(
            "preferredDuringSchedulingIgnoredDuringExecution")))):
        errs += _weight_errors(pref.get("weight"), child(index(p, i), "weight"))
        errs += _validate_node_term(as_dict(pref.get("preference")),
                                    child(index(p, i), "preference"))
    for kind in ("podAffinity", "podAntiAffinity"):
        section = as_dict(affinity.get(kind))
        p = child(child(path, kind), "requiredDuringSchedulingIgnoredDuringExecution")
        for i, term in enumerate(map(as_dict, as_list(
                section.get("requiredDuringSchedulingIgnoredDuringExecution")))):
            errs += _validate_pod_affinity_term(term, index(p, i))
        p = child(child(path, kind), "preferredDuringSchedulingIgnoredDuringExecution")
        for i, weighted in enumerate(map(as_dict, as_list(
                section.get("preferredDuringSchedulingIgnoredDuringExecution")))):
            errs += _weight_errors(weighted.get("weight"), child(index(p, i), "weight"))
            errs += _validate_pod_affinity_term(as_dict(weighted.get("podAffinityTerm")),
                                                child(index(p, i), "podAffinityTerm"))
    return errs


def _weight_errors(weight: Any, path: str) -> list[FieldError]:
    n = as_int(weight) or 0
    return [] if 1 <= n <= 100 else [invalid(path, n, "must be in the range 1-100")]


def _validate_node_term(term: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, req in enumerate(map(as_dict, as_list(term.get("matchExpressions")))):
        p = index(child(path, "matchExpressions"), i)
        op, values = req.get("operator"), as_list(req.get("values"))
        if op in ("In", "NotIn") and not values:
            errs.append(required(child(p, "values"),
                                 "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist") and values:
            errs.append(forbidden(child(p, "values"), "may not be specified when `operator` is "
                                                      "'Exists' or 'DoesNotExist'"))
        elif op in ("Gt", "Lt") and len(values) != 1:
            errs.append(required(child(p, "values"), "must be specified single value when "
                                                     "`operator` is 'Lt' or 'Gt'"))
        elif op not in _NODE_OPS:
            errs.append(invalid(child(p, "operator"), op, "not a valid selector operator"))
        errs += validate_qualified_name(as_str(req.get("key")), child(p, "key"))
    for i, req in enumerate(map(as_dict, as_list(term.get("matchFields")))):
        p = index(child(path, "matchFields"), i)
        if req.get("operator") not in ("In", "NotIn"):
            errs.append(invalid(child(p, "operator"), req.get("operator"),
                                "not a valid selector operator"))
        elif len(as_list(req.get("values"))) != 1:
            errs.append(required(child(p, "values"), "must be only one value when `operator` is "
                                                     "'In' or 'NotIn' for node field selector"))
        if req.get("key") != "metadata.name":
            errs.append(invalid(child(p, "key"), req.get("key"), "not a valid field selector key"))
    return errs


def _validate_pod_affinity_term(term: dict[str, Any], path: str) -> list[FieldError]:
    errs = validate_label_selector(term.get("labelSelector"), child(path, "labelSelector"))
    errs += validate_label_selector(term.get("namespaceSelector"),
                                    child(path, "namespaceSelector"))
    for ns in as_list(term.get("namespaces")):  # Kubernetes uses the singular path here
        errs += validate_dns1123_label(as_str(ns), child(path, "namespace"))
    topology_key = as_str(term.get("topologyKey"))
    if not topology_key:
        errs.append(required(child(path, "topologyKey"), "can not be empty"))
    return errs + validate_qualified_name(topology_key, child(path, "topologyKey"))


def _validate_topology_spread(constraints: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    items = [as_dict(c) for c in as_list(constraints)]
    for i, c in enumerate(items):
        p = index(path, i)
        skew = as_int(c.get("maxSkew")) or 0
        if skew <= 0:
            errs.append(invalid(child(p, "maxSkew"), skew, "must be greater than zero"))
        if not c.get("topologyKey"):
            errs.append(required(child(p, "topologyKey"), "can not be empty"))
        action = c.get("whenUnsatisfiable", "")
        if action not in ("DoNotSchedule", "ScheduleAnyway"):
            errs.append(not_supported(child(p, "whenUnsatisfiable"), action,
                                      ["DoNotSchedule", "ScheduleAnyway"]))
        pair = (c.get("topologyKey"), action)
        if any((o.get("topologyKey"), o.get("whenUnsatisfiable", "")) == pair
               for o in items[i + 1:]):
            errs.append(duplicate(child(p, "{topologyKey, whenUnsatisfiable}"),
                                  f"{{{pair[0]}, {pair[1]}}}"))
        errs += validate_label_selector(c.get("labelSelector"), child(p, "labelSelector"))
    return errs


def _validate_dns_config(spec: dict[str, Any], path: str) -> list[FieldError]:
    config = spec.get("dnsConfig")
    if spec.get("dnsPolicy") == "None":
        if config is None:
            return [required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]
        if not as_list(as_dict(config).get("nameservers")):
            return [required(child(path, "nameservers"), "must provide at least one DNS "
                                                         "nameserver when `dnsPolicy` is None")]
    if config is None:
        return []
    config = as_dict(config)
    errs: list[FieldError] = []
    servers, searches = as_list(config.get("nameservers")), as_list(config.get("searches"))
    if len(servers) > 3:
        errs.append(invalid(child(path, "nameservers"), GoValue(_go_list(servers)),
                            "must not have more than 3 nameservers"))
    for i, server in enumerate(servers):
        errs += ip_errors(index(child(path, "nameservers"), i), as_str(server))
    if len(searches) > 32:
        errs.append(invalid(child(path, "searches"), GoValue(_go_list(searches)),
                            "must not have more than 32 search paths"))
    if len(" ".join(map(str, searches))) > 2048:
        errs.append(invalid(child(path, "searches"), GoValue(_go_list(searches)),
                            "must not have more than 2048 characters (including spaces) in the "
                            "search list"))
    for i, search in enumerate(searches):
        errs += validate_dns1123_subdomain(as_str(search).removesuffix("."),
                                           index(child(path, "searches"), i))
    for i, option in enumerate(map(as_dict, as_list(config.get("options")))):
        if not option.get("name"):
            errs.append(required(index(child(path, "options"), i), "must not be empty"))
    return errs


def _go_list(values: list[Any]) -> str:
    return "[]string{" + ", ".join(go_quote(str(v)) for v in values) + "}"
