"""NetworkPolicy defaults and validation (networking.k8s.io/v1).

Defaults follow SetDefaults_NetworkPolicy (policyTypes: Ingress, plus Egress when egress rules
are given) and SetDefaults_NetworkPolicyPort (protocol TCP); `podSelector` is always present,
as Go's non-pointer struct serializes it (`{}` selects every pod of the namespace). Validation
follows ValidateNetworkPolicySpec of Kubernetes 1.32. Enforcement is the node's (network/).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from dockyard.api.fielderrors import (
    FieldError,
    GoValue,
    forbidden,
    go_quote,
    invalid,
    not_supported,
    required,
)
from dockyard.api.meta import (
    as_dict,
    as_list,
    as_str,
    ensure_dict,
    is_valid_port_name,
    is_valid_port_num,
    validate_label_selector,
)

_PROTOCOLS = ["TCP", "UDP", "SCTP"]
_POLICY_TYPES = ["Ingress", "Egress"]


def _rules(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(direction, peers field, rule) for every ingress and egress rule."""
    return ([("ingress", "from", as_dict(r)) for r in as_list(spec.get("ingress"))]
            + [("egress", "to", as_dict(r)) for r in as_list(spec.get("egress"))])


def default_network_policy(obj: dict[str, Any]) -> None:
    spec = ensure_dict(obj, "spec")
    if not isinstance(spec.get("podSelector"), dict):
        spec["podSelector"] = {}
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for _direction, _peers, rule in _rules(spec):
        for port in as_list(rule.get("ports")):
            if isinstance(port, dict) and not port.get("protocol"):
                port["protocol"] = "TCP"


def validate_network_policy(obj: dict[str, Any]) -> list[FieldError]:
    spec = as_dict(obj.get("spec"))
    errs = validate_label_selector(spec.get("podSelector"), "spec.podSelector")
    counters = {"ingress": 0, "egress": 0}
    for direction, peers_field, rule in _rules(spec):
        path = f"spec.{direction}[{counters[direction]}]"
        counters[direction] += 1
        for i, port in enumerate(as_list(rule.get("ports"))):
            errs += _validate_port(as_dict(port), f"{path}.ports[{i}]")
        for i, peer in enumerate(as_list(rule.get(peers_field))):
            errs += _validate_peer(as_dict(peer), f"{path}.{peers_field}[{i}]")
    types = [as_str(t) for t in as_list(spec.get("policyTypes"))]
    if len(types) > len(_POLICY_TYPES):
        shown = GoValue("&[]networking.PolicyType{" + ", ".join(map(go_quote, types)) + "}")
        return errs + [invalid("spec.policyTypes", shown,
                               "may not specify more than two policyTypes")]
    errs += [not_supported(f"spec.policyTypes[{i}]", t, _POLICY_TYPES)
             for i, t in enumerate(types) if t not in _POLICY_TYPES]
    return errs


def _validate_port(port: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    protocol = port.get("protocol")
    if protocol is not None and protocol not in _PROTOCOLS:
        errs.append(not_supported(f"{path}.protocol", protocol, _PROTOCOLS))
    number, end = port.get("port"), port.get("endPort")
    if number is None:
        if end is not None:
            errs.append(invalid(f"{path}.endPort", end,
                                "may not be specified when `port` is not specified"))
    elif isinstance(number, int) and not isinstance(number, bool):
        errs += [invalid(f"{path}.port", number, m) for m in is_valid_port_num(number)]
        if end is not None:
            if isinstance(end, int) and end < number:
                errs.append(invalid(f"{path}.endPort", number,  # sic: Kubernetes shows `port`
                                    "must be greater than or equal to `port`"))
            errs += [invalid(f"{path}.endPort", end, m)
                     for m in is_valid_port_num(end if isinstance(end, int) else 0)]
    else:
        if end is not None:
            errs.append(invalid(f"{path}.endPort", end,
                                "may not be specified when `port` is non-numeric"))
        errs += [invalid(f"{path}.port", as_str(number), m)
                 for m in is_valid_port_name(as_str(number))]
    return errs


def _validate_peer(peer: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    count = 0
    for field in ("podSelector", "namespaceSelector"):
        if peer.get(field) is not None:
            count += 1
            errs += validate_label_selector(peer[field], f"{path}.{field}")
    if peer.get("ipBlock") is not None:
        count += 1
        errs += _validate_ip_block(as_dict(peer["ipBlock"]), f"{path}.ipBlock")
    if count == 0:
        errs.append(required(path, "must specify a peer"))
    elif count > 1 and peer.get("ipBlock") is not None:
        errs.append(forbidden(path, "may not specify both ipBlock and another peer"))
    return errs


def _cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """net.ParseCIDR: an address with a prefix length; host bits may be set."""
    if "/" not in text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _validate_ip_block(block: dict[str, Any], path: str) -> list[FieldError]:
    cidr_text = as_str(block.get("cidr"))
    if not cidr_text:
        return [required(f"{path}.cidr")]
    cidr = _cidr(cidr_text)
    if cidr is None:
        return [invalid(f"{path}.cidr", cidr_text, "not a valid CIDR")]
    errs: list[FieldError] = []
    for i, text in enumerate(as_str(e) for e in as_list(block.get("except"))):
        inner = _cidr(text)
        if inner is None:
            return errs + [invalid(f"{path}.except[{i}]", text, "not a valid CIDR")]
        if inner.version != cidr.version or inner.network_address not in cidr or \
                cidr.prefixlen >= inner.prefixlen:
            errs.append(invalid(f"{path}.except[{i}]", text,
                                "must be a strict subset of `cidr`"))
    return errs
