"""Unit tests for OCI bundle generation (runtime/bundle.py) and its parts: capabilities,
the RuntimeDefault seccomp profile, and resolving the container's user in its rootfs.

Real runc runs these specs in tests/integration/test_bundle_runc.py; here the exact fields.
"""

from __future__ import annotations

import json
import resource
from dataclasses import replace
from pathlib import Path

import pytest

from dockyard.runtime import bundle, capabilities, seccomp, users
from dockyard.runtime.bundle import PodNamespaces, container_spec, sandbox_spec
from dockyard.runtime.cri import (
    ContainerConfig,
    ImageSpec,
    Mount,
    Resources,
    RuntimeFailure,
    SandboxConfig,
    Security,
)

DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
               "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
               "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
POD_NS = PodNamespaces(network="/run/netns/dyabc-uid", ipc="/proc/42/ns/ipc",
                       uts="/proc/42/ns/uts")


@pytest.fixture(autouse=True)
def fixed_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The specs must not depend on the machine the unit tests run on."""
    monkeypatch.setattr(bundle, "_has_sys_resource", lambda: True)
    monkeypatch.setattr(bundle, "_cgroup_v2", lambda: False)
    monkeypatch.setattr(bundle, "_swap_accounting", lambda: True)
    monkeypatch.setattr(capabilities, "host_capabilities",
                        lambda: capabilities.KNOWN_CAPABILITIES)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n")
    (root / "etc/group").write_text(
        "root:x:0:\nwheel:x:10:root\napp:x:1000:\nstaff:x:50:app,other\n"
        "nogroup:x:65534:\n")
    return root


def config(**kw: object) -> ContainerConfig:
    base = ContainerConfig(
        name="web", attempt=0,
        image=ImageSpec(ref="busybox", image_id="sha256:abc", layer_dirs=()),
        argv=("/bin/sh", "-c", "echo hi"), hostname="web-1",
        labels={"io.kubernetes.pod.name": "web-1"})
    return replace(base, **kw)  # type: ignore[arg-type]


def spec_of(rootfs: Path, cfg: ContainerConfig | None = None,
            namespaces: PodNamespaces = POD_NS) -> dict:
    return container_spec(cfg or config(), rootfs=rootfs, namespaces=namespaces,
                          cgroups_path="/dyabc/dyabc-c1")


def names_allowed(profile: dict) -> set[str]:
    return {n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
            and not rule.get("args") for n in rule["names"]}


# ---------------------------------------------------------------------------- container


def test_process_defaults(rootfs: Path) -> None:
    spec = spec_of(rootfs, config(env=("PATH=/bin", "A=1")))
    process = spec["process"]
    assert spec["ociVersion"] == "1.0.2"
    assert process["args"] == ["/bin/sh", "-c", "echo hi"]
    # The image/pod PATH replaces the default in place; HOSTNAME as containerd sets it.
    assert process["env"] == ["PATH=/bin", "HOSTNAME=web-1", "A=1"]
    assert process["cwd"] == "/"
    assert process["terminal"] is False
    assert process["user"] == {"uid": 0, "gid": 0, "additionalGids": [0, 10]}
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]
    assert process["noNewPrivileges"] is False
    assert process["oomScoreAdj"] == 0
    assert process["capabilities"] == {"bounding": DOCKER_CAPS, "effective": DOCKER_CAPS,
                                       "permitted": DOCKER_CAPS, "inheritable": [],
                                       "ambient": []}
    assert spec["root"] == {"path": str(rootfs), "readonly": False}
    assert spec["annotations"] == {"io.kubernetes.pod.name": "web-1"}


def test_default_path_when_image_has_none(rootfs: Path) -> None:
    env = spec_of(rootfs)["process"]["env"]
    assert env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "HOSTNAME=web-1"]


def test_working_dir_tty_and_oom_score(rootfs: Path) -> None:
    cfg = config(working_dir="/srv", tty=True, resources=Resources(oom_score_adj=-997))
    process = spec_of(rootfs, cfg)["process"]
    assert (process["cwd"], process["terminal"], process["oomScoreAdj"]) == ("/srv", True, -997)


def test_namespaces_join_the_pod(rootfs: Path) -> None:
    spec = spec_of(rootfs)
    assert spec["linux"]["namespaces"] == [
        {"type": "pid"}, {"type": "mount"},
        {"type": "ipc", "path": "/proc/42/ns/ipc"}, {"type": "uts", "path": "/proc/42/ns/uts"},
        {"type": "network", "path": "/run/netns/dyabc-uid"},
    ]
    assert "hostname" not in spec  # the pause process set the pod's hostname
    assert spec["linux"]["cgroupsPath"] == "/dyabc/dyabc-c1"


def test_host_network_omits_the_network_namespace(rootfs: Path) -> None:
    spec = spec_of(rootfs, namespaces=PodNamespaces(network=None, ipc="", uts=""))
    assert spec["linux"]["namespaces"] == [
        {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]
    assert spec["hostname"] == "web-1"


def test_cgroup_namespace_on_cgroup_v2(rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "_cgroup_v2", lambda: True)
    assert {"type": "cgroup"} in spec_of(rootfs)["linux"]["namespaces"]


def test_standard_mounts_then_the_config_mounts(rootfs: Path) -> None:
    cfg = config(mounts=(
        Mount("/etc/hosts", "/pods/u/etc-hosts"),
        Mount("/data", "/pods/u/volumes/data", readonly=True),
        Mount("/cache", kind="tmpfs", options=("size=1m",)),
    ))
    mounts = spec_of(rootfs, cfg)["mounts"]
    assert [m["destination"] for m in mounts] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
        "/etc/hosts", "/data", "/cache"]
    by_dest = {m["destination"]: m for m in mounts}
    assert by_dest["/proc"] == {"destination": "/proc", "type": "proc", "source": "proc",
                                "options": ["nosuid", "noexec", "nodev"]}
    assert by_dest["/dev"]["type"] == "tmpfs"
    assert by_dest["/dev/pts"]["options"] == ["nosuid", "noexec", "newinstance",
                                              "ptmxmode=0666", "mode=0620", "gid=5"]
    assert by_dest["/dev/shm"]["options"] == ["nosuid", "noexec", "nodev", "mode=1777",
                                              "size=65536k"]
    assert by_dest["/sys"]["options"] == ["nosuid", "noexec", "nodev", "ro"]
    assert by_dest["/sys/fs/cgroup"]["options"][-1] == "ro"
    assert by_dest["/etc/hosts"] == {"destination": "/etc/hosts", "type": "bind",
                                     "source": "/pods/u/etc-hosts",
                                     "options": ["rbind", "rprivate", "rw"]}
    assert by_dest["/data"]["options"] == ["rbind", "rprivate", "ro"]
    assert by_dest["/cache"] == {"destination": "/cache", "type": "tmpfs", "source": "tmpfs",
                                 "options": ["nosuid", "nodev", "size=1m", "mode=1777"]}


def test_pod_shm_replaces_the_default(rootfs: Path) -> None:
    mounts = spec_of(rootfs, config(mounts=(Mount("/dev/shm/", "/pods/u/shm"),)))["mounts"]
    shm = [m for m in mounts if m["destination"].rstrip("/") == "/dev/shm"]
    assert shm == [{"destination": "/dev/shm/", "type": "bind", "source": "/pods/u/shm",
                    "options": ["rbind", "rprivate", "rw"]}]


def test_resources(rootfs: Path) -> None:
    cfg = config(resources=Resources(cpu_shares=512, cpu_quota=50_000, cpu_period=100_000,
                                     memory_limit=64 << 20, pids_limit=100))
    res = spec_of(rootfs, cfg)["linux"]["resources"]
    assert res["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert res["cpu"] == {"shares": 512, "quota": 50_000, "period": 100_000}
    assert res["pids"] == {"limit": 100}
    assert res["devices"][0] == {"allow": False, "access": "rwm"}
    allowed = {(d["type"], d.get("major"), d.get("minor"), d["access"])
               for d in res["devices"][1:]}
    assert allowed == {("c", None, None, "m"), ("b", None, None, "m"),
                       ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"),
                       ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"),
                       ("c", 136, None, "rwm"), ("c", 5, 2, "rwm")}


def test_unlimited_resources(rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = spec_of(rootfs)["linux"]["resources"]
    assert res["cpu"] == {"shares": 2}
    assert "memory" not in res and "pids" not in res
    monkeypatch.setattr(bundle, "_swap_accounting", lambda: False)
    res = spec_of(rootfs, config(resources=Resources(memory_limit=1 << 20)))["linux"]
    assert res["resources"]["memory"] == {"limit": 1 << 20}


def test_device_nodes(rootfs: Path) -> None:
    devices = spec_of(rootfs)["linux"]["devices"]
    assert [d["path"] for d in devices] == ["/dev/null", "/dev/zero", "/dev/full",
                                            "/dev/random", "/dev/urandom", "/dev/tty"]
    assert devices[0] == {"path": "/dev/null", "type": "c", "major": 1, "minor": 3,
                          "fileMode": 0o666, "uid": 0, "gid": 0}


def test_masked_and_readonly_paths(rootfs: Path) -> None:
    linux = spec_of(rootfs)["linux"]
    assert linux["maskedPaths"] == [
        "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
        "/sys/firmware", "/sys/devices/virtual/powercap"]
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"]
    unmasked = spec_of(rootfs, config(security=Security(masked_paths=False)))["linux"]
    assert "maskedPaths" not in unmasked and "readonlyPaths" not in unmasked


def test_runtime_default_seccomp(rootfs: Path) -> None:
    profile = spec_of(rootfs)["linux"]["seccomp"]
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    allowed = names_allowed(profile)
    assert {"read", "write", "execve", "fork", "chroot"} <= allowed
    for denied in ("mount", "umount2", "unshare", "setns", "init_module", "finit_module",
                   "delete_module", "reboot", "keyctl", "add_key", "bpf", "kexec_load",
                   "settimeofday", "clone3", "open_by_handle_at"):
        assert denied not in allowed, denied
    clone = [r for r in profile["syscalls"] if r["names"] == ["clone"]]
    assert clone == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                                "op": "SCMP_CMP_MASKED_EQ"}]}]
    clone3 = [r for r in profile["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    personality = sorted(r["args"][0]["value"] for r in profile["syscalls"]
                         if r["names"] == ["personality"])
    assert personality == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]


def test_capabilities_unlock_syscalls(rootfs: Path) -> None:
    security = Security(capabilities_add=("SYS_ADMIN", "cap_sys_module"))
    spec = spec_of(rootfs, config(security=security))
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["effective"]
    profile = spec["linux"]["seccomp"]
    allowed = names_allowed(profile)
    assert {"mount", "unshare", "setns", "clone", "clone3", "init_module",
            "finit_module"} <= allowed
    assert not [r for r in profile["syscalls"] if r["action"] != "SCMP_ACT_ALLOW"]


def test_seccomp_unconfined_and_file(rootfs: Path, tmp_path: Path) -> None:
    spec = spec_of(rootfs, config(security=Security(seccomp="Unconfined")))
    assert "seccomp" not in spec["linux"]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_LOG",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                     {"names": ["mount"], "action": "SCMP_ACT_ALLOW",
                      "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}))
    spec = spec_of(rootfs, config(security=Security(seccomp=str(path))))
    assert spec["linux"]["seccomp"] == {
        "defaultAction": "SCMP_ACT_LOG",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    with pytest.raises(RuntimeFailure, match="seccomp profile .*missing.json not found"):
        spec_of(rootfs, config(security=Security(seccomp=str(tmp_path / "missing.json"))))


def test_privileged(rootfs: Path) -> None:
    spec = spec_of(rootfs, config(security=Security(privileged=True,
                                                    capabilities_drop=("ALL",))))
    linux = spec["linux"]
    caps = spec["process"]["capabilities"]
    assert caps["bounding"] == list(capabilities.KNOWN_CAPABILITIES)
    assert caps["effective"] == caps["permitted"] == caps["bounding"]
    assert "seccomp" not in linux
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    by_dest = {m["destination"]: m for m in spec["mounts"]}
    assert "ro" not in by_dest["/sys"]["options"]
    assert "ro" not in by_dest["/sys/fs/cgroup"]["options"]
    assert any(d["path"] == "/dev/null" for d in linux["devices"])  # the host's devices


def test_security_context(rootfs: Path) -> None:
    security = Security(run_as_user=1000, supplemental_groups=(2000, 3000),
                        read_only_rootfs=True, no_new_privileges=True,
                        capabilities_add=("NET_ADMIN",), capabilities_drop=("CAP_CHOWN", "kill"))
    spec = spec_of(rootfs, config(security=security))
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000,
                                       "additionalGids": [1000, 50, 2000, 3000]}
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["root"]["readonly"] is True
    effective = spec["process"]["capabilities"]["effective"]
    assert "CAP_NET_ADMIN" in effective
    assert "CAP_CHOWN" not in effective and "CAP_KILL" not in effective
    assert len(effective) == 13


def test_errors_are_runtime_failures(rootfs: Path) -> None:
    image = ImageSpec(ref="x", image_id="sha256:x", layer_dirs=(), user="ghost")
    with pytest.raises(RuntimeFailure, match="unable to find user ghost"):
        spec_of(rootfs, config(image=image))
    with pytest.raises(RuntimeFailure, match='unknown capability: "CAP_FLY"'):
        spec_of(rootfs, config(security=Security(capabilities_add=("fly",))))
    with pytest.raises(RuntimeFailure, match="no command specified"):
        spec_of(rootfs, config(argv=()))


def test_no_rlimit_or_oom_adjustment_beyond_the_agents_own(
        rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent without CAP_SYS_RESOURCE cannot raise limits: asking would fail the start."""
    monkeypatch.setattr(bundle, "_has_sys_resource", lambda: False)
    spec = spec_of(rootfs, config(resources=Resources(oom_score_adj=-997)))
    hard = spec["process"]["rlimits"][0]["hard"]
    assert hard == min(1048576, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    own = int(Path("/proc/self/oom_score_adj").read_text())
    assert spec["process"]["oomScoreAdj"] == max(-997, own)


# ------------------------------------------------------------------------------ sandbox


def test_sandbox_spec(tmp_path: Path) -> None:
    cfg = SandboxConfig(pod_uid="u1", pod_name="web-1", namespace="default",
                        hostname="web-1", netns_path="/run/netns/dyabc-u1",
                        labels={"io.kubernetes.pod.uid": "u1"}, pids_limit=4096)
    spec = sandbox_spec(cfg, rootfs=tmp_path, argv=["/pause"], cgroups_path="/dyabc/p")
    process = spec["process"]
    assert process["args"] == ["/pause"]
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["noNewPrivileges"] is True
    assert process["oomScoreAdj"] == -998
    assert all(v == [] for v in process["capabilities"].values())
    assert spec["root"] == {"path": str(tmp_path), "readonly": True}
    assert spec["hostname"] == "web-1"
    assert spec["annotations"] == {"io.kubernetes.pod.uid": "u1"}
    linux = spec["linux"]
    assert linux["namespaces"] == [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                                   {"type": "mount"},
                                   {"type": "network", "path": "/run/netns/dyabc-u1"}]
    assert linux["cgroupsPath"] == "/dyabc/p"
    assert linux["resources"]["pids"] == {"limit": 4096}
    assert linux["resources"]["cpu"] == {"shares": 2}
    assert linux["sysctl"]["net.ipv4.ip_unprivileged_port_start"] == "0"
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "mount" not in names_allowed(linux["seccomp"])
    assert "/proc/kcore" in linux["maskedPaths"]


def test_sandbox_on_the_host_network(tmp_path: Path) -> None:
    cfg = SandboxConfig(pod_uid="u1", pod_name="p", namespace="default", hostname="node",
                        netns_path=None)
    linux = sandbox_spec(cfg, rootfs=tmp_path, argv=["/pause"], cgroups_path="/x")["linux"]
    assert all(ns["type"] != "network" for ns in linux["namespaces"])
    assert "sysctl" not in linux  # net.* sysctls would change the host's
    assert "pids" not in linux["resources"]


# ------------------------------------------------------------------------- capabilities


@pytest.mark.parametrize(("add", "drop", "expected"), [
    ((), (), DOCKER_CAPS),
    (("net_admin",), (), [*DOCKER_CAPS, "CAP_NET_ADMIN"]),
    (("CAP_NET_ADMIN", "NET_ADMIN"), ("MKNOD",),
     [c for c in DOCKER_CAPS if c != "CAP_MKNOD"] + ["CAP_NET_ADMIN"]),
    (("NET_BIND_SERVICE",), ("ALL",), ["CAP_NET_BIND_SERVICE"]),
    ((), ("all",), []),
    (("ALL",), ("SYS_ADMIN",), [c for c in capabilities.KNOWN_CAPABILITIES
                                if c != "CAP_SYS_ADMIN"]),
])
def test_capability_add_drop(add: tuple, drop: tuple, expected: list[str]) -> None:
    assert capabilities.container_capabilities(add, drop) == expected


def test_privileged_capabilities_are_the_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "host_capabilities", lambda: ("CAP_CHOWN",))
    assert capabilities.container_capabilities(privileged=True) == ["CAP_CHOWN"]


