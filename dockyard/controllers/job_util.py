"""Pure Job logic (Kubernetes' pkg/controller/job: indexed_job_utils.go, backoff_utils.go).

Completion indexes (annotation, label, JOB_COMPLETION_INDEX env, interval strings like
"0-2,5"), which duplicate or out-of-range pods to remove, the pod-failure back-off derived
from the pods' finish times, and Job conditions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dockyard.controllers.controller_utils import (
    Obj,
    meta,
    parse_time,
    rfc3339,
    sort_active_pods,
    spec,
    status,
)

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
UNKNOWN_INDEX = -1
MAX_GENERATED_NAME_LENGTH = 63 - 5


def is_indexed(job: Obj) -> bool:
    return spec(job).get("completionMode") == "Indexed"


def completion_index(pod: Obj) -> int:
    """getCompletionIndex: the annotation, else the label; -1 when absent or invalid."""
    m = meta(pod)
    for source in (m.get("annotations") or {}, m.get("labels") or {}):
        value = source.get(COMPLETION_INDEX)
        if value is None:
            continue
        try:
            index = int(value)
        except ValueError:
            return UNKNOWN_INDEX
        return index if index >= 0 else UNKNOWN_INDEX
    return UNKNOWN_INDEX


def parse_indexes(text: str | None, completions: int) -> set[int]:
    """An interval list ("1,3-5") as a set, dropping indexes >= completions."""
    found: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            continue
        found.update(i for i in range(lo, min(hi, completions - 1) + 1))
    return found


def format_indexes(indexes: set[int]) -> str:
    """orderedIntervals.String(): "0-2,5" (a pair of neighbours is "3,4")."""
    parts: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j == i:
            parts.append(str(ordered[i]))
        elif j == i + 1:
            parts.append(f"{ordered[i]},{ordered[j]}")
        else:
            parts.append(f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def succeeded_indexes(job: Obj, pods: list[Obj]) -> set[int]:
    """Indexes recorded in status.completedIndexes plus those of succeeded pods."""
    completions = int(spec(job).get("completions") or 0)
    done = parse_indexes(status(job).get("completedIndexes"), completions)
    for pod in pods:
        index = completion_index(pod)
        if status(pod).get("phase") == "Succeeded" and 0 <= index < completions:
            done.add(index)
    return done


def first_pending_indexes(active: list[Obj], succeeded: set[int], count: int,
                          completions: int) -> list[int]:
    """The lowest `count` indexes neither succeeded nor held by an active pod."""
    taken = succeeded | {completion_index(p) for p in active}
    out: list[int] = []
    for index in range(completions):
        if len(out) == count:
            break
        if index not in taken:
            out.append(index)
    return out


def pods_for_removal(job: Obj, active: list[Obj], at_least: int) -> list[Obj]:
    """activePodsForRemoval: for Indexed Jobs first pods with unknown, out-of-range or
    repeated indexes (the best pod of an index stays), then the least valuable."""
    remove: list[Obj] = []
    left = active
    if is_indexed(job):
        remove, left = _duplicated_index_pods(active, int(spec(job).get("completions") or 0))
    if len(remove) < at_least:
        remove += sort_active_pods(left)[:at_least - len(remove)]
    return remove


def _duplicated_index_pods(pods: list[Obj], completions: int) -> tuple[list[Obj], list[Obj]]:
    remove: list[Obj] = []
    left: list[Obj] = []
    groups: dict[int, list[Obj]] = {}
    for pod in pods:
        groups.setdefault(completion_index(pod), []).append(pod)
    for index in sorted(groups):
        group = groups[index]
        if index == UNKNOWN_INDEX or index >= completions:
            remove += group
        elif len(group) == 1:
            left.append(group[0])
        else:
            ordered = sort_active_pods(group)
            remove += ordered[:-1]
            left.append(ordered[-1])
    return remove, left


def add_completion_index_env(template: Obj) -> None:
    """JOB_COMPLETION_INDEX from the pod's completion-index annotation, in every container
    that does not set it already."""
    pod_spec = template.setdefault("spec", {})
    for kind in ("initContainers", "containers"):
        for container in pod_spec.get(kind) or []:
            env = container.setdefault("env", [])
            if any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
                continue
            env.append({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
                "apiVersion": "v1",
                "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}})


def index_generate_name(job_name: str, index: int) -> str:
    """podGenerateNameWithIndex: `<job>-<index>-`, the job name cut to fit."""
    suffix = f"-{index}-"
    prefix = job_name + suffix
    if len(prefix) > MAX_GENERATED_NAME_LENGTH:
        prefix = prefix[:MAX_GENERATED_NAME_LENGTH - len(suffix)] + suffix
    return prefix


# -- failures and back-off ---------------------------------------------------------------


def finish_time(pod: Obj) -> datetime | None:
    """When a pod finished: its Ready=False transition, else its containers' latest
    finishedAt, else its deletion timestamp, else its start or creation time."""
    st = status(pod)
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "False":
            at = parse_time(cond.get("lastTransitionTime"))
            if at is not None:
                return at
    finished = [parse_time(((c.get("state") or {}).get("terminated") or {}).get("finishedAt"))
                for c in st.get("containerStatuses") or []]
    latest = max((t for t in finished if t is not None), default=None)
    if latest is not None:
        return latest
    for value in (meta(pod).get("deletionTimestamp"), st.get("startTime"),
                  meta(pod).get("creationTimestamp")):
        at = parse_time(value)
        if at is not None:
            return at
    return None


def backoff_remaining(pods: list[Obj], at: datetime, base: float, cap: float) -> float:
    """Seconds before the next pod may be created: base * 2^(failures since the last
    success - 1), capped, counted from the last failure (Kubernetes keeps this record in
    memory; here it is derived from the pods, so a restart does not forget it)."""
    finished: list[tuple[datetime, bool]] = []
    for pod in pods:
        phase = status(pod).get("phase")
        if phase in ("Succeeded", "Failed"):
            when = finish_time(pod)
            if when is not None:
                finished.append((when, phase == "Failed"))
    finished.sort(key=lambda item: item[0])
    failures, last_failure = 0, None
    for when, failed in finished:
        if failed:
            failures += 1
            last_failure = when
        else:
            failures, last_failure = 0, None
    if failures == 0 or last_failure is None:
        return 0.0
    delay = base
    for _ in range(1, failures):
        delay *= 2
        if delay >= cap:
            delay = cap
            break
    elapsed = (at - last_failure).total_seconds()
    return max(delay - elapsed, 0.0)


def past_backoff_limit_on_failure(job: Obj, pods: list[Obj]) -> bool:
    """restartPolicy OnFailure: container restarts of running pods count as failures."""
    template_spec = (spec(job).get("template") or {}).get("spec") or {}
    if template_spec.get("restartPolicy") != "OnFailure":
        return False
    restarts = 0
    for pod in pods:
        if status(pod).get("phase") in ("Running", "Pending"):
            for kind in ("initContainerStatuses", "containerStatuses"):
                restarts += sum(int(c.get("restartCount") or 0)
                                for c in status(pod).get(kind) or [])
    limit = int(spec(job).get("backoffLimit") or 0)
    return restarts > 0 if limit == 0 else restarts >= limit


def count_failed(pods: list[Obj]) -> int:
    return sum(1 for p in pods if status(p).get("phase") == "Failed")


def count_succeeded(pods: list[Obj]) -> int:
    return sum(1 for p in pods if status(p).get("phase") == "Succeeded")


def count_terminating(pods: list[Obj]) -> int:
    """Pods being deleted that have not finished (controller.CountTerminatingPods)."""
    return sum(1 for p in pods if meta(p).get("deletionTimestamp")
               and status(p).get("phase") not in ("Succeeded", "Failed"))


# -- conditions --------------------------------------------------------------------------


def new_condition(type_: str, status_: str, reason: str, message: str,
                  at: datetime | None = None) -> Obj:
    stamp = rfc3339(at)
    return {"type": type_, "status": status_, "lastProbeTime": stamp,
            "lastTransitionTime": stamp, "reason": reason, "message": message}


def find_condition(job: Obj, type_: str) -> Obj | None:
    for cond in status(job).get("conditions") or []:
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def ensure_condition(st: dict[str, Any], type_: str, status_: str, reason: str, message: str,
                     at: datetime | None = None) -> bool:
    """ensureJobConditionStatus: replace a differing condition, add a non-False new one."""
    conditions: list[Obj] = st.setdefault("conditions", [])
    for i, cond in enumerate(conditions):
        if cond.get("type") == type_:
            if (cond.get("status"), cond.get("reason"), cond.get("message")) != \
                    (status_, reason, message):
                conditions[i] = new_condition(type_, status_, reason, message, at)
                return True
            return False
    if status_ != "False":
        conditions.append(new_condition(type_, status_, reason, message, at))
        return True
    if not conditions:
        st.pop("conditions")
    return False


def is_finished(job: Obj) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in status(job).get("conditions") or [])
