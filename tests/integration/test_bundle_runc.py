"""Bundles from runtime/bundle.py run by the real runc: what a container may and may not do.

Each test builds a busybox root filesystem in its tmp directory, writes config.json with
`container_spec`/`sandbox_spec`, and runs `runc --root <tmp> run`. Every runc container,
cgroup and network namespace carries the test's cluster prefix and is removed at the end,
even when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from dockyard.runtime import naming
from dockyard.runtime.bundle import PodNamespaces, container_spec, sandbox_spec
from dockyard.runtime.cri import (
    ContainerConfig,
    ImageSpec,
    Mount,
    Resources,
    SandboxConfig,
    Security,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not Path("/bin/busybox").exists(),
    reason="needs root, runc and busybox-static")

APPLETS = ("sh", "cat", "echo", "sleep", "ls", "ps", "mount", "umount", "id", "head", "tr",
           "insmod", "grep", "hostname", "touch", "wc", "readlink", "unshare", "mkfifo",
           "ip")
CGROUP_ROOT = Path("/sys/fs/cgroup")
HOST_NS = PodNamespaces(network=None, ipc="", uts="")
cgroup_v1 = pytest.mark.skipif(not (CGROUP_ROOT / "memory").is_dir(),
                               reason="reads cgroup v1 files")


@dataclass
class Ran:
    rc: int
    out: str
    err: str
    cid: str


@dataclass
class Host:
    """One test's runc state directory, rootfs and prefix."""

    tmp: Path
    prefix: str
    rootfs: Path
    netns: list[str] = field(default_factory=list)
    count: int = 0

    @property
    def state(self) -> Path:
        return self.tmp / "runc"

    def runc(self, *args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["runc", "--root", str(self.state), *args], timeout=timeout,
                              **kw)

    def new_id(self, name: str) -> str:
        self.count += 1
        return f"{self.prefix}-{name}{self.count}"

    def cgroups_path(self, cid: str) -> str:
        return f"{naming.cgroup_parent(self.prefix)}/{cid}"

    def cgroup_file(self, controller: str, cid: str, name: str) -> str:
        return (CGROUP_ROOT / controller / self.cgroups_path(cid).lstrip("/") / name
                ).read_text()

    def bundle(self, cid: str, spec: dict) -> Path:
        path = self.tmp / "bundles" / cid
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps(spec))
        return path

    def run(self, *argv: str, keep: bool = False, namespaces: PodNamespaces = HOST_NS,
            timeout: float = 30, **fields) -> Ran:
        """Run a container to its end (`runc run`); `keep` leaves its cgroup to inspect."""
        cid = self.new_id("c")
        config = replace(container(argv), **fields)
        spec = container_spec(config, rootfs=self.rootfs, namespaces=namespaces,
                              cgroups_path=self.cgroups_path(cid))
        bundle = self.bundle(cid, spec)
        proc = self.runc("run", *(["--keep"] if keep else []), "--bundle", str(bundle), cid,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout)
        return Ran(proc.returncode, proc.stdout, proc.stderr, cid)

    def cleanup(self) -> None:
        listed = self.runc("list", "-q", capture_output=True, text=True)
        for cid in listed.stdout.split():
            self.runc("delete", "-f", cid, capture_output=True)
        for name in self.netns:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        remove_cgroups(self.prefix)


def remove_cgroups(prefix: str) -> None:
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / prefix
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            for _ in range(50):  # the last processes of a killed container may be exiting
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def container(argv: tuple[str, ...]) -> ContainerConfig:
    return ContainerConfig(name="c", attempt=0,
                           image=ImageSpec(ref="busybox", image_id="sha256:test",
                                           layer_dirs=()),
                           argv=argv, hostname="pod-1")


