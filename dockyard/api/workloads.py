"""Deployment, ReplicaSet (apps/v1) and Job (batch/v1): defaults and validation.

Defaults follow apps/v1 and batch/v1 defaults.go plus the Job create strategy (selector
generation from metadata.uid); validation follows pkg/apis/{apps,batch}/validation, the pod
template being checked by dockyard.api.pod and selector immutability by the registry rules.
"""

from __future__ import annotations

from typing import Any

from dockyard.api.fielderrors import (
    FieldError,
    GoValue,
    forbidden,
    go_int_or_string,
    go_label_selector,
    go_map,
    go_quote,
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
    is_dns1123_label,
    is_valid_percent,
    normalize,
    selector_convertible,
    selector_is_empty,
    selector_matches,
    validate_immutable,
    validate_label_selector,
    validate_nonnegative,
)
from dockyard.api.pod import default_pod_spec, validate_pod_template

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
_MAX_INT32 = 2**31 - 1


def _default_template(spec: dict[str, Any]) -> None:
    default_pod_spec(ensure_dict(ensure_dict(spec, "template"), "spec"))


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    return ensure_dict(obj, "spec")


# ---------------------------------------------------------------------------- defaults


def default_deployment(obj: dict[str, Any]) -> None:
    spec = _spec(obj)
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    strategy = ensure_dict(spec, "strategy")
    strategy["type"] = strategy.get("type") or "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        rolling = ensure_dict(strategy, "rollingUpdate")
        for field in ("maxUnavailable", "maxSurge"):
            if rolling.get(field) is None:
                rolling[field] = "25%"
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    if spec.get("progressDeadlineSeconds") is None:
        spec["progressDeadlineSeconds"] = 600
    _default_template(spec)


def default_replicaset(obj: dict[str, Any]) -> None:
    spec = _spec(obj)
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    _default_template(spec)


def default_job(obj: dict[str, Any]) -> None:
    spec = _spec(obj)
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = _MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else 6
    if spec.get("completionMode") is None:
        spec["completionMode"] = "NonIndexed"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    policy = spec.get("podFailurePolicy")
    for rule in map(as_dict, as_list(as_dict(policy).get("rules"))):
        for pattern in map(as_dict, as_list(rule.get("onPodConditions"))):
            pattern["status"] = pattern.get("status") or "True"
    if spec.get("podReplacementPolicy") is None:
        spec["podReplacementPolicy"] = "Failed" if policy is not None else "TerminatingOrFailed"
    _default_template(spec)
    if spec.get("manualSelector") is not True:
        generate_job_selector(obj)
    # SetDefaults_Job shares the template's label map with the Job, so generated labels show too.
    meta = ensure_dict(obj, "metadata")
    template_labels = as_dict(as_dict(spec.get("template")).get("metadata")).get("labels")
    if not meta.get("labels") and isinstance(template_labels, dict):
        meta["labels"] = dict(template_labels)


def generate_job_selector(job: dict[str, Any]) -> None:
    """The Job create strategy's generateSelector: label pods with the Job's uid and name.

    User-set labels are never overwritten; a conflicting value is rejected by validation.
    """
    meta, spec = as_dict(job.get("metadata")), _spec(job)
    uid, name = as_str(meta.get("uid")), as_str(meta.get("name"))
    labels = ensure_dict(ensure_dict(ensure_dict(spec, "template"), "metadata"), "labels")
    for label, value in ((LEGACY_JOB_NAME, name), (JOB_NAME, name),
                         (LEGACY_CONTROLLER_UID, uid), (CONTROLLER_UID, uid)):
        labels.setdefault(label, value)
    ensure_dict(ensure_dict(spec, "selector"), "matchLabels").setdefault(CONTROLLER_UID, uid)


# ------------------------------------------------------------------ Deployment, ReplicaSet


def validate_deployment(obj: dict[str, Any]) -> list[FieldError]:
    spec = as_dict(obj.get("spec"))
    errs = validate_nonnegative(spec.get("replicas"), "spec.replicas")
    errs += _validate_selector_and_template(spec)
    errs += _validate_strategy(as_dict(spec.get("strategy")), "spec.strategy")
    errs += validate_nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    errs += validate_nonnegative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    deadline = as_int(spec.get("progressDeadlineSeconds"))
    if deadline is not None:
        errs += validate_nonnegative(deadline, "spec.progressDeadlineSeconds")
        if deadline <= (as_int(spec.get("minReadySeconds")) or 0):
            errs.append(invalid("spec.progressDeadlineSeconds", deadline,
                                "must be greater than minReadySeconds"))
    return errs


