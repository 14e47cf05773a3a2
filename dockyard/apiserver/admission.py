"""Admission that needs other objects: the Priority plugin (plugin/pkg/admission/priority).

`Registry.create` calls `admit` before defaulting, so the kind modules stay pure functions of
one object. Pods get `spec.priority` (and `preemptionPolicy`) from the PriorityClass they name,
or from the global default class; PriorityClasses are kept to one global default.
"""

from __future__ import annotations

from typing import Any

from dockyard.api.resources import ResourceInfo, by_kind
from dockyard.apiserver import errors

Obj = dict[str, Any]

PRIORITY_CLASSES = by_kind("scheduling.k8s.io", "PriorityClass")


async def admit(registry: Any, info: ResourceInfo, obj: Obj) -> None:
    """Mutate or refuse `obj` (about to be created) as the admission chain would."""
    if info.group == "" and info.kind == "Pod":
        await _admit_pod(registry, obj)
    elif info is PRIORITY_CLASSES:
        await _admit_priority_class(registry, obj)


def _forbidden(resource: str, name: str, why: str) -> errors.APIError:
    """admission.NewForbidden: `pods "web" is forbidden: <why>`."""
    subject = f'{resource} "{name}"' if name else resource
    return errors.APIError(403, "Forbidden", f"{subject} is forbidden: {why}",
                           {"name": name, "kind": resource} if name else {"kind": resource})


async def _default_class(registry: Any) -> Obj | None:
    """The global default class; with several (a race), the lowest value, as Kubernetes."""
    assert PRIORITY_CLASSES is not None
    page = await registry.list(PRIORITY_CLASSES, None)
    defaults = [pc for pc in page.items if pc.get("globalDefault")]
    return min(defaults, key=lambda pc: pc.get("value") or 0) if defaults else None


async def _admit_pod(registry: Any, pod: Obj) -> None:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return  # validation reports it
    name = str((pod.get("metadata") or {}).get("name") or "")
    class_name = spec.get("priorityClassName") or ""
    if not isinstance(class_name, str):
        return
    if class_name:
        assert PRIORITY_CLASSES is not None
        try:
            pc: Obj | None = await registry.get(PRIORITY_CLASSES, None, class_name)
        except errors.APIError as exc:
            if exc.code != 404:
                raise
            raise _forbidden("pods", name,
                             f"no PriorityClass with name {class_name} was found") from None
    else:
        pc = await _default_class(registry)
        if pc is not None:
            spec["priorityClassName"] = pc["metadata"]["name"]
    priority = int(pc.get("value") or 0) if pc else 0
    policy = (pc.get("preemptionPolicy") if pc else None) or "PreemptLowerPriority"
    given = spec.get("priority")
    if given is not None and given != priority:
        raise _forbidden("pods", name, f"the integer value of priority ({given}) must not be "
                         "provided in pod spec; priority admission controller computed "
                         f"{priority} from the given PriorityClass name")
    spec["priority"] = priority
    given_policy = spec.get("preemptionPolicy")
    if given_policy and given_policy != policy:
        raise _forbidden("pods", name, f"the string value of PreemptionPolicy ({given_policy}) "
                         "must not be provided in pod spec; priority admission controller "
                         f"computed {policy} from the given PriorityClass name")
    spec["preemptionPolicy"] = policy


async def _admit_priority_class(registry: Any, pc: Obj) -> None:
    if not pc.get("globalDefault"):
        return
    current = await _default_class(registry)
    if current is not None:
        name = str((pc.get("metadata") or {}).get("name") or "")
        raise _forbidden("priorityclasses.scheduling.k8s.io", name,
                         f"PriorityClass {current['metadata']['name']} is already marked as "
                         "default. Only one default can exist")
