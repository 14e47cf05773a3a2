"""Seccomp profiles for containers: RuntimeDefault (Docker's default profile) and files.

A profile is written in Docker's format: rules that apply only with (`includes`) or without
(`excludes`) some capabilities, architectures or kernel versions, plus an `archMap`. It is
turned into the OCI `linux.seccomp` object for one container by `to_oci`, given the
container's bounding capabilities, exactly as Docker and containerd do: adding CAP_SYS_ADMIN
allows mount/unshare/setns, adding CAP_SYS_MODULE allows loading modules, and so on.

RuntimeDefault denies with EPERM everything not listed: kernel modules, mount, reboot,
keyctl, namespace creation (clone with CLONE_NEW* flags, unshare), bpf, perf, ptrace on old
kernels, clock changes, personality changes other than the harmless ones.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

EPERM = 1
ENOSYS = 38
AF_VSOCK = 40
# CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
# CLONE_NEWCGROUP: clone() may not create namespaces without CAP_SYS_ADMIN.
CLONE_NAMESPACE_FLAGS = (0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
                         | 0x40000000 | 0x02000000)

ALLOW = "SCMP_ACT_ALLOW"
ERRNO = "SCMP_ACT_ERRNO"

# Syscalls every container may make, whatever its capabilities.
_ALWAYS = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl
fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_time64 futex_waitv
futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid
getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid
getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list
getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32
getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl
io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup
io_submit io_uring_enter io_uring_register io_uring_setup ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen
listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall
munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl
pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev
pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64
recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr
shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn
socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4
waitid waitpid write writev
""".split()

# Syscalls a capability unlocks (the profile's capability-conditional groups).
_BY_CAPABILITY: dict[str, str] = {
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
    "CAP_SYS_ADMIN": "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick "
                     "lookup_dcookie mount mount_setattr move_mount open_tree perf_event_open "
                     "quotactl quotactl_fd setdomainname sethostname setns syslog umount "
                     "umount2 unshare",
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev "
                      "ptrace",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
}

# Syscalls only some architectures have (Go's GOARCH names, as Docker's profile uses).
_BY_ARCH: list[tuple[tuple[str, ...], str]] = [
    (("ppc64le",), "sync_file_range2 swapcontext"),
    (("arm", "arm64"), "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint "
                       "cacheflush set_tls"),
    (("amd64", "x32"), "arch_prctl"),
    (("amd64", "x32", "x86"), "modify_ldt"),
    (("s390", "s390x"), "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"),
    (("riscv64",), "riscv_flush_icache"),
]

# The personalities a process may switch to: PER_LINUX, PER_LINUX32 and their
# UNAME26 variants, and the 0xffffffff query.
_PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

# The seccomp architecture of a machine and the ones its binaries may also use.
_ARCH_MAP: list[tuple[str, tuple[str, ...]]] = [
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_MIPS64", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32")),
    ("SCMP_ARCH_MIPS64N32", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64")),
    ("SCMP_ARCH_MIPSEL64", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32")),
    ("SCMP_ARCH_MIPSEL64N32", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64")),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_RISCV64", ()),
]

# uname -m → (Go's GOARCH, native seccomp architecture)
_MACHINES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "i686": ("386", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}


class ProfileError(ValueError):
    """A seccomp profile file is missing or not a profile."""


def default_profile() -> Obj:
    """RuntimeDefault in Docker's profile format (conditional rules not yet applied)."""
    rules: list[Obj] = [
        {"names": list(_ALWAYS), "action": ALLOW},
        {"names": ["process_vm_readv", "process_vm_writev", "ptrace"], "action": ALLOW,
         "includes": {"minKernel": "4.8"}},
        {"names": ["socket"], "action": ALLOW,
         "args": [_arg(0, AF_VSOCK, "SCMP_CMP_NE")]},
    ]
    rules += [{"names": ["personality"], "action": ALLOW,
               "args": [_arg(0, value, "SCMP_CMP_EQ")]} for value in _PERSONALITIES]
    rules += [{"names": names.split(), "action": ALLOW, "includes": {"arches": list(arches)}}
              for arches, names in _BY_ARCH]
    rules += [{"names": names.split(), "action": ALLOW, "includes": {"caps": [cap]}}
              for cap, names in _BY_CAPABILITY.items()]
    rules += [
        # Without CAP_SYS_ADMIN, clone may not create namespaces (s390 swaps the arguments),
        # and clone3 (whose flags seccomp cannot inspect) fails as if the kernel lacked it,
        # so that libc falls back to clone.
        {"names": ["clone"], "action": ALLOW,
         "args": [_arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
         "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
        {"names": ["clone"], "action": ALLOW,
         "args": [_arg(1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
         "includes": {"arches": ["s390", "s390x"]}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["clone3"], "action": ERRNO, "errnoRet": ENOSYS,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    ]
    return {
        "defaultAction": ERRNO,
        "defaultErrnoRet": EPERM,
        "archMap": [{"architecture": arch, "subArchitectures": list(subs)}
                    for arch, subs in _ARCH_MAP],
        "syscalls": rules,
    }


def runtime_default(capabilities: Iterable[str], *, machine: str | None = None,
                    kernel: tuple[int, int] | None = None) -> Obj:
    """The OCI seccomp object of RuntimeDefault for a container with these capabilities."""
    return to_oci(default_profile(), capabilities, machine=machine, kernel=kernel)


def load(path: str | Path, capabilities: Iterable[str]) -> Obj:
    """A profile file (Docker's format or plain OCI) as the OCI seccomp object."""
    try:
        profile = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise ProfileError(f"seccomp profile {path} not found") from err
    except (OSError, ValueError) as err:
        raise ProfileError(f"cannot load seccomp profile {path}: {err}") from err
    if not isinstance(profile, dict) or "defaultAction" not in profile:
        raise ProfileError(f"seccomp profile {path} has no defaultAction")
    return to_oci(profile, capabilities)


def to_oci(profile: Obj, capabilities: Iterable[str], *, machine: str | None = None,
           kernel: tuple[int, int] | None = None) -> Obj:
    """Apply a Docker-format profile's conditions for one container (moby's setupSeccomp)."""
    caps = set(capabilities)
    goarch, native = _MACHINES.get(machine or platform.machine(), ("", ""))
    kernel = kernel or _kernel_version()
    out: Obj = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            arches += [entry["architecture"], *(entry.get("subArchitectures") or [])]
    if arches:
        out["architectures"] = arches
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    syscalls = []
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, caps, goarch, kernel):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        call: Obj = {"names": list(names), "action": rule["action"]}
        if rule.get("args"):
            call["args"] = [dict(a) for a in rule["args"]]
        if rule.get("errnoRet") is not None:
            call["errnoRet"] = rule["errnoRet"]
        syscalls.append(call)
    out["syscalls"] = syscalls
    return out


def _applies(rule: Obj, caps: set[str], goarch: str, kernel: tuple[int, int]) -> bool:
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("arches") and goarch not in includes["arches"]:
        return False
    if includes.get("caps") and not all(c in caps for c in includes["caps"]):
        return False
    if includes.get("minKernel") and kernel < _parse_kernel(includes["minKernel"]):
        return False
    if excludes.get("arches") and goarch in excludes["arches"]:
        return False
    if excludes.get("caps") and any(c in caps for c in excludes["caps"]):
        return False
    return True


def _arg(index: int, value: int, op: str) -> Obj:
    return {"index": index, "value": value, "valueTwo": 0, "op": op}


def _parse_kernel(text: str) -> tuple[int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def _kernel_version() -> tuple[int, int]:
    return _parse_kernel(os.uname().release)
