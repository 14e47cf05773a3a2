"""Swarm benchmark: `dockyard service` beside Docker Swarm (Debian's docker.io, in a dockerd
this benchmark starts, `swarm init` on loopback), same busybox image, same operations:

1. `service create --detach --replicas 5 --name web busybox sleep 3600` until 5 run;
2. `service scale --detach web=20` until 20 run;
3. (untimed) scale back to 10; then `service update --detach --image busybox:v2` with
   parallelism 2 and delay 0 until all 10 running tasks run busybox:v2.

Each time runs from the start of the user's command (the CLI process, as a user runs it) to the
first poll that sees the replicas running. Both systems are polled the same way: one HTTP GET of
their API every 50 ms (Docker's /tasks over its socket, dockyard's pods over HTTPS). `--detach`
on both, so Docker's CLI does not add its 5 s convergence monitor. Both services use the same
stop grace period (default 0 s: `sleep` as PID 1 ignores SIGTERM, so a grace period would be
waited in full on every stop-first batch, on both, and hide the orchestration time).

Anchors: Docker Swarm here ~0.8 s for 5 replicas, ~1.5 s to scale to 20. Goal: twice as fast
as Swarm on each, in the same run. Needs root. Everything the run makes (cluster, swarm,
dockerd, its bridges, mounts, cgroups) is removed and checked for; a leftover exits 1.
Run with `make bench-swarm`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from podstart import loadavg, part, say  # noqa: E402
from podstart_cluster import REPO, Cluster  # noqa: E402
from podstart_docker import DOCKER, DockerBench  # noqa: E402
from podstart_host import free_subnets, report_end, wait_clean  # noqa: E402
from podstart_image import prepare  # noqa: E402

from dockyard.cli.swarm.mapping import LABEL_SERVICE  # noqa: E402

NAME = "web"
IMAGE, IMAGE2 = "busybox", "busybox:v2"
POLL = 0.05

# (running task or pod images) -> done?
Check = Callable[[list[str]], bool]


def count_of(n: int, image: str | None = None) -> Check:
    def check(images: list[str]) -> bool:
        if image is None:
            return len(images) == n
        return len(images) == n and all(i.split("@")[0] == image for i in images)
    return check


class System:
    """One side: how to run its CLI and what its API says is running."""

    name = ""

    def command(self, *args: str) -> None:
        raise NotImplementedError

    def running_images(self) -> list[str]:
        raise NotImplementedError

    def wait(self, check: Check, timeout: float, t0: float,
             progress: dict[int, float] | None = None) -> float:
        """Poll every POLL s until `check` holds; seconds since t0. `progress`: when each
        count of running replicas was first seen (where the time went)."""
        while True:
            images = self.running_images()
            if progress is not None:
                progress.setdefault(len(images), round(time.perf_counter() - t0, 3))
            if check(images):
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{self.name}: not converged after {timeout:.0f} s; "
                                   f"running: {self.running_images()}")
            time.sleep(POLL)

    def timed(self, args: list[str], check: Check, timeout: float = 120) -> dict:
        t0 = time.perf_counter()
        self.command(*args)
        command = time.perf_counter() - t0
        progress: dict[int, float] = {}
        return {"seconds": self.wait(check, timeout, t0, progress), "command_seconds": command,
                "running_seen": progress}


class DockerSwarm(System):
    name = "Docker Swarm"

    def __init__(self, bench: DockerBench) -> None:
        self.bench = bench
        self.api = httpx.Client(transport=httpx.HTTPTransport(uds=str(bench.sock)),
                                base_url="http://docker", timeout=30)

    def command(self, *args: str) -> None:
        done = subprocess.run([DOCKER, *args], env=self.bench.env, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")

    def running_images(self) -> list[str]:
        filters = json.dumps({"service": [NAME], "desired-state": ["running"]})
        r = self.api.get("/tasks", params={"filters": filters})
        if r.status_code == 404:  # the service is gone (after `service rm`)
            return []
        r.raise_for_status()
        return [t["Spec"]["ContainerSpec"]["Image"] for t in r.json()
                if t["Status"]["State"] == "running"]


class Dockyard(System):
    name = "dockyard"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        srv = cluster.srv
        self.api = httpx.Client(base_url=srv.url, verify=srv.tls(), timeout=30,
                                headers={"Authorization": f"Bearer {srv.token}"})
        self.env = {**os.environ, "KUBECONFIG": str(srv.kubeconfig)}

    def command(self, *args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "dockyard.cli.main", *args],
                              env=self.env, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"dockyard {' '.join(args)}: {done.stderr.strip()}")

    def running_images(self) -> list[str]:
        r = self.api.get("/api/v1/namespaces/default/pods",
                         params={"labelSelector": f"{LABEL_SERVICE}={NAME}"})
        r.raise_for_status()
        return [p["spec"]["containers"][0]["image"] for p in r.json()["items"]
                if (p.get("status") or {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")]


def operations(system: System, grace: str) -> dict:
    """The three timed operations, then the service removed."""
    prefix = ["service"]
    out = {}
    say(f"{system.name}: create 5")
    out["create 5"] = system.timed(
        [*prefix, "create", "--detach", "--replicas", "5", "--name", NAME,
         "--stop-grace-period", grace, "--update-parallelism", "2", "--update-delay", "0s",
         IMAGE, "sleep", "3600"], count_of(5))
    say(f"{system.name}: scale to 20")
    out["scale 5 -> 20"] = system.timed([*prefix, "scale", "--detach", f"{NAME}=20"],
                                        count_of(20))
    say(f"{system.name}: scale to 10 (untimed), then update")
    system.timed([*prefix, "scale", "--detach", f"{NAME}=10"], count_of(10))
    out["rolling update 10"] = system.timed(
        [*prefix, "update", "--detach", "--image", IMAGE2, "--update-parallelism", "2",
         "--update-delay", "0s", NAME], count_of(10, IMAGE2))
    system.command(*prefix, "rm", NAME)
    system.wait(count_of(0), 120, time.perf_counter())
    return out


# -- Docker Swarm, in the benchmark's own dockerd ----------------------------------------------


class SwarmDaemon:
    """DockerBench's dockerd, plus a swarm on loopback. docker_gwbridge (which swarm init
    otherwise creates as an unprefixed bridge with masquerading) is made first, as the run's
    own prefixed Linux bridge with masquerading and inter-container traffic off."""

    def __init__(self, work: Path, prefix: str, subnets: list) -> None:  # type: ignore[type-arg]
        self.bench = DockerBench(work, prefix, subnets[0])
        self.gw_subnet, self.pool = subnets[1], subnets[2]
        self.gw_bridge = f"{prefix}gw"
        self.swarm = False

    def start(self, archive: Path) -> DockerSwarm:
        self.bench.start(archive)
        self.bench.docker("tag", "busybox:latest", IMAGE2)
        self.bench.docker(
            "network", "create", "--driver", "bridge", "--subnet", str(self.gw_subnet),
            "--opt", f"com.docker.network.bridge.name={self.gw_bridge}",
            "--opt", "com.docker.network.bridge.enable_icc=false",
            "--opt", "com.docker.network.bridge.enable_ip_masquerade=false",
            "docker_gwbridge")
        self.swarm = True
        self.bench.docker("swarm", "init", "--advertise-addr", "127.0.0.1",
                          "--listen-addr", "127.0.0.1:0", "--data-path-addr", "127.0.0.1",
                          "--default-addr-pool", str(self.pool),
                          "--default-addr-pool-mask-length", "24")
        return DockerSwarm(self.bench)

    def stop(self) -> None:
        if self.swarm and self.bench.proc is not None and self.bench.proc.poll() is None:
            for args in (("service", "rm", NAME), ("swarm", "leave", "--force"),
                         ("network", "rm", "docker_gwbridge")):
                subprocess.run([DOCKER, *args], env=self.bench.env, capture_output=True,
                               timeout=60, check=False)
        self.bench.stop()
        subprocess.run(["ip", "link", "del", self.gw_bridge], capture_output=True, check=False)


def docker_part(work: Path, prefix: str, subnets: list, archive: Path,  # type: ignore[type-arg]
                grace: str) -> dict:
    daemon = SwarmDaemon(work, prefix, subnets)
    try:
        system = daemon.start(archive)
        warm(system, grace)
        return {**operations(system, grace), "version": daemon.bench.version,
                "network": daemon.bench.network}
    finally:
        daemon.stop()


def dockyard_part(cluster: Cluster, grace: str) -> dict:
    import asyncio

    out: dict = {"api_ready_seconds": cluster.start()}
    out["node_ready_seconds"] = asyncio.run(cluster.wait_node_ready())
    system = Dockyard(cluster)
    warm(system, grace)
    return {**out, **operations(system, grace)}


def warm(system: System, grace: str) -> None:
    """One untimed service of one task first (first container, first overlay, both images'
    first use), removed before the timed runs."""
    say(f"{system.name}: warm-up")
    for image in (IMAGE2, IMAGE):
        system.command("service", "create", "--detach", "--replicas", "1", "--name", NAME,
                       "--stop-grace-period", grace, image, "sleep", "3600")
        system.wait(count_of(1), 120, time.perf_counter())
        system.command("service", "rm", NAME)
        system.wait(count_of(0), 120, time.perf_counter())


# -- main ----------------------------------------------------------------------------------------


def table(results: dict) -> list[str]:
    ours, theirs = results.get("dockyard", {}), results.get("docker", {})
    lines = [f"{'operation (s, command start -> replicas seen running)':56}{'dockyard':>10}"
             f"{'Swarm':>10}{'ratio':>8}{'goal':>12}"]
    for op in ("create 5", "scale 5 -> 20", "rolling update 10"):
        a = ours.get(op, {}).get("seconds")
        b = theirs.get(op, {}).get("seconds")
        ratio = f"{b / a:.2f}x" if a and b else "-"
        ok = "" if not (a and b) else ("met" if b / a >= 2 else "not met")
        lines.append(f"{op:56}{_f(a):>10}{_f(b):>10}{ratio:>8}{'2x ' + ok:>12}")
    lines.append("  (ratio: Swarm time / dockyard time; the CLI call alone, dockyard / docker: "
                 + ", ".join(f"{_f(ours.get(op, {}).get('command_seconds'))} / "
                             f"{_f(theirs.get(op, {}).get('command_seconds'))}"
                             for op in ("create 5", "scale 5 -> 20", "rolling update 10"))
                 + ")")
    return lines


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("the swarm benchmark needs root (runc, mounts, dockerd)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="dyw-", dir="/tmp"))  # short: unix socket paths
    prefix = "dyk" + secrets.token_hex(3)[:5]  # never a cluster prefix (runtime/naming.py)
    data_dir = tmp / "cluster"
    pod_net, docker_net, gw_net, pool = free_subnets([24, 24, 24, 20],
                                                     secrets.randbelow(1 << 16))
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": loadavg(),
                     "args": vars(args)}
    cluster = Cluster(data_dir, str(pod_net), 64)
    say(f"work dir {tmp}, prefixes {prefix} (docker) and {cluster.prefix} (cluster), "
        f"load {loadavg()}")
    try:
        data_dir.mkdir()
        image = prepare(data_dir, tmp)
        from dockyard.runtime.images import ImageStore

        ImageStore(data_dir / "images").tag("busybox:latest", IMAGE2)
        results["image"] = image.source
        if not args.skip_docker:
            part(results, "docker", docker_part, tmp / "docker", prefix,
                 [docker_net, gw_net, pool], image.archive, args.stop_grace_period)
        if not args.skip_dockyard:
            try:
                part(results, "dockyard", dockyard_part, cluster, args.stop_grace_period)
            finally:
                say("stopping the cluster; dockyard cleanup")
                results["cleanup"] = cluster.stop()
                if results["cleanup"]["rc"] != 0:
                    results.setdefault("errors", {})["cleanup"] = results["cleanup"]["output"]
    finally:
        results["loadavg_end"] = loadavg()
        found = wait_clean([prefix, cluster.prefix], [tmp])
        found += [line for line in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                  text=True).stdout.splitlines()
                  if "docker_gwbridge" in line or "docker0" in line]
        results["leftovers"] = found
        if found or "cleanup" in results.get("errors", {}):
            print(f"kept {tmp} to finish by hand: dockyard cleanup --data-dir {data_dir}",
                  file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return report_end(results, table(results),
                      f"image: {results.get('image', '-')}; docker "
                      f"{results.get('docker', {}).get('version', '-')}; stop grace period "
                      f"{args.stop_grace_period} on both", found, args.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stop-grace-period", default="0s",
                        help="both services' stop grace period (Docker's syntax)")
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument("--skip-dockyard", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON here")
    sys.exit(main(parser.parse_args()))
