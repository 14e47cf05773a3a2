"""Raw runc baseline: the floor under any pod start on this machine.

Each container gets what a pod's container gets from dockyard, minus the pod: an overlay of
the busybox layer (its own upper directory), a `runc spec` config running `sleep 3600`, and
`runc run --detach`. Timed from before the overlay mount to `runc state` saying running.
Runs are sequential, started on the same fixed schedule as the pods; all state lives in a
private `--root`, ids and cgroups carry the benchmark's prefix, and everything is removed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from podstart_host import CGROUP_ROOT

RUNC = shutil.which("runc") or "/usr/sbin/runc"


def _template(work: Path) -> dict:
    subprocess.run([RUNC, "spec"], cwd=work, check=True)
    spec = json.loads((work / "config.json").read_text())
    (work / "config.json").unlink()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sleep", "3600"]
    spec["root"] = {"path": "rootfs", "readonly": False}
    return spec


class RuncBench:
    def __init__(self, work: Path, prefix: str, layer_dirs: list[Path]) -> None:
        self.work = work
        self.root = work / "state"  # runc --root: this run's containers only
        self.prefix = prefix
        self.lower = ":".join(str(d) for d in reversed(layer_dirs))
        self.ids: list[str] = []
        self.spec: dict = {}

    def _runc(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNC, "--root", str(self.root), *args], text=True,
                              capture_output=True, **kw)  # type: ignore[call-overload]

    def start_one(self, i: int) -> tuple[float, float]:
        """(seconds to running, seconds of the `runc run --detach` command alone)."""
        cid = f"{self.prefix}-r{i}"
        bundle = self.work / cid
        for sub in ("upper", "work", "rootfs"):
            (bundle / sub).mkdir(parents=True)
        spec = json.loads(json.dumps(self.spec))
        spec["hostname"] = cid
        spec["linux"]["cgroupsPath"] = f"/{self.prefix}/{cid}"
        (bundle / "config.json").write_text(json.dumps(spec))
        self.ids.append(cid)
        t0 = time.perf_counter()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.lower},upperdir={bundle / 'upper'},"
                        f"workdir={bundle / 'work'}", str(bundle / "rootfs")], check=True)
        t1 = time.perf_counter()
        with open(bundle / "runc.log", "wb") as log:
            # The container inherits these descriptors: a file, never a pipe we would wait on.
            rc = subprocess.run([RUNC, "--root", str(self.root), "run", "--detach", "--bundle",
                                 str(bundle), cid], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log).returncode
        t2 = time.perf_counter()
        if rc != 0:
            raise RuntimeError(f"runc run {cid} failed: {(bundle / 'runc.log').read_text()}")
        while True:
            state = json.loads(self._runc("state", cid, check=True).stdout)["status"]
            if state == "running":
                return time.perf_counter() - t0, t2 - t1
            if time.perf_counter() - t0 > 30:
                raise RuntimeError(f"{cid} is {state} after 30 s")
            time.sleep(0.001)

    def run(self, count: int, rate: float) -> dict:
        self.root.mkdir(parents=True)
        self.spec = _template(self.work)
        self.start_one(-1)  # warm-up: page cache, runc binary, cgroup parent
        starts, commands = [], []
        begin = time.perf_counter()
        for i in range(count):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            total, command = self.start_one(i)
            starts.append(total)
            commands.append(command)
        return {"start": starts, "command": commands}

    def cleanup(self) -> float:
        """Kill and delete every container, unmount, remove cgroups; seconds it took."""
        t0 = time.perf_counter()
        listed = self._runc("list", "-q").stdout.split() if self.root.exists() else []
        for cid in set(listed) | set(self.ids):
            self._runc("delete", "--force", cid)
            rootfs = self.work / cid / "rootfs"
            if rootfs.is_mount():
                subprocess.run(["umount", str(rootfs)], check=False)
        seconds = time.perf_counter() - t0
        for controller in CGROUP_ROOT.iterdir():
            parent = controller / self.prefix
            if parent.is_dir():
                for child in parent.iterdir():
                    if child.is_dir():
                        child.rmdir()
                parent.rmdir()
        return seconds
