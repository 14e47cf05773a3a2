"""Pure Deployment logic (Kubernetes' pkg/controller/deployment/util).

Template hashing, maxSurge/maxUnavailable fenceposts, revision and replica annotations, the
new/old ReplicaSet split, proportional-scaling fractions, and the Progressing/Available
condition rules. Nothing here talks to the API, so all of it is unit-tested directly.
"""

from __future__ import annotations

import copy
import struct
from datetime import datetime
from typing import Any

import orjson

from dockyard.controllers.controller_utils import Obj, meta, parse_time, rfc3339, spec, status

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
# Deployment annotations never copied to its ReplicaSets (annotationsToSkip).
ANNOTATIONS_TO_SKIP = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
                                 MAX_REPLICAS, ROLLBACK_TO})
MAX_REV_HISTORY_LENGTH_IN_CHARS = 2000
MAX_INT32 = 2**31 - 1

# Condition reasons (deployment_util.go).
REPLICASET_UPDATED = "ReplicaSetUpdated"
FAILED_RS_CREATE = "ReplicaSetCreateError"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
MIN_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"

_SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


# -- hashing ---------------------------------------------------------------------------------


def semantic(value: Any) -> Any:
    """apiequality.Semantic's view: nil and empty maps/lists equal absence."""
    if isinstance(value, dict):
        out = {k: semantic(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [semantic(v) for v in value]
    return value


def fnv32a(data: bytes, h: int = 0x811C9DC5) -> int:
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """rand.SafeEncodeString: map each byte onto consonants and digits (no bad words)."""
    return "".join(_SAFE_ALPHANUMS[b % len(_SAFE_ALPHANUMS)] for b in text.encode())


def compute_hash(template: Obj, collision_count: int | None) -> str:
    """controller.ComputeHash: FNV-32a of the template, then of collisionCount as 8 bytes
    (little-endian uint32), the decimal sum safe-encoded. Kubernetes hashes Go's spew dump
    of the struct; we hash sorted-key JSON of its semantic form, equally stable."""
    h = fnv32a(orjson.dumps(semantic(template), option=orjson.OPT_SORT_KEYS))
    if collision_count is not None:
        h = fnv32a(struct.pack("<I", collision_count & 0xFFFFFFFF) + b"\0\0\0\0", h)
    return safe_encode(str(h))


def equal_ignore_hash(t1: Obj, t2: Obj) -> bool:
    """Two pod templates are equal apart from their pod-template-hash label."""
    def strip(t: Obj) -> Any:
        t = copy.deepcopy(t or {})
        labels = (t.get("metadata") or {}).get("labels")
        if isinstance(labels, dict):
            labels.pop(POD_TEMPLATE_HASH, None)
        return semantic(t)
    return bool(strip(t1) == strip(t2))


# -- fenceposts ------------------------------------------------------------------------------


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%"):
        percent = int(value[:-1])
        return -(-percent * total // 100) if round_up else percent * total // 100
    raise ValueError(f"invalid value for IntOrString: invalid type: {value!r} is not a "
                     "percentage")


def is_rolling_update(d: Obj) -> bool:
    return (spec(d).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def replicas(obj: Obj) -> int:
    value = spec(obj).get("replicas")
    return 1 if value is None else int(value)


def resolve_fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """Surge rounds up, unavailability rounds down; never both zero (then unavailable is 1)."""
    surge = scaled_value(max_surge, desired, True)
    unavailable = scaled_value(max_unavailable, desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _rolling(d: Obj) -> Obj:
    return (spec(d).get("strategy") or {}).get("rollingUpdate") or {}


def max_surge(d: Obj) -> int:
    if not is_rolling_update(d):
        return 0
    rolling = _rolling(d)
    return resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"),
                              replicas(d))[0]


def max_unavailable(d: Obj) -> int:
    if not is_rolling_update(d) or replicas(d) == 0:
        return 0
    rolling = _rolling(d)
    _, unavailable = resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"),
                                        replicas(d))
    return min(unavailable, replicas(d))


# -- ReplicaSet lists ------------------------------------------------------------------------


def _created(rs: Obj) -> tuple[float, str]:
    t = parse_time(meta(rs).get("creationTimestamp"))
    return (t.timestamp() if t else 0.0), meta(rs).get("name", "")


def by_creation(rss: list[Obj], *, reverse: bool = False) -> list[Obj]:
    """ReplicaSetsByCreationTimestamp (name breaks ties)."""
    return sorted(rss, key=_created, reverse=reverse)


def by_size_newer(rss: list[Obj]) -> list[Obj]:
    """Largest first; among equals the newest first (scaling up favours new ReplicaSets)."""
    return sorted(by_creation(rss, reverse=True), key=lambda rs: -replicas(rs))


def by_size_older(rss: list[Obj]) -> list[Obj]:
    """Largest first; among equals the oldest first (scaling down takes from old ones)."""
    return sorted(by_creation(rss), key=lambda rs: -replicas(rs))


def revision(obj: Obj) -> int:
    """The revision annotation; 0 when absent, -1 when not a number (it is then skipped)."""
    value = (meta(obj).get("annotations") or {}).get(REVISION)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return -1


def by_revision(rss: list[Obj]) -> list[Obj]:
    return sorted(by_creation(rss), key=revision)


def max_revision(rss: list[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def find_new_replicaset(d: Obj, rss: list[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template equals the Deployment's."""
    template = spec(d).get("template") or {}
    for rs in by_creation(rss):
        if equal_ignore_hash(spec(rs).get("template") or {}, template):
            return rs
    return None


def find_old_replicasets(d: Obj, rss: list[Obj]) -> tuple[list[Obj], list[Obj]]:
    """(old ReplicaSets with replicas, all old ReplicaSets)."""
    new = find_new_replicaset(d, rss)
    new_uid = meta(new).get("uid") if new else None
    everything = [rs for rs in rss if meta(rs).get("uid") != new_uid]
    return [rs for rs in everything if replicas(rs) != 0], everything


def filter_active(rss: list[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def find_active_or_latest(new: Obj | None, olds: list[Obj]) -> Obj | None:
    """The only active ReplicaSet, or the newest when none is active; None if several are."""
    if new is None and not olds:
        return None
    olds = by_creation(olds, reverse=True)
    active = filter_active([*olds, new])
    if not active:
        return new if new is not None else olds[0]
    return active[0] if len(active) == 1 else None


def spec_replicas_sum(rss: list[Obj | None]) -> int:
    return sum(replicas(rs) for rs in rss if rs is not None)


def _status_sum(rss: list[Obj | None], name: str) -> int:
    return sum(int(status(rs).get(name) or 0) for rs in rss if rs is not None)


def actual_replicas(rss: list[Obj | None]) -> int:
    return _status_sum(rss, "replicas")


def ready_replicas(rss: list[Obj | None]) -> int:
    return _status_sum(rss, "readyReplicas")


def available_replicas(rss: list[Obj | None]) -> int:
    return _status_sum(rss, "availableReplicas")


def pods_upper_bound(rss: list[Obj | None]) -> int:
    """Pods that exist or may exist: a ReplicaSet scaled down still has its pods until its
    controller reports the deletions. Kubernetes counts spec.replicas only, so for a moment a
    rollout can exceed maxSurge; counting max(spec, status) keeps the bound on every event."""
    return sum(max(replicas(rs), int(status(rs).get("replicas") or 0))
               for rs in rss if rs is not None)


def available_lower_bound(rss: list[Obj | None]) -> int:
    """Available pods that will remain: a ReplicaSet just scaled down still reports the
    pods it is about to delete, so cap each by its spec (Kubernetes sums status only)."""
    return sum(min(replicas(rs), int(status(rs).get("availableReplicas") or 0))
               for rs in rss if rs is not None)


# -- annotations -----------------------------------------------------------------------------


def _annotations(obj: Obj) -> dict[str, str]:
    m = obj.setdefault("metadata", {})
    if not isinstance(m.get("annotations"), dict):
        m["annotations"] = {}
    return m["annotations"]  # type: ignore[no-any-return]


def set_replicas_annotations(rs: Obj, desired: int, maximum: int) -> bool:
    ann = _annotations(rs)
    updated = False
    for name, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(maximum))):
        if ann.get(name) != value:
            ann[name] = value
            updated = True
    return updated


def replicas_annotations_need_update(rs: Obj, desired: int, maximum: int) -> bool:
    ann = meta(rs).get("annotations") or {}
    return ann.get(DESIRED_REPLICAS) != str(desired) or ann.get(MAX_REPLICAS) != str(maximum)


def _int_annotation(rs: Obj, name: str) -> int | None:
    value = (meta(rs).get("annotations") or {}).get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def desired_replicas_annotation(rs: Obj) -> int | None:
    return _int_annotation(rs, DESIRED_REPLICAS)


def copy_deployment_annotations(d: Obj, rs: Obj) -> bool:
    """Copy the Deployment's annotations (change-cause and the like) to its ReplicaSet."""
    ann = _annotations(rs)
    changed = False
    for k, v in (meta(d).get("annotations") or {}).items():
        if k in ANNOTATIONS_TO_SKIP or ann.get(k) == v:
            continue
        ann[k] = v
        changed = True
    return changed


def set_new_replicaset_annotations(d: Obj, rs: Obj, new_revision: int, exists: bool) -> bool:
    """SetNewReplicaSetAnnotations: copy annotations, raise the revision to `new_revision`
    (remembering earlier revisions of a ReplicaSet brought back by a rollback), and on a new
    ReplicaSet set the replica annotations."""
    changed = copy_deployment_annotations(d, rs)
    ann = _annotations(rs)
    old = ann.get(REVISION)
    try:
        old_revision = int(old) if old else 0
    except ValueError:
        return False
    if old_revision < new_revision:
        ann[REVISION] = str(new_revision)
        changed = True
        if old is not None:
            history = ann.get(REVISION_HISTORY, "")
            revisions = history.split(",") if history else []
            total = len(history) + len(old) + 1
            start = 0
            while total > MAX_REV_HISTORY_LENGTH_IN_CHARS and start < len(revisions):
                total -= len(revisions[start]) + 1
                start += 1
            if total <= MAX_REV_HISTORY_LENGTH_IN_CHARS:
                ann[REVISION_HISTORY] = ",".join([*revisions[start:], old])
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


# -- scaling ---------------------------------------------------------------------------------


def new_rs_new_replicas(d: Obj, all_rss: list[Obj | None], new: Obj) -> int:
    """How big the new ReplicaSet may be now."""
    if not is_rolling_update(d):
        return replicas(d)
    surge = scaled_value(_rolling(d).get("maxSurge"), replicas(d), True)
    current = pods_upper_bound(all_rss)
    max_total = replicas(d) + surge
    if current >= max_total:
        return replicas(new)
    return replicas(new) + min(max_total - current, replicas(d) - replicas(new))


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    """The new ReplicaSet holds all desired replicas, believes so, and all are available."""
    if rs is None:
        return False
    desired = desired_replicas_annotation(rs)
    return (desired is not None and replicas(rs) == replicas(d) and desired == replicas(d)
            and int(status(rs).get("availableReplicas") or 0) == replicas(d))


def _round_half_away(x: float) -> int:
    return int(x - 0.5) if x < 0 else int(x + 0.5)


def replicaset_fraction(rs: Obj, d: Obj) -> int:
    """How many replicas this ReplicaSet gains (or loses) in a proportional scale."""
    if replicas(d) == 0:
        return -replicas(rs)
    deployment_max = replicas(d) + max_surge(d)
    before = _int_annotation(rs, MAX_REPLICAS)
    if not before:
        before = int(status(d).get("replicas") or 0)
        if before == 0:
            return 0
    return _round_half_away(replicas(rs) * deployment_max / before) - replicas(rs)


def proportion(rs: Obj | None, d: Obj, to_add: int, added: int) -> int:
    """GetProportion: this ReplicaSet's share of `to_add`, never beyond what is left."""
    if rs is None or replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = replicaset_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


# -- conditions and progress -----------------------------------------------------------------


def new_condition(type_: str, status_: str, reason: str, message: str,
                  at: datetime | None = None) -> Obj:
    stamp = rfc3339(at)
    return {"type": type_, "status": status_, "lastUpdateTime": stamp,
            "lastTransitionTime": stamp, "reason": reason, "message": message}


def get_condition(st: Obj, type_: str) -> Obj | None:
    for cond in st.get("conditions") or []:
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def set_condition(st: Obj, cond: Obj) -> None:
    """Replace the condition of that type unless status and reason are the same; keep the
    transition time when only the reason changes."""
    current = get_condition(st, cond["type"])
    if current is not None and current.get("status") == cond["status"] \
            and current.get("reason") == cond["reason"]:
        return
    if current is not None and current.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime")}
    st["conditions"] = [c for c in st.get("conditions") or [] if c.get("type") != cond["type"]]
    st["conditions"].append(cond)


def remove_condition(st: Obj, type_: str) -> None:
    conditions = [c for c in st.get("conditions") or [] if c.get("type") != type_]
    if conditions:
        st["conditions"] = conditions
    else:
        st.pop("conditions", None)


def has_progress_deadline(d: Obj) -> bool:
    value = spec(d).get("progressDeadlineSeconds")
    return value is not None and value != MAX_INT32


def has_revision_history_limit(d: Obj) -> bool:
    value = spec(d).get("revisionHistoryLimit")
    return value is not None and value != MAX_INT32


def deployment_complete(d: Obj, st: Obj) -> bool:
    want = replicas(d)
    return (st.get("updatedReplicas", 0) == want and st.get("replicas", 0) == want
            and st.get("availableReplicas", 0) == want
            and st.get("observedGeneration", 0) >= meta(d).get("generation", 0))


def deployment_progressing(d: Obj, new: Obj) -> bool:
    """More updated, ready or available pods, or fewer old ones, than the last status."""
    old = status(d)
    old_olds = old.get("replicas", 0) - old.get("updatedReplicas", 0)
    new_olds = new.get("replicas", 0) - new.get("updatedReplicas", 0)
    return (new.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
            or new_olds < old_olds
            or new.get("readyReplicas", 0) > old.get("readyReplicas", 0)
            or new.get("availableReplicas", 0) > old.get("availableReplicas", 0))


def deployment_timed_out(d: Obj, new: Obj, at: datetime) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(new, "Progressing")
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return False
    deadline = since.timestamp() + int(spec(d)["progressDeadlineSeconds"])
    return deadline < at.timestamp()


def seconds_until_deadline(d: Obj, at: datetime) -> float | None:
    """requeueStuckDeployment's delay, from the Progressing condition's lastUpdateTime."""
    cond = get_condition(status(d), "Progressing")
    if cond is None or not has_progress_deadline(d):
        return None
    since = parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return None
    return since.timestamp() + int(spec(d)["progressDeadlineSeconds"]) - at.timestamp()


def rs_condition_to_deployment(cond: Obj) -> Obj:
    return {"type": cond.get("type"), "status": cond.get("status"),
            "lastUpdateTime": cond.get("lastTransitionTime"),
            "lastTransitionTime": cond.get("lastTransitionTime"),
            "reason": cond.get("reason"), "message": cond.get("message")}


def calculate_status(all_rss: list[Obj | None], new: Obj | None, d: Obj) -> Obj:
    """The Deployment's status from its ReplicaSets; the Available condition follows
    whether at least replicas - maxUnavailable pods are available."""
    available = available_replicas(all_rss)
    total = spec_replicas_sum(all_rss)
    st: dict[str, Any] = {
        "observedGeneration": meta(d).get("generation", 0),
        "replicas": actual_replicas(all_rss),
        "updatedReplicas": actual_replicas([new]),
        "readyReplicas": ready_replicas(all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(total - available, 0),
    }
    old = status(d)
    if old.get("collisionCount") is not None:
        st["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        st["conditions"] = [dict(c) for c in old["conditions"]]
    if available >= replicas(d) - max_unavailable(d):
        set_condition(st, new_condition("Available", "True", MIN_REPLICAS_AVAILABLE,
                                        "Deployment has minimum availability."))
    else:
        set_condition(st, new_condition("Available", "False", MIN_REPLICAS_UNAVAILABLE,
                                        "Deployment does not have minimum availability."))
    return st