# ------------------------------------------------------------------------------ seccomp


def test_seccomp_architectures_and_arch_specific_calls() -> None:
    x86 = seccomp.runtime_default([], machine="x86_64", kernel=(6, 1))
    assert x86["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert {"arch_prctl", "modify_ldt"} <= names_allowed(x86)
    arm = seccomp.runtime_default([], machine="aarch64", kernel=(6, 1))
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arch_prctl" not in names_allowed(arm)
    assert {"cacheflush", "set_tls"} <= names_allowed(arm)


def test_seccomp_ptrace_needs_a_recent_kernel_or_the_capability() -> None:
    assert "ptrace" in names_allowed(seccomp.runtime_default([], kernel=(4, 8)))
    assert "ptrace" not in names_allowed(seccomp.runtime_default([], kernel=(4, 4)))
    assert "ptrace" in names_allowed(seccomp.runtime_default(["CAP_SYS_PTRACE"],
                                                             kernel=(4, 4)))


def test_socket_forbids_vsock() -> None:
    rules = [r for r in seccomp.runtime_default([])["syscalls"] if r["names"] == ["socket"]]
    assert rules == [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 40, "valueTwo": 0,
                                "op": "SCMP_CMP_NE"}]}]


def test_bad_profile_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"syscalls": []}')
    with pytest.raises(seccomp.ProfileError, match="no defaultAction"):
        seccomp.load(path, [])
    path.write_text("not json")
    with pytest.raises(seccomp.ProfileError, match="cannot load"):
        seccomp.load(path, [])


