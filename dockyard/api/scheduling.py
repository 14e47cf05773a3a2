"""scheduling.k8s.io/v1 PriorityClass: defaults and validation (pkg/apis/scheduling).

A class maps a name to an integer priority that the API server copies into pods naming it
(see `dockyard.apiserver.admission`). Names with the `system-` prefix are reserved for the two
built-in classes, and user classes may not exceed HIGHEST_USER_DEFINABLE_PRIORITY.
"""

from __future__ import annotations

from typing import Any

from dockyard.api.fielderrors import FieldError, forbidden, invalid, not_supported, required
from dockyard.api.meta import as_dict, validate_immutable

HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
SYSTEM_PREFIX = "system-"
# name -> (value, globalDefault): the classes every cluster has (SystemPriorityClasses).
SYSTEM_PRIORITY_CLASSES: dict[str, tuple[int, bool]] = {
    "system-node-critical": (2_000_001_000, False),
    "system-cluster-critical": (2_000_000_000, False),
}
PREEMPTION_POLICIES = ["PreemptLowerPriority", "Never"]
_INT32 = (-(2**31), 2**31 - 1)


def default_priority_class(pc: dict[str, Any]) -> None:
    if pc.get("preemptionPolicy") is None:
        pc["preemptionPolicy"] = "PreemptLowerPriority"


def _known_system_class(name: str, value: Any, global_default: bool) -> str:
    """Why `name` is not an acceptable system class, or "" when it is one."""
    known = SYSTEM_PRIORITY_CLASSES.get(name)
    if known is None:
        return f"{name} is not a known system priority class"
    if value != known[0]:
        return f"value of {name} PriorityClass must be {known[0]}"
    if global_default != known[1]:
        return f"globalDefault of {name} PriorityClass must be {str(known[1]).lower()}"
    return ""


def validate_priority_class(pc: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    name = str(as_dict(pc.get("metadata")).get("name") or "")
    value = pc.get("value")
    global_default = pc.get("globalDefault") or False
    if value is None:
        errs.append(required("value"))
    elif not isinstance(value, int) or isinstance(value, bool) or not (
            _INT32[0] <= value <= _INT32[1]):
        errs.append(invalid("value", value, "must be a 32-bit integer"))
    elif name.startswith(SYSTEM_PREFIX):
        problem = _known_system_class(name, value, bool(global_default))
        if problem:
            errs.append(forbidden("metadata.name", "priority class names with 'system-' prefix "
                                  f"are reserved for system use only. error: {problem}"))
    elif value > HIGHEST_USER_DEFINABLE_PRIORITY:
        errs.append(forbidden("value", "maximum allowed value of a user defined priority is "
                              f"{HIGHEST_USER_DEFINABLE_PRIORITY}"))
    if not isinstance(global_default, bool):
        errs.append(invalid("globalDefault", global_default, "must be a boolean"))
    policy = pc.get("preemptionPolicy")
    if policy is not None:
        if policy == "":
            errs.append(required("preemptionPolicy"))
        elif policy not in PREEMPTION_POLICIES:
            errs.append(not_supported("preemptionPolicy", policy, PREEMPTION_POLICIES))
    return errs


def validate_priority_class_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    if new.get("value") != old.get("value"):
        errs.append(forbidden("value", "may not be changed in an update."))
    errs += validate_immutable(new.get("preemptionPolicy"), old.get("preemptionPolicy"),
                               "preemptionPolicy")
    return errs + validate_priority_class(new)
