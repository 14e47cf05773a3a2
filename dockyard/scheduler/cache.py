"""The scheduler's cache: one NodeInfo per node, fed by the node and pod informers.

A pod is counted on its node as soon as the scheduler decides (`assume`), before the binding
reaches the API, so the next cycles see the node as fuller; the informer's bound copy later
confirms it, and a failed binding `forget`s it. Scheduling cycles are synchronous on the event
loop, so the cache itself is the cycle's consistent snapshot: no copying per cycle. It also
indexes the placed pods by label and their pod affinity terms by signature, so InterPodAffinity
looks at the few pods and terms that can matter instead of every pod.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator

from dockyard.scheduler.framework import (
    PREFERRED_AFFINITY,
    PREFERRED_ANTI_AFFINITY,
    TERM_KINDS,
    AffinityTerm,
    NodeInfo,
    Obj,
    PodInfo,
    TermGroup,
)
from dockyard.scheduler.labels import Labels

log = logging.getLogger("dockyard.scheduler.cache")


def pod_key(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class Cache:
    """Implements the plugins' `Handle` over the cached nodes and pods."""

    def __init__(self, namespace_labels: Callable[[str], Labels] | None = None) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        self._order: list[NodeInfo] = []
        self._order_dirty = False
        self._pod_node: dict[str, str] = {}  # pod key -> node it is counted on
        self._assumed: set[str] = set()
        self._affinity_nodes: set[str] = set()
        self._anti_affinity_nodes: set[str] = set()
        # (label key, value) -> placed pods carrying it
        self._by_label: dict[tuple[str, str], dict[str, PodInfo]] = {}
        # term kind -> signature -> (a term, node -> [terms there, their summed weight])
        self._terms: dict[str, dict[Hashable, tuple[AffinityTerm, dict[NodeInfo, list[int]]]]] \
            = {kind: {} for kind in TERM_KINDS}
        # term kind -> label pair of a term's index (None: no index) -> signatures
        self._term_index: dict[str, dict[tuple[str, str] | None, dict[Hashable, None]]] = {
            kind: {} for kind in TERM_KINDS}
        self._namespace_labels = namespace_labels or (lambda _ns: {})

    # -- Handle ----------------------------------------------------------------------------

    def node_infos(self) -> list[NodeInfo]:
        if self._order_dirty:
            self._order = [n for n in self._nodes.values() if n.node is not None]
            self._order_dirty = False
        return self._order

    def node_info(self, name: str) -> NodeInfo | None:
        info = self._nodes.get(name)
        return info if info is not None and info.node is not None else None

    def nodes_with_affinity_pods(self) -> Iterable[NodeInfo]:
        return [n for name in self._affinity_nodes if (n := self.node_info(name))]

    def nodes_with_required_anti_affinity_pods(self) -> Iterable[NodeInfo]:
        return [n for name in self._anti_affinity_nodes if (n := self.node_info(name))]

    def candidate_pods(self, term: AffinityTerm) -> Iterator[tuple[PodInfo, NodeInfo]]:
        if term.index is None:
            for info in self.node_infos():
                for pi in info.pods.values():
                    yield pi, info
            return
        nodes, pod_node = self._nodes, self._pod_node
        for pair in term.index:
            for key, pi in (self._by_label.get(pair) or {}).items():
                info = nodes.get(pod_node.get(key, ""))
                if info is not None and info.node is not None:
                    yield pi, info

    def placed_terms(self, kind: str, pod: PodInfo) -> Iterator[TermGroup]:
        groups, index = self._terms[kind], self._term_index[kind]
        if not groups:
            return
        # A term matches only pods with one of its index pairs (of one key, so a pod reaches a
        # term once): look up the pod's labels, and the terms without an index (None).
        for pair in (None, *pod.labels.items()):
            for signature in index.get(pair) or ():
                term, per_node = groups[signature]
                yield term, self._term_nodes(per_node)

    @staticmethod
    def _term_nodes(per_node: dict[NodeInfo, list[int]]) -> Iterator[tuple[NodeInfo, int]]:
        # Lazy: a cycle resolves the nodes of the few terms that match its pod only.
        for info, amounts in per_node.items():
            if info.node is not None:
                yield info, amounts[1]

    def namespace_labels(self, namespace: str) -> Labels:
        return self._namespace_labels(namespace)

    # -- nodes -----------------------------------------------------------------------------

    def add_node(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        info = self._nodes.get(name)
        if info is None:
            self._nodes[name] = NodeInfo(node)
        else:
            was_listed = info.node is not None
            info.set_node(node)
            if was_listed:
                return
        self._order_dirty = True

    def remove_node(self, name: str) -> None:
        info = self._nodes.get(name)
        if info is None:
            return
        if info.pods:
            info.node = None  # keep counting its pods until they are deleted too
        else:
            del self._nodes[name]
        self._order_dirty = True

    @property
    def node_count(self) -> int:
        return len(self.node_infos())

    # -- pods ------------------------------------------------------------------------------

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    def assume(self, pod: PodInfo, node: str) -> None:
        """Count `pod` on `node` now; the binding is still on its way."""
        self._place(pod, node)
        self._assumed.add(pod.key)

    def forget(self, key: str) -> None:
        """The binding failed: stop counting an assumed pod."""
        if key in self._assumed:
            self._assumed.discard(key)
            self._unplace(key)

    def add_pod(self, pod: Obj) -> None:
        """A bound pod seen by the informer (confirms an assumed one)."""
        if is_terminal(pod):
            self.remove_pod(pod_key(pod))
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return
        key = pod_key(pod)
        self._assumed.discard(key)
        if self._pod_node.get(key) == node:
            # Most updates (the binding's own, status writes) change nothing the cache counts:
            # swap the new copy in without re-deriving or re-counting anything.
            info = self._nodes[node]
            old = info.pods.get(key)
            new = old.rebound(pod) if old is not None else None
            if new is not None:
                info.replace_pod(new)
                for pair in new.labels.items():
                    self._by_label[pair][key] = new
                return
        self._place(PodInfo(pod), node)

    def update_pod(self, pod: Obj) -> None:
        self.add_pod(pod)

    def remove_pod(self, key: str) -> None:
        self._assumed.discard(key)
        self._unplace(key)

    def pods_on(self, node: str) -> list[PodInfo]:
        info = self._nodes.get(node)
        return list(info.pods.values()) if info else []

    def _place(self, pod: PodInfo, node: str) -> None:
        if pod.key in self._pod_node:
            self._unplace(pod.key)
        info = self._nodes.get(node)
        if info is None:
            info = self._nodes[node] = NodeInfo(name=node)  # pods may arrive before the node
        info.add_pod(pod)
        self._pod_node[pod.key] = node
        self._index(pod, info, 1)
        self._track_affinity(info)

    def _unplace(self, key: str) -> None:
        node = self._pod_node.pop(key, None)
        if node is None:
            return
        info = self._nodes.get(node)
        if info is None:
            return
        pi = info.remove_pod(key)
        if pi is not None:
            self._index(pi, info, -1)
        self._track_affinity(info)
        if info.node is None and not info.pods:
            del self._nodes[node]

    def _index(self, pi: PodInfo, node: NodeInfo, sign: int) -> None:
        """Count `pi` (sign 1) or stop counting it (-1) in the label and term indexes."""
        key = pi.key
        for pair in pi.labels.items():
            if sign > 0:
                self._by_label.setdefault(pair, {})[key] = pi
            else:
                bucket = self._by_label.get(pair)
                if bucket is not None:
                    bucket.pop(key, None)
                    if not bucket:
                        del self._by_label[pair]
        if not pi.has_affinity:
            return
        for kind in TERM_KINDS:
            groups = self._terms[kind]
            weighted = kind in (PREFERRED_AFFINITY, PREFERRED_ANTI_AFFINITY)
            for term in getattr(pi, kind):
                group = groups.get(term.signature)
                if group is None:
                    if sign < 0:
                        continue
                    group = groups[term.signature] = (term, {})
                    self._index_term(kind, term, 1)
                per_node = group[1]
                amounts = per_node.setdefault(node, [0, 0])
                amounts[0] += sign
                amounts[1] += sign * (term.weight if weighted else 1)
                if amounts[0] <= 0:
                    del per_node[node]
                    if not per_node:
                        del groups[term.signature]
                        self._index_term(kind, group[0], -1)

    def _index_term(self, kind: str, term: AffinityTerm, sign: int) -> None:
        index = self._term_index[kind]
        for pair in (None,) if term.index is None else term.index:
            if sign > 0:
                index.setdefault(pair, {})[term.signature] = None
            else:
                signatures = index.get(pair)
                if signatures is not None:
                    signatures.pop(term.signature, None)
                    if not signatures:
                        del index[pair]

    def _track_affinity(self, info: NodeInfo) -> None:
        for members, names in ((info.affinity_pods, self._affinity_nodes),
                               (info.anti_affinity_pods, self._anti_affinity_nodes)):
            if members:
                names.add(info.name)
            else:
                names.discard(info.name)
