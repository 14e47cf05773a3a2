"""OCI runtime bundles (config.json, runtime-spec 1.0.2) for pod sandboxes and containers.

The defaults are Docker's and containerd's, so a pod behaves here as on a Kubernetes node:
Docker's capability set and RuntimeDefault seccomp profile, the same masked and read-only
/proc paths, a tmpfs /dev holding only the standard devices (the cgroup device controller
denies the rest), RLIMIT_NOFILE 1048576, and a private PID and mount namespace per
container joined to the pod's IPC, UTS and network namespaces (held by the pause process).
"""

from __future__ import annotations

import functools
import os
import resource
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.runtime import capabilities as caps_mod
from dockyard.runtime import seccomp, users
from dockyard.runtime.cri import ContainerConfig, Mount, RuntimeFailure, SandboxConfig, Security

Obj = dict[str, Any]

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOFILE_LIMIT = 1048576  # Docker's and containerd's RLIMIT_NOFILE
CAP_SYS_RESOURCE = 24
SANDBOX_OOM_SCORE_ADJ = -998  # Kubernetes' pause container (never the OOM victim)
SANDBOX_CPU_SHARES = 2

# Docker's defaults (moby oci/defaults.go; containerd has the same list).
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# The device nodes every container gets in its /dev: (path, major, minor).
DEFAULT_DEVICES = (
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7), ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
)
# The device cgroup's allow list after "deny all": the nodes above, mknod of any node
# (CAP_MKNOD is in the default set, but opening one still needs an allow rule), the
# pseudo-terminals, and /dev/ptmx.
ALLOWED_DEVICES: tuple[Obj, ...] = (
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for _, major, minor in DEFAULT_DEVICES),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # /dev/ptmx
)


@dataclass(frozen=True)
class PodNamespaces:
    """Namespaces a pod's containers join: paths like /proc/<pause pid>/ns/ipc."""

    network: str | None  # None: the host's network namespace
    ipc: str
    uts: str


def container_spec(config: ContainerConfig, *, rootfs: Path, namespaces: PodNamespaces,
                   cgroups_path: str) -> Obj:
    """The OCI config.json of one container (rootfs already mounted: /etc/passwd in it resolves
    the image's User)."""
    sec = config.security
    if not config.argv:
        raise RuntimeFailure("no command specified")
    try:
        user = users.resolve(rootfs, config.image.user, run_as_user=sec.run_as_user,
                             run_as_group=sec.run_as_group,
                             supplemental_groups=sec.supplemental_groups)
        caps = caps_mod.container_capabilities(sec.capabilities_add, sec.capabilities_drop,
                                               privileged=sec.privileged)
        profile = _seccomp(sec, caps)
    except (users.UserError, caps_mod.CapabilityError, seccomp.ProfileError) as err:
        raise RuntimeFailure(str(err)) from err

    env = _merge_env([f"PATH={DEFAULT_PATH}"]
                     + ([f"HOSTNAME={config.hostname}"] if config.hostname else []),
                     config.env)
    cwd = config.working_dir or "/"
    process: Obj = {
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid,
                 "additionalGids": list(user.additional_gids)},
        "args": list(config.argv),
        "env": env,
        "cwd": cwd if cwd.startswith("/") else "/" + cwd,
        "capabilities": _capabilities(caps),
        "rlimits": _rlimits(),
        "noNewPrivileges": sec.no_new_privileges,
        "oomScoreAdj": _oom_score_adj(config.resources.oom_score_adj),
    }
    ns: list[Obj] = [{"type": "pid"}, {"type": "mount"},
                     _namespace("ipc", namespaces.ipc), _namespace("uts", namespaces.uts)]
    if namespaces.network is not None:
        ns.append(_namespace("network", namespaces.network))
    if _cgroup_v2():
        ns.append({"type": "cgroup"})
    has_shm = any(_clean(m.container_path) == "/dev/shm" for m in config.mounts)
    linux: Obj = {
        "namespaces": ns,
        "cgroupsPath": cgroups_path,
        "resources": _resources(config, sec.privileged),
        "devices": _host_devices() if sec.privileged else _default_devices(),
    }
    if not sec.privileged and sec.masked_paths:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    if profile is not None:
        linux["seccomp"] = profile
    spec: Obj = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": str(rootfs), "readonly": sec.read_only_rootfs},
        "mounts": _base_mounts(privileged=sec.privileged, shm=not has_shm)
        + [_mount(m) for m in config.mounts],
        "annotations": dict(config.labels),
        "linux": linux,
    }
    if not namespaces.uts:  # a private UTS namespace; otherwise the pause process set it
        spec["hostname"] = config.hostname
    return spec


