"""A profile: the plugins of one scheduler, run extension point by extension point
(framework/runtime/framework.go).

Filters stop at the first rejection and the status names the plugin (the queue uses it to
decide which cluster events may help); a plugin whose PreFilter/PreScore answered Skip is left
out of that cycle's Filter/Score. Scores are normalized per plugin, weighted and summed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
        self.post_filters = list(post_filters)
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
        totals = [0] * len(nodes)
        for plugin, weight in self.scores:
            if plugin.NAME in state.skip_score:
                continue
            score = plugin.score
            scores = [score(state, pod, node) for node in nodes]
            plugin.normalize_score(state, pod, scores)
            if weight == 1:
                totals = [t + s for t, s in zip(totals, scores, strict=True)]
            else:
                totals = [t + s * weight for t, s in zip(totals, scores, strict=True)]
        return totals
