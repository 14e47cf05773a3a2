"""Small pure helpers over pod, node and service objects that several controllers share.

They mirror Kubernetes' `podutil`, `endpointutil` and `nodeutil` helpers: readiness, port
lookup by name, which pods belong in endpoints, selector matching and condition access.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

TERMINAL_PHASES = ("Succeeded", "Failed")


def now_rfc3339(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 time (seconds or micro-seconds precision), or None when absent or bad."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def condition(obj: Obj | None, type_: str) -> Obj | None:
    """The status condition of `type_` on a pod or node (the last one wins, as in Go)."""
    found = None
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == type_:
            found = cond
    return found


def condition_status(obj: Obj | None, type_: str) -> str:
    """"True", "False", "Unknown", or "" when the condition is absent."""
    cond = condition(obj, type_)
    return str(cond.get("status") or "") if cond else ""


def is_pod_ready(pod: Obj) -> bool:
    return condition_status(pod, "Ready") == "True"


def is_terminating(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def pod_ips(pod: Obj) -> list[str]:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return ips


def should_be_in_endpoints(pod: Obj, *, include_terminating: bool) -> bool:
    """ShouldPodBeInEndpoints: pods with an IP that are not terminal (nor terminating)."""
    if not pod_ips(pod) or is_terminal(pod):
        return False
    return include_terminating or not is_terminating(pod)


def selector_matches(selector: dict[str, str] | None, labels: dict[str, str] | None) -> bool:
    """A service's equality selector; an empty or missing selector selects nothing here."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """FindPort: the pod's port for a service port's targetPort (number, or container port
    name with the same protocol); None when a named port is not found."""
    target = service_port.get("targetPort")
    if target in (None, "", 0):
        target = service_port.get("port")
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for ctr in (pod.get("spec") or {}).get("containers") or []:
        for port in ctr.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def should_set_hostname(pod: Obj, service: Obj) -> bool:
    """A pod's hostname is published when its subdomain names the service (DNS A records)."""
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == service["metadata"]["name"] \
        and pod["metadata"].get("namespace") == service["metadata"].get("namespace")


def is_headless(service: Obj) -> bool:
    spec = service.get("spec") or {}
    return spec.get("clusterIP") == "None" or (spec.get("clusterIPs") or [None])[0] == "None"


def object_ref(pod: Obj) -> Obj:
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": meta.get("namespace"), "name": meta["name"],
            "uid": meta.get("uid")}
