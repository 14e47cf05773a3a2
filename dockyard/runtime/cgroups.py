"""cgroup hierarchies: where a container's cgroup lives for each controller (v1 per
controller, v2 unified, or both), its stats and OOM file, and removal after the container."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from dockyard.runtime.cri import ContainerStats, RuntimeFailure


class Cgroups:
    """The cgroup hierarchies of this host (v1 per controller, v2 unified, or both)."""

    def __init__(self, mountinfo: str | None = None) -> None:
        if mountinfo is None:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        self.mounts: list[tuple[Path, str, set[str]]] = []  # (mount point, fstype, options)
        for line in mountinfo.splitlines():
            pre, _, post = line.partition(" - ")
            fstype, _, options = (post.split() + ["", "", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                self.mounts.append((Path(pre.split()[4]), fstype, set(options.split(","))))
        self.v1 = {opt: point for point, fstype, opts in self.mounts if fstype == "cgroup"
                   for opt in opts}
        self.v2 = next((p for p, fstype, _ in self.mounts if fstype == "cgroup2"), None)

    def dir(self, controller: str, cgroups_path: str) -> Path | None:
        """The directory of a cgroup for one controller (v1 if it is there, else v2)."""
        rel = cgroups_path.lstrip("/")
        if controller in self.v1:
            return self.v1[controller] / rel
        if self.v2 is not None and controller in self._v2_controllers():
            return self.v2 / rel
        return None

    def _v2_controllers(self) -> set[str]:
        assert self.v2 is not None
        try:
            return set((self.v2 / "cgroup.controllers").read_text().split()) | {"cpu"}
        except OSError:
            return set()

    def oom_file(self, cgroups_path: str) -> Path:
        d = self.dir("memory", cgroups_path)
        if d is None:
            return Path("/nonexistent")
        return d / ("memory.oom_control" if "memory" in self.v1 else "memory.events")

    def stats(self, cgroups_path: str) -> ContainerStats:
        mem = self.dir("memory", cgroups_path)
        pids = self.dir("pids", cgroups_path)
        if "cpuacct" in self.v1:
            cpu_ns = _int(self.v1["cpuacct"] / cgroups_path.lstrip("/") / "cpuacct.usage")
        else:
            cpu = self.dir("cpu", cgroups_path)
            cpu_ns = _keyed(cpu / "cpu.stat", "usage_usec") * 1000 if cpu else 0
        usage = inactive = 0
        if mem is not None:
            v1 = "memory" in self.v1
            usage = _int(mem / ("memory.usage_in_bytes" if v1 else "memory.current"))
            inactive = _keyed(mem / "memory.stat", "total_inactive_file" if v1 else
                              "inactive_file")
        return ContainerStats(cpu_usage_ns=cpu_ns, memory_usage_bytes=usage,
                              memory_working_set_bytes=max(0, usage - inactive),
                              pids=_int(pids / "pids.current") if pids else 0)

    def remove(self, cgroups_path: str) -> None:
        """rmdir the cgroup and everything below it in every hierarchy (empty cgroups only:
        the kernel refuses while a process is in one)."""
        rel = cgroups_path.lstrip("/")
        if not rel:
            return
        for point, _, _ in self.mounts:
            top = point / rel
            if not top.is_dir():
                continue
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(FileNotFoundError):
                    _rmdir_cgroup(Path(dirpath))


def _rmdir_cgroup(path: Path) -> None:
    for attempt in range(20):  # the last task may take a moment to leave after it exited
        try:
            path.rmdir()
            return
        except OSError as e:
            if e.errno != errno.EBUSY or attempt == 19:
                if e.errno == errno.ENOENT:
                    return
                raise RuntimeFailure(f"cannot remove cgroup {path}: {e.strerror}") from e
            time.sleep(0.01)


def _int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _keyed(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    except (OSError, ValueError):
        pass
    return 0
