"""Scheduler benchmark: pods bound per second at 5,000 simulated nodes, plain and with 20%
pod anti-affinity, and a 1,000-replica Deployment becoming available on simulated nodes.

Throughput is measured like kube-scheduler's scheduler_perf: nodes and pending pods are in the
store first, then `dockyard scheduler` starts in its own process; we time from its first bind
to the last (and report the informer sync before it). The baseline, in the same run, is the
same scheduler examining every node per pod (percentage-of-nodes-to-score 100). Anchor:
kube-scheduler's CI floor at 5,000 nodes is 680 pods/s (35-90 pods/s with affinity).
Run with `make bench-scheduler`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ServerProcess  # noqa: E402

PODS = "/api/v1/namespaces/default/pods"


def node_body(i: int, zones: int) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": f"bench-node-{i}", "labels": {
            "kubernetes.io/hostname": f"bench-node-{i}",
            "topology.kubernetes.io/zone": f"zone-{i % zones}", "type": "dockyard-sim"}},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def pod_body(i: int, anti_affinity: bool) -> dict:
    pod: dict = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"bench-{i}", "labels": {"app": f"app-{i % 50}"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                 "resources": {"requests": {"cpu": "100m",
                                                            "memory": "128Mi"}}}]},
    }
    if anti_affinity:
        pod["spec"]["affinity"] = {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": pod["metadata"]["labels"]["app"]}},
                "topologyKey": "kubernetes.io/hostname"}]}}
    return pod


async def create_all(srv: ServerProcess, bodies: list[tuple[str, dict]]) -> None:
    async with httpx.AsyncClient(base_url=srv.url, verify=srv.tls(), timeout=60,
                                 headers={"Authorization": f"Bearer {srv.token}"},
                                 limits=httpx.Limits(max_connections=32)) as http:
        queue = list(reversed(bodies))

        async def worker() -> None:
            while queue:
                path, body = queue.pop()
                r = await http.post(path, json=body)
                assert r.status_code == 201, r.text

        await asyncio.gather(*(worker() for _ in range(32)))


async def measure(srv: ServerProcess, pods: int, extra: list[str]) -> tuple[float, float]:
    """Start a scheduler process; return (seconds to first bind, pods/s first→last bind).

    Binds are observed on one watch (cheap for the server), not by polling lists.
    """
    env = {**os.environ, "KUBECONFIG": str(srv.kubeconfig)}
    async with httpx.AsyncClient(base_url=srv.url, verify=srv.tls(),
                                 timeout=httpx.Timeout(60, read=None),
                                 headers={"Authorization": f"Bearer {srv.token}"}) as http:
        rv = (await http.get(PODS, params={"limit": "1"})).json()["metadata"]["resourceVersion"]
        bound: set[str] = set()
        first = last = 0.0
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "dockyard.cli.main", "scheduler",
                                 "--no-leader-elect", *extra], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "600"}
            async with http.stream("GET", PODS, params=params) as stream:
                async for line in stream.aiter_lines():
                    obj = orjson.loads(line)["object"]
                    if (obj.get("spec") or {}).get("nodeName"):
                        bound.add(obj["metadata"]["name"])
                        last = time.perf_counter()
                        first = first or last
                        if len(bound) == pods:
                            break
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    if len(bound) < pods:
        raise RuntimeError(f"only {len(bound)} of {pods} pods were bound")
    return first - started, (pods - 1) / max(last - first, 1e-9)


async def scheduling_run(directory: Path, nodes: int, pods: int, anti: float,
                         extra: list[str]) -> tuple[float, float]:
    srv = ServerProcess(directory, extra_args=["--disable-scheduler",
                                               "--disable-controller-manager"])
    srv.data_dir.mkdir()
    srv.start()
    try:
        await create_all(srv, [("/api/v1/nodes", node_body(i, 10)) for i in range(nodes)])
        await create_all(srv, [(PODS, pod_body(i, i < pods * anti)) for i in range(pods)])
        return await measure(srv, pods, extra)
    finally:
        srv.stop()


async def deployment_run(directory: Path, replicas: int, nodes: int) -> float:
    """Seconds from creating a Deployment to all replicas available on simulated nodes."""
    srv = ServerProcess(directory)
    srv.data_dir.mkdir()
    srv.start()
    env = {**os.environ, "KUBECONFIG": str(srv.kubeconfig)}
    sim = subprocess.Popen([sys.executable, "-m", "dockyard.cli.main", "sim", "--nodes",
                            str(nodes)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=srv.url, verify=srv.tls(), timeout=60,
                                     headers={"Authorization": f"Bearer {srv.token}"}) as http:
            while len((await http.get("/api/v1/nodes")).json()["items"]) < nodes:
                await asyncio.sleep(0.2)
            body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "big"},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "big"}},
                             "template": {"metadata": {"labels": {"app": "big"}}, "spec": {
                                 "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}
            t0 = time.perf_counter()
            r = await http.post("/apis/apps/v1/namespaces/default/deployments", json=body)
            assert r.status_code == 201, r.text
            while True:
                status = (await http.get(
                    "/apis/apps/v1/namespaces/default/deployments/big")).json().get("status", {})
                if status.get("availableReplicas") == replicas:
                    return time.perf_counter() - t0
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"deployment not available after 300 s: {status}")
                await asyncio.sleep(0.1)
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)
        srv.stop()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        d = Path(tmp)
        print(f"{'measure':52} {'dockyard':>10} {'baseline: all nodes':>20}")
        for label, anti in (("plain", 0.0), ("20% pod anti-affinity", 0.2)):
            sync, rate = await scheduling_run(d / f"a{anti}", args.nodes, args.pods, anti, [])
            _, base = await scheduling_run(d / f"b{anti}", args.nodes, args.pods, anti,
                                           ["--percentage-of-nodes-to-score", "100"])
            print(f"{f'pods/s, {args.nodes} nodes, {args.pods} pods, {label}':52} "
                  f"{rate:10.0f} {base:20.0f}")
            print(f"{'  informer sync before first bind (s)':52} {sync:10.2f}")
        seconds = await deployment_run(d / "deploy", args.replicas, args.sim_nodes)
        label = f"{args.replicas}-replica Deployment available ({args.sim_nodes} sim nodes, s)"
        print(f"{label:52} {seconds:10.2f} {'goal < 5':>20}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--sim-nodes", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
