"""Host helpers of the pod-start benchmark: percentiles, /proc readings, free subnets, and the
leftover check that proves a run removed everything it made.

Kept apart from the measuring code so each part (runc, docker, the cluster) reads the host the
same way.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Pod and bridge subnets of the benchmark come from here (the brief's range for tests/benches).
BENCH_RANGE = ipaddress.ip_network("10.200.0.0/13")


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank), as bench/api.py computes it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of a list of seconds."""
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50": pct(ms, 0.5), "p90": pct(ms, 0.9), "p99": pct(ms, 0.99),
            "max": max(ms) if ms else float("nan")}


def status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (the busybox binary, libc) split between users."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime+stime of the process's threads, cutime+cstime of children it has reaped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14 -> index 11.
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def cgroup_paths(pid: int) -> list[str]:
    try:
        return [line.split(":", 2)[2] for line in
                Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    except OSError:
        return []


def net_ns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 route and interface address on the host (other tests' bridges included)."""
    found: list[ipaddress.IPv4Network] = []
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"],
                                       capture_output=True, text=True, check=True).stdout)
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            found.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
    addrs = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True,
                                      text=True, check=True).stdout)
    for link in addrs:
        for info in link.get("addr_info", []):
            found.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}",
                                              strict=False))
    return found


def free_subnets(prefixlens: list[int], seed: int) -> list[ipaddress.IPv4Network]:
    """Subnets of BENCH_RANGE, one per prefix length, overlapping no route, no address and each
    other. `seed` spreads parallel runs over the range."""
    taken = used_networks()
    chosen: list[ipaddress.IPv4Network] = []
    for length in prefixlens:
        candidates = list(BENCH_RANGE.subnets(new_prefix=length))
        start = seed % len(candidates)
        for net in candidates[start:] + candidates[:start]:
            if not any(net.overlaps(other) for other in taken + chosen):
                chosen.append(net)
                break
        else:
            raise RuntimeError(f"no free /{length} in {BENCH_RANGE}")
    return chosen


def leftovers(prefixes: list[str], paths: list[Path]) -> list[str]:
    """What is still on the host from this run: network namespaces, links, mounts, cgroups and
    processes that carry one of `prefixes` or live under one of `paths`."""
    found: list[str] = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    for prefix in prefixes:
        found += [f"netns {line.split()[0]}" for line in netns.splitlines() if prefix in line]
        found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
                  if prefix in line.split(":")[1]]
        for controller in sorted(CGROUP_ROOT.iterdir()):
            found += [f"cgroup {path}" for path in controller.glob(f"{prefix}*")]
    needles = prefixes + [str(p) for p in paths]
    found += [f"mount {line.split()[4]}" for line in mounts
              if any(n in line.split()[4] for n in needles)]
    me = os.getpid()
    for pid in pids():
        if pid == me:
            continue
        args = " ".join(cmdline(pid))
        groups = cgroup_paths(pid)
        if any(str(p) in args for p in paths) or any(
                f"/{prefix}" in group for prefix in prefixes for group in groups):
            found.append(f"process {pid} {args[:100]}")
    return found


def wait_clean(prefixes: list[str], paths: list[Path], timeout: float = 10.0) -> list[str]:
    """leftovers() once killed processes had time to be reaped; [] when the host is clean."""
    deadline = time.monotonic() + timeout
    while True:
        found = leftovers(prefixes, paths)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def report_end(results: dict, table_lines: list[str], about: str, found: list[str],
               json_path: str | None) -> int:
    """The end every side-by-side benchmark prints: its table, what it ran on, leftovers and
    failures; the JSON file if asked; exit status 1 on a leftover or a failed part."""
    print("\n".join(table_lines))
    print(f"\n{about}; load average {results['loadavg_start']} at start, "
          f"{results['loadavg_end']} at end")
    print("leftovers on the host: " + (", ".join(found) if found else "none"))
    for name, error in results.get("errors", {}).items():
        print(f"FAILED {name}: {error}")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1, default=str))
    return 1 if found or results.get("errors") else 0
