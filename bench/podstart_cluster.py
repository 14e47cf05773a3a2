"""The dockyard side of the pod-start benchmark: a real single-node cluster (`dockyard up`:
control plane and node agent in one process), pods created at a fixed rate and seen Running
through one watch, their deletion, and the density run (M pods on the node, then the agent's
RSS, idle CPU and the host memory each pod costs).

Pods go through the whole path a user's pod takes: API server, scheduler, agent, runtime
(runc), CNI. `dockyard cleanup` runs after the cluster stops, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import podstart_host as host

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dockyard.runtime.naming import cluster_prefix  # noqa: E402
from tests.conftest import ServerProcess  # noqa: E402

NS = "default"
PODS = f"/api/v1/namespaces/{NS}/pods"


def pod_body(name: str, label: str) -> dict:
    """busybox `sleep 3600`; a 1 s grace period because `sleep` as PID 1 ignores SIGTERM, so
    deletion would otherwise always wait the default 30 s before SIGKILL."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": label}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "sleep", "image": "busybox", "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"]}]},
    }


def _waiting_reason(pod: dict) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return f"{waiting['reason']}: {waiting.get('message', '')}"[:200]
    return (pod.get("status") or {}).get("phase", "Pending")


class PodWatch:
    """One watch on the benchmark's pods, opened before the first create: when each pod was
    first seen Running and when it was seen DELETED."""

    def __init__(self, http: httpx.AsyncClient, label: str) -> None:
        self.http = http
        self.label = label
        self.running: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.last: dict[str, dict] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def open(self) -> None:
        listed = await self.http.get(PODS, params={"labelSelector": f"bench={self.label}"})
        listed.raise_for_status()
        rv = listed.json()["metadata"]["resourceVersion"]
        ready = asyncio.Event()

        async def loop() -> None:
            params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "3600",
                      "labelSelector": f"bench={self.label}"}
            async with self.http.stream("GET", PODS, params=params,
                                        timeout=httpx.Timeout(60, read=None)) as stream:
                ready.set()
                async for line in stream.aiter_lines():
                    now = time.perf_counter()
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch failed: {obj}")
                    name = obj["metadata"]["name"]
                    self.last[name] = obj
                    if event["type"] == "DELETED":
                        self.deleted.setdefault(name, now)
                    elif (obj.get("status") or {}).get("phase") == "Running":
                        self.running.setdefault(name, now)
                    self.changed.set()

        self.task = asyncio.create_task(loop())
        await asyncio.wait_for(ready.wait(), 30)

    async def wait(self, names: list[str], seen: dict[str, float], timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while not all(n in seen for n in names):
            if self.task is not None and self.task.done():
                self.task.result()
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
            except TimeoutError:
                pass
        return True

    def stuck(self, names: list[str], seen: dict[str, float]) -> list[str]:
        return [f"{n}: {_waiting_reason(self.last.get(n, {}))}" for n in names if n not in seen]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, httpx.HTTPError):
                pass


