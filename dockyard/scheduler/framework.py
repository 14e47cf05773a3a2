"""The scheduler framework: the one interface between the scheduling loop and its plugins.

As in Kubernetes' `framework/interface.go`: each extension point is a tiny Protocol (a name
plus one method); a plugin answers with a `Status` (code + reasons), never a bare boolean, and
None means success; data computed in PreFilter/PreScore travels to Filter/Score in the
per-cycle `CycleState`. `PodInfo`/`NodeInfo` are the pre-parsed views plugins read. Python
needs what Go gets from goroutines: optional batch forms (`filter_nodes`) and memo keys
(`filter_key`, `score_key`) let the framework walk hundreds of nodes per cycle cheaply.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Protocol

import orjson

from dockyard.api.quantity import QuantityError, parse_quantity
from dockyard.scheduler.labels import Labels, Matcher, label_selector

Obj = dict[str, Any]

MAX_NODE_SCORE = 100
# Scoring pretends pods without requests ask for this much (schedutil.DefaultMilliCPURequest).
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024


class Code(IntEnum):
    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2  # preemption may help
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3  # preemption cannot help
    SKIP = 5  # from PreFilter/PreScore: this plugin has nothing to do for the pod


@dataclass(frozen=True, slots=True)
class Status:
    code: Code
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    def is_success(self) -> bool:
        return self.code == Code.SUCCESS

    def is_rejected(self) -> bool:
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE)

    def with_plugin(self, plugin: str) -> Status:
        return Status(self.code, self.reasons, plugin)


def unschedulable(*reasons: str) -> Status:
    return Status(Code.UNSCHEDULABLE, reasons)


def unresolvable(*reasons: str) -> Status:
    return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons)


SKIP = Status(Code.SKIP)


@dataclass
class CycleState:
    """Data one scheduling cycle's phases hand each other, keyed by plugin."""

    data: dict[str, Any] = field(default_factory=dict)
    skip_filter: set[str] = field(default_factory=set)
    skip_score: set[str] = field(default_factory=set)
    filter_memo: tuple[int, int] | None = None  # the framework's, see Framework.filter_nodes

    def read(self, key: str) -> Any:
        return self.data.get(key)

    def write(self, key: str, value: Any) -> None:
        self.data[key] = value


# ------------------------------------------------------------------------------ resources


@functools.lru_cache(maxsize=4096)
def _quantity(raw: str, milli: bool) -> int:
    try:
        q = parse_quantity(raw)
    except QuantityError:
        return 0
    return q.milli_value() if milli else q.int_value()


def quantity(name: str, raw: Any) -> int:
    """A resource amount as the scheduler counts it: millicores for cpu, units otherwise."""
    return _quantity(str(raw), name == "cpu")


@dataclass(slots=True)
class Resource:
    milli_cpu: int = 0
    memory: int = 0
    ephemeral_storage: int = 0
    allowed_pods: int = 0
    scalar: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_list(cls, resources: Obj | None) -> Resource:
        r = cls()
        for name, raw in (resources or {}).items():
            r.add_one(name, quantity(name, raw))
        return r

    def add_one(self, name: str, amount: int) -> None:
        if name == "cpu":
            self.milli_cpu += amount
        elif name == "memory":
            self.memory += amount
        elif name == "ephemeral-storage":
            self.ephemeral_storage += amount
        elif name == "pods":
            self.allowed_pods += amount
        elif "/" in name or name.startswith("hugepages-"):  # extended and hugepage resources
            self.scalar[name] = self.scalar.get(name, 0) + amount

    def clone(self) -> Resource:
        return Resource(self.milli_cpu, self.memory, self.ephemeral_storage, self.allowed_pods,
                        dict(self.scalar))


def _add(into: dict[str, int], extra: dict[str, int]) -> None:
    for k, v in extra.items():
        into[k] = into.get(k, 0) + v


def _max(into: dict[str, int], other: dict[str, int]) -> None:
    for k, v in other.items():
        if v > into.get(k, 0):
            into[k] = v


