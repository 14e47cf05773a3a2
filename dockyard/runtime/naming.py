"""Names of what a cluster creates on its host, all carrying one per-cluster prefix.

The prefix is derived from the data directory, so two clusters on one machine (parallel tests)
never share a bridge, a network namespace, a cgroup or a runc container, and
`dockyard cleanup --data-dir D` can find everything cluster D made. Linux interface names are at
most 15 characters: the prefix is 8, leaving room for a suffix.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PREFIX_LENGTH = 8


def cluster_prefix(data_dir: Path | str) -> str:
    """`dy` and 6 hex digits of the data directory's real path, e.g. `dy3fa2c1`."""
    real = os.path.realpath(os.fspath(data_dir))
    return "dy" + hashlib.sha256(real.encode()).hexdigest()[:PREFIX_LENGTH - 2]


def bridge_name(prefix: str) -> str:
    """The node-local pod bridge (`<prefix>br`, 10 characters)."""
    return f"{prefix}br"


def netns_name(prefix: str, pod_uid: str) -> str:
    """A pod's network namespace under /run/netns."""
    return f"{prefix}-{pod_uid}"


def sandbox_id(prefix: str, pod_uid: str) -> str:
    """The runc id of a pod's pause container."""
    return f"{prefix}-{pod_uid}-pause"


def container_id(prefix: str, pod_uid: str, name: str, attempt: int) -> str:
    """The runc id of one attempt of a container: unique, readable in `runc list`."""
    digest = hashlib.sha256(f"{pod_uid}/{name}/{attempt}".encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"


def cgroup_parent(prefix: str) -> str:
    """Every container's cgroup lives under this one (`/<prefix>` in each hierarchy)."""
    return f"/{prefix}"