def make_rootfs(root: Path) -> None:
    for d in ("bin", "etc", "tmp", "mnt", "proc", "dev", "sys", "root", "home/app"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc/group").write_text(
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    rootfs = tmp_path / "rootfs"
    make_rootfs(rootfs)
    h = Host(tmp=tmp_path, prefix=naming.cluster_prefix(tmp_path), rootfs=rootfs)
    try:
        yield h
    finally:
        h.cleanup()
        assert not any((hierarchy / h.prefix).exists() for hierarchy in CGROUP_ROOT.iterdir())
        assert not list(Path("/run/netns").glob(f"{h.prefix}-*"))


def cap_mask(status: str, field_name: str) -> int:
    line = next(x for x in status.splitlines() if x.startswith(field_name + ":"))
    return int(line.split()[1], 16)


# ---------------------------------------------------------------------------- isolation


def test_sees_only_its_own_processes(host: Host) -> None:
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > 5  # the host has many
    ran = host.run("ps", "-o", "pid,comm")
    assert ran.rc == 0, ran.err
    rows = [line.split() for line in ran.out.splitlines()[1:]]
    assert rows == [["1", "ps"]]


def test_cannot_mount(host: Host) -> None:
    ran = host.run("sh", "-c", "mount -t tmpfs none /mnt; echo rc=$?; cat /proc/mounts")
    assert "rc=1" in ran.out
    assert "permission denied" in ran.err
    assert " /mnt " not in ran.out
    # The same command in a privileged container works: the refusal is the confinement.
    ran = host.run("sh", "-c", "mount -t tmpfs none /mnt && grep ' /mnt ' /proc/mounts",
                   security=Security(privileged=True))
    assert ran.rc == 0 and "/mnt tmpfs" in ran.out, ran.err


def test_cannot_load_a_module(host: Host) -> None:
    ran = host.run("insmod", "/bin/busybox")
    assert ran.rc != 0
    assert "Operation not permitted" in ran.err  # seccomp's EPERM, before any kernel check


def test_cannot_create_namespaces(host: Host) -> None:
    """Creating a user namespace needs no capability; RuntimeDefault forbids it anyway."""
    ran = host.run("unshare", "-U", "true")
    assert ran.rc != 0 and "Operation not permitted" in ran.err
    ran = host.run("unshare", "-U", "true", security=Security(seccomp="Unconfined"))
    assert ran.rc == 0, ran.err


def test_masked_and_read_only_proc(host: Host) -> None:
    masked = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
              if Path(p).exists()]
    assert masked, "no masked /proc file exists on this host"
    script = "; ".join(f"echo {p}=$(head -c 4096 {p} | wc -c)" for p in masked)
    ran = host.run("sh", "-c", script + "; echo evil > /proc/sys/kernel/hostname; hostname")
    for path in masked:
        assert f"{path}=0" in ran.out, ran.out  # /dev/null in the container
    assert "Read-only file system" in ran.err
    assert ran.out.splitlines()[-1] == "pod-1"
    unmasked = host.run("sh", "-c", f"head -c 100 {masked[-1]} | wc -c",
                        security=Security(masked_paths=False))
    assert unmasked.out.strip() != "0"  # procMount Unmasked shows the real file


# ------------------------------------------------------------------------- capabilities


def test_default_capabilities(host: Host) -> None:
    ran = host.run("cat", "/proc/self/status")
    assert ran.rc == 0, ran.err
    assert cap_mask(ran.out, "CapEff") == 0xA80425FB  # Docker's default set
    assert cap_mask(ran.out, "CapBnd") == 0xA80425FB
    assert cap_mask(ran.out, "CapInh") == 0


def test_capability_add_and_drop(host: Host) -> None:
    ran = host.run("cat", "/proc/self/status",
                   security=Security(capabilities_add=("NET_ADMIN",)))
    assert cap_mask(ran.out, "CapEff") == 0xA80425FB | 1 << 12  # CAP_NET_ADMIN
    ran = host.run("cat", "/proc/self/status",
                   security=Security(capabilities_drop=("ALL",),
                                     capabilities_add=("NET_BIND_SERVICE",)))
    assert cap_mask(ran.out, "CapEff") == 1 << 10


def test_network_admin_really_works_with_net_admin(host: Host) -> None:
    """NET_ADMIN in the bounding set lets the container change its (own) network."""
    namespace = f"{host.prefix}-cap"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    host.netns.append(namespace)
    pod = PodNamespaces(network=f"/run/netns/{namespace}", ipc="", uts="")
    script = "ip link set lo up && ip -o link show lo"
    denied = host.run("sh", "-c", script, namespaces=pod)
    assert denied.rc != 0
    allowed = host.run("sh", "-c", script, namespaces=pod,
                       security=Security(capabilities_add=("CAP_NET_ADMIN",)))
    assert allowed.rc == 0 and "UP" in allowed.out, allowed.err


# -------------------------------------------------------------------------------- users


def test_run_as_user(host: Host) -> None:
    ran = host.run("sh", "-c", "id; echo HOME=$HOME; cat /proc/self/status",
                   security=Security(run_as_user=1000, supplemental_groups=(4000,)))
    assert ran.rc == 0, ran.err
    ids, _, groups = ran.out.splitlines()[0].partition(" groups=")
    assert ids == "uid=1000(app) gid=1000(app)"
    assert set(groups.split(",")) == {"1000(app)", "50(staff)", "4000"}  # kernel-sorted
    assert "HOME=/home/app" in ran.out
    assert cap_mask(ran.out, "CapEff") == 0  # a non-root process keeps no capability


def test_image_user_by_name(host: Host) -> None:
    image = ImageSpec(ref="busybox", image_id="sha256:test", layer_dirs=(), user="nobody")
    ran = host.run("id", "-u", image=image)
    assert ran.out.strip() == "65534", ran.err


