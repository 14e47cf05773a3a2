"""The simple kinds: Namespace, Node, ConfigMap, Secret, ServiceAccount, Event, Lease,
Endpoints and EndpointSlice.

Each has a `default_*` and/or `validate_*` (plus `*_update`) following core/v1, coordination/v1
and discovery/v1 in Kubernetes; ObjectMeta itself is checked by dockyard.api.kinds.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any

from dockyard.api.fielderrors import (
    FieldError,
    duplicate,
    forbidden,
    go_strings,
    invalid,
    not_supported,
    required,
    too_long,
    too_many,
)
from dockyard.api.meta import (
    as_dict,
    as_int,
    as_list,
    as_str,
    details_to_errors,
    ensure_dict,
    ip_errors,
    is_config_map_key,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_finalizer_name_standard,
    is_qualified_name,
    is_valid_port_num,
    name_is_dns_subdomain,
    non_special_ip_errors,
    parse_ip,
    validate_dns1123_label,
    validate_immutable,
    validate_labels,
    validate_qualified_name,
    validate_taints,
)
from dockyard.api.quantity import QuantityError, parse_quantity

MAX_SECRET_SIZE = 1024 * 1024
_PROTOCOLS = ["SCTP", "TCP", "UDP"]
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/]")


# ------------------------------------------------------------------------- Namespace


def default_namespace(ns: dict[str, Any]) -> None:
    meta = ensure_dict(ns, "metadata")
    if meta.get("name"):
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        labels["kubernetes.io/metadata.name"] = meta["name"]
        meta["labels"] = labels
    status = ensure_dict(ns, "status")
    if not status.get("phase"):
        status["phase"] = "Active"
    # The create strategy insists on the "kubernetes" finalizer, and updates keep the stored
    # list; only the finalize subresource (which skips defaulting) may remove it.
    spec = ensure_dict(ns, "spec")
    finalizers = as_list(spec.get("finalizers"))
    spec["finalizers"] = finalizers if "kubernetes" in finalizers else [*finalizers, "kubernetes"]


def validate_namespace(ns: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    for name in map(as_str, as_list(as_dict(ns.get("spec")).get("finalizers"))):
        errs += details_to_errors("spec.finalizers", name, is_qualified_name(name))
        if not is_finalizer_name_standard(name):
            errs.append(invalid("spec.finalizers", name, "name is neither a standard finalizer "
                                                         "name nor is it fully qualified"))
    return errs


def validate_namespace_status(ns: dict[str, Any]) -> list[FieldError]:
    phase = as_dict(ns.get("status")).get("phase", "")
    if not as_dict(ns.get("metadata")).get("deletionTimestamp"):
        if phase != "Active":
            return [invalid("status.Phase", phase,
                            "may only be 'Active' if `deletionTimestamp` is empty")]
    elif phase != "Terminating":
        return [invalid("status.Phase", phase,
                        "may only be 'Terminating' if `deletionTimestamp` is not empty")]
    return []


# ------------------------------------------------------------------------------ Node


def default_node(node: dict[str, Any]) -> None:
    status = ensure_dict(node, "status")
    for field in ("capacity", "allocatable"):
        for name, raw in list(as_dict(status.get(field)).items()):
            try:
                status[field][name] = str(parse_quantity(raw).round_up(-3))
            except QuantityError:
                pass
    if status.get("allocatable") is None and isinstance(status.get("capacity"), dict):
        status["allocatable"] = dict(status["capacity"])


def validate_node(node: dict[str, Any]) -> list[FieldError]:
    spec, status = as_dict(node.get("spec")), as_dict(node.get("status"))
    # Kubernetes reports taint errors under metadata.taints (sic).
    errs = validate_taints(spec.get("taints"), "metadata.taints")
    for field in ("capacity", "allocatable"):
        for name, raw in as_dict(status.get(field)).items():
            path = f"status.{field}.{name}"
            try:
                q = parse_quantity(raw)
            except QuantityError as exc:
                errs.append(invalid(path, raw, str(exc)))
                continue
            if q.value < 0:
                errs.append(invalid(path, str(q), "must be greater than or equal to 0"))
    cidrs = [as_str(c) for c in as_list(spec.get("podCIDRs"))]
    families = []
    for i, cidr in enumerate(cidrs):
        try:
            families.append(ipaddress.ip_network(cidr, strict=False).version)
        except ValueError:
            errs.append(invalid(f"spec.podCIDRs[{i}]", cidr, "must be a valid CIDR value, (e.g. "
                                                             "10.9.8.0/24 or 2001:db8::/64)"))
    if len(cidrs) > 1 and (len(cidrs) > 2 or len(set(families)) != len(families)):
        errs.append(invalid("spec.podCIDRs", go_strings(cidrs),
                            "may specify no more than one CIDR for each IP family"))
    return errs


def validate_node_update(node: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    spec, old_spec = as_dict(node.get("spec")), as_dict(old.get("spec"))
    errs: list[FieldError] = []
    old_cidrs = as_list(old_spec.get("podCIDRs"))
    if old_cidrs and as_list(spec.get("podCIDRs")) != old_cidrs:
        errs.append(forbidden("spec.podCIDRs",
                              'node updates may not change podCIDR except from "" to valid'))
    if old_spec.get("providerID") and spec.get("providerID") != old_spec.get("providerID"):
        errs.append(forbidden("spec.providerID",
                              'node updates may not change providerID except from "" to valid'))
    seen: list[Any] = []
    for i, address in enumerate(as_list(as_dict(node.get("status")).get("addresses"))):
        if address in seen:
            errs.append(duplicate(f"status.addresses[{i}]", address))
        seen.append(address)
    return errs + validate_node(node)


# ---------------------------------------------------------------- ConfigMap and Secret


def validate_config_map(cm: dict[str, Any]) -> list[FieldError]:
    data, binary = as_dict(cm.get("data")), as_dict(cm.get("binaryData"))
    errs: list[FieldError] = []
    total = 0
    for k, v in data.items():
        errs += details_to_errors(f"data[{k}]", k, is_config_map_key(k))
        if k in binary:
            errs.append(invalid(f"data[{k}]", k, "duplicate of key present in binaryData"))
        total += len(as_str(v).encode())
    for k, v in binary.items():
        errs += details_to_errors(f"binaryData[{k}]", k, is_config_map_key(k))
        decoded = _decode_base64(v, f"binaryData[{k}]", errs)
        total += len(decoded or b"")
    if total > MAX_SECRET_SIZE:
        errs.append(too_long("", MAX_SECRET_SIZE))  # Kubernetes names the whole object: ""
    return errs


def default_secret(secret: dict[str, Any]) -> None:
    if not secret.get("type"):
        secret["type"] = "Opaque"
    # v1 conversion folds stringData into data; it is write-only and never read back.
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = secret.get("data") if isinstance(secret.get("data"), dict) else {}
        for k, v in string_data.items():
            data[k] = base64.b64encode(as_str(v).encode()).decode()
        secret["data"] = data


_SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


def validate_secret(secret: dict[str, Any]) -> list[FieldError]:
    data = as_dict(secret.get("data"))
    errs: list[FieldError] = []
    total = 0
    for k, v in data.items():
        errs += details_to_errors(f"data[{k}]", k, is_config_map_key(k))
        total += len(_decode_base64(v, f"data[{k}]", errs) or b"")
    if total > MAX_SECRET_SIZE:
        errs.append(too_long("data", MAX_SECRET_SIZE))
    kind = as_str(secret.get("type"))
    if kind == "kubernetes.io/service-account-token":
        annotations = as_dict(as_dict(secret.get("metadata")).get("annotations"))
        if not annotations.get("kubernetes.io/service-account.name"):
            errs.append(required("metadata.annotations[kubernetes.io/service-account.name]"))
    elif kind == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            errs += [required("data[username]"), required("data[password]")]
    for k in _SECRET_REQUIRED_KEYS.get(kind, ()):
        if k not in data or (kind == "kubernetes.io/ssh-auth" and not data[k]):
            errs.append(required(f"data[{k}]"))
    return errs


def _decode_base64(value: Any, path: str, errs: list[FieldError]) -> bytes | None:
    """Decode like Go's StdEncoding; report `illegal base64 data at input byte N`."""
    text = as_str(value)
    stripped = text.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        bad = next((i for i, ch in enumerate(text)
                    if ch not in "\r\n=" and not _B64_ALPHABET.match(ch)), None)
        if bad is None:
            bad = len(text) - (len(stripped.rstrip("=")) % 4) if "=" not in text else \
                text.index("=")
        errs.append(invalid(path, "<secret contents redacted>",
                            f"illegal base64 data at input byte {bad}"))
        return None


