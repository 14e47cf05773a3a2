"""What a cluster left on the host: every kind of thing dockyard creates, found by its prefix.

Tests that run real containers call `leftovers()` after `dockyard cleanup` and expect nothing.
"""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _lines(*argv: str) -> list[str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.splitlines()


def _cgroup_dirs(prefix: str) -> list[str]:
    found = []
    if not CGROUP_ROOT.exists():
        return found
    for hierarchy in [CGROUP_ROOT, *CGROUP_ROOT.iterdir()]:
        if not hierarchy.is_dir():
            continue
        try:
            for entry in hierarchy.iterdir():
                if entry.name.startswith(prefix):
                    found.append(str(entry))
        except OSError:
            continue
    return found


def leftovers(prefix: str, data_dir: Path) -> list[str]:
    """Everything on the host that carries the cluster's prefix or lives in its data dir."""
    found: list[str] = []
    found += [f"netns {n}" for n in _lines("ip", "netns", "list") if n.startswith(prefix)]
    found += [f"link {line.split(':')[1].strip()}" for line in _lines("ip", "-o", "link")
              if prefix in line]
    real = os.path.realpath(data_dir)
    with open("/proc/self/mountinfo") as mounts:
        found += [f"mount {line.split()[4]}" for line in mounts
                  if line.split()[4].startswith(real) or prefix in line.split()[4]]
    found += [f"cgroup {d}" for d in _cgroup_dirs(prefix)]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if (prefix in cmdline or real in cmdline) and int(pid) != os.getpid():
            found.append(f"process {pid}: {cmdline[:120]}")
    found += [f"nft {line}" for line in _lines("nft", "list", "tables") if prefix in line]
    return found


def free_pod_cidr() -> str:
    """A /24 in 10.200.0.0/13 that no route on the host overlaps (parallel tests differ)."""
    used = []
    for line in _lines("ip", "-4", "route", "show", "table", "all"):
        word = line.split()[0] if line.split() else ""
        try:
            used.append(ipaddress.ip_network(word if "/" in word else f"{word}/32",
                                             strict=False))
        except ValueError:
            continue
    space = ipaddress.ip_network("10.200.0.0/13")
    for _ in range(200):
        candidate = list(space.subnets(new_prefix=24))[random.randrange(2048)]
        if not any(candidate.overlaps(net) for net in used if net.prefixlen > 0):
            return str(candidate)
    raise RuntimeError("no free /24 for pods in 10.200.0.0/13")
