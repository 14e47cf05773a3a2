"""The scheduler framework: the one interface between the scheduling loop and its plugins.

As in Kubernetes' `framework/interface.go`: each extension point is a tiny Protocol (a name
plus one method); a plugin answers with a `Status` (code + reasons), never a bare boolean, and
None means success; data computed in PreFilter/PreScore travels to Filter/Score in the
per-cycle `CycleState`. `PodInfo`/`NodeInfo` are the pre-parsed views plugins read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Protocol

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
    """A PodAffinityTerm with its selectors compiled (framework.AffinityTerm)."""

    namespaces: frozenset[str]
    namespace_selector: Matcher | None
    selector: Matcher
    topology_key: str
    weight: int = 0

    def matches(self, pod: PodInfo, ns_labels: Callable[[str], Labels]) -> bool:
        if pod.namespace in self.namespaces or (
                self.namespace_selector is not None
                and self.namespace_selector(ns_labels(pod.namespace))):
            return self.selector(pod.labels)
        return False


def _affinity_terms(namespace: str, terms: Iterable[Obj], weighted: bool) -> list[AffinityTerm]:
    out = []
    for raw in terms:
        term = raw.get("podAffinityTerm") or {} if weighted else raw
        ns_selector = term.get("namespaceSelector")
        namespaces = frozenset(term.get("namespaces") or ())
        if not namespaces and ns_selector is None:
            namespaces = frozenset((namespace,))
        out.append(AffinityTerm(
            namespaces,
            label_selector(ns_selector) if ns_selector is not None else None,
            label_selector(term.get("labelSelector")),
            term.get("topologyKey") or "",
            int(raw.get("weight") or 0) if weighted else 0,
        ))
    return out


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

    @property
    def terminating(self) -> bool:
        return bool((self.pod.get("metadata") or {}).get("deletionTimestamp"))


# ------------------------------------------------------------------------------ nodes


class NodeInfo:
    """A node, the pods bound or assumed on it, and what they request in total."""

    __slots__ = ("node", "name", "labels", "taints", "unschedulable", "allocatable",
                 "requested", "non_zero_cpu", "non_zero_memory", "pods", "affinity_pods",
                 "anti_affinity_pods", "generation")

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
        self.generation += 1

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

    def _account(self, pi: PodInfo, sign: int) -> None:
        req, r = self.requested, pi.requests
        req.milli_cpu += sign * r.milli_cpu
        req.memory += sign * r.memory
        req.ephemeral_storage += sign * r.ephemeral_storage
        for name, amount in r.scalar.items():
            req.scalar[name] = req.scalar.get(name, 0) + sign * amount
        self.non_zero_cpu += sign * pi.non_zero_cpu
        self.non_zero_memory += sign * pi.non_zero_memory
        self.generation += 1

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
        return other


# ------------------------------------------------------------------------------ plugins


class Handle(Protocol):
    """What plugins may read besides the pod and node at hand (framework.Handle)."""

    def node_infos(self) -> Sequence[NodeInfo]:
        """Every node with a Node object, in the cache's order."""

    def node_info(self, name: str) -> NodeInfo | None: ...

    def nodes_with_affinity_pods(self) -> Iterable[NodeInfo]: ...

    def nodes_with_required_anti_affinity_pods(self) -> Iterable[NodeInfo]: ...

    def namespace_labels(self, namespace: str) -> Labels: ...


class Plugin(Protocol):
    NAME: ClassVar[str]
    # Cluster events after which a pod this plugin rejected may fit (queue moves it then):
    # NodeAdd, NodeUpdate, NodeDelete, AssignedPodAdd, AssignedPodUpdate, AssignedPodDelete.
    EVENTS: ClassVar[frozenset[str]]


class PreFilterPlugin(Plugin, Protocol):
    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None: ...


class FilterPlugin(Plugin, Protocol):
    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None: ...


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

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        """Rescale `scores` (one per node, in place) to 0..MAX_NODE_SCORE."""


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