def pod_requests(spec: Obj, *, non_zero: bool = False) -> dict[str, int]:
    """resourcehelper.PodRequests: the containers' sum, raised to any init container's need
    (restartable "sidecar" init containers add to both), plus the pod overhead. With
    `non_zero`, containers without a cpu/memory request count the scoring defaults."""
    def of(ctr: Obj) -> dict[str, int]:
        req = (ctr.get("resources") or {}).get("requests") or {}
        out = {name: quantity(name, raw) for name, raw in req.items()}
        if non_zero:
            out.setdefault("cpu", DEFAULT_MILLI_CPU_REQUEST)
            out.setdefault("memory", DEFAULT_MEMORY_REQUEST)
        return out

    total: dict[str, int] = {}
    for ctr in spec.get("containers") or []:
        _add(total, of(ctr))
    sidecars: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for ctr in spec.get("initContainers") or []:
        need = of(ctr)
        if ctr.get("restartPolicy") == "Always":
            _add(total, need)
            _add(sidecars, need)
            need = dict(sidecars)
        else:
            _add(need, sidecars)
        _max(init_max, need)
    _max(total, init_max)
    for name, raw in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, 0) + quantity(name, raw)
    return total


# ------------------------------------------------------------------------------ pods


@dataclass(slots=True)
class AffinityTerm:
    """A PodAffinityTerm with its selectors compiled (framework.AffinityTerm).

    `signature` is equal for terms that match the same pods over the same topology key (the
    cache groups placed pods' terms by it); `index` lists label pairs, all of one key, such that
    every pod the selector can match carries one of them (None: no such list, scan every pod).
    """

    namespaces: frozenset[str]
    namespace_selector: Matcher | None
    selector: Matcher
    topology_key: str
    weight: int = 0
    signature: Hashable = None
    index: tuple[tuple[str, str], ...] | None = None

    def matches(self, pod: PodInfo, ns_labels: Callable[[str], Labels]) -> bool:
        if pod.namespace in self.namespaces or (
                self.namespace_selector is not None
                and self.namespace_selector(ns_labels(pod.namespace))):
            return self.selector(pod.labels)
        return False


def _selector_index(selector: Obj | None) -> tuple[tuple[str, str], ...] | None:
    """Label pairs one of which every pod matched by `selector` has (see AffinityTerm)."""
    if selector is None:
        return ()  # a nil selector matches nothing
    for key, value in (selector.get("matchLabels") or {}).items():
        if isinstance(value, str):
            return ((key, value),)
    best: tuple[tuple[str, str], ...] | None = None
    for expr in selector.get("matchExpressions") or []:
        if expr.get("operator") == "In":
            pairs = tuple((expr.get("key", ""), v) for v in expr.get("values") or []
                          if isinstance(v, str))
            if best is None or len(pairs) < len(best):
                best = pairs
    return best


def _canonical(raw: Any) -> bytes:
    return orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)


def _affinity_terms(namespace: str, terms: Iterable[Obj], weighted: bool) -> list[AffinityTerm]:
    out = []
    for raw in terms:
        term = raw.get("podAffinityTerm") or {} if weighted else raw
        ns_selector = term.get("namespaceSelector")
        namespaces = frozenset(term.get("namespaces") or ())
        if not namespaces and ns_selector is None:
            namespaces = frozenset((namespace,))
        selector = term.get("labelSelector")
        topology_key = term.get("topologyKey") or ""
        out.append(AffinityTerm(
            namespaces,
            label_selector(ns_selector) if ns_selector is not None else None,
            label_selector(selector),
            topology_key,
            int(raw.get("weight") or 0) if weighted else 0,
            (namespaces, _canonical(ns_selector), _canonical(selector), topology_key),
            _selector_index(selector),
        ))
    return out


# The spec fields PodInfo derives something from (requests, priority, pod affinity terms).
_DERIVED_SPEC_FIELDS = ("priority", "containers", "initContainers", "overhead", "affinity")


