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
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dockyard.store.sqlite import SQLiteStore  # noqa: E402
from tests.conftest import ServerProcess  # noqa: E402

PODS = "/api/v1/namespaces/default/pods"


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


async def creates_per_second(srv: ServerProcess, clients: int, total: int, tag: str) -> float:
    async with client_for(srv, clients) as http:
        queue = list(range(total))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                r = await http.post(PODS, json=pod_body(f"{tag}-{i}"))
                assert r.status_code == 201, r.text

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return total / (time.perf_counter() - start)


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


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        directory = Path(tmp)
        srv = ServerProcess(directory / "data")
        srv.data_dir.mkdir()
        srv.start()
        try:
            assert srv.proc is not None
            idle_rss = rss_mb(srv.proc.pid)
            print(f"{'measure':44} {'dockyard':>12} {'baseline':>26}")
            for clients in (1, 10, 50):
                rate = await creates_per_second(srv, clients, args.creates, f"c{clients}")
                base = await store_baseline(directory / f"b{clients}", clients, args.creates)
                print(f"{f'pod creates/s, {clients} clients':44} {rate:12.0f} "
                      f"{base:14.0f} (store only)")
            naive = naive_sqlite_baseline(directory, min(args.creates, 500))
            print(f"{'naive SQLite, 1 fsynced txn per write /s':44} {'':12} {naive:14.0f}")
            lat = await latency_at_rate(srv, args.rate, args.seconds)
            print(f"{f'create latency at {args.rate:.0f}/s p50 (ms)':44} "
                  f"{statistics.median(lat):12.2f} {'goal p99 <= 20':>26}")
            print(f"{f'create latency at {args.rate:.0f}/s p99 (ms)':44} {pct(lat, 0.99):12.2f}")
            delays = await watch_delivery(srv, 200)
            print(f"{'watch delivery p50 (ms)':44} {statistics.median(delays):12.2f}")
            print(f"{'watch delivery p99 (ms)':44} {pct(delays, 0.99):12.2f}")
            async with client_for(srv, 4) as http:
                stored = len((await http.get(PODS)).json()["items"])
            missing = max(0, 10_000 - stored)
            if missing:
                await creates_per_second(srv, 50, missing, "fill")
            async with client_for(srv, 4) as http:
                t0 = time.perf_counter()
                listed = len((await http.get(PODS)).json()["items"])
                list_ms = (time.perf_counter() - t0) * 1000
            print(f"{'RSS idle after start (MB)':44} {idle_rss:12.1f}")
            print(f"{f'RSS with {listed} pods stored (MB)':44} {rss_mb(srv.proc.pid):12.1f} "
                  f"{'goal <= 200':>26}")
            print(f"{f'list all {listed} pods (ms)':44} {list_ms:12.1f}")
        finally:
            srv.stop()
            print(f"server log: {os.path.getsize(srv.data_dir / 'server.log')} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--creates", type=int, default=2000, help="creates per concurrency level")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
