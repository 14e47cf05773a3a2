"""What the workload controllers share (Kubernetes' pkg/controller/controller_utils.go).

Expectations (a controller does not act again on a key until its informer has seen its own
creates and deletes), pod predicates and the ranking that picks which pods to delete first,
pod construction from a template, slow-start batches, and small time and condition helpers.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dockyard.api.meta import name_is_dns_subdomain, selector_matches

Obj = dict[str, Any]

# Kubernetes' ExpectationsTimeout: a controller stuck waiting for an event it never gets
# (a lost watch event) acts again after this long.
EXPECTATIONS_TIMEOUT = 300.0
SLOW_START_INITIAL_BATCH_SIZE = 1
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"


# -- time ----------------------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(at: datetime | None = None) -> str:
    """metav1.Time on the wire: RFC 3339 with second precision."""
    return (at or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- object accessors -----------------------------------------------------------------------


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def controller_of(obj: Obj) -> Obj | None:
    """metav1.GetControllerOf: the owner reference with controller: true."""
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def new_controller_ref(owner: Obj, api_version: str, kind: str) -> Obj:
    """metav1.NewControllerRef: blockOwnerDeletion and controller both true."""
    return {"apiVersion": api_version, "kind": kind, "name": meta(owner)["name"],
            "uid": meta(owner)["uid"], "controller": True, "blockOwnerDeletion": True}


def label_matcher(selector: Any) -> Callable[[Any], bool]:
    """`selector_matches(selector, labels)` as a predicate on labels, compiled once: a plain
    matchLabels selector becomes one C-level dict-items comparison per object."""
    if isinstance(selector, dict) and not selector.get("matchExpressions"):
        match_labels = selector.get("matchLabels") or {}
        if isinstance(match_labels, dict) and \
                all(isinstance(v, str) for v in match_labels.values()):
            items = dict(match_labels).items()
            return lambda labels: items <= (labels if isinstance(labels, dict) else {}).items()
    return lambda labels: selector_matches(selector, labels)


def key_of(obj: Obj) -> str:
    m = meta(obj)
    return f"{m['namespace']}/{m['name']}" if m.get("namespace") else m["name"]


def error_message(exc: BaseException) -> str:
    """What Go's err.Error() says for an API error: the Status message."""
    message = getattr(exc, "status", {}).get("message") if hasattr(exc, "status") else None
    return str(message) if message else str(exc)


# -- pods ----------------------------------------------------------------------------------


def is_pod_active(pod: Obj) -> bool:
    """Not finished and not being deleted (controller.IsPodActive)."""
    return (status(pod).get("phase") not in ("Succeeded", "Failed")
            and not meta(pod).get("deletionTimestamp"))


def filter_active_pods(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if is_pod_active(p)]


def ready_condition(pod: Obj) -> Obj | None:
    for cond in status(pod).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond
    return None


def is_pod_ready(pod: Obj) -> bool:
    cond = ready_condition(pod)
    return cond is not None and cond.get("status") == "True"


def is_pod_available(pod: Obj, min_ready_seconds: int, at: datetime | None = None) -> bool:
    """Ready for at least minReadySeconds (podutil.IsPodAvailable)."""
    if not is_pod_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))
    return since is not None and since.timestamp() + min_ready_seconds < (at or now()).timestamp()


def pod_from_template(template: Obj, owner: Obj, controller_ref: Obj | None, *,
                      generate_name: str = "") -> Obj:
    """controller.GetPodFromTemplate: labels, annotations, finalizers and spec of the template,
    named `<owner>-` plus the five random characters the API server appends."""
    tmeta = template.get("metadata") or {}
    owner_name = meta(owner)["name"]
    prefix = generate_name or f"{owner_name}-"
    if name_is_dns_subdomain(prefix, prefix=True):
        prefix = owner_name
    pod_meta: Obj = {"generateName": prefix, "namespace": meta(owner).get("namespace")}
    for name in ("labels", "annotations"):
        if tmeta.get(name):
            pod_meta[name] = dict(tmeta[name])
    if tmeta.get("finalizers"):
        pod_meta["finalizers"] = list(tmeta["finalizers"])
    if controller_ref is not None:
        pod_meta["ownerReferences"] = [controller_ref]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