class PodInfo:
    """A pod plus what every cycle would otherwise recompute: requests, priority, terms."""

    __slots__ = ("pod", "key", "namespace", "name", "uid", "labels", "spec", "priority",
                 "requests", "non_zero_cpu", "non_zero_memory", "required_affinity",
                 "required_anti_affinity", "preferred_affinity", "preferred_anti_affinity",
                 "has_affinity", "creation")

    def __init__(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.namespace: str = meta.get("namespace") or ""
        self.name: str = meta.get("name") or ""
        self.key = f"{self.namespace}/{self.name}"
        self.uid: str = meta.get("uid") or ""
        self.labels: Labels = meta.get("labels") or {}
        self.creation: str = meta.get("creationTimestamp") or ""
        self.spec: Obj = spec
        self.priority: int = int(spec.get("priority") or 0)
        requests = pod_requests(spec)
        self.requests = Resource()
        for name, amount in requests.items():
            self.requests.add_one(name, amount)
        scoring = pod_requests(spec, non_zero=True)
        self.non_zero_cpu = scoring.get("cpu", DEFAULT_MILLI_CPU_REQUEST)
        self.non_zero_memory = scoring.get("memory", DEFAULT_MEMORY_REQUEST)
        affinity = spec.get("affinity") or {}
        pa = affinity.get("podAffinity") or {}
        paa = affinity.get("podAntiAffinity") or {}
        ns = self.namespace
        self.required_affinity = _affinity_terms(
            ns, pa.get("requiredDuringSchedulingIgnoredDuringExecution") or (), False)
        self.required_anti_affinity = _affinity_terms(
            ns, paa.get("requiredDuringSchedulingIgnoredDuringExecution") or (), False)
        self.preferred_affinity = _affinity_terms(
            ns, pa.get("preferredDuringSchedulingIgnoredDuringExecution") or (), True)
        self.preferred_anti_affinity = _affinity_terms(
            ns, paa.get("preferredDuringSchedulingIgnoredDuringExecution") or (), True)
        self.has_affinity = bool(pa or paa)

    def rebound(self, pod: Obj) -> PodInfo | None:
        """This PodInfo for a newer copy of the same pod, without recomputing anything, if
        nothing it is derived from changed (e.g. the copy a binding produced); else None."""
        meta, spec, old_spec = pod.get("metadata") or {}, pod.get("spec") or {}, self.spec
        if (meta.get("labels") or {}) != self.labels or (meta.get("uid") or "") != self.uid \
                or (meta.get("creationTimestamp") or "") != self.creation \
                or f"{meta.get('namespace') or ''}/{meta.get('name') or ''}" != self.key:
            return None
        for name in _DERIVED_SPEC_FIELDS:
            if spec.get(name) != old_spec.get(name):
                return None
        other = object.__new__(PodInfo)
        for name in PodInfo.__slots__:
            setattr(other, name, getattr(self, name))
        other.pod, other.spec, other.labels = pod, spec, meta.get("labels") or {}
        return other

    @property
    def terminating(self) -> bool:
        return bool((self.pod.get("metadata") or {}).get("deletionTimestamp"))


# ------------------------------------------------------------------------------ nodes


class NodeInfo:
    """A node, the pods bound or assumed on it, and what they request in total.

    `free_*` (allocatable minus requested, and pod slots left) are kept current for the filter
    loop. `generation` changes whenever anything a plugin may read changes, and the framework's
    memos are dropped then: `memo_token`/`memo_value` (a score sum, see `ScorePlugin.score_key`)
    and `pass_token` (filters passed, see `FilterPlugin.filter_key`). Slots, not a dict: the
    loop over a window of hundreds of nodes touches nothing but the nodes themselves.
    """

    __slots__ = ("node", "name", "labels", "taints", "unschedulable", "allocatable",
                 "requested", "non_zero_cpu", "non_zero_memory", "pods", "affinity_pods",
                 "anti_affinity_pods", "generation", "free_cpu", "free_memory", "free_storage",
                 "free_pods", "memo_token", "memo_value", "pass_token")

    def __init__(self, node: Obj | None = None, name: str = "") -> None:
        self.node: Obj | None = None
        self.name = name
        self.labels: Labels = {}
        self.taints: list[Obj] = []
        self.unschedulable = False
        self.allocatable = Resource()
        self.requested = Resource()
        self.non_zero_cpu = 0
        self.non_zero_memory = 0
        self.pods: dict[str, PodInfo] = {}
        self.affinity_pods: dict[str, PodInfo] = {}  # pods with any pod (anti-)affinity
        self.anti_affinity_pods: dict[str, PodInfo] = {}  # ... with required anti-affinity
        self.generation = 0
        self.memo_token = -1
        self.memo_value: Any = None
        self.pass_token = -1
        self._changed()
        if node is not None:
            self.set_node(node)

    def set_node(self, node: Obj) -> None:
        meta, spec = node.get("metadata") or {}, node.get("spec") or {}
        self.node = node
        self.name = meta.get("name") or self.name
        self.labels = meta.get("labels") or {}
        self.taints = spec.get("taints") or []
        self.unschedulable = bool(spec.get("unschedulable"))
        self.allocatable = Resource.from_list((node.get("status") or {}).get("allocatable"))
        self._changed()

    def add_pod(self, pi: PodInfo) -> None:
        if pi.key in self.pods:
            self.remove_pod(pi.key)
        self.pods[pi.key] = pi
        if pi.has_affinity:
            self.affinity_pods[pi.key] = pi
            if pi.required_anti_affinity:
                self.anti_affinity_pods[pi.key] = pi
        self._account(pi, 1)

    def remove_pod(self, key: str) -> PodInfo | None:
        pi = self.pods.pop(key, None)
        if pi is not None:
            self.affinity_pods.pop(key, None)
            self.anti_affinity_pods.pop(key, None)
            self._account(pi, -1)
        return pi

    def replace_pod(self, pi: PodInfo) -> None:
        """Swap in a newer PodInfo of a pod already here that requests the same (`rebound`):
        no totals change, so `generation` stays."""
        key = pi.key
        self.pods[key] = pi
        if key in self.affinity_pods:
            self.affinity_pods[key] = pi
        if key in self.anti_affinity_pods:
            self.anti_affinity_pods[key] = pi

    def _account(self, pi: PodInfo, sign: int) -> None:
        req, r = self.requested, pi.requests
        req.milli_cpu += sign * r.milli_cpu
        req.memory += sign * r.memory
        req.ephemeral_storage += sign * r.ephemeral_storage
        for name, amount in r.scalar.items():
            req.scalar[name] = req.scalar.get(name, 0) + sign * amount
        self.non_zero_cpu += sign * pi.non_zero_cpu
        self.non_zero_memory += sign * pi.non_zero_memory
        self._changed()

    def _changed(self) -> None:
        alloc, req = self.allocatable, self.requested
        self.free_cpu = alloc.milli_cpu - req.milli_cpu
        self.free_memory = alloc.memory - req.memory
        self.free_storage = alloc.ephemeral_storage - req.ephemeral_storage
        self.free_pods = alloc.allowed_pods - len(self.pods)
        self.generation += 1
        self.memo_token = self.pass_token = -1

    def clone(self) -> NodeInfo:
        """A copy whose pods can be added or removed without touching this one."""
        other = NodeInfo(name=self.name)
        other.node, other.labels, other.taints = self.node, self.labels, self.taints
        other.unschedulable, other.allocatable = self.unschedulable, self.allocatable
        other.requested = self.requested.clone()
        other.non_zero_cpu, other.non_zero_memory = self.non_zero_cpu, self.non_zero_memory
        other.pods = dict(self.pods)
        other.affinity_pods = dict(self.affinity_pods)
        other.anti_affinity_pods = dict(self.anti_affinity_pods)
        other._changed()
        return other


# ------------------------------------------------------------------------------ plugins


# A pod affinity term of placed pods, with the nodes holding it and the count/weight there
# (an iterator, to be read at most once, during the cycle).
TermGroup = tuple[AffinityTerm, Iterator[tuple[NodeInfo, int]]]


class Handle(Protocol):
    """What plugins may read besides the pod and node at hand (framework.Handle)."""

    def node_infos(self) -> Sequence[NodeInfo]:
        """Every node with a Node object, in the cache's order."""

    def node_info(self, name: str) -> NodeInfo | None: ...

    def nodes_with_affinity_pods(self) -> Iterable[NodeInfo]: ...

    def nodes_with_required_anti_affinity_pods(self) -> Iterable[NodeInfo]: ...

    def candidate_pods(self, term: AffinityTerm) -> Iterable[tuple[PodInfo, NodeInfo]]:
        """The placed pods (on nodes with a Node object) `term` may match, with their nodes:
        at least every one it does match (found through `term.index` when it has one)."""

    def placed_terms(self, kind: str, pod: PodInfo) -> Iterable[TermGroup]:
        """The pod affinity terms of one `kind` (REQUIRED_AFFINITY...) of the placed pods that
        may match `pod` (at least every one that does), one per signature, each with the nodes
        holding such terms and per node their count (required) or summed weight (preferred)."""

    def namespace_labels(self, namespace: str) -> Labels: ...


REQUIRED_AFFINITY = "required_affinity"
REQUIRED_ANTI_AFFINITY = "required_anti_affinity"
PREFERRED_AFFINITY = "preferred_affinity"
PREFERRED_ANTI_AFFINITY = "preferred_anti_affinity"
TERM_KINDS = (REQUIRED_AFFINITY, REQUIRED_ANTI_AFFINITY, PREFERRED_AFFINITY,
              PREFERRED_ANTI_AFFINITY)  # PodInfo attributes


class Plugin(Protocol):
    NAME: ClassVar[str]
    # Cluster events after which a pod this plugin rejected may fit (queue moves it then):
    # NodeAdd, NodeUpdate, NodeDelete, AssignedPodAdd, AssignedPodUpdate, AssignedPodDelete.
    EVENTS: ClassVar[frozenset[str]]


class PreFilterPlugin(Plugin, Protocol):
    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None: ...


class FilterPlugin(Plugin, Protocol):
    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None: ...

    # Optional, for the loop over thousands of nodes:
    #   def filter_nodes(self, state, pod, nodes: list[NodeInfo])
    #       -> tuple[list[NodeInfo], list[NodeInfo]] | None
    # splits `nodes` cheaply into the ones `filter` passes and the rest, both in order (see
    # `split_nodes`); the framework still asks `filter` about the rest, for their statuses
    # (one that passes after all is kept). None: no fast path for this pod.
    #   def filter_key(self, state, pod) -> Hashable | None
    # A key means: this cycle, `filter`'s verdict is a function of the key and of the node's
    # own state alone (the same until the node's `generation` changes), so the framework may
    # let a node pass that passed under an equal key since. None: no such promise.


@dataclass
class PostFilterResult:
    nominated_node: str | None = None  # "" clears a previous nomination


class PostFilterPlugin(Plugin, Protocol):
    def post_filter(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status],
                    num_nodes: int) -> tuple[PostFilterResult | None, Status]: ...


