"""A profile: the plugins of one scheduler, run extension point by extension point
(framework/runtime/framework.go).

Filters stop at the first rejection and the status names the plugin (the queue uses it to
decide which cluster events may help); a plugin whose PreFilter/PreScore answered Skip is left
out of that cycle's Filter/Score. Scores are normalized per plugin, weighted and summed.
Over many nodes, filters run plugin by plugin with their batch fast paths (`filter_nodes`), and
the weighted sum of the plugins that give a `score_key` is memoized per node until it changes.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from dockyard.scheduler.framework import (
    Code,
    CycleState,
    FilterPlugin,
    Handle,
    NodeInfo,
    PodInfo,
    PostFilterPlugin,
    PostFilterResult,
    PreFilterPlugin,
    PreScorePlugin,
    ScorePlugin,
    Status,
)
from dockyard.scheduler.plugins.registry import DEFAULT_PLUGINS, DEFAULT_WEIGHTS, REGISTRY

FilterFn = Callable[[CycleState, PodInfo, NodeInfo], Status | None]
# Memo tokens, unique across frameworks (profiles may share a cache and so the nodes' memos).
_NEXT_TOKEN = itertools.count()
BatchFilterFn = Callable[[CycleState, PodInfo, list[NodeInfo]],
                         tuple[list[NodeInfo], list[NodeInfo]] | None]


class Framework:
    def __init__(self, handle: Handle, *, plugins: Sequence[str] = DEFAULT_PLUGINS,
                 weights: dict[str, int] | None = None,
                 post_filters: Sequence[PostFilterPlugin] = (),
                 args: dict[str, Any] | None = None) -> None:
        self.handle = handle
        weights = DEFAULT_WEIGHTS if weights is None else weights
        instances = [REGISTRY[name]((args or {}).get(name), handle) for name in plugins]
        self.pre_filters: list[PreFilterPlugin] = [p for p in instances
                                                   if hasattr(p, "pre_filter")]
        self.filters: list[FilterPlugin] = [p for p in instances if hasattr(p, "filter")]
        self.pre_scores: list[PreScorePlugin] = [p for p in instances if hasattr(p, "pre_score")]
        self.scores: list[tuple[ScorePlugin, int]] = [
            (p, weights.get(p.NAME, 1)) for p in instances if hasattr(p, "score")
            and weights.get(p.NAME, 1) > 0]
        self.batch_filters: dict[str, BatchFilterFn] = {
            p.NAME: p.filter_nodes for p in self.filters if hasattr(p, "filter_nodes")}
        self.post_filters = list(post_filters)
        self.filter_keys: dict[str, Callable[[CycleState, PodInfo], Hashable | None]] = {
            p.NAME: p.filter_key for p in self.filters if hasattr(p, "filter_key")}
        self._tokens: dict[Hashable, int] = {}  # see _token
        self.events: dict[str, frozenset[str]] = {p.NAME: p.EVENTS for p in instances}

    # -- filtering -------------------------------------------------------------------------

    def run_pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        for plugin in self.pre_filters:
            status = plugin.pre_filter(state, pod)
            if status is None:
                continue
            if status.code == Code.SKIP:
                state.skip_filter.add(plugin.NAME)
            elif status.code != Code.SUCCESS:
                return status.with_plugin(plugin.NAME)
        return None

    def active_filters(self, state: CycleState) -> list[tuple[str, FilterFn]]:
        return [(p.NAME, p.filter) for p in self.filters if p.NAME not in state.skip_filter]

    @staticmethod
    def run_filters(filters: list[tuple[str, FilterFn]], state: CycleState, pod: PodInfo,
                    node: NodeInfo) -> Status | None:
        for name, fn in filters:
            status = fn(state, pod, node)
            if status is not None:
                return status.with_plugin(name)
        return None

    def filter_nodes(self, filters: list[tuple[str, FilterFn]], state: CycleState,
                     pod: PodInfo, nodes: list[NodeInfo], statuses: dict[str, Status]
                     ) -> list[NodeInfo]:
        """The nodes passing every filter, in order; each other node's status (from the first
        filter rejecting it, as `run_filters` would report) goes into `statuses`.

        The leading filters that give a `filter_key` are passed at once by the nodes that
        passed them all under the same keys since they last changed (`NodeInfo.pass_token`);
        the rest runs filter by filter over the nodes still passing, through each plugin's
        fast path when it has one."""
        if state.filter_memo is None:
            state.filter_memo = self._filter_memo(filters, state, pod)
        keyed, token = state.filter_memo
        if not keyed:
            return self._run_filter_nodes(filters, state, pod, nodes, statuses)
        passing = nodes
        hits = [n.pass_token == token for n in nodes]
        if not all(hits):
            # Usually one or two nodes changed since: find them at C speed, not node by node.
            at: list[int] = []
            i = -1
            with contextlib.suppress(ValueError):
                while True:
                    i = hits.index(False, i + 1)
                    at.append(i)
            fresh = self._run_filter_nodes(filters[:keyed], state, pod, [nodes[i] for i in at],
                                           statuses)
            for node in fresh:
                node.pass_token = token
            if len(fresh) < len(at):
                passed = set(fresh)
                passing = list(nodes)
                for i in reversed(at):
                    if nodes[i] not in passed:
                        del passing[i]
        return self._run_filter_nodes(filters[keyed:], state, pod, passing, statuses)

    def _filter_memo(self, filters: list[tuple[str, FilterFn]], state: CycleState,
                     pod: PodInfo) -> tuple[int, int]:
        """How many leading `filters` give a `filter_key`, and the token for their keys."""
        keys: list[Hashable] = []
        for name, _fn in filters:
            filter_key = self.filter_keys.get(name)
            key = filter_key(state, pod) if filter_key is not None else None
            if key is None:
                break
            keys.append((name, key))
        return len(keys), self._token(tuple(keys)) if keys else -1

    def _token(self, key: Hashable) -> int:
        """A small int standing for `key` (it compares faster, per node); never reused."""
        token = self._tokens.get(key)
        if token is None:
            if len(self._tokens) >= 4096:
                self._tokens.clear()
            token = self._tokens[key] = next(_NEXT_TOKEN)
        return token

    def _run_filter_nodes(self, filters: list[tuple[str, FilterFn]], state: CycleState,
                          pod: PodInfo, nodes: list[NodeInfo], statuses: dict[str, Status]
                          ) -> list[NodeInfo]:
        passing = nodes
        for name, fn in filters:
            if not passing:
                break
            batch = self.batch_filters.get(name)
            split = batch(state, pod, passing) if batch is not None else None
            if split is None:
                kept: list[NodeInfo] = []
                for info in passing:
                    status = fn(state, pod, info)
                    if status is None:
                        kept.append(info)
                    else:
                        statuses[info.name] = status.with_plugin(name)
                passing = kept
                continue
            sure, rest = split
            revived = []
            for info in rest:
                status = fn(state, pod, info)
                if status is None:
                    revived.append(info)
                else:
                    statuses[info.name] = status.with_plugin(name)
            if revived:  # the fast path left out a node that passes: keep the nodes' order
                keep = set(sure).union(revived)
                sure = [n for n in passing if n in keep]
            passing = sure
        return passing

    def run_post_filter(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status],
                        num_nodes: int) -> tuple[PostFilterResult | None, Status | None]:
        result: PostFilterResult | None = None
        reasons: list[str] = []
        for plugin in self.post_filters:
            r, status = plugin.post_filter(state, pod, statuses, num_nodes)
            if status.is_success():
                return r, status
            if r is not None:
                result = r
            reasons += status.reasons
        if not reasons:
            return result, None
        return result, Status(Code.UNSCHEDULABLE, tuple(reasons))

    # -- scoring ---------------------------------------------------------------------------

    def run_scores(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        """The weighted sum of every active score plugin's normalized score, per node."""
        for plugin in self.pre_scores:
            status = plugin.pre_score(state, pod, nodes)
            if status is not None and status.code == Code.SKIP:
                state.skip_score.add(plugin.NAME)
        memoized: list[tuple[ScorePlugin, int]] = []
        keys: list[Hashable] = []
        others: list[tuple[ScorePlugin, int]] = []
        for plugin, weight in self.scores:
            if plugin.NAME in state.skip_score:
                continue
            score_key = getattr(plugin, "score_key", None)
            key = score_key(state, pod) if score_key is not None else None
            if key is None:
                others.append((plugin, weight))
            else:
                memoized.append((plugin, weight))
                keys.append((plugin.NAME, weight, key))
        totals = self._memoized_scores(state, pod, nodes, memoized, tuple(keys)) \
            if memoized else [0] * len(nodes)
        for plugin, weight in others:
            score = plugin.score
            scores = [score(state, pod, node) for node in nodes]
            plugin.normalize_score(state, pod, scores)
            if weight == 1:
                totals = [t + s for t, s in zip(totals, scores, strict=True)]
            else:
                totals = [t + s * weight for t, s in zip(totals, scores, strict=True)]
        return totals

    def _memoized_scores(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo],
                         plugins: list[tuple[ScorePlugin, int]], key: Hashable) -> list[int]:
        """The weighted sum of `plugins`' scores per node, reused from the node's memo when a
        cycle with the same `key` computed it since the node last changed."""
        token = self._token(key)
        totals = [n.memo_value if n.memo_token == token else None for n in nodes]
        if None in totals:
            for i, node in enumerate(nodes):
                if totals[i] is None:
                    total = 0
                    for plugin, weight in plugins:
                        total += plugin.score(state, pod, node) * weight
                    node.memo_token, node.memo_value = token, total
                    totals[i] = total
        return totals
