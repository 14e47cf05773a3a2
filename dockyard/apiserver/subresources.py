"""Subresources that are views of their parent: `scale` (autoscaling/v1 Scale) and
`pods/binding` (the scheduler's write that assigns a pod to a node)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dockyard.api.resources import ResourceInfo
from dockyard.apiserver import errors
from dockyard.apiserver.rest import Registry, now_rfc3339
from dockyard.apiserver.selectors import from_label_selector_object

Obj = dict[str, Any]


def scale_of(obj: Obj) -> Obj:
    meta = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector") or {}
    reqs = from_label_selector_object(selector)
    parts = []
    for r in reqs:
        if r.op == "=":
            parts.append(f"{r.key}={next(iter(r.values))}")
        elif r.op in ("in", "notin"):
            parts.append(f"{r.key} {r.op} ({','.join(sorted(r.values))})")
        else:
            parts.append(r.key if r.op == "exists" else f"!{r.key}")
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(parts),
        },
    }


def set_scale(parent: Obj, scale: Any) -> Obj:
    if not isinstance(scale, dict):
        raise errors.bad_request("the body must be an autoscaling/v1 Scale")
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.APIError(
            422, "Invalid",
            f'Scale.autoscaling "{parent["metadata"]["name"]}" is invalid: spec.replicas: '
            f"Invalid value: {replicas}: must be greater than or equal to 0",
        )
    parent.setdefault("spec", {})["replicas"] = replicas
    return parent


async def bind_pod(
    registry: Registry, info: ResourceInfo, namespace: str | None, name: str, binding: Any
) -> Obj:
    """Assign a pod to a node once; a second binding or a deleting pod is a 409."""
    target = (binding or {}).get("target") or {} if isinstance(binding, dict) else {}
    node = target.get("name")
    if not node:
        raise errors.APIError(422, "Invalid", f'Binding "{name}" is invalid: target.name: '
                              "Required value")

    def assign(pod: Obj) -> Obj:
        spec = pod.setdefault("spec", {})
        if pod["metadata"].get("deletionTimestamp"):
            raise errors.APIError(409, "Conflict", f"pod {name} is being deleted, cannot be "
                                  "assigned to a host")
        if spec.get("nodeName"):
            raise errors.APIError(409, "Conflict", f'pod {name} is already assigned to node '
                                  f'"{spec["nodeName"]}"')
        spec["nodeName"] = node
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") !=
                      "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True",
                           "lastProbeTime": None,
                           "lastTransitionTime": now_rfc3339(datetime.now(UTC))})
        status["conditions"] = conditions
        return pod

    return await registry.guaranteed_update(info, namespace, name, assign, subresource="bind")