# -------------------------------------------------------------------------------- users


@pytest.mark.parametrize(("spec", "expected"), [
    ("", (0, 0, (0, 10))),
    ("root", (0, 0, (0, 10))),
    ("1000", (1000, 1000, (1000, 50))),
    ("4242", (4242, 0, (0,))),  # not in passwd: used as is, gid 0
    ("nobody", (65534, 65534, (65534,))),
    ("1000:1000", (1000, 1000, (1000,))),  # an explicit group: no membership groups
    ("app:app", (1000, 1000, (1000,))),
    ("app:staff", (1000, 50, (50,))),
    ("app:4321", (1000, 4321, (4321,))),
])
def test_resolve_user(rootfs: Path, spec: str, expected: tuple) -> None:
    user = users.resolve(rootfs, spec)
    assert (user.uid, user.gid, user.additional_gids) == expected


def test_resolve_user_with_pod_overrides(rootfs: Path) -> None:
    user = users.resolve(rootfs, "nobody", run_as_user=1000, supplemental_groups=[7, 50])
    assert (user.uid, user.gid, user.additional_gids, user.home) == (1000, 1000,
                                                                     (1000, 50, 7), "/home/app")
    user = users.resolve(rootfs, "app", run_as_group=3000)
    assert (user.uid, user.gid, user.additional_gids) == (1000, 3000, (3000,))


def test_resolve_user_errors(rootfs: Path) -> None:
    with pytest.raises(users.UserError,
                       match="unable to find user ghost: no matching entries in passwd file"):
        users.resolve(rootfs, "ghost")
    with pytest.raises(users.UserError, match="unable to find group ghosts"):
        users.resolve(rootfs, "app:ghosts")


def test_resolve_user_without_passwd(tmp_path: Path) -> None:
    assert users.resolve(tmp_path, "").uid == 0
    assert users.resolve(tmp_path, "1000:1000").additional_gids == (1000,)
    with pytest.raises(users.UserError):
        users.resolve(tmp_path, "app")


def test_passwd_symlinks_stay_in_the_rootfs(rootfs: Path) -> None:
    """An absolute link in the image points into the image, never at the host's file."""
    (rootfs / "usr/lib").mkdir(parents=True)
    (rootfs / "etc/passwd").rename(rootfs / "usr/lib/passwd")
    (rootfs / "etc/passwd").symlink_to("/usr/lib/passwd")
    assert users.resolve(rootfs, "app").uid == 1000
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc/passwd").symlink_to("../../../../../../etc/passwd")
    with pytest.raises(users.UserError):
        users.resolve(rootfs, "app")  # `..` stops at the rootfs: the link points at itself