class Cluster:
    def __init__(self, data_dir: Path, pod_cidr: str, max_pods: int) -> None:
        self.data_dir = data_dir
        self.prefix = cluster_prefix(data_dir)
        self.node = "bench-node"
        self.srv = ServerProcess(data_dir, command="up", extra_args=[
            "--node-name", self.node, "--pod-cidr", pod_cidr, "--agent-port", "0",
            "--node-ip", "127.0.0.1", "--max-pods", str(max_pods), "--pod-max-pids", "4096",
            "--crash-backoff", "10s,300s"])

    @property
    def pid(self) -> int:
        assert self.srv.proc is not None
        return self.srv.proc.pid

    def start(self) -> float:
        """Start `dockyard up`; seconds until the API is ready (the node may still register)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.srv.start(timeout=120)
        return time.perf_counter() - t0

    def http(self, connections: int = 32) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.srv.url, verify=self.srv.tls(), timeout=60,
            headers={"Authorization": f"Bearer {self.srv.token}"},
            limits=httpx.Limits(max_connections=connections,
                                max_keepalive_connections=connections))

    async def wait_node_ready(self, timeout: float = 120) -> float:
        t0 = time.perf_counter()
        async with self.http(2) as http:
            while time.perf_counter() - t0 < timeout:
                r = await http.get(f"/api/v1/nodes/{self.node}")
                if r.status_code == 200 and any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in r.json().get("status", {}).get("conditions", [])):
                    return time.perf_counter() - t0
                await asyncio.sleep(0.2)
        raise RuntimeError(f"node {self.node} not Ready after {timeout:.0f} s; see "
                           f"{self.data_dir / 'server.log'}")

    async def start_pods(self, count: int, rate: float, label: str, timeout: float,
                         one_at_a_time: bool = False) -> dict:
        """Open loop: a create every 1/rate s; create→Running seen on the watch, per pod.
        one_at_a_time: each create waits for the previous pod to run (latency alone)."""
        async with self.http() as http:
            watch = PodWatch(http, label)
            await watch.open()
            try:
                sent: dict[str, float] = {}
                created: list[float] = []

                async def one(name: str) -> None:
                    sent[name] = time.perf_counter()
                    r = await http.post(PODS, json=pod_body(name, label))
                    if r.status_code != 201:
                        raise RuntimeError(f"create {name}: {r.status_code} {r.text[:300]}")
                    created.append(time.perf_counter() - sent[name])

                names = [f"{label}-{i}" for i in range(count)]
                tasks: list[asyncio.Task] = []
                begin = time.perf_counter()
                try:
                    for i, name in enumerate(names):
                        if one_at_a_time:
                            await one(name)
                            await watch.wait([name], watch.running, timeout)
                            continue
                        delay = begin + i / rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        tasks.append(asyncio.create_task(one(name)))
                    await asyncio.gather(*tasks)
                finally:
                    for task in tasks:  # interrupted: no create may outlive the run
                        task.cancel()
                ok = await watch.wait(names, watch.running, timeout)
                return {
                    "start": [watch.running[n] - sent[n] for n in names if n in watch.running],
                    "create_call": created,
                    "all_running_after": max(watch.running.values(), default=begin) - begin,
                    "not_running": [] if ok else watch.stuck(names, watch.running),
                }
            finally:
                await watch.close()

    async def delete_pods(self, label: str, timeout: float) -> dict:
        """Delete every pod of `label` at once; seconds until the last DELETED event (the
        agent has stopped its containers and released the pod)."""
        async with self.http() as http:
            listed = await http.get(PODS, params={"labelSelector": f"bench={label}"})
            names = [p["metadata"]["name"] for p in listed.json()["items"]]
            watch = PodWatch(http, label)
            await watch.open()
            try:
                t0 = time.perf_counter()
                sem = asyncio.Semaphore(32)

                async def one(name: str) -> None:
                    async with sem:
                        r = await http.delete(f"{PODS}/{name}")
                        if r.status_code not in (200, 202, 404):
                            raise RuntimeError(f"delete {name}: {r.status_code} {r.text[:300]}")

                await asyncio.gather(*(one(n) for n in names))
                requests_done = time.perf_counter() - t0
                ok = await watch.wait(names, watch.deleted, timeout)
                last = max(watch.deleted.values(), default=t0)
                return {"count": len(names), "seconds": last - t0,
                        "requests_seconds": requests_done,
                        "not_deleted": [] if ok else watch.stuck(names, watch.deleted)}
            finally:
                await watch.close()

    # -- density --------------------------------------------------------------------------

    def pod_processes(self) -> dict[str, list[int]]:
        """Processes of the cluster's pods by network namespace (pause and containers), plus
        the helper processes (shims) that are parents of one pod's processes only."""
        by_ns: dict[str, list[int]] = {}
        host_ns = host.net_ns(os.getpid())
        for pid in host.pids():
            if any(f"/{self.prefix}" in g for g in host.cgroup_paths(pid)):
                ns = host.net_ns(pid)
                if ns and ns != host_ns:  # helpers in the host's namespace: found as parents
                    by_ns.setdefault(ns, []).append(pid)
        owner: dict[int, set[str]] = {}
        for ns, members in by_ns.items():
            for pid in members:
                try:
                    parent = host.ppid(pid)
                except OSError:
                    continue
                if parent not in members and parent not in (1, self.pid):
                    owner.setdefault(parent, set()).add(ns)
        for parent, namespaces in owner.items():
            if len(namespaces) == 1:
                by_ns[next(iter(namespaces))].append(parent)
        return by_ns

    def cpu_of(self, processes: list[int]) -> int:
        total = 0
        for pid in processes:
            try:
                total += host.cpu_ticks(pid)[0]
            except OSError:
                pass
        return total

    async def density(self, count: int, rate: float, settle: float, idle: float,
                      timeout: float) -> dict:
        await asyncio.sleep(5)  # let the deletions of the first part finish settling
        before = host.mem_available_mb()
        started = await self.start_pods(count, rate, "dense", timeout)
        running = len(started["start"])
        await asyncio.sleep(settle)
        by_ns = self.pod_processes()
        all_pod_procs = [p for members in by_ns.values() for p in members]
        rss_start = host.rss_mb(self.pid)
        ticks0, children0 = host.cpu_ticks(self.pid)
        pods_ticks0 = self.cpu_of(all_pod_procs)
        t0 = time.perf_counter()
        await asyncio.sleep(idle)
        ticks1, children1 = host.cpu_ticks(self.pid)
        pods_ticks1 = self.cpu_of(all_pod_procs)
        seconds = time.perf_counter() - t0
        after = host.mem_available_mb()
        cgroup = self.memory_cgroup()
        sample_ns = next(iter(by_ns), "")
        sample = [{"pid": p, "comm": host.comm(p), "args": " ".join(host.cmdline(p))[:80],
                   "rss_kb": host.status_kb(p, "VmRSS"), "pss_kb": host.pss_kb(p)}
                  for p in by_ns.get(sample_ns, [])]
        children = [p for p in host.pids() if _safe_ppid(p) == self.pid]
        return {
            "pods": count, "running": running,
            "all_running_after": started["all_running_after"],
            "start": started["start"], "not_running": started["not_running"][:5],
            "cluster_rss_mb": host.rss_mb(self.pid), "cluster_rss_mb_before_idle": rss_start,
            "cluster_cpu_pct": (ticks1 - ticks0) / host.CLK_TCK / seconds * 100,
            "cluster_children_cpu_pct": (children1 - children0) / host.CLK_TCK / seconds * 100,
            "pod_processes_cpu_pct": (pods_ticks1 - pods_ticks0) / host.CLK_TCK / seconds * 100,
            "pod_process_count": len(all_pod_procs), "pod_netns_count": len(by_ns),
            "children": [{"pid": p, "comm": host.comm(p), "rss_mb": host.rss_mb(p)}
                         for p in children],
            "mem_available_before_mb": before, "mem_available_after_mb": after,
            "host_mb_per_pod": (before - after) / max(running, 1),
            "cgroup_kb_per_pod": {k: v / 1024 / max(running, 1) for k, v in cgroup.items()},
            "one_pod_processes": sample,
            "one_pod_rss_kb": sum(s["rss_kb"] for s in sample),
            "one_pod_pss_kb": sum(s["pss_kb"] for s in sample),
        }

    def memory_cgroup(self) -> dict[str, int]:
        """Bytes charged to the cluster's memory cgroup (all pods' containers, pause
        processes and the page cache they touched); less noisy than MemAvailable when other
        work shares the machine."""
        base = host.CGROUP_ROOT / "memory" / self.prefix
        try:
            stat = dict(line.split() for line in (base / "memory.stat").read_text()
                        .splitlines())
            usage = int((base / "memory.usage_in_bytes").read_text())
        except OSError:
            return {}
        return {"usage": usage, "rss": int(stat.get("total_rss", 0)),
                "cache": int(stat.get("total_cache", 0)),
                "kernel": int((base / "memory.kmem.usage_in_bytes").read_text())
                if (base / "memory.kmem.usage_in_bytes").exists() else 0}

    def stop(self) -> dict:
        """Stop the cluster, then `dockyard cleanup` (which also removes any pods still
        running); its exit status, output and duration."""
        self.srv.stop()
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "dockyard.cli.main", "cleanup",
                               "--data-dir", str(self.data_dir)], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        return {"rc": done.returncode, "seconds": time.perf_counter() - t0,
                "output": (done.stdout + done.stderr).strip()[-2000:]}


def _safe_ppid(pid: int) -> int:
    try:
        return host.ppid(pid)
    except OSError:
        return 0