def validate_replicaset(obj: dict[str, Any]) -> list[FieldError]:
    spec = as_dict(obj.get("spec"))
    errs = validate_nonnegative(spec.get("replicas"), "spec.replicas")
    errs += validate_nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    return errs + _validate_selector_and_template(spec)


def validate_deployment_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    return validate_deployment(new) + validate_selector_update(new, old)


def validate_replicaset_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    return validate_replicaset(new) + validate_selector_update(new, old)


def validate_selector_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    """apps/v1 strategies make spec.selector immutable (older API versions allowed it)."""
    selector = as_dict(new.get("spec")).get("selector")
    return validate_immutable(selector, as_dict(old.get("spec")).get("selector"),
                              "spec.selector", shown=go_label_selector(selector))


def _validate_selector_and_template(spec: dict[str, Any]) -> list[FieldError]:
    """ValidateReplicaSetSpec's selector rules + ValidatePodTemplateSpecForReplicaSet."""
    selector = spec.get("selector")
    errs: list[FieldError] = []
    if selector is None:
        errs.append(required("spec.selector"))
    else:
        errs += validate_label_selector(selector, "spec.selector")
        if selector_is_empty(selector):
            # Kubernetes says "deployment" for ReplicaSets too.
            errs.append(invalid("spec.selector", go_label_selector(as_dict(selector)),
                                "empty selector is invalid for deployment"))
    if selector is not None and not selector_convertible(selector):
        return errs + [invalid("spec.selector", go_label_selector(as_dict(selector)),
                               "invalid label selector")]
    template = as_dict(spec.get("template"))
    errs += _template_match(selector, template)
    errs += validate_pod_template(template, "spec.template")
    pod_spec = as_dict(template.get("spec"))
    if pod_spec.get("restartPolicy") != "Always":
        errs.append(not_supported("spec.template.spec.restartPolicy",
                                  pod_spec.get("restartPolicy", ""), ["Always"]))
    if pod_spec.get("activeDeadlineSeconds") is not None:
        errs.append(forbidden("spec.template.spec.activeDeadlineSeconds",
                              "activeDeadlineSeconds in ReplicaSet is not Supported"))
    return errs


def _template_match(selector: Any, template: dict[str, Any]) -> list[FieldError]:
    labels = as_dict(template.get("metadata")).get("labels")
    # A nil selector matches nothing; an empty one matches everything and is not checked.
    if selector_is_empty(selector) or selector_matches(selector, labels):
        return []
    return [invalid("spec.template.metadata.labels",
                    go_map(labels if isinstance(labels, dict) else None),
                    "`selector` does not match template `labels`")]


def _validate_strategy(strategy: dict[str, Any], path: str) -> list[FieldError]:
    kind, rolling = strategy.get("type"), strategy.get("rollingUpdate")
    if kind == "Recreate":
        if rolling is not None:
            return [forbidden(f"{path}.rollingUpdate",
                              "may not be specified when strategy `type` is 'Recreate'")]
        return []
    if kind == "RollingUpdate":
        if rolling is None:
            return [required(f"{path}.rollingUpdate",
                             "this should be defaulted and never be nil")]
        return _validate_rolling_update(as_dict(rolling), f"{path}.rollingUpdate")
    rolling_text = "(*apps.RollingUpdateDeployment)(nil)" if rolling is None else \
        "&apps.RollingUpdateDeployment{...}"
    shown = GoValue(f"apps.DeploymentStrategy{{Type:{go_quote(as_str(kind))}, "
                    f"RollingUpdate:{rolling_text}}}")
    return [not_supported(path, shown, ["Recreate", "RollingUpdate"])]


def _validate_rolling_update(rolling: dict[str, Any], path: str) -> list[FieldError]:
    unavailable, surge = rolling.get("maxUnavailable"), rolling.get("maxSurge")
    errs = _int_or_percent_errors(unavailable, f"{path}.maxUnavailable")
    errs += _int_or_percent_errors(surge, f"{path}.maxSurge")
    if _int_or_percent_value(unavailable) == 0 and _int_or_percent_value(surge) == 0:
        errs.append(invalid(f"{path}.maxUnavailable", go_int_or_string(unavailable),
                            "may not be 0 when `maxSurge` is 0"))
    if isinstance(unavailable, str) and not is_valid_percent(unavailable) \
            and int(unavailable[:-1]) > 100:
        errs.append(invalid(f"{path}.maxUnavailable", go_int_or_string(unavailable),
                            "must not be greater than 100%"))
    return errs