def validate_immutable_data(new: dict[str, Any], old: dict[str, Any],
                            fields: tuple[str, ...]) -> list[FieldError]:
    """ConfigMap/Secret with `immutable: true`: the flag and the data may no longer change."""
    if old.get("immutable") is not True:
        return []
    errs: list[FieldError] = []
    if new.get("immutable") is not True:
        errs.append(forbidden("immutable", "field is immutable when `immutable` is set"))
    for field in fields:
        if as_dict(new.get(field)) != as_dict(old.get(field)):
            errs.append(forbidden(field, "field is immutable when `immutable` is set"))
    return errs


def validate_secret_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    errs = validate_immutable(new.get("type", ""), old.get("type", ""), "type")
    return errs + validate_immutable_data(new, old, ("data",)) + validate_secret(new)


# ----------------------------------------------------------------------------- Event


def validate_event(event: dict[str, Any]) -> list[FieldError]:
    """legacyValidateEvent as served for core/v1 (where reportingController is `source`)."""
    meta, involved = as_dict(event.get("metadata")), as_dict(event.get("involvedObject"))
    namespace, involved_ns = as_str(meta.get("namespace")), as_str(involved.get("namespace"))
    errs: list[FieldError] = []
    mismatch = invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
    if not event.get("eventTime"):
        if (not involved_ns and namespace not in ("", "default")) or \
                (involved_ns and namespace != involved_ns):
            errs.append(mismatch)
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            errs.append(mismatch)
        controller = as_str(event.get("reportingComponent"))
        if not controller:
            errs.append(required("source"))
        errs += validate_qualified_name(controller, "source")
        for field, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
            value = as_str(event.get(field))
            if not value:
                errs.append(required(field))
            elif len(value) > limit:
                errs.append(invalid(field, "", f"can have at most {limit} characters"))
        if len(as_str(event.get("message"))) > 1024:
            errs.append(invalid("message", "", "can have at most 1024 characters"))
    errs += details_to_errors("namespace", namespace, is_dns1123_subdomain(namespace))
    return errs


