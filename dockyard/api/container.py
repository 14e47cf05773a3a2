"""Containers: defaulting and validation of regular, init and ephemeral containers (ports,
env/envFrom, volumeMounts, resources, securityContext, probes and lifecycle handlers).
"""

from __future__ import annotations

import re
from typing import Any

from dockyard.api.fielderrors import (
    FieldError,
    GoValue,
    duplicate,
    forbidden,
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
    inclusive_range_error,
    index,
    is_config_map_key,
    is_env_var_name,
    is_http_header_name,
    is_qualified_name,
    is_valid_port_name,
    is_valid_port_num,
    key,
    name_is_dns_subdomain,
    validate_dns1123_label,
    validate_nonnegative,
)
from dockyard.api.quantity import Quantity, QuantityError, parse_quantity
from dockyard.api.volume import (
    ENV_FIELDS,
    default_field_refs,
    descending_path_errors,
    validate_field_ref,
    validate_resource_ref,
)

CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")
QOS_RESOURCES = ("cpu", "memory")


# ---------------------------------------------------------------------------- defaults


def default_container(ctr: dict[str, Any]) -> None:
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
        default_field_refs(as_dict(env.get("valueFrom")))
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


# -------------------------------------------------------------------------- validation


def validate_enum(value: Any, path: str, allowed: list[str]) -> list[FieldError]:
    if value in (None, ""):
        return [required(path)]
    return [] if value in allowed else [not_supported(path, value, allowed)]


def validate_containers(spec: dict[str, Any], volumes: dict[str, dict[str, Any]],
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
    errs += validate_enum(ctr.get("terminationMessagePolicy"),
                          child(path, "terminationMessagePolicy"),
                          ["File", "FallbackToLogsOnError"])
    errs += _validate_ports(ctr.get("ports"), child(path, "ports"))
    errs += _validate_env(ctr.get("env"), child(path, "env"))
    errs += _validate_env_from(ctr.get("envFrom"), child(path, "envFrom"))
    errs += _validate_mounts(ctr.get("volumeMounts"), volumes, child(path, "volumeMounts"))
    errs += validate_enum(ctr.get("imagePullPolicy"), child(path, "imagePullPolicy"),
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
        errs += validate_enum(port.get("protocol"), child(p, "protocol"), ["SCTP", "TCP", "UDP"])
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
            errs += validate_field_ref(ref, p, ENV_FIELDS)
        elif kind == "resourceFieldRef":
            errs += validate_resource_ref(ref, p)
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
            errs += descending_path_errors(sub, child(path, "subPath"))
        if sub_expr:
            if sub:
                errs.append(invalid(child(p, "subPathExpr"), sub_expr,
                                    "subPathExpr and subPath are mutually exclusive"))
            errs += descending_path_errors(sub_expr, child(path, "subPathExpr"))
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
            cpu_or_memory |= name in QOS_RESOURCES
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
    errs = validate_ids(sc, path)
    if sc.get("procMount") is not None and sc["procMount"] not in ("Default", "Unmasked"):
        errs.append(not_supported(child(path, "procMount"), sc["procMount"],
                                  ["Default", "Unmasked"]))
    if sc.get("allowPrivilegeEscalation") is False and sc.get("privileged") is True:
        errs.append(invalid(path, sc, "cannot set `allowPrivilegeEscalation` to false and "
                                      "`privileged` to true"))
    return errs + validate_seccomp(sc.get("seccompProfile"), child(path, "seccompProfile"))


def validate_ids(sc: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for field in ("runAsUser", "runAsGroup"):
        if sc.get(field) is not None:
            errs += id_range(sc[field], child(path, field))
    return errs


def id_range(value: Any, path: str) -> list[FieldError]:
    n = as_int(value)
    if n is None or 0 <= n <= 0xFFFFFFFF:
        return []
    return [invalid(path, n, inclusive_range_error(0, 0xFFFFFFFF))]


def validate_seccomp(profile: Any, path: str) -> list[FieldError]:
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


# ----------------------------------------------------------------------- probes, hooks


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