def _int_or_percent_errors(value: Any, path: str) -> list[FieldError]:
    if isinstance(value, str):
        return [invalid(path, go_int_or_string(value), m) for m in is_valid_percent(value)]
    if as_int(value) is not None:
        return validate_nonnegative(value, path)
    return [invalid(path, go_int_or_string(value), "must be an integer or percentage (e.g '5%%')")]


def _int_or_percent_value(value: Any) -> int:
    """getIntOrPercentValue: the percent number, the int, or Atoi of other strings (else 0)."""
    if isinstance(value, str):
        text = value[:-1] if not is_valid_percent(value) else value
        return int(text) if text.lstrip("-").isdigit() else 0
    return as_int(value) or 0


# --------------------------------------------------------------------------------- Job


def validate_job(job: dict[str, Any], check_prefixed_labels: bool = True) -> list[FieldError]:
    meta, spec = as_dict(job.get("metadata")), as_dict(job.get("spec"))
    errs = _validate_generated_selector(meta, spec, check_prefixed_labels)
    errs += _validate_job_spec(spec)
    selector = spec.get("selector")
    if selector is None:
        errs.append(required("spec.selector"))
    else:
        errs += validate_label_selector(selector, "spec.selector")
    if selector is None or selector_convertible(selector):
        errs += _template_match(selector, as_dict(spec.get("template")))
    completions = as_int(spec.get("completions"))
    if spec.get("completionMode") == "Indexed" and completions and completions > 0:
        hostname = f"{as_str(meta.get('name'))}-{completions - 1}"
        if is_dns1123_label(hostname):
            errs.append(invalid("metadata.name", as_str(meta.get("name")),
                                f"will not able to create pod with invalid DNS label: {hostname}"))
    return errs


def _validate_generated_selector(meta: dict[str, Any], spec: dict[str, Any],
                                 check_prefixed: bool) -> list[FieldError]:
    selector = spec.get("selector")
    if spec.get("manualSelector") is True or selector is None:
        return []
    uid, name = as_str(meta.get("uid")), as_str(meta.get("name"))
    errs = [] if uid else [required("metadata.uid")]
    expected = {LEGACY_CONTROLLER_UID: uid, LEGACY_JOB_NAME: name}
    if check_prefixed:
        expected |= {CONTROLLER_UID: uid, JOB_NAME: name}
    labels = as_dict(as_dict(as_dict(spec.get("template")).get("metadata")).get("labels"))
    for label in (LEGACY_CONTROLLER_UID, LEGACY_JOB_NAME, CONTROLLER_UID, JOB_NAME):
        if label not in expected:
            continue
        path = f"spec.template.metadata.labels[{label}]"
        if label not in labels:
            errs.append(required(path, f"must be '{expected[label]}'"))
        elif labels[label] != expected[label]:
            errs.append(invalid(path, go_map(labels), f"must be '{expected[label]}'"))
    if selector_convertible(selector) and not selector_matches(selector, expected):
        errs.append(invalid("spec.selector", go_label_selector(as_dict(selector)),
                            "`selector` not auto-generated"))
    return errs


def _validate_job_spec(spec: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    for field in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit",
                  "ttlSecondsAfterFinished", "backoffLimitPerIndex", "maxFailedIndexes"):
        errs += validate_nonnegative(spec.get(field), f"spec.{field}")
    indexed = spec.get("completionMode") == "Indexed"
    if spec.get("maxFailedIndexes") is not None and spec.get("backoffLimitPerIndex") is None:
        errs.append(required("spec.backoffLimitPerIndex", "when maxFailedIndexes is specified"))
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        errs.append(not_supported("spec.completionMode", mode, ["NonIndexed", "Indexed"]))
    if indexed:
        if spec.get("completions") is None:
            errs.append(required("spec.completions", "when completion mode is Indexed"))
        parallelism = as_int(spec.get("parallelism"))
        if parallelism is not None and parallelism > 100000:
            errs.append(invalid("spec.parallelism", parallelism, "must be less than or equal to "
                                                                 "100000 when completion mode "
                                                                 "is Indexed"))
    else:
        for field in ("backoffLimitPerIndex", "maxFailedIndexes"):
            if spec.get(field) is not None:
                errs.append(invalid(f"spec.{field}", spec[field],
                                    "requires indexed completion mode"))
    replacement = spec.get("podReplacementPolicy")
    if replacement is not None:
        allowed = ["Failed"] if spec.get("podFailurePolicy") is not None else \
            ["Failed", "TerminatingOrFailed"]
        if replacement not in allowed:
            errs.append(not_supported("spec.podReplacementPolicy", replacement, allowed))
    template = as_dict(spec.get("template"))
    errs += validate_pod_template(template, "spec.template")
    policy = as_dict(template.get("spec")).get("restartPolicy", "")
    path = "spec.template.spec.restartPolicy"
    if policy in ("Always", ""):
        errs.append(required(path, 'valid values: "OnFailure", "Never"'))
    elif policy not in ("OnFailure", "Never"):
        errs.append(not_supported(path, policy, ["OnFailure", "Never"]))
    elif spec.get("podFailurePolicy") is not None and policy != "Never":
        errs.append(invalid(path, policy,
                            'only "Never" is supported when podFailurePolicy is specified'))
    return errs


