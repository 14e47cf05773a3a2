"""Linux capabilities of a container: Docker's default set, tweaked by add/drop.

Kubernetes passes `securityContext.capabilities` through to the runtime; what a container
gets without one is the runtime's default. dockyard uses Docker's default set (the one
containerd also uses), and Docker's rules for combining it with add/drop
(moby's TweakCapabilities): names are case-insensitive, with or without `CAP_`; `ALL` in add
means every capability minus the dropped ones; `ALL` in drop means only the added ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Every capability by number (include/uapi/linux/capability.h), CAP_CHOWN = 0.
KNOWN_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

# Docker's (and containerd's) default capability set, in Docker's order.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

ALL = "ALL"


class CapabilityError(ValueError):
    """A capability name the kernel does not define (moby: `unknown capability: "X"`)."""


def normalize(name: str) -> str:
    """`net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `all` → `ALL`."""
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in KNOWN_CAPABILITIES:
        raise CapabilityError(f'unknown capability: "{upper}"')
    return upper


def host_capabilities() -> tuple[str, ...]:
    """What "all capabilities" means here: the ones this agent itself holds (a container
    cannot get a capability its runtime lacks), as containerd's cap.Current()."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                return tuple(c for i, c in enumerate(KNOWN_CAPABILITIES) if mask >> i & 1)
    except (OSError, ValueError):
        pass
    return KNOWN_CAPABILITIES


def container_capabilities(add: Iterable[str] = (), drop: Iterable[str] = (), *,
                           privileged: bool = False) -> list[str]:
    """The capability set of a container (bounding = permitted = effective)."""
    if privileged:
        return list(host_capabilities())
    adds = _dedupe(normalize(c) for c in add)
    drops = _dedupe(normalize(c) for c in drop)
    if not adds and not drops:
        return list(DEFAULT_CAPABILITIES)
    if ALL in adds:
        return [c for c in host_capabilities() if c not in drops]
    if ALL in drops:
        return adds
    kept = [c for c in DEFAULT_CAPABILITIES if c not in drops]
    return _dedupe([*kept, *adds])


def _dedupe(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