def sandbox_spec(config: SandboxConfig, *, rootfs: Path, argv: list[str],
                 cgroups_path: str) -> Obj:
    """The OCI config.json of a pod's pause container: new IPC, UTS, PID and mount namespaces,
    the prepared network namespace, read-only rootfs, no capabilities."""
    ns: list[Obj] = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    linux: Obj = {
        "namespaces": ns,
        "cgroupsPath": cgroups_path,
        "resources": {
            "devices": [{"allow": False, "access": "rwm"}, *ALLOWED_DEVICES],
            "cpu": {"shares": SANDBOX_CPU_SHARES},
        },
        "devices": _default_devices(),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "seccomp": seccomp.runtime_default([]),
    }
    if config.pids_limit is not None:
        linux["resources"]["pids"] = {"limit": config.pids_limit}
    if config.netns_path is not None:
        ns.append(_namespace("network", config.netns_path))
        # As containerd does for pods with their own network: binding ports below 1024 and
        # ping need no capability inside the pod's namespace.
        linux["sysctl"] = {"net.ipv4.ip_unprivileged_port_start": "0",
                           "net.ipv4.ping_group_range": "0 2147483647"}
    if _cgroup_v2():
        ns.append({"type": "cgroup"})
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(argv),
            "env": [f"PATH={DEFAULT_PATH}"],
            "cwd": "/",
            "capabilities": _capabilities([]),
            "rlimits": _rlimits(),
            "noNewPrivileges": True,
            "oomScoreAdj": _oom_score_adj(SANDBOX_OOM_SCORE_ADJ),
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": config.hostname,
        "mounts": _base_mounts(privileged=False, shm=True),
        "annotations": dict(config.labels),
        "linux": linux,
    }


def _rlimits() -> list[Obj]:
    """RLIMIT_NOFILE 1048576; an agent without CAP_SYS_RESOURCE (a sandboxed host) cannot
    raise a hard limit above its own, so its containers get the agent's limit instead."""
    nofile = NOFILE_LIMIT
    if not _has_sys_resource():
        nofile = min(nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    return [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]


def _oom_score_adj(wanted: int) -> int:
    """Lowering oom_score_adj below the agent's own needs CAP_SYS_RESOURCE; without it the
    container gets the lowest value it may have."""
    if _has_sys_resource():
        return wanted
    try:
        own = int(Path("/proc/self/oom_score_adj").read_text())
    except (OSError, ValueError):
        own = 0
    return max(wanted, own)


@functools.cache
def _has_sys_resource() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def _seccomp(sec: Security, caps: list[str]) -> Obj | None:
    if sec.privileged or sec.seccomp == "Unconfined":
        return None
    if sec.seccomp in ("RuntimeDefault", ""):
        return seccomp.runtime_default(caps)
    return seccomp.load(sec.seccomp, caps)


def _capabilities(caps: list[str]) -> Obj:
    # Inheritable stays empty (CVE-2022-24769); ambient too: a non-root process keeps no
    # capability across execve, as with Docker.
    return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps),
            "inheritable": [], "ambient": []}


def _resources(config: ContainerConfig, privileged: bool) -> Obj:
    res = config.resources
    out: Obj = {
        "devices": ([{"allow": True, "access": "rwm"}] if privileged
                    else [{"allow": False, "access": "rwm"}, *ALLOWED_DEVICES]),
        "cpu": {"shares": res.cpu_shares},
    }
    if res.cpu_quota is not None:
        out["cpu"]["quota"] = res.cpu_quota
        out["cpu"]["period"] = res.cpu_period
    if res.memory_limit is not None:
        out["memory"] = {"limit": res.memory_limit}
        if _swap_accounting():
            out["memory"]["swap"] = res.memory_limit  # memory+swap = memory: no swap
    if res.pids_limit is not None:
        out["pids"] = {"limit": res.pids_limit}
    return out


def _base_mounts(*, privileged: bool, shm: bool) -> list[Obj]:
    ro = [] if privileged else ["ro"]
    mounts: list[Obj] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    ]
    if shm:
        mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
    mounts += [
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", *ro]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", *ro]},
    ]
    return mounts


def _mount(m: Mount) -> Obj:
    if m.kind == "tmpfs":
        options = ["nosuid", "nodev", *m.options]
        if not any(o.startswith("mode=") for o in m.options):
            options.append("mode=1777")  # Docker's --tmpfs default: anyone may write
        if m.readonly:
            options.append("ro")
        return {"destination": m.container_path, "type": "tmpfs", "source": "tmpfs",
                "options": options}
    if m.kind != "bind":
        raise RuntimeFailure(f"unsupported mount kind {m.kind!r} for {m.container_path}")
    return {"destination": m.container_path, "type": "bind", "source": m.host_path,
            "options": ["rbind", "rprivate", "ro" if m.readonly else "rw", *m.options]}


def _merge_env(base: list[str], overrides: tuple[str, ...] | list[str]) -> list[str]:
    """Later values replace earlier ones of the same name, in place (containerd's WithEnv)."""
    merged: dict[str, str] = {}
    for entry in [*base, *overrides]:
        merged[entry.partition("=")[0]] = entry
    return list(merged.values())


def _namespace(kind: str, path: str) -> Obj:
    return {"type": kind, "path": path} if path else {"type": kind}


def _default_devices() -> list[Obj]:
    return [{"path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o666,
             "uid": 0, "gid": 0} for path, major, minor in DEFAULT_DEVICES]


def _host_devices() -> list[Obj]:
    """Every device node of the host, for privileged containers (as Docker/containerd)."""
    found: list[Obj] = []
    skip_dirs = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if not (dirpath == "/dev" and d in skip_dirs)]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path == "/dev/console":
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                found.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                              "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                              "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                              "gid": st.st_gid})
    return found


def _clean(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p)


def _cgroup_v2() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _swap_accounting() -> bool:
    if _cgroup_v2():
        return True
    return Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
