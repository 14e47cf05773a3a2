"""Container stats and OOM files on cgroup v1 (this machine) and v2 (most others).

The hierarchies are directories laid out as the kernel does, named by a mountinfo text, so
both layouts are checked on any host; the real v1 files are read in the runc tests.
"""

from __future__ import annotations

from pathlib import Path

from dockyard.runtime.cgroups import Cgroups

CG = "/dyabc123/pod-1/dyabc123-c1"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_stats_and_oom_file(tmp_path: Path) -> None:
    root = tmp_path / "unified"
    _write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    leaf = root / CG.lstrip("/")
    _write(leaf / "cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n")
    _write(leaf / "memory.current", "10485760\n")
    _write(leaf / "memory.stat", "anon 4096\nfile 8192\ninactive_file 4194304\n")
    _write(leaf / "pids.current", "3\n")
    mountinfo = f"41 31 0:38 / {root} rw,relatime - cgroup2 cgroup2 rw\n"
    cg = Cgroups(mountinfo)
    st = cg.stats(CG)
    assert (st.cpu_usage_ns, st.memory_usage_bytes, st.memory_working_set_bytes, st.pids) == (
        2_500_000, 10485760, 10485760 - 4194304, 3)
    assert cg.oom_file(CG) == leaf / "memory.events"


def test_cgroup_v1_stats_and_oom_file(tmp_path: Path) -> None:
    lines = []
    for i, controller in enumerate(("cpu,cpuacct", "memory", "pids", "name=systemd")):
        point = tmp_path / controller
        point.mkdir()
        lines.append(f"{32 + i} 31 0:{29 + i} / {point} rw,relatime - cgroup cgroup "
                     f"rw,{controller}")
    lines.append(f"50 31 0:60 / {tmp_path / 'unified'} rw - cgroup2 cgroup2 rw")
    lines.append("60 1 8:1 / / rw - ext4 /dev/vda rw")
    rel = CG.lstrip("/")
    _write(tmp_path / "cpu,cpuacct" / rel / "cpuacct.usage", "123456789\n")
    _write(tmp_path / "memory" / rel / "memory.usage_in_bytes", "2097152\n")
    _write(tmp_path / "memory" / rel / "memory.stat",
           "cache 0\ninactive_file 1\ntotal_inactive_file 1048576\n")
    _write(tmp_path / "pids" / rel / "pids.current", "1\n")
    cg = Cgroups("\n".join(lines))
    st = cg.stats(CG)
    assert (st.cpu_usage_ns, st.memory_usage_bytes, st.memory_working_set_bytes, st.pids) == (
        123456789, 2097152, 1048576, 1)
    assert cg.oom_file(CG) == tmp_path / "memory" / rel / "memory.oom_control"


def test_remove_takes_the_whole_subtree_in_every_hierarchy(tmp_path: Path) -> None:
    a, b = tmp_path / "memory", tmp_path / "unified"
    for point in (a, b):
        (point / "dyabc123" / "pod-1" / "c1").mkdir(parents=True)
        (point / "dyabc123" / "pod-2").mkdir(parents=True)
        (point / "other").mkdir()
    cg = Cgroups(f"1 0 0:1 / {a} rw - cgroup cgroup rw,memory\n"
                 f"2 0 0:2 / {b} rw - cgroup2 cgroup2 rw\n")
    cg.remove("/dyabc123/pod-1")
    assert not (a / "dyabc123" / "pod-1").exists() and (a / "dyabc123" / "pod-2").exists()
    cg.remove("/dyabc123")
    assert sorted(p.name for p in a.iterdir()) == ["other"]
    assert sorted(p.name for p in b.iterdir()) == ["other"]
    cg.remove("/dyabc123")  # idempotent