# Fields of a suspended, never-started Job's template that may still change (scheduling).
_MUTABLE_WHEN_SUSPENDED = ("nodeSelector", "tolerations", "schedulingGates")


def validate_job_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    spec, old_spec = as_dict(new.get("spec")), as_dict(old.get("spec"))
    old_labels = as_dict(as_dict(as_dict(old_spec.get("template")).get("metadata")).get("labels"))
    errs = validate_job(new, check_prefixed_labels=CONTROLLER_UID in old_labels)
    errs += _validate_completions_update(spec, old_spec)
    errs += validate_immutable(spec.get("selector"), old_spec.get("selector"), "spec.selector",
                               shown=go_label_selector(spec.get("selector")))
    template, old_template = as_dict(spec.get("template")), as_dict(old_spec.get("template"))
    if old_spec.get("suspend") is True and not as_dict(old.get("status")).get("startTime"):
        template, old_template = _mask_scheduling(template), _mask_scheduling(old_template)
    if normalize(template) != normalize(old_template):
        errs.append(invalid("spec.template", spec.get("template"), "field is immutable"))
    for field in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex"):
        errs += validate_immutable(spec.get(field), old_spec.get(field), f"spec.{field}")
    return errs


def _mask_scheduling(template: dict[str, Any]) -> dict[str, Any]:
    pod_spec = {k: v for k, v in as_dict(template.get("spec")).items()
                if k not in _MUTABLE_WHEN_SUSPENDED}
    affinity = {k: v for k, v in as_dict(pod_spec.get("affinity")).items() if k != "nodeAffinity"}
    pod_spec["affinity"] = affinity or None
    meta = {k: v for k, v in as_dict(template.get("metadata")).items()
            if k not in ("labels", "annotations")}
    return {**template, "metadata": meta, "spec": pod_spec}


def _validate_completions_update(spec: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    completions = spec.get("completions")
    if spec.get("completionMode") != "Indexed":
        return validate_immutable(completions, old.get("completions"), "spec.completions")
    # Elastic Indexed Jobs: completions may change together with parallelism.
    if completions == old.get("completions") or completions is None:
        return []
    if completions != spec.get("parallelism"):
        return [invalid("spec.completions", completions,
                        "can only be modified in tandem with spec.parallelism")]
    return []


# ------------------------------------------------------------------------------ status

_STATUS_COUNTERS = {
    "Deployment": ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas",
                   "availableReplicas", "unavailableReplicas", "collisionCount"),
    "ReplicaSet": ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas",
                   "observedGeneration"),
    "Job": ("active", "succeeded", "failed", "ready", "terminating"),
}


def validate_workload_status(kind: str, obj: dict[str, Any]) -> list[FieldError]:
    status = as_dict(obj.get("status"))
    errs: list[FieldError] = []
    for field in _STATUS_COUNTERS.get(kind, ()):
        errs += validate_nonnegative(status.get(field), f"status.{field}")
    if kind == "Job":
        return errs
    replicas = as_int(status.get("replicas")) or 0
    for field in ("updatedReplicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        value = as_int(status.get(field))
        if field in _STATUS_COUNTERS[kind] and value is not None and value > replicas:
            errs.append(invalid(f"status.{field}", value, "cannot be greater than status.replicas"))
    ready, available = as_int(status.get("readyReplicas")) or 0, as_int(
        status.get("availableReplicas")) or 0
    if available > ready:
        errs.append(invalid("status.availableReplicas", available,
                            "cannot be greater than readyReplicas"))
    return errs