def test_read_only_root_filesystem(host: Host) -> None:
    data = host.tmp / "data"
    data.mkdir()
    (data / "file").write_text("from the host\n")
    mounts = (Mount("/tmp", kind="tmpfs"), Mount("/data", str(data), readonly=True))
    ran = host.run("sh", "-c", "touch /newfile; echo root=$?; echo ok > /tmp/x && cat /tmp/x; "
                   "cat /data/file; echo no > /data/file; echo data=$?",
                   security=Security(read_only_rootfs=True), mounts=mounts)
    assert "root=1" in ran.out and "Read-only file system" in ran.err
    assert "ok\n" in ran.out and "from the host" in ran.out
    assert "data=1" in ran.out
    assert not (host.rootfs / "newfile").exists()
    assert (data / "file").read_text() == "from the host\n"


# ---------------------------------------------------------------------------- resources


@cgroup_v1
def test_memory_hog_is_oom_killed(host: Host) -> None:
    limit = 32 << 20
    ran = host.run("sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo done",
                   keep=True, resources=Resources(memory_limit=limit))
    assert ran.rc == 137, (ran.out, ran.err)  # SIGKILL
    assert "done" not in ran.out
    assert "oom_kill 1" in host.cgroup_file("memory", ran.cid, "memory.oom_control")
    assert int(host.cgroup_file("memory", ran.cid, "memory.limit_in_bytes")) == limit
    swap_limit = CGROUP_ROOT / "memory/memory.memsw.limit_in_bytes"
    if swap_limit.exists():  # no swap to escape to
        assert int(host.cgroup_file("memory", ran.cid, "memory.memsw.limit_in_bytes")) == limit


@cgroup_v1
def test_fork_bomb_is_held_by_the_pids_limit(host: Host) -> None:
    # The bomb runs in the background; the container's shell only uses builtins afterwards
    # (a fifo read as a timer), so it survives, and reports the peak number of its tasks.
    script = (
        "mkfifo /tmp/timer; exec 3<>/tmp/timer; "
        "bomb() { bomb | bomb & }; bomb 2>/dev/null; "
        "peak=0; i=0; while [ $i -lt 20 ]; do read -t 0.05 x <&3; "
        "read n < /sys/fs/cgroup/pids/pids.current; [ $n -gt $peak ] && peak=$n; "
        "i=$((i+1)); done; echo peak=$peak; echo survived")
    ran = host.run("sh", "-c", script, keep=True,
                   resources=Resources(pids_limit=40, cpu_quota=50_000))
    assert ran.rc == 0 and "survived" in ran.out, (ran.out, ran.err)
    assert host.cgroup_file("pids", ran.cid, "pids.max").strip() == "40"
    refused = int(host.cgroup_file("pids", ran.cid, "pids.events").split()[1])
    assert refused > 0  # forks were refused at the limit
    assert int(ran.out.split("peak=")[1].split()[0]) <= 40
    assert host.cgroup_file("cpu", ran.cid, "cpu.cfs_quota_us").strip() == "50000"


# ------------------------------------------------------------------------------ the pod


def test_container_joins_the_pod_sandbox(host: Host) -> None:
    namespace = f"{host.prefix}-pod"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    host.netns.append(namespace)
    sandbox = SandboxConfig(pod_uid="uid-1", pod_name="web-1", namespace="default",
                            hostname="web-1", netns_path=f"/run/netns/{namespace}",
                            pids_limit=100)
    sid = host.new_id("pause")
    spec = sandbox_spec(sandbox, rootfs=host.rootfs, argv=["/bin/sleep", "600"],
                        cgroups_path=host.cgroups_path(sid))
    bundle = host.bundle(sid, spec)
    log = host.tmp / "pause.log"
    with log.open("w") as out:  # the container keeps these: a pipe would never close
        started = host.runc("run", "-d", "--bundle", str(bundle), sid,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    assert started.returncode == 0, log.read_text()
    state = json.loads(host.runc("state", sid, capture_output=True, text=True).stdout)
    pid = state["pid"]
    pause_status = Path(f"/proc/{pid}/status").read_text()
    assert cap_mask(pause_status, "CapEff") == 0 and cap_mask(pause_status, "CapBnd") == 0

    pod = PodNamespaces(network=f"/run/netns/{namespace}", ipc=f"/proc/{pid}/ns/ipc",
                        uts=f"/proc/{pid}/ns/uts")
    ran = host.run("sh", "-c", "hostname; for n in ipc uts net pid; do readlink "
                   "/proc/self/ns/$n; done; cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
                   namespaces=pod)
    assert ran.rc == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0] == "web-1"  # the pod's hostname, set by the sandbox
    for line, kind in zip(lines[1:4], ("ipc", "uts", "net"), strict=True):
        assert line == os.readlink(f"/proc/{pid}/ns/{kind}")
    assert lines[3] != os.readlink("/proc/self/ns/net")  # not the host's network
    assert lines[4] != os.readlink(f"/proc/{pid}/ns/pid")  # its own PID namespace
    assert lines[5] == "0"  # the sandbox's sysctl, seen by the pod's containers
    # The pause container's root filesystem is read-only.
    ran = host.runc("exec", sid, "touch", "/x", capture_output=True, text=True)
    assert ran.returncode != 0 and "Read-only file system" in ran.stderr
