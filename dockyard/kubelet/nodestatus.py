"""What the agent says about its machine: the Node object's labels and status.

Capacity is read from the machine (cpu, memory, ephemeral storage under the data directory);
allocatable subtracts the hard eviction thresholds, as the kubelet does with no reservations.
Conditions follow the kubelet's reasons and messages, so `kubectl describe node` reads the same.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dockyard

Obj = dict[str, Any]

KUBELET_VERSION = "v1.32.0-dockyard"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def arch() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def detect_address() -> str:
    """The address other hosts reach this one at: the source address of the default route,
    found without sending anything (a UDP connect only picks a route)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never answered, never sent
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


@dataclass(frozen=True)
class Pressure:
    memory: bool
    disk: bool
    pid: bool


def measure_pressure(data_dir: Path, eviction_memory: int, eviction_disk_percent: float,
                     ) -> Pressure:
    mem = meminfo()
    available = mem.get("MemAvailable", mem.get("MemFree", 0))
    usage = shutil.disk_usage(data_dir)
    free_percent = 100.0 * usage.free / usage.total if usage.total else 100.0
    pid_max = int(_read("/proc/sys/kernel/pid_max", "32768") or 32768)
    running = sum(1 for name in os.listdir("/proc") if name.isdigit())
    return Pressure(memory=available < eviction_memory,
                    disk=free_percent < eviction_disk_percent,
                    pid=running > 0.9 * pid_max)


def capacity(data_dir: Path, max_pods: int) -> Obj:
    mem = meminfo().get("MemTotal", 0)
    disk = shutil.disk_usage(data_dir).total
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{mem // 1024}Ki",
            "pods": str(max_pods), "ephemeral-storage": f"{disk // 1024}Ki"}


def allocatable(data_dir: Path, max_pods: int, eviction_memory: int,
                eviction_disk_percent: float) -> Obj:
    mem = max(0, meminfo().get("MemTotal", 0) - eviction_memory)
    disk = int(shutil.disk_usage(data_dir).total * (1 - eviction_disk_percent / 100.0))
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{mem // 1024}Ki",
            "pods": str(max_pods), "ephemeral-storage": f"{disk // 1024}Ki"}


def node_info(runtime_version: str) -> Obj:
    return {
        "machineID": _read("/etc/machine-id"),
        "systemUUID": _read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id"),
        "bootID": _read("/proc/sys/kernel/random/boot_id"),
        "kernelVersion": platform.release(),
        "osImage": os_image(),
        "containerRuntimeVersion": runtime_version,
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": KUBELET_VERSION,
        "operatingSystem": "linux",
        "architecture": arch(),
    }


def labels(node_name: str, extra: dict[str, str]) -> dict[str, str]:
    out = {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux",
           "kubernetes.io/arch": arch(), "beta.kubernetes.io/os": "linux",
           "beta.kubernetes.io/arch": arch()}
    out.update(extra)
    return out


def conditions(pressure: Pressure, ready: tuple[bool, str], previous: list[Obj] | None,
               ) -> list[Obj]:
    """Node conditions; lastTransitionTime kept where the status did not change."""
    ready_ok, ready_message = ready
    wanted = [
        ("MemoryPressure", pressure.memory,
         ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
         ("KubeletHasSufficientMemory", "kubelet has sufficient memory available")),
        ("DiskPressure", pressure.disk,
         ("KubeletHasDiskPressure", "kubelet has disk pressure"),
         ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")),
        ("PIDPressure", pressure.pid,
         ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
         ("KubeletHasSufficientPID", "kubelet has sufficient PID available")),
        ("Ready", ready_ok,
         ("KubeletReady", "kubelet is posting ready status"),
         ("KubeletNotReady", ready_message)),
    ]
    before = {c.get("type"): c for c in previous or []}
    stamp = now()
    out = []
    for type_, flag, if_true, if_false in wanted:
        reason, message = if_true if flag else if_false
        status = "True" if flag else "False"
        old = before.get(type_) or {}
        transition = old.get("lastTransitionTime") if old.get("status") == status else None
        out.append({"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": stamp, "lastTransitionTime": transition or stamp})
    return out


def addresses(address: str, node_name: str) -> list[Obj]:
    return [{"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": node_name}]


def version() -> str:
    return getattr(dockyard, "__version__", "0")
