"""Name, label, selector and ObjectMeta validation shared by every kind.

`is_*` functions return apimachinery's detail strings (k8s.io/apimachinery/pkg/util/validation),
`validate_*` functions return FieldErrors; both keep Kubernetes' exact wording because kubectl
users and tests grep for it. Also holds the small JSON helpers the per-kind modules share.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from dockyard.api.fielderrors import (
    DUPLICATE,
    FieldError,
    GoValue,
    forbidden,
    go_quote,
    go_strings,
    invalid,
    not_supported,
    required,
    too_long,
)

# --- JSON helpers: objects arrive as plain dicts and may hold wrong types -------------------


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def ensure_dict(parent: dict[str, Any], name: str) -> dict[str, Any]:
    """`parent[name]` as a dict, created when absent or null (a Go struct is never nil).

    Any other type is left for validation to report; the caller then mutates a throwaway dict.
    """
    value = parent.get(name)
    if value is None:
        value = parent[name] = {}
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def key(path: str, k: str) -> str:
    return f"{path}[{k}]"


# --- apimachinery message builders -------------------------------------------------------


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    eg = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {eg}regex used for validation is '{fmt}')"


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def inclusive_range_error(lo: int, hi: int) -> str:
    return f"must be between {lo} and {hi}, inclusive"


EMPTY_ERROR = "must be non-empty"
NEGATIVE_ERROR = "must be greater than or equal to 0"
IMMUTABLE_ERROR = "field is immutable"

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                      "characters or '-', and must start and end with an alphanumeric character")
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case "
                          "alphanumeric characters, '-' or '.', and must start and end with an "
                          "alphanumeric character")
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or "
                      "'-', start with an alphabetic character, and end with an alphanumeric "
                      "character")
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start "
                       "and end with an alphanumeric character")
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric "
                    "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                    "character")
_ENV_VAR_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_ENV_VAR_MSG = ("a valid environment variable name must consist of alphabetic characters, "
                "digits, '_', '-', or '.', and must not start with a digit")
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
_CONFIG_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
_PERCENT_FMT = "[0-9]+%"
_PERCENT_MSG = "a valid percent string must be a numeric string followed by an ending '%'"
_HEADER_FMT = "[-A-Za-z0-9]+"
_HEADER_MSG = "a valid HTTP header must consist of alphanumeric characters or '-'"

_RE = {fmt: re.compile(fmt) for fmt in (
    _DNS1123_LABEL_FMT, _DNS1123_SUBDOMAIN_FMT, _DNS1035_LABEL_FMT, _QUALIFIED_NAME_FMT,
    _LABEL_VALUE_FMT, _ENV_VAR_FMT, _CONFIG_KEY_FMT, _PERCENT_FMT, _HEADER_FMT)}


def _matches(fmt: str, value: str) -> bool:
    return _RE[fmt].fullmatch(value) is not None


def is_dns1123_label(value: str) -> list[str]:
    errs = [max_len_error(63)] if len(value) > 63 else []
    if not _matches(_DNS1123_LABEL_FMT, value):
        if _matches(_DNS1123_SUBDOMAIN_FMT, value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = [max_len_error(253)] if len(value) > 253 else []
    if not _matches(_DNS1123_SUBDOMAIN_FMT, value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = [max_len_error(63)] if len(value) > 63 else []
    if not _matches(_DNS1035_LABEL_FMT, value):
        errs.append(regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) > 2:
        return ["a qualified name " + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT,
                                                  "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        if not parts[0]:
            errs.append("prefix part " + EMPTY_ERROR)
        else:
            errs += ["prefix part " + m for m in is_dns1123_subdomain(parts[0])]
    if not name:
        errs.append("name part " + EMPTY_ERROR)
    elif len(name) > 63:
        errs.append("name part " + max_len_error(63))
    if not _matches(_QUALIFIED_NAME_FMT, name):
        errs.append("name part " + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT,
                                               "MyName", "my.name", "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    errs = [max_len_error(63)] if len(value) > 63 else []
    if not _matches(_LABEL_VALUE_FMT, value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value",
                                "12345"))
    return errs


def _chdir_prefix(value: str) -> list[str]:
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    return ["must not start with '..'"] if value.startswith("..") else []


def is_env_var_name(value: str) -> list[str]:
    errs = [] if _matches(_ENV_VAR_FMT, value) else [
        regex_error(_ENV_VAR_MSG, _ENV_VAR_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1")]
    return errs + _chdir_prefix(value)


def is_config_map_key(value: str) -> list[str]:
    errs = [max_len_error(253)] if len(value) > 253 else []
    if not _matches(_CONFIG_KEY_FMT, value):
        errs.append(regex_error(_CONFIG_KEY_MSG, _CONFIG_KEY_FMT, "key.name", "KEY_NAME",
                                "key-name"))
    return errs + _chdir_prefix(value)


def is_valid_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else [inclusive_range_error(1, 65535)]


def is_valid_port_name(port: str) -> list[str]:
    errs = [max_len_error(15)] if len(port) > 15 else []
    if not re.fullmatch("[-a-z0-9]+", port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_valid_percent(value: str) -> list[str]:
    if _matches(_PERCENT_FMT, value):
        return []
    return [regex_error(_PERCENT_MSG, _PERCENT_FMT, "1%", "93%")]


def is_http_header_name(value: str) -> list[str]:
    if _matches(_HEADER_FMT, value):
        return []
    return [regex_error(_HEADER_MSG, _HEADER_FMT, "X-Header-Name")]


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go's netutils.ParseIPSloppy: like net.ParseIP but IPv4 octets may have leading zeros."""
    if not isinstance(value, str) or "%" in value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        pass
    parts = value.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts):
        try:
            return ipaddress.ip_address(".".join(str(int(p)) for p in parts))
        except ValueError:
            return None
    return None


