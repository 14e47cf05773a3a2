"""Store benchmark: creates/s with 10 concurrent writers, EtcdStore beside SQLiteStore.

All runs in the same process on the same machine, each against a fresh store:
- SQLiteStore (group commit, WAL, synchronous=FULL), the embedded default;
- raw puts through etcd's JSON gateway (aiohttp, no compare-and-swap, no watch): the floor
  that the transport and etcd's own fsync put under EtcdStore;
- EtcdStore over 1 etcd member and over 3 members on loopback (a create is a txn, and
  returns once the store's watch has delivered it).

Run: `.venv/bin/python bench/store_etcd.py [--creates 3000] [--writers 10]`. Needs `etcd`
(Debian's etcd-server); etcd members are started in a temporary directory and stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dockyard.store.etcd import EtcdStore  # noqa: E402
from dockyard.store.interface import Store  # noqa: E402
from dockyard.store.sqlite import SQLiteStore  # noqa: E402
from tests.etcdcluster import EtcdCluster  # noqa: E402


def pod_value(i: int) -> bytes:
    """A ~1 KB pod, the size of what the API server stores."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"pod-{i}", "namespace": "default", "uid": f"uid-{i:032d}",
                     "labels": {"app": "bench", "tier": "load"},
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"containers": [{
            "name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
            "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
            "env": [{"name": "MODE", "value": "bench"}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "terminationMessagePath": "/dev/termination-log",
            "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler", "terminationGracePeriodSeconds": 30},
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }).encode()


async def drive(create: Callable[[int], Awaitable[object]], total: int,
                writers: int) -> tuple[float, list[float]]:
    """`total` creates from `writers` concurrent tasks: (creates/s, latencies in ms)."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def writer() -> None:
        for i in counter:
            started = time.perf_counter()
            await create(i)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return total / (time.perf_counter() - started), latencies


async def bench_store(store: Store, total: int, writers: int) -> tuple[float, list[float]]:
    await store.start()
    try:
        await drive(lambda i: store.create(f"/warm/{i}", pod_value(i)), 200, writers)
        return await drive(
            lambda i: store.create(f"/registry/core/pods/default/pod-{i}", pod_value(i)),
            total, writers)
    finally:
        await store.close()


async def bench_raw_put(endpoint: str, total: int, writers: int) -> tuple[float, list[float]]:
    async with aiohttp.ClientSession() as session:
        async def put(i: int) -> None:
            body = {"key": base64.b64encode(f"/raw/{i}".encode()).decode(),
                    "value": base64.b64encode(pod_value(i)).decode()}
            async with session.post(f"{endpoint}/v3/kv/put", json=body) as resp:
                resp.raise_for_status()
                await resp.read()

        await drive(put, 200, writers)
        return await drive(put, total, writers)


def line(name: str, result: tuple[float, list[float]]) -> str:
    rate, latencies = result
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (f"{name:<44} {rate:>9.0f} creates/s   p50 {statistics.median(ordered):6.2f} ms"
            f"   p99 {p99:6.2f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=3000)
    parser.add_argument("--writers", type=int, default=10)
    args = parser.parse_args()
    n, w = args.creates, args.writers
    print(f"{n} creates of ~{len(pod_value(0))} B values, {w} concurrent writers")
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        base = Path(tmp)
        print(line("SQLiteStore (WAL, synchronous=FULL)",
                   await bench_store(SQLiteStore(base / "state.db"), n, w)), flush=True)
        with EtcdCluster(base / "etcd1") as one:
            print(line("etcd 1 member: raw gateway put (baseline)",
                       await bench_raw_put(one.endpoints[0], n, w)), flush=True)
            print(line("etcd 1 member: EtcdStore.create",
                       await bench_store(EtcdStore(one.endpoints), n, w)), flush=True)
        with EtcdCluster(base / "etcd3", size=3) as three:
            print(line("etcd 3 members: raw gateway put (baseline)",
                       await bench_raw_put(three.endpoints[three.leader()], n, w)), flush=True)
            print(line("etcd 3 members: EtcdStore.create",
                       await bench_store(EtcdStore(three.endpoints), n, w)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