class PreScorePlugin(Plugin, Protocol):
    def pre_score(self, state: CycleState, pod: PodInfo,
                  nodes: list[NodeInfo]) -> Status | None: ...


class ScorePlugin(Plugin, Protocol):
    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int: ...

    # Optional: def score_key(self, state, pod) -> Hashable | None. A key means: this cycle,
    # `score` is a function of the key and of the node's own state alone (it is the same until
    # the node's `generation` changes) and `normalize_score` changes nothing, so the framework
    # may reuse a node's score from an earlier cycle with an equal key. None: no such promise.

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        """Rescale `scores` (one per node, in place) to 0..MAX_NODE_SCORE."""


def split_nodes(nodes: list[NodeInfo], passing: list[NodeInfo]
                ) -> tuple[list[NodeInfo], list[NodeInfo]]:
    """`filter_nodes`' answer from the nodes that pass (an ordered subsequence of `nodes`)."""
    if len(passing) == len(nodes):
        return passing, []
    keep = set(passing)
    return passing, [n for n in nodes if n not in keep]


def default_normalize_score(scores: list[int], reverse: bool) -> None:
    """helper.DefaultNormalizeScore: scale to the maximum, optionally reversed."""
    top = max(scores, default=0)
    if top == 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    if reverse:
        scores[:] = [MAX_NODE_SCORE - MAX_NODE_SCORE * s // top for s in scores]
    else:
        scores[:] = [MAX_NODE_SCORE * s // top for s in scores]


# ------------------------------------------------------------------------------ messages

NO_NODES_MESSAGE = "no nodes available to schedule pods"


def fit_error_message(num_nodes: int, statuses: dict[str, Status], *, absent: Status | None = None,
                      pre_filter_msg: str = "", post_filter_msg: str = "") -> str:
    """FitError.Error() of Kubernetes 1.32: `0/N nodes are available: <counts>.` where each
    reason is counted over nodes and the `"<count> <reason>"` strings are sorted as strings;
    nodes without a status of their own count under `absent`."""
    message = f"0/{num_nodes} nodes are available:"
    if pre_filter_msg:
        message += f" {pre_filter_msg}."
    else:
        counts: dict[str, int] = {}
        for status in statuses.values():
            for reason in status.reasons:
                counts[reason] = counts.get(reason, 0) + 1
        if absent is not None and len(statuses) < num_nodes:
            for reason in absent.reasons:
                counts[reason] = counts.get(reason, 0) + num_nodes - len(statuses)
        histogram = sorted(f"{n} {reason}" for reason, n in counts.items())
        if histogram:
            message += f" {', '.join(histogram)}."
    if post_filter_msg:
        message += f" {post_filter_msg}"
    return message
