"""Service defaults and validation (core/v1), including the registry's clusterIP bookkeeping.

Defaults follow SetDefaults_Service plus the family/policy defaults the service registry fills
in; validation follows ValidateService/ValidateServiceUpdate. Allocating IPs and node ports is
the API server's job (apiserver/servicealloc.py, which also checks the node-port range):
`prepare_update` only carries allocated values over, as the registry does.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from dockyard.api.fielderrors import (
    FieldError,
    GoValue,
    duplicate,
    forbidden,
    go_quote,
    go_strings,
    invalid,
    not_supported,
    required,
)
from dockyard.api.meta import (
    as_dict,
    as_int,
    as_list,
    as_str,
    ensure_dict,
    ip_errors,
    is_valid_port_name,
    is_valid_port_num,
    non_special_ip_errors,
    parse_ip,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_labels,
    validate_qualified_name,
)

_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
_PROTOCOLS = ["SCTP", "TCP", "UDP"]
_POLICIES = ["PreferDualStack", "RequireDualStack", "SingleStack"]
_KUBELET_PORT = 10250


def _spec(svc: dict[str, Any]) -> dict[str, Any]:
    return ensure_dict(svc, "spec")


def externally_accessible(spec: dict[str, Any]) -> bool:
    kind = spec.get("type")
    return kind in ("LoadBalancer", "NodePort") or (kind == "ClusterIP"
                                                    and bool(spec.get("externalIPs")))


def is_headless(spec: dict[str, Any]) -> bool:
    ips = as_list(spec.get("clusterIPs")) or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return ips == ["None"]


# ---------------------------------------------------------------------------- defaults


def default_service(svc: dict[str, Any]) -> None:
    spec = _spec(svc)
    affinity = spec.get("sessionAffinity") or "None"
    spec["sessionAffinity"] = affinity
    if affinity == "None":
        spec.pop("sessionAffinityConfig", None)
    elif affinity == "ClientIP":
        timeout = as_dict(as_dict(spec.get("sessionAffinityConfig")).get("clientIP"))
        if timeout.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    spec["type"] = spec.get("type") or "ClusterIP"
    for port in map(as_dict, as_list(spec.get("ports"))):
        port["protocol"] = port.get("protocol") or "TCP"
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    if externally_accessible(spec) and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and spec["type"] != "ExternalName":
        spec["internalTrafficPolicy"] = "Cluster"
    if spec["type"] == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    _normalize_cluster_ips(spec)
    if spec["type"] != "ExternalName":
        _default_ip_families(spec)
    ensure_dict(ensure_dict(svc, "status"), "loadBalancer")


def _normalize_cluster_ips(spec: dict[str, Any]) -> None:
    """Keep clusterIP and clusterIPs in sync when the client set only one of them."""
    if spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]
    elif spec.get("clusterIPs") and not spec.get("clusterIP"):
        spec["clusterIP"] = as_list(spec["clusterIPs"])[0]


def _default_ip_families(spec: dict[str, Any]) -> None:
    if spec.get("ipFamilyPolicy") is None:
        # Headless services without a selector may serve every family the cluster has.
        selectorless_headless = is_headless(spec) and not spec.get("selector")
        spec["ipFamilyPolicy"] = "RequireDualStack" if selectorless_headless else "SingleStack"
    if not spec.get("ipFamilies"):
        families = []
        for ip in as_list(spec.get("clusterIPs")):
            parsed = parse_ip(as_str(ip))
            if parsed is not None:
                families.append("IPv6" if parsed.version == 6 else "IPv4")
        spec["ipFamilies"] = families or ["IPv4"]


def prepare_update(new: dict[str, Any], old: dict[str, Any]) -> None:
    """What the service registry does before validating an update (for the API server).

    patchAllocatedValues: carries over the clusterIPs, nodePorts (matched by port name) and
    healthCheckNodePort the client omitted while the type still uses them; then
    dropTypeDependentFields: wipes what the new type no longer uses, when the client left the
    old value (so `type: ClusterIP` alone turns a NodePort service back into a plain one).
    """
    spec, old_spec = _spec(new), as_dict(old.get("spec"))
    _patch_allocated_values(spec, old_spec)
    _drop_type_dependent_fields(spec, old_spec)


def _needs_cluster_ip(spec: dict[str, Any]) -> bool:
    return spec.get("type") != "ExternalName"


def _needs_node_port(spec: dict[str, Any]) -> bool:
    return spec.get("type") in ("NodePort", "LoadBalancer")


def _node_ports(spec: dict[str, Any]) -> list[int]:
    return [as_int(as_dict(p).get("nodePort")) or 0 for p in as_list(spec.get("ports"))]


def _patch_allocated_values(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    if _needs_cluster_ip(old_spec) and _needs_cluster_ip(spec):
        if not spec.get("clusterIP") and not spec.get("clusterIPs"):
            for field in ("clusterIP", "clusterIPs"):
                if old_spec.get(field):
                    spec[field] = copy.deepcopy(old_spec[field])
        elif spec.get("clusterIP") != old_spec.get("clusterIP") and \
                spec.get("clusterIPs") == old_spec.get("clusterIPs"):
            # v1 conversion: a changed clusterIP alone replaces the primary of clusterIPs.
            spec["clusterIPs"] = [spec["clusterIP"]] if spec.get("clusterIP") else []
    if _needs_node_port(old_spec) and _needs_node_port(spec):
        used = set(_node_ports(old_spec)) & set(_node_ports(spec))
        by_name = {as_str(as_dict(p).get("name")): as_int(as_dict(p).get("nodePort")) or 0
                   for p in as_list(old_spec.get("ports"))}
        for port in map(as_dict, as_list(spec.get("ports"))):
            if not port.get("nodePort"):
                old_value = by_name.get(as_str(port.get("name")), 0)
                if old_value and old_value not in used:
                    port["nodePort"] = old_value
    if _needs_health_check(old_spec) and _needs_health_check(spec) and \
            spec.get("healthCheckNodePort") in (None, 0):
        spec["healthCheckNodePort"] = old_spec.get("healthCheckNodePort")


def _drop_type_dependent_fields(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    def same(field: str) -> bool:
        return spec.get(field) == old_spec.get(field)

    if _needs_cluster_ip(old_spec) and not _needs_cluster_ip(spec):
        if same("clusterIPs") or (not spec.get("clusterIPs") and same("clusterIP")):
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        for field in ("ipFamilies", "ipFamilyPolicy"):
            if same(field):
                spec.pop(field, None)
    # sameNodePorts: users may drop or change ports, as long as no node port is net-new.
    if _needs_node_port(old_spec) and not _needs_node_port(spec) and \
            set(_node_ports(spec)) - {0} <= set(_node_ports(old_spec)):
        for port in map(as_dict, as_list(spec.get("ports"))):
            port.pop("nodePort", None)
    if _needs_health_check(old_spec) and not _needs_health_check(spec) and \
            same("healthCheckNodePort"):
        spec.pop("healthCheckNodePort", None)
    if old_spec.get("type") == "LoadBalancer" != spec.get("type"):
        for field in ("allocateLoadBalancerNodePorts", "loadBalancerClass"):
            if same(field):
                spec.pop(field, None)
    if externally_accessible(old_spec) and not externally_accessible(spec) and \
            same("externalTrafficPolicy"):
        spec.pop("externalTrafficPolicy", None)


def _needs_health_check(spec: dict[str, Any]) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


# -------------------------------------------------------------------------- validation


def validate_service(svc: dict[str, Any]) -> list[FieldError]:
    spec = copy.deepcopy(as_dict(svc.get("spec")))
    _normalize_cluster_ips(spec)
    kind, ports = spec.get("type"), [as_dict(p) for p in as_list(spec.get("ports"))]
    headless = is_headless(spec)
    errs: list[FieldError] = []
    if not ports and not headless and kind != "ExternalName":
        errs.append(required("spec.ports"))
    errs += _validate_type_rules(spec, ports, headless)
    names: set[str] = set()
    for i, port in enumerate(ports):
        errs += _validate_port(port, len(ports) > 1, names, f"spec.ports[{i}]")
    if spec.get("selector") is not None:
        errs += validate_labels(spec.get("selector"), "spec.selector")
    errs += _validate_session_affinity(spec)
    errs += _validate_cluster_ips(spec)
    for i, ip in enumerate(as_list(spec.get("externalIPs"))):
        path = f"spec.externalIPs[{i}]"
        errs += ip_errors(path, as_str(ip)) or non_special_ip_errors(as_str(ip), path)
    if not kind:
        errs.append(required("spec.type"))
    elif kind not in _TYPES:
        errs.append(not_supported("spec.type", kind, _TYPES))
    errs += _validate_node_ports(spec, ports)
    errs += _validate_load_balancer_fields(spec)
    errs += _validate_traffic_policies(spec)
    return errs


def _validate_type_rules(spec: dict[str, Any], ports: list[dict[str, Any]],
                         headless: bool) -> list[FieldError]:
    kind, errs = spec.get("type"), []
    if kind == "LoadBalancer":
        detail = f"may not expose port {_KUBELET_PORT} externally since it is used by kubelet"
        errs += [invalid(f"spec.ports[{i}]", p.get("port"), detail)
                 for i, p in enumerate(ports) if p.get("port") == _KUBELET_PORT]
    if kind in ("LoadBalancer", "NodePort") and headless:
        errs.append(invalid("spec.clusterIPs[0]", "None",
                            f"may not be set to 'None' for {kind} services"))
    if kind == "ExternalName":
        for field in ("clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if spec.get(field):
                errs.append(forbidden(f"spec.{field}", "may not be set for ExternalName services"))
        cname = as_str(spec.get("externalName")).removesuffix(".")
        errs += validate_dns1123_subdomain(cname, "spec.externalName") if cname else \
            [required("spec.externalName")]
    return errs


def _validate_port(port: dict[str, Any], require_name: bool, names: set[str],
                   path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    name = as_str(port.get("name"))
    if require_name and not name:
        errs.append(required(f"{path}.name"))
    elif name:
        errs += validate_dns1123_label(name, f"{path}.name")
        errs += [duplicate(f"{path}.name", name)] if name in names else []
        names.add(name)
    number = as_int(port.get("port")) or 0
    errs += [invalid(f"{path}.port", number, m) for m in is_valid_port_num(number)]
    protocol = port.get("protocol")
    if not protocol:
        errs.append(required(f"{path}.protocol"))
    elif protocol not in _PROTOCOLS:
        errs.append(not_supported(f"{path}.protocol", protocol, _PROTOCOLS))
    target = port.get("targetPort", 0)
    if isinstance(target, str):
        errs += [invalid(f"{path}.targetPort", target, m) for m in is_valid_port_name(target)]
    else:
        target = as_int(target) or 0
        errs += [invalid(f"{path}.targetPort", target, m) for m in is_valid_port_num(target)]
    if port.get("appProtocol") is not None:
        errs += validate_qualified_name(as_str(port["appProtocol"]), f"{path}.appProtocol")
    return errs


def _validate_session_affinity(spec: dict[str, Any]) -> list[FieldError]:
    affinity, config = spec.get("sessionAffinity"), spec.get("sessionAffinityConfig")
    path = "spec.sessionAffinityConfig"
    if not affinity:
        return [required("spec.sessionAffinity")]
    if affinity not in ("ClientIP", "None"):
        return [not_supported("spec.sessionAffinity", affinity, ["ClientIP", "None"])]
    if affinity == "None":
        return [forbidden(path, "must not be set when session affinity is None")] \
            if config is not None else []
    detail = "when session affinity type is ClientIP"
    client = as_dict(config).get("clientIP")
    if config is None:
        return [required(path, detail)]
    if client is None:
        return [required(f"{path}.clientIP", detail)]
    timeout = as_dict(client).get("timeoutSeconds")
    if timeout is None:
        return [required(f"{path}.clientIP.timeoutSeconds", detail)]
    if not isinstance(timeout, int) or not 0 < timeout <= 86400:
        return [invalid(f"{path}.clientIP.timeoutSeconds", timeout,
                        "must be greater than 0 and less than 86400")]
    return []


def _validate_cluster_ips(spec: dict[str, Any]) -> list[FieldError]:
    """ValidateServiceClusterIPsRelatedFields."""
    if spec.get("type") == "ExternalName":
        return []
    ips = [as_str(ip) for ip in as_list(spec.get("clusterIPs"))]
    errs: list[FieldError] = []
    if spec.get("clusterIP"):
        if not ips:
            errs.append(required("spec.clusterIPs"))
        elif ips[0] != spec["clusterIP"]:
            errs.append(invalid("spec.clusterIPs", go_strings(ips),
                                "first value must match `clusterIP`"))
    elif ips:
        errs.append(invalid("spec.clusterIPs", go_strings(ips),
                            "must be empty when `clusterIP` is not specified"))
    families = as_list(spec.get("ipFamilies"))
    for i, family in enumerate(families):
        if family not in ("IPv4", "IPv6"):
            errs.append(not_supported(f"spec.ipFamilies[{i}]", family, ["IPv4", "IPv6"]))
        if family in families[:i]:
            errs.append(duplicate(f"spec.ipFamilies[{i}]", family))
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in _POLICIES:
        errs.append(not_supported("spec.ipFamilyPolicy", policy, _POLICIES))
    bad_ips = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if len(ips) > 1:
                bad_ips = True
                errs.append(invalid("spec.clusterIPs", go_strings(ips),
                                    "'None' must be the first and only value"))
            continue
        ip_errs = ip_errors(f"spec.clusterIPs[{i}]", ip)
        bad_ips |= bool(ip_errs)
        errs += ip_errs
    if len(ips) > 2:
        errs.append(invalid("spec.clusterIPs", go_strings(ips), "may only hold up to 2 values"))
    if bad_ips:
        return errs
    versions = [parse_ip(ip).version for ip in ips if ip != "None"]  # type: ignore[union-attr]
    if len(ips) > 1 and len(set(versions)) != len(versions):
        errs.append(invalid("spec.clusterIPs", go_strings(ips),
                            "may specify no more than one IP for each IP family"))
    if ips and ips != ["None"]:
        for i, (ip, family) in enumerate(zip(ips, families, strict=False)):
            want = 6 if family == "IPv6" else 4
            if family in ("IPv4", "IPv6") and versions[i] != want:
                errs.append(invalid(f"spec.clusterIPs[{i}]", ip,
                                    f"expected an {family} value as indicated by "
                                    f"`ipFamilies[{i}]`"))
    return errs


def _validate_node_ports(spec: dict[str, Any], ports: list[dict[str, Any]]) -> list[FieldError]:
    errs: list[FieldError] = []
    seen_node_ports: set[tuple[str, int]] = set()
    seen_ports: set[tuple[str, int]] = set()
    # The range of node ports is the allocator's to check (apiserver/servicealloc.py): it is
    # the server's --service-node-port-range, not a constant of the API.
    for i, port in enumerate(ports):
        node_port = as_int(port.get("nodePort")) or 0
        if node_port and spec.get("type") == "ClusterIP":
            errs.append(forbidden(f"spec.ports[{i}].nodePort",
                                  "may not be used when `type` is 'ClusterIP'"))
        if node_port:
            token = (as_str(port.get("protocol")), node_port)
            if token in seen_node_ports:
                errs.append(duplicate(f"spec.ports[{i}].nodePort", node_port))
            seen_node_ports.add(token)
        pair = (as_str(port.get("protocol")), as_int(port.get("port")) or 0)
        if pair in seen_ports:
            errs.append(duplicate(f"spec.ports[{i}]", _go_service_port(pair)))
        seen_ports.add(pair)
    return errs


def _go_service_port(pair: tuple[str, int]) -> GoValue:
    return GoValue(f'core.ServicePort{{Name:"", Protocol:{go_quote(str(pair[0] or ""))}, '
                   f"AppProtocol:(*string)(nil), Port:{pair[1]}, "
                   f'TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:""}}, NodePort:0}}')


def _validate_load_balancer_fields(spec: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    is_lb = spec.get("type") == "LoadBalancer"
    ranges = as_list(spec.get("loadBalancerSourceRanges"))
    if ranges:
        if not is_lb:
            errs.append(forbidden("spec.LoadBalancerSourceRanges",
                                  "may only be used when `type` is 'LoadBalancer'"))
        for i, cidr in enumerate(ranges):
            try:
                ipaddress.ip_network(as_str(cidr).strip(), strict=False)
            except ValueError:
                errs.append(invalid(f"spec.LoadBalancerSourceRanges[{i}]", as_str(cidr).strip(),
                                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or "
                                    "2001:db8::/64)"))
    if spec.get("allocateLoadBalancerNodePorts") is not None and not is_lb:
        errs.append(forbidden("spec.allocateLoadBalancerNodePorts",
                              "may only be used when `type` is 'LoadBalancer'"))
    if is_lb and spec.get("allocateLoadBalancerNodePorts") is None:
        errs.append(required("allocateLoadBalancerNodePorts"))  # sic: Kubernetes drops "spec."
    lb_class = spec.get("loadBalancerClass")
    if lb_class is not None:
        errs += validate_qualified_name(as_str(lb_class), "spec.loadBalancerClass") if is_lb \
            else [forbidden("spec.loadBalancerClass",
                            "may only be used when `type` is 'LoadBalancer'")]
    return errs


def _validate_traffic_policies(spec: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    external = spec.get("externalTrafficPolicy")
    if not externally_accessible(spec):
        if external:
            errs.append(invalid("spec.externalTrafficPolicy", external,
                                "may only be set for externally-accessible services"))
    elif not external:
        errs.append(required("spec.externalTrafficPolicy"))
    elif external not in ("Cluster", "Local"):
        errs.append(not_supported("spec.externalTrafficPolicy", external, ["Cluster", "Local"]))
    health = as_int(spec.get("healthCheckNodePort")) or 0
    if health and not _needs_health_check(spec):
        errs.append(invalid("spec.healthCheckNodePort", health, "may only be set when `type` is "
                            "'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))
    elif health:
        errs += [invalid("spec.healthCheckNodePort", health, m) for m in is_valid_port_num(health)]
    internal = spec.get("internalTrafficPolicy")
    if internal is None and spec.get("type") in ("NodePort", "LoadBalancer", "ClusterIP"):
        errs.append(required("spec.internalTrafficPolicy"))
    elif internal is not None and internal not in ("Cluster", "Local"):
        errs.append(not_supported("spec.internalTrafficPolicy", internal, ["Cluster", "Local"]))
    distribution = spec.get("trafficDistribution")
    if distribution is not None and distribution != "PreferClose":
        errs.append(not_supported("spec.trafficDistribution", distribution, ["PreferClose"]))
    return errs


def validate_service_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    """ValidateServiceUpdate: clusterIPs and ipFamilies may not change once set."""
    effective = copy.deepcopy(new)
    prepare_update(effective, old)  # judge what the registry would store
    spec, old_spec = _spec(effective), as_dict(old.get("spec"))
    _normalize_cluster_ips(spec)
    errs: list[FieldError] = []
    if "ExternalName" not in (spec.get("type"), old_spec.get("type")) and \
            not (is_headless(spec) and is_headless(old_spec)):
        ips, old_ips = as_list(spec.get("clusterIPs")), as_list(old_spec.get("clusterIPs"))
        if len(ips) == len(old_ips):
            errs += [invalid(f"spec.clusterIPs[{i}]", go_strings(ips), "may not change once set")
                     for i, ip in enumerate(old_ips) if ip != ips[i]]
        elif len(ips) < len(old_ips) and not ips:
            errs.append(invalid("spec.clusterIPs[0]", go_strings(ips),
                                "primary clusterIP can not be unset"))
        elif old_ips and ips[0] != old_ips[0]:
            errs.append(invalid("spec.clusterIPs[0]", go_strings(ips), "may not change once set"))
        families, old_families = as_list(spec.get("ipFamilies")), as_list(
            old_spec.get("ipFamilies"))
        if not is_headless(spec) and len(families) == len(old_families) and \
                families != old_families:
            errs.append(invalid("spec.ipFamilies[0]", GoValue(
                "[]core.IPFamily{" + ", ".join(go_quote(str(f)) for f in families) + "}"),
                "may not change once set"))
    if old_spec.get("type") == "LoadBalancer" == spec.get("type") and \
            spec.get("loadBalancerClass") != old_spec.get("loadBalancerClass"):
        errs.append(invalid("spec.loadBalancerClass", spec.get("loadBalancerClass"),
                            "may not change once set"))
    if _needs_health_check(spec) and _needs_health_check(old_spec) and \
            spec.get("healthCheckNodePort") != old_spec.get("healthCheckNodePort"):
        errs.append(forbidden("spec.healthCheckNodePort", "field is immutable"))
    return errs + validate_service(effective)
