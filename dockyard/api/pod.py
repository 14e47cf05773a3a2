"""PodSpec defaulting and validation, shared by Pods and the pod templates of workloads.

Defaults follow pkg/apis/core/v1/defaults.go plus the admission plugins every real cluster runs
on pods (ServiceAccount, Priority, DefaultTolerationSeconds); validation follows ValidatePodSpec
and ValidatePodUpdate in pkg/apis/core/validation, keeping Kubernetes' field paths and messages.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from dockyard.api.fielderrors import (
    FieldError,
    GoValue,
    duplicate,
    forbidden,
    go_quote,
    invalid,
    not_found,
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
    is_config_map_key,
    is_env_var_name,
    is_http_header_name,
    is_qualified_name,
    is_valid_port_name,
    is_valid_port_num,
    key,
    name_is_dns_subdomain,
    normalize,
    validate_annotations,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_label_selector,
    validate_labels,
    validate_nonnegative,
    validate_qualified_name,
    validate_tolerations,
)
from dockyard.api.quantity import Quantity, QuantityError, parse_quantity

CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")
_VOLUME_SOURCES = (
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret",
    "nfs", "iscsi", "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs",
    "quobyte", "downwardAPI", "fc", "flexVolume", "configMap", "azureFile", "vsphereVolume",
    "photonPersistentDisk", "portworxVolume", "azureDisk", "storageos", "projected", "scaleIO",
    "csi", "ephemeral", "image")
# Kubernetes reports a few of these under misspelt paths; kept for identical messages.
_VOLUME_ERROR_PATH = {"downwardAPI": "downwarAPI", "cephfs": "cephFS"}
_FILE_MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"
_PRIORITY_CLASSES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}
_QOS_RESOURCES = ("cpu", "memory")


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
        _default_volume(vol)
    for kind in CONTAINER_KINDS:
        for ctr in map(as_dict, as_list(spec.get(kind))):
            _default_container(ctr)


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
                    if _try_quantity(value) is not None:  # bad ones are reported once, as limits
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


def _default_volume(vol: dict[str, Any]) -> None:
    if not any(vol.get(s) is not None for s in _VOLUME_SOURCES):
        vol["emptyDir"] = {}
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(vol.get(source), dict) and vol[source].get("defaultMode") is None:
            vol[source]["defaultMode"] = 420
    if isinstance(vol.get("hostPath"), dict) and vol["hostPath"].get("type") is None:
        vol["hostPath"]["type"] = ""
    files = as_list(as_dict(vol.get("downwardAPI")).get("items"))
    for src in map(as_dict, as_list(as_dict(vol.get("projected")).get("sources"))):
        files += as_list(as_dict(src.get("downwardAPI")).get("items"))
        token = src.get("serviceAccountToken")
        if isinstance(token, dict) and token.get("expirationSeconds") is None:
            token["expirationSeconds"] = 3600
    for item in map(as_dict, files):
        _default_field_refs(item)


def _default_field_refs(holder: dict[str, Any]) -> None:
    if isinstance(holder.get("fieldRef"), dict) and not holder["fieldRef"].get("apiVersion"):
        holder["fieldRef"]["apiVersion"] = "v1"
    if isinstance(holder.get("resourceFieldRef"), dict):
        holder["resourceFieldRef"].setdefault("divisor", "0")


def _default_container(ctr: dict[str, Any]) -> None:
    if not ctr.get("imagePullPolicy"):
        ctr["imagePullPolicy"] = image_pull_policy(as_str(ctr.get("image")))
    if not ctr.get("terminationMessagePath"):
        ctr["terminationMessagePath"] = "/dev/termination-log"
    if not ctr.get("terminationMessagePolicy"):
        ctr["terminationMessagePolicy"] = "File"
    if ctr.get("resources") is None:
        ctr["resources"] = {}
    for bucket in ("limits", "requests"):
        _canonicalize_resources(as_dict(as_dict(ctr["resources"]).get(bucket)))
    for port in map(as_dict, as_list(ctr.get("ports"))):
        if not port.get("protocol"):
            port["protocol"] = "TCP"
    for env in map(as_dict, as_list(ctr.get("env"))):
        _default_field_refs(as_dict(env.get("valueFrom")))
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = ctr.get(probe_name)
        if isinstance(probe, dict):
            for field, value in (("timeoutSeconds", 1), ("periodSeconds", 10),
                                 ("successThreshold", 1), ("failureThreshold", 3)):
                if not probe.get(field):
                    probe[field] = value
            _default_handler(probe)
    for hook in as_dict(ctr.get("lifecycle")).values():
        _default_handler(as_dict(hook))


def _default_handler(handler: dict[str, Any]) -> None:
    http = handler.get("httpGet")
    if isinstance(http, dict):
        http["path"] = http.get("path") or "/"
        http["scheme"] = http.get("scheme") or "HTTP"
    if isinstance(handler.get("grpc"), dict) and handler["grpc"].get("service") is None:
        handler["grpc"]["service"] = ""


def _canonicalize_resources(resources: dict[str, Any]) -> None:
    """SetDefaults_ResourceList rounds up to milli units; reads return canonical strings."""
    for name, raw in list(resources.items()):
        try:
            resources[name] = str(parse_quantity(raw).round_up(-3))
        except QuantityError:
            pass  # left as sent; validation reports it


# Docker reference grammar (distribution/reference), enough to find the tag like Go does.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|" \
          r"[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?|\[[0-9a-fA-F:.]+\](?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"(?:(?:{_DOMAIN})/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?")


def image_pull_policy(image: str) -> str:
    """Always for ':latest' or untagged (undigested) images, IfNotPresent otherwise.

    Like Go's parsers.ParseImageName, an unparsable reference has no tag: IfNotPresent.
    """
    match = _REFERENCE.fullmatch(image)
    if not match or re.fullmatch("[a-f0-9]{64}", image):
        return "IfNotPresent"
    tag = match.group("tag") or ("" if match.group("digest") else "latest")
    return "Always" if tag == "latest" else "IfNotPresent"


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
                q = _try_quantity(raw)
                if name in _QOS_RESOURCES and q is not None and q.value > 0:
                    found.add(name)
                    totals[name] = totals[name] + q if name in totals else q
            if bucket == "limits" and found != set(_QOS_RESOURCES):
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(n in limits and limits[n] == q for n, q in requests.items()) \
            and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def _try_quantity(raw: Any) -> Quantity | None:
    try:
        return parse_quantity(raw)
    except QuantityError:
        return None


# -------------------------------------------------------------------------- validation


def validate_pod_spec(spec: Any, path: str) -> list[FieldError]:
    """ValidatePodSpec: everything a Pod and a pod template share."""
    spec = as_dict(spec)
    errs: list[FieldError] = []
    grace = as_int(spec.get("terminationGracePeriodSeconds"))
    if spec.get("terminationGracePeriodSeconds") is None:
        errs.append(required(child(path, "terminationGracePeriodSeconds")))
    volumes, vol_errs = _validate_volumes(spec.get("volumes"), child(path, "volumes"))
    errs += vol_errs
    errs += _validate_containers(spec, volumes, grace, path)
    errs += _validate_enum(spec.get("restartPolicy"), child(path, "restartPolicy"),
                           ["Always", "OnFailure", "Never"])
    errs += _validate_enum(spec.get("dnsPolicy"), child(path, "dnsPolicy"),
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
        errs += _validate_enum(spec.get("preemptionPolicy"), child(path, "preemptionPolicy"),
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


def _validate_enum(value: Any, path: str, allowed: list[str]) -> list[FieldError]:
    if value in (None, ""):
        return [required(path)]
    return [] if value in allowed else [not_supported(path, value, allowed)]


# ------------------------------------------------------------------------------ volumes


def _validate_volumes(volumes: Any,
                      path: str) -> tuple[dict[str, dict[str, Any]], list[FieldError]]:
    by_name: dict[str, dict[str, Any]] = {}
    errs: list[FieldError] = []
    for i, vol in enumerate(map(as_dict, as_list(volumes))):
        p = index(path, i)
        name = as_str(vol.get("name"))
        vol_errs = _validate_volume_source(vol, p)
        if not name:
            vol_errs.append(required(child(p, "name")))
        else:
            vol_errs += validate_dns1123_label(name, child(p, "name"))
        if name in by_name:
            vol_errs.append(duplicate(child(p, "name"), name))
        # Only clean volumes can be mounted, exactly like Kubernetes' volume map.
        if vol_errs:
            errs += vol_errs
        else:
            by_name[name] = vol
    return by_name, errs


def _validate_volume_source(vol: dict[str, Any], path: str) -> list[FieldError]:
    present = [s for s in _VOLUME_SOURCES if vol.get(s) is not None]
    if not present:
        return [required(path, "must specify a volume type")]
    errs = [forbidden(child(path, _VOLUME_ERROR_PATH.get(s, s)),
                      "may not specify more than 1 volume type") for s in present[1:]]
    source, src = present[0], as_dict(vol.get(present[0]))
    p = child(path, source)
    required_fields = {"hostPath": "path", "secret": "secretName", "configMap": "name",
                       "persistentVolumeClaim": "claimName", "nfs": "server", "csi": "driver"}
    if source in required_fields and not src.get(required_fields[source]):
        errs.append(required(child(p, required_fields[source])))
    if source == "nfs" and not as_str(src.get("path")).startswith("/"):
        errs.append(invalid(child(p, "path"), as_str(src.get("path")), "must be an absolute path"))
    if source == "hostPath" and src.get("path"):
        errs += _no_backsteps(as_str(src["path"]), child(p, "path"))
        types = ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                 "FileOrCreate", "Socket"]
        if src.get("type") is not None and src["type"] not in types:
            errs.append(not_supported(child(p, "type"), src["type"], types))
    if source == "emptyDir" and src.get("sizeLimit") is not None:
        q = _try_quantity(src["sizeLimit"])
        if q is None or q.value < 0:
            errs.append(forbidden(child(p, "sizeLimit"),
                                  "SizeLimit field must be a valid resource quantity"))
    errs += _validate_mode(src.get("defaultMode"), child(p, "defaultMode"))
    for i, item in enumerate(map(as_dict, as_list(src.get("items")))):
        if source == "downwardAPI":
            errs += _validate_downward_file(item, p)
        else:
            errs += _validate_key_to_path(item, index(child(p, "items"), i))
    if source == "projected":
        errs += _validate_projections(src, p)
    return errs


def _validate_mode(mode: Any, path: str) -> list[FieldError]:
    n = as_int(mode)
    return [invalid(path, n, _FILE_MODE_MSG)] if n is not None and not 0 <= n <= 0o777 else []


def _no_backsteps(target: str, path: str) -> list[FieldError]:
    if ".." in target.replace("\\", "/").split("/"):
        return [invalid(path, target, "must not contain '..'")]
    return []


def _descending_path_errors(target: str, path: str) -> list[FieldError]:
    """validateLocalDescendingPath: relative, with no '..' element."""
    errs = [invalid(path, target, "must be a relative path")] if target.startswith("/") else []
    return errs + _no_backsteps(target, path)


def _local_path_errors(target: str, path: str) -> list[FieldError]:
    """ValidateLocalNonReservedPath: a descending path that does not start with '..'."""
    errs = _descending_path_errors(target, path)
    if target.startswith("..") and not target.startswith("../"):
        errs.append(invalid(path, target, "must not start with '..'"))
    return errs


def _validate_key_to_path(item: dict[str, Any], path: str) -> list[FieldError]:
    errs = [] if item.get("key") else [required(child(path, "key"))]
    errs += [] if item.get("path") else [required(child(path, "path"))]
    errs += _local_path_errors(as_str(item.get("path")), child(path, "path"))
    return errs + _validate_mode(item.get("mode"), child(path, "mode"))


def _validate_downward_file(item: dict[str, Any], path: str) -> list[FieldError]:
    errs = [] if item.get("path") else [required(child(path, "path"))]
    errs += _local_path_errors(as_str(item.get("path")), child(path, "path"))
    if item.get("fieldRef") is not None:
        errs += _validate_field_ref(as_dict(item["fieldRef"]), child(path, "fieldRef"),
                                    _VOLUME_FIELDS)
        if item.get("resourceFieldRef") is not None:
            errs.append(invalid(path, "resource", "fieldRef and resourceFieldRef can not be "
                                                  "specified simultaneously"))
    elif item.get("resourceFieldRef") is not None:
        ref = as_dict(item["resourceFieldRef"])
        if not ref.get("containerName"):
            errs.append(required(child(child(path, "resourceFieldRef"), "containerName")))
        else:
            errs += _validate_resource_ref(ref, child(path, "resourceFieldRef"))
    else:
        errs.append(required(path, "one of fieldRef and resourceFieldRef is required"))
    return errs + _validate_mode(item.get("mode"), child(path, "mode"))


def _validate_projections(src: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, source in enumerate(map(as_dict, as_list(src.get("sources")))):
        p = index(child(path, "sources"), i)
        kinds = [k for k in ("secret", "configMap", "downwardAPI", "serviceAccountToken",
                             "clusterTrustBundle") if source.get(k) is not None]
        if len(kinds) > 1:
            errs.append(forbidden(p, "may not specify more than 1 volume type per source"))
        for kind in kinds:
            part, kp = as_dict(source[kind]), child(p, kind)
            if kind in ("secret", "configMap"):
                errs += [] if part.get("name") else [required(child(kp, "name"))]
                for j, item in enumerate(map(as_dict, as_list(part.get("items")))):
                    errs += _validate_key_to_path(item, index(child(kp, "items"), j))
            elif kind == "downwardAPI":
                for item in map(as_dict, as_list(part.get("items"))):
                    errs += _validate_downward_file(item, kp)
            elif kind == "serviceAccountToken":
                seconds = as_int(part.get("expirationSeconds")) or 0
                if seconds < 600:
                    errs.append(invalid(child(kp, "expirationSeconds"), seconds,
                                        "may not specify a duration less than 10 minutes"))
                elif seconds > 2**32:
                    errs.append(invalid(child(kp, "expirationSeconds"), seconds,
                                        "may not specify a duration larger than 2^32 seconds"))
                if not part.get("path"):
                    errs.append(required(child(kp, "path")))
    return errs


# --------------------------------------------------------------------------- containers


def _validate_containers(spec: dict[str, Any], volumes: dict[str, dict[str, Any]],
                         grace: int | None, path: str) -> list[FieldError]:
    containers, inits = as_list(spec.get("containers")), as_list(spec.get("initContainers"))
    errs: list[FieldError] = []
    if not containers:
        errs.append(required(child(path, "containers")))
    names: set[str] = set()
    for i, ctr in enumerate(map(as_dict, containers)):
        p = index(child(path, "containers"), i)
        errs += _validate_container(ctr, volumes, p)
        name = as_str(ctr.get("name"))
        errs += [duplicate(child(p, "name"), name)] if name in names else []
        names.add(name)
        errs += _validate_probes_and_hooks(ctr, grace, p)
        if ctr.get("restartPolicy") is not None:
            errs.append(forbidden(child(p, "restartPolicy"), "may not be set for non-init "
                                                             "containers"))
    errs += _host_port_conflicts(containers, child(path, "containers"))
    for i, ctr in enumerate(map(as_dict, inits)):
        p = index(child(path, "initContainers"), i)
        errs += _validate_container(ctr, volumes, p)
        name = as_str(ctr.get("name"))
        if name in names:
            errs.append(duplicate(child(p, "name"), name))
        elif name:
            names.add(name)
        errs += _host_port_conflicts([ctr], child(path, "initContainers"))
        policy = ctr.get("restartPolicy")
        if policy is not None and policy != "Always":
            errs.append(not_supported(child(p, "restartPolicy"), policy, ["Always"]))
        if policy == "Always":  # a sidecar behaves like a regular container
            errs += _validate_probes_and_hooks(ctr, grace, p)
            continue
        for field in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
            if ctr.get(field) is not None:
                errs.append(forbidden(child(p, field), "may not be set for init containers "
                                                       "without restartPolicy=Always"))
    return errs


def _validate_container(ctr: dict[str, Any], volumes: dict[str, dict[str, Any]],
                        path: str) -> list[FieldError]:
    """validateContainerCommon: what regular, init and ephemeral containers share."""
    errs: list[FieldError] = []
    name = as_str(ctr.get("name"))
    if not name:
        errs.append(required(child(path, "name")))
    else:
        errs += validate_dns1123_label(name, child(path, "name"))
    if not ctr.get("image"):
        errs.append(required(child(path, "image")))
    errs += _validate_enum(ctr.get("terminationMessagePolicy"),
                           child(path, "terminationMessagePolicy"),
                           ["File", "FallbackToLogsOnError"])
    errs += _validate_ports(ctr.get("ports"), child(path, "ports"))
    errs += _validate_env(ctr.get("env"), child(path, "env"))
    errs += _validate_env_from(ctr.get("envFrom"), child(path, "envFrom"))
    errs += _validate_mounts(ctr.get("volumeMounts"), volumes, child(path, "volumeMounts"))
    errs += _validate_enum(ctr.get("imagePullPolicy"), child(path, "imagePullPolicy"),
                           ["Always", "IfNotPresent", "Never"])
    errs += validate_resources(as_dict(ctr.get("resources")), child(path, "resources"))
    errs += _validate_security_context(ctr.get("securityContext"), child(path, "securityContext"))
    return errs


def _validate_ports(ports: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    names: set[str] = set()
    for i, port in enumerate(map(as_dict, as_list(ports))):
        p = index(path, i)
        name = as_str(port.get("name"))
        if name:
            msgs = is_valid_port_name(name)
            errs += details_to_errors(child(p, "name"), name, msgs)
            if not msgs:
                errs += [duplicate(child(p, "name"), name)] if name in names else []
                names.add(name)
        number = as_int(port.get("containerPort")) or 0
        if not number:
            errs.append(required(child(p, "containerPort")))
        else:
            errs += details_to_errors(child(p, "containerPort"), number, is_valid_port_num(number))
        host = as_int(port.get("hostPort")) or 0
        if host:
            errs += details_to_errors(child(p, "hostPort"), host, is_valid_port_num(host))
        errs += _validate_enum(port.get("protocol"), child(p, "protocol"), ["SCTP", "TCP", "UDP"])
    return errs


def _host_port_conflicts(containers: list[Any], path: str) -> list[FieldError]:
    seen: set[str] = set()
    errs: list[FieldError] = []
    for ci, ctr in enumerate(map(as_dict, containers)):
        for pi, port in enumerate(map(as_dict, as_list(ctr.get("ports")))):
            if not port.get("hostPort"):
                continue
            token = f"{port.get('protocol', '')}/{port.get('hostIP', '')}/{port['hostPort']}"
            if token in seen:
                errs.append(duplicate(f"{path}[{ci}].ports[{pi}].hostPort", token))
            seen.add(token)
    return errs


_ENV_FIELDS = ["metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
               "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
               "status.podIPs"]
_VOLUME_FIELDS = ["metadata.annotations", "metadata.labels", "metadata.name",
                  "metadata.namespace", "metadata.uid"]
_CONVERTIBLE_FIELDS = {*_ENV_FIELDS, *_VOLUME_FIELDS, "spec.restartPolicy", "spec.schedulerName",
                       "status.phase"}
_SUBSCRIPT = re.compile(r"^(metadata\.(?:labels|annotations))\['(.*)'\]$")
_RESOURCE_FIELDS = ["limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu",
                    "requests.ephemeral-storage", "requests.memory"]


def _validate_env(env: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, var in enumerate(map(as_dict, as_list(env))):
        p = index(path, i)
        name = as_str(var.get("name"))
        if not name:
            errs.append(required(child(p, "name")))
        else:
            errs += details_to_errors(child(p, "name"), name, is_env_var_name(name))
        if var.get("valueFrom") is not None:
            errs += _validate_value_from(var, child(p, "valueFrom"))
    return errs


def _validate_value_from(var: dict[str, Any], path: str) -> list[FieldError]:
    source = as_dict(var.get("valueFrom"))
    errs: list[FieldError] = []
    count = 0
    for kind in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef"):
        if source.get(kind) is None:
            continue
        count += 1
        ref, p = as_dict(source[kind]), child(path, kind)
        if kind == "fieldRef":
            errs += _validate_field_ref(ref, p, _ENV_FIELDS)
        elif kind == "resourceFieldRef":
            errs += _validate_resource_ref(ref, p)
        else:
            name = as_str(ref.get("name"))
            errs += details_to_errors(child(p, "name"), name, name_is_dns_subdomain(name))
            k = as_str(ref.get("key"))
            errs += details_to_errors(child(p, "key"), k, is_config_map_key(k)) if k \
                else [required(child(p, "key"))]
    if count == 0:
        errs.append(invalid(path, "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                                      "`configMapKeyRef` or `secretKeyRef`"))
    elif var.get("value"):
        errs.append(invalid(path, "", "may not be specified when `value` is not empty"))
    elif count > 1:
        errs.append(invalid(path, "", "may not have more than one field specified at a time"))
    return errs


def _validate_field_ref(ref: dict[str, Any], path: str, allowed: list[str]) -> list[FieldError]:
    version, field_path = as_str(ref.get("apiVersion")), as_str(ref.get("fieldPath"))
    if not version:
        return [required(child(path, "apiVersion"))]
    if not field_path:
        return [required(child(path, "fieldPath"))]
    sub = _SUBSCRIPT.match(field_path)
    if version != "v1" or (not sub and field_path not in _CONVERTIBLE_FIELDS):
        reason = (f"unsupported pod version: {version}" if version != "v1"
                  else f"field label not supported: {field_path}")
        return [invalid(child(path, "fieldPath"), field_path,
                        f"error converting fieldPath: {reason}")]
    if sub:
        subscript = sub.group(2).lower() if "annotations" in sub.group(1) else sub.group(2)
        return details_to_errors(path, subscript, is_qualified_name(subscript))
    if field_path not in allowed:
        return [not_supported(child(path, "fieldPath"), field_path, allowed)]
    return []


def _validate_resource_ref(ref: dict[str, Any], path: str) -> list[FieldError]:
    resource = as_str(ref.get("resource"))
    if not resource:
        return [required(child(path, "resource"))]
    errs: list[FieldError] = []
    if resource not in _RESOURCE_FIELDS and not resource.startswith(("requests.hugepages-",
                                                                     "limits.hugepages-")):
        errs.append(not_supported(child(path, "resource"), resource, _RESOURCE_FIELDS))
    divisor = _try_quantity(ref.get("divisor", "0"))
    if divisor is not None and divisor.value and resource.endswith(".cpu") \
            and str(divisor) not in ("1m", "1"):
        errs.append(invalid(child(path, "divisor"), resource,
                            "only divisor's values 1m and 1 are supported with the cpu resource"))
    return errs


def _validate_env_from(env_from: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, source in enumerate(map(as_dict, as_list(env_from))):
        p = index(path, i)
        prefix = as_str(source.get("prefix"))
        if prefix:
            errs += details_to_errors(child(p, "prefix"), prefix, is_env_var_name(prefix))
        refs = [k for k in ("configMapRef", "secretRef") if source.get(k) is not None]
        for kind in refs:
            name = as_str(as_dict(source[kind]).get("name"))
            errs += details_to_errors(child(child(p, kind), "name"), name,
                                      name_is_dns_subdomain(name, True)) if name \
                else [required(child(child(p, kind), "name"))]
        if not refs:
            errs.append(invalid(path, "", "must specify one of: `configMapRef` or `secretRef`"))
        elif len(refs) > 1:
            errs.append(invalid(path, "", "may not have more than one field specified at a time"))
    return errs


def _validate_mounts(mounts: Any, volumes: dict[str, dict[str, Any]],
                     path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, mount in enumerate(map(as_dict, as_list(mounts))):
        p = index(path, i)
        name, mount_path = as_str(mount.get("name")), as_str(mount.get("mountPath"))
        if not name:
            errs.append(required(child(p, "name")))
        if name not in volumes:
            errs.append(not_found(child(p, "name"), name))
        if not mount_path:
            errs.append(required(child(p, "mountPath")))
        if mount_path in seen:
            errs.append(invalid(child(p, "mountPath"), mount_path, "must be unique"))
        seen.add(mount_path)
        sub, sub_expr = as_str(mount.get("subPath")), as_str(mount.get("subPathExpr"))
        if sub:  # Kubernetes reports these on the list path, without the index
            errs += _descending_path_errors(sub, child(path, "subPath"))
        if sub_expr:
            if sub:
                errs.append(invalid(child(p, "subPathExpr"), sub_expr,
                                    "subPathExpr and subPath are mutually exclusive"))
            errs += _descending_path_errors(sub_expr, child(path, "subPathExpr"))
    return errs


def _resource_name_errors(name: str, path: str) -> list[FieldError]:
    """validateContainerResourceName: standard names, or fully qualified extended resources."""
    errs = details_to_errors(path, name, is_qualified_name(name))
    if errs:
        return errs
    hugepages = name.startswith("hugepages-")
    if "/" not in name:
        if name not in _STANDARD_RESOURCES and not hugepages:
            errs.append(invalid(path, name, "must be a standard resource type or fully qualified"))
        if name not in ("cpu", "memory", "ephemeral-storage") and not hugepages:
            errs.append(invalid(path, name, "must be a standard resource for containers"))
    elif not _is_native(name) and (name.startswith("requests.")
                                   or is_qualified_name("requests." + name)):
        errs.append(invalid(path, name, "doesn't follow extended resource name standard"))
    return errs


_STANDARD_RESOURCES = {
    "cpu", "memory", "ephemeral-storage", "storage", "pods", "services",
    "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers", "requests.cpu",
    "requests.memory", "requests.storage", "requests.ephemeral-storage", "limits.cpu",
    "limits.memory", "limits.ephemeral-storage"}


def _is_native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def validate_resources(res: dict[str, Any], path: str) -> list[FieldError]:
    """ValidateResourceRequirements: names, non-negative quantities, requests <= limits."""
    errs: list[FieldError] = []
    limits: dict[str, Quantity] = {}
    cpu_or_memory = hugepages = False
    for bucket in ("limits", "requests"):
        for name, raw in as_dict(res.get(bucket)).items():
            p = key(child(path, bucket), name)
            errs += _resource_name_errors(name, p)
            try:
                q = parse_quantity(raw)
            except QuantityError as exc:
                errs.append(invalid(p, raw, str(exc)))
                continue
            if q.value < 0:
                errs.append(invalid(p, str(q), "must be greater than or equal to 0"))
            overcommit = _is_native(name) and not name.startswith("hugepages-")
            if not _is_native(name) and q.value.denominator != 1:  # extended: integers only
                errs.append(invalid(p, GoValue(str(q)), "must be an integer"))
            cpu_or_memory |= name in _QOS_RESOURCES
            hugepages |= name.startswith("hugepages-")
            if bucket == "limits":
                limits[name] = q
            elif name in limits and not overcommit and q != limits[name]:
                errs.append(invalid(child(path, "requests"), str(q),
                                    f"must be equal to {name} limit of {limits[name]}"))
            elif name in limits and q > limits[name]:
                errs.append(invalid(child(path, "requests"), str(q),
                                    f"must be less than or equal to {name} limit of "
                                    f"{limits[name]}"))
            elif name not in limits and not overcommit:
                errs.append(required(child(path, "limits"),
                                     "Limit must be set for non overcommitable resources"))
    if hugepages and not cpu_or_memory:
        errs.append(forbidden(path, "HugePages require cpu or memory"))
    return errs


def _validate_security_context(sc: Any, path: str) -> list[FieldError]:
    if sc is None:
        return []
    sc = as_dict(sc)
    errs = _validate_ids(sc, path)
    if sc.get("procMount") is not None and sc["procMount"] not in ("Default", "Unmasked"):
        errs.append(not_supported(child(path, "procMount"), sc["procMount"],
                                  ["Default", "Unmasked"]))
    if sc.get("allowPrivilegeEscalation") is False and sc.get("privileged") is True:
        errs.append(invalid(path, sc, "cannot set `allowPrivilegeEscalation` to false and "
                                      "`privileged` to true"))
    return errs + _validate_seccomp(sc.get("seccompProfile"), child(path, "seccompProfile"))


def _validate_pod_security_context(sc: dict[str, Any], path: str) -> list[FieldError]:
    errs = _validate_ids(sc, path)
    if sc.get("fsGroup") is not None:
        errs += _id_range(sc["fsGroup"], child(path, "fsGroup"))
    for i, gid in enumerate(as_list(sc.get("supplementalGroups"))):
        errs += _id_range(gid, index(child(path, "supplementalGroups"), i))
    if sc.get("fsGroupChangePolicy") is not None and \
            sc["fsGroupChangePolicy"] not in ("Always", "OnRootMismatch"):
        errs.append(not_supported(child(path, "fsGroupChangePolicy"), sc["fsGroupChangePolicy"],
                                  ["Always", "OnRootMismatch"]))
    return errs + _validate_seccomp(sc.get("seccompProfile"), child(path, "seccompProfile"))


def _validate_ids(sc: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for field in ("runAsUser", "runAsGroup"):
        if sc.get(field) is not None:
            errs += _id_range(sc[field], child(path, field))
    return errs


def _id_range(value: Any, path: str) -> list[FieldError]:
    n = as_int(value)
    if n is None or 0 <= n <= 0xFFFFFFFF:
        return []
    return [invalid(path, n, inclusive_range_error(0, 0xFFFFFFFF))]


def _validate_seccomp(profile: Any, path: str) -> list[FieldError]:
    if profile is None:
        return []
    profile = as_dict(profile)
    kind, types = profile.get("type"), ["Localhost", "RuntimeDefault", "Unconfined"]
    if not kind:
        return [required(child(path, "type"), "type is required when seccompProfile is set")]
    if kind not in types:
        return [not_supported(child(path, "type"), kind, types)]
    if kind == "Localhost" and not profile.get("localhostProfile"):
        return [required(child(path, "localhostProfile"),
                         "must be set when seccomp type is Localhost")]
    return []


# ------------------------------------------------------------------------ probes, hooks


def _validate_probes_and_hooks(ctr: dict[str, Any], grace: int | None,
                               path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for hook in ("postStart", "preStop"):
        handler = as_dict(ctr.get("lifecycle")).get(hook)
        if handler is not None:
            errs += _validate_handler(as_dict(handler), grace,
                                      child(child(path, "lifecycle"), hook), lifecycle=True)
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = ctr.get(name)
        if probe is None:
            continue
        probe, p = as_dict(probe), child(path, name)
        errs += _validate_handler(probe, grace, p, lifecycle=False)
        for field in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds",
                      "successThreshold", "failureThreshold"):
            errs += validate_nonnegative(probe.get(field), child(p, field))
        probe_grace = probe.get("terminationGracePeriodSeconds")
        if name == "readinessProbe" and probe_grace is not None:
            errs.append(invalid(child(p, "terminationGracePeriodSeconds"), probe_grace,
                                "must not be set for readinessProbes"))
        elif isinstance(probe_grace, int) and probe_grace <= 0:
            errs.append(invalid(child(p, "terminationGracePeriodSeconds"), probe_grace,
                                "must be greater than 0"))
        if name != "readinessProbe" and probe.get("successThreshold", 1) != 1:
            errs.append(invalid(child(p, "successThreshold"), probe.get("successThreshold"),
                                "must be 1"))
    return errs


def _validate_handler(handler: dict[str, Any], grace: int | None, path: str,
                      lifecycle: bool) -> list[FieldError]:
    kinds = ("exec", "httpGet", "tcpSocket", "sleep") if lifecycle else \
        ("exec", "httpGet", "tcpSocket", "grpc")
    present = [k for k in kinds if handler.get(k) is not None]
    if not present:
        return [required(path, "must specify a handler type")]
    errs = [forbidden(child(path, k), "may not specify more than 1 handler type")
            for k in present[1:]]
    kind, action, p = present[0], as_dict(handler[present[0]]), child(path, present[0])
    if kind == "exec" and not action.get("command"):
        errs.append(required(child(p, "command")))
    elif kind == "httpGet":
        errs += [] if action.get("path") else [required(child(p, "path"))]
        errs += _port_num_or_name(action.get("port", 0), child(p, "port"))
        if action.get("scheme") not in ("HTTP", "HTTPS"):
            errs.append(not_supported(child(p, "scheme"), action.get("scheme", ""),
                                      ["HTTP", "HTTPS"]))
        for header in map(as_dict, as_list(action.get("httpHeaders"))):
            errs += details_to_errors(child(p, "httpHeaders"), as_str(header.get("name")),
                                      is_http_header_name(as_str(header.get("name"))))
    elif kind in ("tcpSocket", "grpc"):
        errs += _port_num_or_name(action.get("port", 0), child(p, "port"))
    elif kind == "sleep":
        seconds = as_int(action.get("seconds")) or 0
        if grace is not None and (seconds <= 0 or seconds > grace):
            errs.append(invalid(p, seconds, "must be greater than 0 and less than "
                                            f"terminationGracePeriodSeconds ({grace})"))
    return errs


def _port_num_or_name(port: Any, path: str) -> list[FieldError]:
    if isinstance(port, str):
        return details_to_errors(path, port, is_valid_port_name(port))
    n = as_int(port) or 0
    return details_to_errors(path, n, is_valid_port_num(n))


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