# -- ranking pods for deletion ---------------------------------------------------------------

_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


def _ready_time(pod: Obj) -> datetime | None:
    if not is_pod_ready(pod):
        return None
    return parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))


def _after_or_zero(t1: datetime | None, t2: datetime | None) -> bool:
    """afterOrZero: a zero time sorts first, then the later time."""
    if t1 is None or t2 is None:
        return t1 is None
    return t1 > t2


def _max_restarts(pod: Obj) -> tuple[int, int]:
    """(regular containers' max restarts, restartable init containers' max restarts)."""
    st = status(pod)
    regular = max((int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or []),
                  default=0)
    sidecars = {c.get("name") for c in spec(pod).get("initContainers") or []
                if c.get("restartPolicy") == "Always"}
    sidecar = max((int(c.get("restartCount") or 0)
                   for c in st.get("initContainerStatuses") or [] if c.get("name") in sidecars),
                  default=0)
    return regular, sidecar


def _deletion_cost(pod: Obj) -> int:
    raw = (meta(pod).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    try:
        cost = int(raw) if raw is not None else 0
    except ValueError:
        return 0
    return cost if -(2**31) <= cost < 2**31 else 0


def _log_rank_diff(t1: datetime, t2: datetime, at: datetime) -> int:
    """logarithmicRankDiff: compare the log2 of the ages in nanoseconds."""
    def rank(t: datetime) -> int:
        age = (at - t).total_seconds() * 1e9
        return int(math.log2(age)) if age > 0 else -1
    return rank(t1) - rank(t2)


def _time_less(p1: Obj, p2: Obj, t1: datetime | None, t2: datetime | None,
               at: datetime | None) -> bool:
    if at is None or t1 is None or t2 is None:
        return _after_or_zero(t1, t2)
    diff = _log_rank_diff(t1, t2, at)
    if diff == 0:
        return str(meta(p1).get("uid", "")) < str(meta(p2).get("uid", ""))
    return diff < 0


def _pod_less(p1: Obj, p2: Obj, r1: int, r2: int, *, ranked: bool,
              at: datetime | None) -> bool:
    """ActivePods.Less (ranked=False) and ActivePodsWithRanks.Less (ranked=True, with pod
    deletion cost and logarithmic scale-down, both on by default in Kubernetes 1.32)."""
    n1, n2 = spec(p1).get("nodeName") or "", spec(p2).get("nodeName") or ""
    if n1 != n2 and (not n1 or not n2):
        return not n1  # 1. unassigned < assigned
    o1 = _PHASE_ORDINAL.get(status(p1).get("phase", ""), 0)
    o2 = _PHASE_ORDINAL.get(status(p2).get("phase", ""), 0)
    if o1 != o2:
        return o1 < o2  # 2. Pending < Unknown < Running
    ready1, ready2 = is_pod_ready(p1), is_pod_ready(p2)
    if ready1 != ready2:
        return not ready1  # 3. not ready < ready
    if ranked:
        c1, c2 = _deletion_cost(p1), _deletion_cost(p2)
        if c1 != c2:
            return c1 < c2  # 4. lower pod-deletion-cost first
        if r1 != r2:
            return r1 > r2  # 5. doubled up on a node < not doubled up
    if ready1 and ready2:
        t1, t2 = _ready_time(p1), _ready_time(p2)
        if t1 != t2:  # 6. ready for less time < more time
            return _time_less(p1, p2, t1, t2, at if ranked else None)
    rs1, rs2 = _max_restarts(p1), _max_restarts(p2)
    if rs1[0] != rs2[0]:
        return rs1[0] > rs2[0]  # 7. more restarts first
    if rs1[1] != rs2[1]:
        return rs1[1] > rs2[1]
    c1t = parse_time(meta(p1).get("creationTimestamp"))
    c2t = parse_time(meta(p2).get("creationTimestamp"))
    if c1t != c2t:  # 8. newer first
        return _time_less(p1, p2, c1t, c2t, at if ranked else None)
    return False


def sort_active_pods(pods: list[Obj]) -> list[Obj]:
    """controller.ActivePods order: the pods to delete first come first (used by Jobs)."""
    def cmp(a: Obj, b: Obj) -> int:
        if _pod_less(a, b, 0, 0, ranked=False, at=None):
            return -1
        return 1 if _pod_less(b, a, 0, 0, ranked=False, at=None) else 0
    return sorted(pods, key=functools.cmp_to_key(cmp))


def rank_pods_for_deletion(pods: list[Obj], related: list[Obj], *,
                           at: datetime | None = None) -> list[Obj]:
    """ReplicaSets' getPodsRankedByRelatedPodsOnSameNode + ActivePodsWithRanks: the least
    valuable pods first. A pod's rank is how many active related pods share its node."""
    on_node: dict[str, int] = {}
    for pod in related:
        if is_pod_active(pod):
            node = spec(pod).get("nodeName") or ""
            on_node[node] = on_node.get(node, 0) + 1
    when = at or now()
    ranked = [(p, on_node.get(spec(p).get("nodeName") or "", 0)) for p in pods]

    def cmp(a: tuple[Obj, int], b: tuple[Obj, int]) -> int:
        if _pod_less(a[0], b[0], a[1], b[1], ranked=True, at=when):
            return -1
        return 1 if _pod_less(b[0], a[0], b[1], a[1], ranked=True, at=when) else 0
    return [p for p, _ in sorted(ranked, key=functools.cmp_to_key(cmp))]


# -- expectations ----------------------------------------------------------------------------


@dataclass
class _Expectation:
    add: int = 0
    delete: int = 0
    stamp: float = field(default_factory=time.monotonic)
    pending_deletes: set[str] = field(default_factory=set)


class Expectations:
    """ControllerExpectations with UID-tracked deletions (UIDTrackingControllerExpectations).

    `expect_*` replace what a key expects; the informer handlers lower the counts as they
    observe the writes; `satisfied` says whether the controller may act on its cache again.
    A deletion is observed once per pod however many events show it.
    """

    def __init__(self, timeout: float = EXPECTATIONS_TIMEOUT) -> None:
        self._items: dict[str, _Expectation] = {}
        self.timeout = timeout

    def satisfied(self, key: str) -> bool:
        exp = self._items.get(key)
        if exp is None:
            return True
        if exp.add <= 0 and exp.delete <= 0:
            return True
        return time.monotonic() - exp.stamp > self.timeout

    def expect_creations(self, key: str, count: int) -> None:
        self._items[key] = _Expectation(add=count)

    def expect_deletions(self, key: str, pod_keys: list[str]) -> None:
        self._items[key] = _Expectation(delete=len(pod_keys), pending_deletes=set(pod_keys))

    def creation_observed(self, key: str) -> None:
        exp = self._items.get(key)
        if exp is not None:
            exp.add -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        exp = self._items.get(key)
        if exp is not None and pod_key in exp.pending_deletes:
            exp.pending_deletes.discard(pod_key)
            exp.delete -= 1

    def forget(self, key: str) -> None:
        self._items.pop(key, None)


# -- batches ---------------------------------------------------------------------------------


async def slow_start_batch(count: int, fn: Callable[[], Awaitable[None]], *,
                           initial: int = SLOW_START_INITIAL_BATCH_SIZE
                           ) -> tuple[int, BaseException | None]:
    """Call `fn` `count` times in batches of 1, 2, 4, ... until a batch has an error.

    Returns (successes, first error). A quota or admission error thus costs one call, not
    `count` of them (and not `count` Warning events)."""
    remaining, successes = count, 0
    batch = min(remaining, initial)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for err in errors:
            if isinstance(err, asyncio.CancelledError):
                raise err
        successes += batch - len(errors)
        if errors:
            return successes, errors[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None