# ----------------------------------------------------------------------------- Lease


def validate_lease(lease: dict[str, Any]) -> list[FieldError]:
    spec = as_dict(lease.get("spec"))
    errs: list[FieldError] = []
    duration, transitions = as_int(spec.get("leaseDurationSeconds")), as_int(
        spec.get("leaseTransitions"))
    if duration is not None and duration <= 0:
        errs.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    if transitions is not None and transitions < 0:
        errs.append(invalid("spec.leaseTransitions", transitions,
                            "must be greater than or equal to 0"))
    return errs


# ------------------------------------------------------------- Endpoints, EndpointSlice


def default_endpoints(ep: dict[str, Any]) -> None:
    for subset in map(as_dict, as_list(ep.get("subsets"))):
        for port in map(as_dict, as_list(subset.get("ports"))):
            port["protocol"] = port.get("protocol") or "TCP"


def validate_endpoints(ep: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, subset in enumerate(map(as_dict, as_list(ep.get("subsets")))):
        path = f"subsets[{i}]"
        if not subset.get("addresses") and not subset.get("notReadyAddresses"):
            errs.append(required(path, "must specify `addresses` or `notReadyAddresses`"))
        for field in ("addresses", "notReadyAddresses"):
            for j, address in enumerate(map(as_dict, as_list(subset.get(field)))):
                errs += _validate_endpoint_address(address, f"{path}.{field}[{j}]")
        ports = as_list(subset.get("ports"))
        for j, port in enumerate(map(as_dict, ports)):
            errs += _validate_endpoint_port(port, len(ports) > 1, f"{path}.ports[{j}]")
    return errs


def _validate_endpoint_address(address: dict[str, Any], path: str) -> list[FieldError]:
    ip = as_str(address.get("ip"))
    errs = ip_errors(f"{path}.ip", ip)
    if address.get("hostname"):
        errs += validate_dns1123_label(as_str(address["hostname"]), f"{path}.hostname")
    if address.get("nodeName") is not None:
        node = as_str(address["nodeName"])
        errs += details_to_errors(f"{path}.nodeName", node, name_is_dns_subdomain(node))
    return errs + non_special_ip_errors(ip, f"{path}.ip")


def _validate_endpoint_port(port: dict[str, Any], require_name: bool,
                            path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    name = as_str(port.get("name"))
    if require_name and not name:
        errs.append(required(f"{path}.name"))
    elif name:
        errs += validate_dns1123_label(name, f"{path}.name")
    number = as_int(port.get("port")) or 0
    errs += [invalid(f"{path}.port", number, m) for m in is_valid_port_num(number)]
    protocol = port.get("protocol")
    if not protocol:
        errs.append(required(f"{path}.protocol"))
    elif protocol not in _PROTOCOLS:
        errs.append(not_supported(f"{path}.protocol", protocol, _PROTOCOLS))
    if port.get("appProtocol") is not None:
        errs += validate_qualified_name(as_str(port["appProtocol"]), f"{path}.appProtocol")
    return errs


def default_endpoint_slice(eps: dict[str, Any]) -> None:
    for port in map(as_dict, as_list(eps.get("ports"))):
        if port.get("name") is None:
            port["name"] = ""
        port["protocol"] = port.get("protocol") or "TCP"


_ADDRESS_TYPES = ["FQDN", "IPv4", "IPv6"]


def validate_endpoint_slice(eps: dict[str, Any]) -> list[FieldError]:
    address_type = eps.get("addressType")
    errs: list[FieldError] = []
    if not address_type:
        errs.append(required("addressType"))
    elif address_type not in _ADDRESS_TYPES:
        errs.append(not_supported("addressType", address_type, _ADDRESS_TYPES))
    endpoints = as_list(eps.get("endpoints"))
    if len(endpoints) > 1000:
        errs.append(too_many("endpoints", len(endpoints), 1000))
        endpoints = []
    for i, endpoint in enumerate(map(as_dict, endpoints)):
        errs += _validate_slice_endpoint(endpoint, address_type, f"endpoints[{i}]")
    names: set[str] = set()
    for i, port in enumerate(map(as_dict, as_list(eps.get("ports")))):
        path, name = f"ports[{i}]", as_str(port.get("name"))
        if name:
            errs += validate_dns1123_label(name, f"{path}.name")
        if name in names:
            errs.append(duplicate(f"{path}.name", name))
        names.add(name)
        protocol = port.get("protocol")
        if not protocol:
            errs.append(required(f"{path}.protocol"))
        elif protocol not in _PROTOCOLS:
            errs.append(not_supported(f"{path}.protocol", protocol, _PROTOCOLS))
        if port.get("appProtocol") is not None:
            errs += validate_qualified_name(as_str(port["appProtocol"]), f"{path}.appProtocol")
    return errs


def _validate_slice_endpoint(endpoint: dict[str, Any], address_type: Any,
                             path: str) -> list[FieldError]:
    addresses = as_list(endpoint.get("addresses"))
    errs: list[FieldError] = []
    if not addresses:
        errs.append(required(f"{path}.addresses", "must contain at least 1 address"))
    elif len(addresses) > 100:
        errs.append(too_many(f"{path}.addresses", len(addresses), 100))
    for j, address in enumerate(map(as_str, addresses)):
        p = f"{path}.addresses[{j}]"
        ip = parse_ip(address)
        if address_type in ("IPv4", "IPv6"):
            version = 4 if address_type == "IPv4" else 6
            if ip is None or ip.version != version:
                errs.append(invalid(p, address, f"must be a valid {address_type} address"))
            errs += non_special_ip_errors(address, p)
        elif address_type == "FQDN":
            errs += _fqdn_errors(address, p)
    if endpoint.get("nodeName") is not None:
        node = as_str(endpoint["nodeName"])
        errs += details_to_errors(f"{path}.nodeName", node, name_is_dns_subdomain(node))
    topology = as_dict(endpoint.get("deprecatedTopology"))
    if len(topology) > 16:
        errs.append(too_many(f"{path}.deprecatedTopology", len(topology), 16))
    errs += validate_labels(topology, f"{path}.deprecatedTopology")
    if endpoint.get("hostname") is not None:
        errs += validate_dns1123_label(as_str(endpoint["hostname"]), f"{path}.hostname")
    return errs


def _fqdn_errors(name: str, path: str) -> list[FieldError]:
    if not name:
        return [required(path)]
    name = name.removesuffix(".")
    msgs = is_dns1123_subdomain(name)
    if msgs:
        return [invalid(path, name, ",".join(msgs))]
    if len(name.split(".")) < 2:
        return [invalid(path, name, "should be a domain with at least two segments separated "
                                    "by dots")]
    for label in name.split("."):
        msgs = is_dns1123_label(label)
        if msgs:
            return [invalid(path, label, ",".join(msgs))]
    return []


def validate_endpoint_slice_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    return validate_immutable(new.get("addressType"), old.get("addressType"), "addressType") + \
        validate_endpoint_slice(new)