def ip_errors(path: str, value: str) -> list[FieldError]:
    if parse_ip(value) is None:
        return [invalid(path, value,
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
    return []


def non_special_ip_errors(value: str, path: str) -> list[FieldError]:
    """ValidateNonSpecialIP: no unspecified, loopback or link-local endpoint/external IPs."""
    ip = parse_ip(value)
    if ip is None:
        return [invalid(path, value, "must be a valid IP address")]
    errs: list[FieldError] = []
    if ip.is_unspecified:
        errs.append(invalid(path, value, f"may not be unspecified ({value})"))
    if ip.is_loopback:
        errs.append(invalid(path, value,
                            "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
    if ip.is_link_local:
        errs.append(invalid(path, value,
                            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
    if ip in ipaddress.ip_network("224.0.0.0/24") or (ip.version == 6 and ip in
                                                     ipaddress.ip_network("ff02::/16")):
        errs.append(invalid(path, value, "may not be in the link-local multicast range "
                                         "(224.0.0.0/24, ff02::/10)"))
    return errs


# --- name functions: (name, prefix) -> details; prefix means a suffix will be appended ---------

NameFn = Callable[[str, bool], list[str]]


def _mask_trailing_dash(name: str) -> str:
    # Go's maskTrailingDash really drops two characters; kept for identical results.
    return name[:-2] + "a" if len(name) > 1 and name.endswith("-") else name


def name_is_dns_subdomain(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


# --- FieldError producers -----------------------------------------------------------------


def details_to_errors(path: str, value: Any, details: list[str]) -> list[FieldError]:
    return [invalid(path, value, d) for d in details]


def validate_nonnegative(value: Any, path: str) -> list[FieldError]:
    n = as_int(value)
    return [invalid(path, n, NEGATIVE_ERROR)] if n is not None and n < 0 else []


def validate_dns1123_label(value: str, path: str) -> list[FieldError]:
    return details_to_errors(path, value, is_dns1123_label(value))


def validate_dns1123_subdomain(value: str, path: str) -> list[FieldError]:
    return details_to_errors(path, value, is_dns1123_subdomain(value))


def validate_qualified_name(value: str, path: str) -> list[FieldError]:
    return details_to_errors(path, value, is_qualified_name(value))


def validate_immutable(new: Any, old: Any, path: str, shown: Any = None) -> list[FieldError]:
    """`<path>: Invalid value: <new>: field is immutable` when the values differ semantically."""
    if normalize(new) == normalize(old):
        return []
    return [invalid(path, new if shown is None else shown, IMMUTABLE_ERROR)]


def normalize(value: Any) -> Any:
    """Semantic-equality form: Go zero values (None, "", 0, False, {}, []) equal absence."""
    if isinstance(value, dict):
        out = {k: normalize(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", 0, False, {}, [])}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def validate_labels(labels: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for k, v in as_dict(labels).items():
        errs += details_to_errors(path, k, is_qualified_name(k))
        errs += details_to_errors(path, v, is_label_value(v if isinstance(v, str) else str(v)))
    return errs


TOTAL_ANNOTATION_SIZE = 256 * 1024


def validate_annotations(annotations: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    total = 0
    for k, v in as_dict(annotations).items():
        # Annotation keys are qualified names, except that case does not matter.
        errs += details_to_errors(path, k, is_qualified_name(k.lower()))
        total += len(k.encode()) + len(str(v).encode())
    if total > TOTAL_ANNOTATION_SIZE:
        errs.append(too_long(path, TOTAL_ANNOTATION_SIZE))
    return errs


_STANDARD_FINALIZERS = {"kubernetes", "orphan", "foregroundDeletion"}


def is_finalizer_name_standard(name: str) -> bool:
    """Unprefixed finalizers must be one of Kubernetes' own."""
    return "/" in name or name in _STANDARD_FINALIZERS


def validate_finalizers(finalizers: Any, path: str) -> list[FieldError]:
    items = [f for f in as_list(finalizers) if isinstance(f, str)]
    errs: list[FieldError] = []
    for f in items:  # apimachinery reports these on the list path, without an index
        errs += details_to_errors(path, f, is_qualified_name(f))
    if "orphan" in items and "foregroundDeletion" in items:
        errs.append(invalid(path, go_strings(items),
                            "finalizer orphan and foregroundDeletion cannot be both set"))
    errs += [invalid(index(path, i), f, "name is neither a standard finalizer name nor is it "
                     "fully qualified")
             for i, f in enumerate(items) if not is_finalizer_name_standard(f)]
    return errs


def validate_owner_references(refs: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    first_controller = ""
    for ref in map(as_dict, as_list(refs)):
        api_version, kind = as_str(ref.get("apiVersion")), as_str(ref.get("kind"))
        parts = api_version.split("/")
        version = parts[-1] if len(parts) <= 2 else ""
        if not version:
            errs.append(invalid(child(path, "apiVersion"), api_version,
                                "version must not be empty"))
        for field in ("kind", "name", "uid"):
            if not as_str(ref.get(field)):
                errs.append(invalid(child(path, field), as_str(ref.get(field)),
                                    "must not be empty"))
        if kind == "Event" and api_version == "v1":
            errs.append(invalid(path, ref, "/v1, Kind=Event is disallowed from being an owner"))
        if ref.get("controller") is True:
            current = f"{kind}/{as_str(ref.get('name'))}"
            if first_controller:
                errs.append(invalid(path, refs, "Only one reference can have Controller set to "
                                    f'true. Found "true" in references for {first_controller} '
                                    f"and {current}"))
            else:
                first_controller = current
    return errs


def validate_object_meta(meta: Any, namespaced: bool, name_fn: NameFn | None,
                         path: str = "metadata") -> list[FieldError]:
    """ValidateObjectMeta on create: name, namespace, labels, annotations, owners, finalizers."""
    meta = as_dict(meta)
    name, generate_name = as_str(meta.get("name")), as_str(meta.get("generateName"))
    errs: list[FieldError] = []
    if generate_name and name_fn:
        errs += details_to_errors(child(path, "generateName"), generate_name,
                                  name_fn(generate_name, True))
    if not name:
        # The API server generates the name from generateName, so only a bare object fails.
        if not generate_name:
            errs.append(required(child(path, "name"), "name or generateName is required"))
    elif name_fn:
        errs += details_to_errors(child(path, "name"), name, name_fn(name, False))
    return errs + _validate_meta_common(meta, namespaced, path)


def _validate_meta_common(meta: dict[str, Any], namespaced: bool, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    namespace = as_str(meta.get("namespace"))
    if namespaced:
        if not namespace:
            errs.append(required(child(path, "namespace")))
        else:
            errs += details_to_errors(child(path, "namespace"), namespace,
                                      name_is_dns_label(namespace))
    elif namespace:
        errs.append(forbidden(child(path, "namespace"), "not allowed on this type"))
    errs += validate_nonnegative(meta.get("generation"), child(path, "generation"))
    errs += validate_labels(meta.get("labels"), child(path, "labels"))
    errs += validate_annotations(meta.get("annotations"), child(path, "annotations"))
    errs += validate_owner_references(meta.get("ownerReferences"), child(path, "ownerReferences"))
    errs += validate_finalizers(meta.get("finalizers"), child(path, "finalizers"))
    return errs


def validate_object_meta_update(new: Any, old: Any, path: str = "metadata") -> list[FieldError]:
    """ValidateObjectMetaUpdate; fields the server copies from the stored object are skipped."""
    new, old = as_dict(new), as_dict(old)
    errs: list[FieldError] = []
    if old.get("deletionTimestamp"):
        extra = sorted(set(as_list(new.get("finalizers"))) - set(as_list(old.get("finalizers"))))
        if extra:
            errs.append(forbidden(child(path, "finalizers"), "no new finalizers can be added if "
                                  f"the object is being deleted, found new finalizers "
                                  f"{go_strings(extra).text}"))
    for field in ("name", "namespace"):
        errs += validate_immutable(as_str(new.get(field)), as_str(old.get(field)),
                                   child(path, field))
    if new.get("uid"):  # an omitted uid is filled in from the stored object
        errs += validate_immutable(new.get("uid"), old.get("uid"), child(path, "uid"))
    errs += validate_labels(new.get("labels"), child(path, "labels"))
    errs += validate_annotations(new.get("annotations"), child(path, "annotations"))
    errs += validate_owner_references(new.get("ownerReferences"), child(path, "ownerReferences"))
    errs += validate_finalizers(new.get("finalizers"), child(path, "finalizers"))
    return errs


# --- label selectors ------------------------------------------------------------------------

_SELECTOR_OPS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_label_selector(selector: Any, path: str) -> list[FieldError]:
    """metav1 ValidateLabelSelector (strict: values in expressions must be label values)."""
    if selector is None:
        return []
    sel = as_dict(selector)
    errs = validate_labels(sel.get("matchLabels"), child(path, "matchLabels"))
    for i, expr in enumerate(map(as_dict, as_list(sel.get("matchExpressions")))):
        p = index(child(path, "matchExpressions"), i)
        op, values = expr.get("operator"), as_list(expr.get("values"))
        if op in ("In", "NotIn"):
            if not values:
                errs.append(required(child(p, "values"),
                                     "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.append(forbidden(child(p, "values"), "may not be specified when `operator` "
                                      "is 'Exists' or 'DoesNotExist'"))
        else:
            errs.append(invalid(child(p, "operator"), op, "not a valid selector operator"))
        errs += validate_qualified_name(as_str(expr.get("key")), child(p, "key"))
        for j, v in enumerate(values):
            errs += details_to_errors(index(child(p, "values"), j), v, is_label_value(str(v)))
    return errs


def selector_convertible(selector: Any) -> bool:
    """Whether metav1.LabelSelectorAsSelector would succeed (it re-validates every term)."""
    sel = as_dict(selector)
    for k, v in as_dict(sel.get("matchLabels")).items():
        if is_qualified_name(k) or is_label_value(str(v)):
            return False
    for expr in map(as_dict, as_list(sel.get("matchExpressions"))):
        op, values = expr.get("operator"), as_list(expr.get("values"))
        if op not in _SELECTOR_OPS or is_qualified_name(as_str(expr.get("key"))):
            return False
        if (op in ("In", "NotIn")) != bool(values):
            return False
        if any(is_label_value(str(v)) for v in values):
            return False
    return True


def selector_is_empty(selector: Any) -> bool:
    """An empty (non-nil) selector selects everything."""
    sel = as_dict(selector)
    return selector is not None and not sel.get("matchLabels") and not sel.get("matchExpressions")


def selector_matches(selector: Any, labels: Any) -> bool:
    """LabelSelectorAsSelector(selector).Matches(labels); a nil selector matches nothing."""
    if selector is None:
        return False
    sel, labels = as_dict(selector), as_dict(labels)
    for k, v in as_dict(sel.get("matchLabels")).items():
        if labels.get(k) != v:
            return False
    for expr in map(as_dict, as_list(sel.get("matchExpressions"))):
        k, op, values = expr.get("key"), expr.get("operator"), as_list(expr.get("values"))
        present = k in labels
        if op == "In" and not (present and labels[k] in values):
            return False
        if op == "NotIn" and present and labels[k] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


# --- taints and tolerations (pods tolerate what nodes are tainted with) ------------------------

TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]


def validate_tolerations(tolerations: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, tol in enumerate(map(as_dict, as_list(tolerations))):
        p = index(path, i)
        k, op = as_str(tol.get("key")), tol.get("operator") or ""
        value, effect = as_str(tol.get("value")), tol.get("effect") or ""
        if k:
            errs += validate_qualified_name(k, child(p, "key"))
        if not k and op != "Exists":
            errs.append(invalid(child(p, "operator"), op, "operator must be Exists when `key` is "
                                'empty, which means "match all values and all keys"'))
        if tol.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.append(invalid(child(p, "effect"), effect,
                                "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if op in ("Equal", ""):
            msgs = is_label_value(value)
            if msgs:
                errs.append(invalid(child(p, "operator"), value, ";".join(msgs)))
        elif op == "Exists":
            if value:
                errs.append(invalid(child(p, "operator"), _go_toleration(tol),
                                    "value must be empty when `operator` is 'Exists'"))
        else:
            errs.append(not_supported(child(p, "operator"), op, ["Equal", "Exists"]))
        if effect and effect not in TAINT_EFFECTS:
            errs.append(not_supported(child(p, "effect"), effect, TAINT_EFFECTS))
    return errs


def _go_toleration(tol: dict[str, Any]) -> GoValue:
    seconds = tol.get("tolerationSeconds")
    seconds_text = "(*int64)(nil)" if seconds is None else f"(*int64)({seconds})"
    return GoValue("core.Toleration{" + ", ".join(
        f"{field}:{go_quote(as_str(tol.get(field.lower())))}"
        for field in ("Key", "Operator", "Value", "Effect")) +
        f", TolerationSeconds:{seconds_text}}}")


def validate_taints(taints: Any, path: str) -> list[FieldError]:
    """validateNodeTaints: key/value/effect, unique by (key, effect)."""
    errs: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(map(as_dict, as_list(taints))):
        p = index(path, i)
        k, effect = as_str(taint.get("key")), as_str(taint.get("effect"))
        errs += validate_qualified_name(k, child(p, "key"))
        msgs = is_label_value(as_str(taint.get("value")))
        if msgs:
            errs.append(invalid(child(p, "value"), as_str(taint.get("value")), ";".join(msgs)))
        if not effect:
            errs.append(required(child(p, "effect")))
        elif effect not in TAINT_EFFECTS:
            errs.append(not_supported(child(p, "effect"), effect, TAINT_EFFECTS))
        if (k, effect) in seen:
            shown = GoValue(f"core.Taint{{Key:{go_quote(k)}, "
                            f"Value:{go_quote(as_str(taint.get('value')))}, "
                            f"Effect:{go_quote(effect)}, TimeAdded:(*v1.Time)(nil)}}")
            errs.append(FieldError(p, DUPLICATE, shown,
                                   "taints must be unique by key and effect pair"))
            continue
        seen.add((k, effect))
    return errs
