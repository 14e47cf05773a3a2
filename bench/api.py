"""API server benchmark: pod creates/s, create latency at a fixed rate, watch delivery latency,
server RSS with 10,000 pods, printed beside baselines measured in the same run.

Baselines: the store alone (SQLiteStore group commit, no HTTP) and naive SQLite (one fsynced
transaction per write), so the cost of each layer is visible. Run with `make bench-api`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dockyard.store.sqlite import SQLiteStore  # noqa: E402
from tests.conftest import API_ONLY, ServerProcess  # noqa: E402

PODS = "/api/v1/namespaces/default/pods"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "create_pods.lua"


def pod_body(name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "load"}},
        "spec": {"containers": [{
            "name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
            "ports": [{"containerPort": 8080, "name": "http"}],
            "env": [{"name": "MODE", "value": "bench"}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }]},
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def client_for(srv: ServerProcess, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=srv.url, verify=srv.tls(), timeout=60,
        headers={"Authorization": f"Bearer {srv.token}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def creates_per_second(srv: ServerProcess, clients: int, seconds: float, tag: str) -> float:
    """Closed loop with `wrk` (C, keep-alive TLS connections), so the client is not the limit."""
    env = {**os.environ, "DOCKYARD_BENCH_TOKEN": srv.token, "DOCKYARD_BENCH_PREFIX": tag}
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(clients), "-d", f"{int(seconds)}s", "-s", str(WRK_SCRIPT),
         srv.url], env=env, capture_output=True, text=True, check=True).stdout
    result = dict(kv.split("=") for kv in next(
        line for line in out.splitlines() if line.startswith("RESULT")).split()[1:])
    if int(result["errors"]):
        raise RuntimeError(f"wrk saw {result['errors']} failed creates:\n{out}")
    return int(result["requests"]) / (int(result["duration_us"]) / 1e6)


async def fill(srv: ServerProcess, total: int, tag: str) -> None:
    async with client_for(srv, 20) as http:
        queue = list(range(total))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                r = await http.post(PODS, json=pod_body(f"{tag}-{i}"))
                assert r.status_code == 201, r.text

        await asyncio.gather(*(worker() for _ in range(20)))


async def latency_at_rate(srv: ServerProcess, rate: float, seconds: float) -> list[float]:
    """Open loop: a create is sent every 1/rate s whatever the previous ones are doing."""
    latencies: list[float] = []
    async with client_for(srv, 64) as http:
        async def one(i: int) -> None:
            t0 = time.perf_counter()
            r = await http.post(PODS, json=pod_body(f"lat-{i}"))
            latencies.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 201, r.text

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return latencies


async def watch_delivery(srv: ServerProcess, count: int) -> list[float]:
    """Time from sending a create to receiving its ADDED event on an open watch."""
    sent: dict[str, float] = {}
    delays: list[float] = []
    async with client_for(srv, 4) as http:
        rv = (await http.get(PODS, params={"limit": "1"})).json()["metadata"]["resourceVersion"]
        ready = asyncio.Event()

        async def watcher() -> None:
            params = {"watch": "1", "resourceVersion": rv, "labelSelector": "app=watched"}
            async with http.stream("GET", PODS, params=params) as r:
                ready.set()
                async for line in r.aiter_lines():
                    name = json.loads(line)["object"]["metadata"]["name"]
                    delays.append((time.perf_counter() - sent[name]) * 1000)
                    if len(delays) == count:
                        return

        task = asyncio.create_task(watcher())
        await ready.wait()
        for i in range(count):
            body = pod_body(f"w-{i}")
            body["metadata"]["labels"]["app"] = "watched"
            sent[body["metadata"]["name"]] = time.perf_counter()
            await http.post(PODS, json=body)
            await asyncio.sleep(0.005)
        await asyncio.wait_for(task, 30)
    return delays


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def store_baseline(directory: Path, clients: int, total: int) -> float:
    directory.mkdir()
    store = SQLiteStore(directory / "baseline.db")
    await store.start()
    body = json.dumps(pod_body("x")).encode()
    queue = list(range(total))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            await store.create(f"/registry/core/pods/default/b-{i}", body)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    rate = total / (time.perf_counter() - start)
    await store.close()
    return rate


def naive_sqlite_baseline(directory: Path, total: int) -> float:
    db = sqlite3.connect(directory / "naive.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE kv (id INTEGER PRIMARY KEY, key TEXT, value BLOB)")
    body = json.dumps(pod_body("x")).encode()
    start = time.perf_counter()
    for i in range(total):
        db.execute("BEGIN")
        db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", (f"/p/{i}", body))
        db.execute("COMMIT")
    db.close()
    return total / (time.perf_counter() - start)


def started(directory: Path) -> ServerProcess:
    """The API server alone: this measures the API, not scheduling or controllers."""
    srv = ServerProcess(directory, extra_args=list(API_ONLY))
    srv.data_dir.mkdir()
    srv.start()
    return srv


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        directory = Path(tmp)
        print(f"{'measure':44} {'dockyard':>12} {'baseline':>26}")
        srv = started(directory / "load")
        try:
            for clients in (1, 10, 50):
                rate = creates_per_second(srv, clients, args.seconds, f"c{clients}")
                base = await store_baseline(directory / f"b{clients}", clients, args.creates)
                print(f"{f'pod creates/s, {clients} clients':44} {rate:12.0f} "
                      f"{base:14.0f} (store only)")
            naive = naive_sqlite_baseline(directory, 500)
            print(f"{'naive SQLite, 1 fsynced txn per write /s':44} {'':12} {naive:14.0f}")
        finally:
            srv.stop()
        srv = started(directory / "steady")
        try:
            assert srv.proc is not None
            idle_rss = rss_mb(srv.proc.pid)
            lat = await latency_at_rate(srv, args.rate, args.seconds)
            print(f"{f'create latency at {args.rate:.0f}/s p50 (ms)':44} "
                  f"{statistics.median(lat):12.2f}")
            print(f"{f'create latency at {args.rate:.0f}/s p99 (ms)':44} {pct(lat, 0.99):12.2f} "
                  f"{'goal <= 20':>26}")
            delays = await watch_delivery(srv, 200)
            print(f"{'watch delivery p50 (ms)':44} {statistics.median(delays):12.2f}")
            print(f"{'watch delivery p99 (ms)':44} {pct(delays, 0.99):12.2f}")
            async with client_for(srv, 4) as http:
                stored = len((await http.get(PODS)).json()["items"])
            await fill(srv, max(0, 10_000 - stored), "fill")
            async with client_for(srv, 4) as http:
                t0 = time.perf_counter()
                listed = len((await http.get(PODS)).json()["items"])
                list_ms = (time.perf_counter() - t0) * 1000
            print(f"{'server RSS idle after start (MB)':44} {idle_rss:12.1f}")
            print(f"{f'server RSS with {listed} pods stored (MB)':44} "
                  f"{rss_mb(srv.proc.pid):12.1f} {'goal <= 200':>26}")
            print(f"{f'list all {listed} pods over HTTPS (ms)':44} {list_ms:12.1f}")
        finally:
            srv.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--creates", type=int, default=5000,
                        help="creates per concurrency level in the store-only baseline")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="duration of each throughput and fixed-rate run")
    asyncio.run(main(parser.parse_args()))
