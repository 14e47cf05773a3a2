"""The plugin registry (plugins/registry.go) and the default profile's plugins and weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dockyard.scheduler.framework import Handle
from dockyard.scheduler.plugins import (
    balanced_allocation,
    inter_pod_affinity,
    node_affinity,
    node_name,
    node_resources_fit,
    node_unschedulable,
    pod_topology_spread,
    taint_toleration,
)

Factory = Callable[[Any, Handle], Any]

REGISTRY: dict[str, Factory] = {
    module.NAME: module.new
    for module in (node_unschedulable, node_name, taint_toleration, node_affinity,
                   node_resources_fit, pod_topology_spread, inter_pod_affinity,
                   balanced_allocation)
}

# The default profile, in Kubernetes 1.32's order (filters stop at the first rejection, so
# the order decides which reason a node reports) with its score weights.
DEFAULT_PLUGINS: tuple[str, ...] = (
    node_unschedulable.NAME, node_name.NAME, taint_toleration.NAME, node_affinity.NAME,
    node_resources_fit.NAME, pod_topology_spread.NAME, inter_pod_affinity.NAME,
    balanced_allocation.NAME,
)
DEFAULT_WEIGHTS: dict[str, int] = {
    taint_toleration.NAME: 3, node_affinity.NAME: 2, pod_topology_spread.NAME: 2,
    inter_pod_affinity.NAME: 2, node_resources_fit.NAME: 1, balanced_allocation.NAME: 1,
}
