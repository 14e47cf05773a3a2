"""Downward API values as kubelet computes them for volume files and subPathExpr.

A downwardAPI (or projected) volume file holds a field of the pod (fieldpath's
ExtractFieldPathAsString and FormatMap) or a container's resource limit or request divided by
a divisor; subPathExpr is the volume mount's path with the container's env expanded by
Kubernetes' $(VAR) rules.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from dockyard.api.fielderrors import go_quote
from dockyard.api.quantity import Quantity, QuantityError, parse_quantity

Obj = dict[str, Any]


class DownwardAPIError(Exception):
    """A field or resource the downward API cannot give; the message is kubelet's."""


def format_map(values: dict[str, str]) -> str:
    """fieldpath.FormatMap: `key="value"` lines, sorted by key."""
    return "\n".join(f"{k}={go_quote(str(values[k]))}" for k in sorted(values))


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


def field_value(pod: Obj, path: str) -> str:
    """A downward API fieldRef of a volume file (fieldpath.ExtractFieldPathAsString)."""
    meta = pod.get("metadata") or {}
    match = _SUBSCRIPT.match(path)
    if match:
        return str((meta.get(match[1]) or {}).get(match[2], ""))
    if path in ("metadata.labels", "metadata.annotations"):
        return format_map(meta.get(path.split(".")[1]) or {})
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(path.split(".")[1]) or "")
    raise DownwardAPIError(f"unsupported fieldPath: {path}")


def quantity_or_none(raw: Any) -> Quantity | None:
    """A quantity, or None when `raw` does not parse as one."""
    try:
        return parse_quantity(raw)
    except QuantityError:
        return None


def resource_value(pod: Obj, ref: Obj, allocatable: dict[str, Quantity]) -> str:
    """A resourceFieldRef (ExtractResourceValueByContainerNameAndNodeAllocatable): a limit not
    set is the node's allocatable; cpu rounds up to the divisor, others likewise in bytes."""
    spec = pod.get("spec") or {}
    name = ref.get("containerName") or ""
    container = next((c for c in [*(spec.get("containers") or []),
                                  *(spec.get("initContainers") or [])]
                      if c.get("name") == name), None)
    if container is None:
        raise DownwardAPIError(f"container {name} not found")
    resource = str(ref.get("resource") or "")
    part, _, res = resource.partition(".")
    if part not in ("limits", "requests") or res not in ("cpu", "memory", "ephemeral-storage"):
        raise DownwardAPIError(f"unsupported container resource : {resource}")
    raw = ((container.get("resources") or {}).get(part) or {}).get(res)
    value = quantity_or_none(raw) if raw is not None else None
    if value is None:
        value = allocatable[res] if part == "limits" else Quantity(Fraction(0))
    divisor = quantity_or_none(ref.get("divisor") or "0") or Quantity(Fraction(1))
    if divisor.is_zero():
        divisor = Quantity(Fraction(1))
    if res == "cpu":
        return str(-(-value.milli_value() // divisor.milli_value()))
    return str(-(-value.int_value() // max(1, divisor.int_value())))


def subpath_env(pod: Obj, container: Obj, pod_ip: str) -> dict[str, str]:
    """The container's env as subPathExpr sees it: literal values and fieldRefs (values from
    ConfigMaps, Secrets and resources are not known here)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    fields = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
              "spec.serviceAccountName": spec.get("serviceAccountName"),
              "status.podIP": pod_ip, "status.hostIP": (pod.get("status") or {})
              .get("hostIP")}
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        ref = (var.get("valueFrom") or {}).get("fieldRef")
        if ref:
            path = str(ref.get("fieldPath"))
            try:
                env[var["name"]] = str(fields.get(path) or field_value(pod, path))
            except DownwardAPIError:
                continue
        elif "valueFrom" not in var:
            env[var["name"]] = expand(str(var.get("value") or ""), env)
    return env


def expand(text: str, env: dict[str, str], missing: set[str] | None = None) -> str:
    """Kubernetes' $(VAR) expansion: `$$` is a literal `$`, unknown `$(X)` stays as written."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    if env.get(name):
                        out.append(env[name])
                    else:
                        if missing is not None:
                            missing.add(name)
                        out.append(text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)
