"""Pod-start benchmark: pods created at a fixed rate on one node, create → Running seen through
a watch, printed beside raw `runc run` of the same busybox rootfs and `docker run` (Debian's
docker.io, in a dockerd this benchmark starts) measured in the same run; then density: M pods
on the node, the cluster process's RSS and idle CPU, and the host memory each pod costs.

Anchors: Kubernetes' pod startup SLO is p99 <= 5 s; `docker run` here ~0.3-0.4 s; raw runc
~0.03 s. Goals: p50 <= 100 ms, p99 <= 300 ms; agent < 150 MB and < 2% of a core idle with 500
pods. Needs root. Everything the run creates (containers, mounts, netns, links, cgroups,
dockerd) is removed at the end and checked for; a leftover makes the exit status 1.
Run with `make bench-podstart`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from podstart_cluster import Cluster  # noqa: E402
from podstart_docker import DockerBench  # noqa: E402
from podstart_host import free_subnets, report_end, summary, wait_clean  # noqa: E402
from podstart_image import prepare  # noqa: E402
from podstart_runc import RuncBench  # noqa: E402


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pod_prefixlen(pods: int) -> int:
    """The smallest subnet holding `pods` addresses plus gateway, network and broadcast."""
    length = 24
    while (1 << (32 - length)) - 3 < pods:
        length -= 1
    return length


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def arun(coro):  # type: ignore[no-untyped-def]
    """asyncio.run where SIGTERM and ^C cancel the coroutine at an await, so its `finally`
    blocks and the caller's cleanup run (a KeyboardInterrupt raised inside the loop can
    land in asyncio's own callbacks and hang it)."""
    async def guarded():  # type: ignore[no-untyped-def]
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for sig in saved:
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await coro
        finally:
            for sig, handler in saved.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def part(results: dict, name: str, fn, *args):  # type: ignore[no-untyped-def]
    """Run one part; a failure is recorded and printed, the other parts still run."""
    t0 = time.perf_counter()
    try:
        results[name] = fn(*args)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - reported in the output, the run goes on
        results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        say(f"{name} failed: {exc}")
        traceback.print_exc()
    say(f"{name} done in {time.perf_counter() - t0:.1f} s")


def runc_part(work: Path, prefix: str, layers: list[Path], args: argparse.Namespace) -> dict:
    bench = RuncBench(work, prefix, layers)
    try:
        result = bench.run(args.pods, args.rate)
    finally:
        result_cleanup = bench.cleanup()
    return {**result, "delete_seconds": result_cleanup}


def docker_part(work: Path, prefix: str, subnet, archive: Path,  # type: ignore[no-untyped-def]
                args: argparse.Namespace) -> dict:
    bench = DockerBench(work, prefix, subnet)
    try:
        bench.start(archive)
        result = bench.run(args.pods, args.rate)
        alone = bench.one_at_a_time(args.alone)
        removed = bench.remove_all()
        return {**result, "alone": alone, "delete_seconds": removed, "version": bench.version,
                "network": bench.network}
    finally:
        bench.stop()


def cluster_part(cluster: Cluster, args: argparse.Namespace) -> dict:
    out: dict = {"api_ready_seconds": cluster.start()}
    out["node_ready_seconds"] = arun(cluster.wait_node_ready())
    say("cluster up; warm-up pod")
    warm = arun(cluster.start_pods(1, 1, "warm", 120))
    if warm["not_running"]:
        raise RuntimeError(f"the warm-up pod never ran: {warm['not_running']}")
    arun(cluster.delete_pods("warm", 60))
    if args.alone:
        out["alone"] = arun(cluster.start_pods(args.alone, 1, "alone", 60,
                                                      one_at_a_time=True))
        out["alone_delete"] = arun(cluster.delete_pods("alone", 60))
    say(f"{args.pods} pods at {args.rate:g}/s")
    out["pods"] = arun(cluster.start_pods(args.pods, args.rate, "ps",
                                                 120 + args.pods / args.rate))
    out["delete"] = arun(cluster.delete_pods("ps", 120 + args.pods / 5))
    if args.density:
        say(f"density: {args.density} pods, then {args.settle:g} s settle and "
            f"{args.idle:g} s idle")
        out["density"] = arun(cluster.density(
            args.density, args.density_rate or args.rate, args.settle, args.idle,
            300 + 2 * args.density / (args.density_rate or args.rate)))
    return out


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def table(results: dict, args: argparse.Namespace) -> list[str]:
    cluster = results.get("dockyard", {})
    pods = summary(cluster.get("pods", {}).get("start", []))
    runc = results.get("runc", {})
    docker = results.get("docker", {})
    cols = {
        "dockyard pod": pods,
        "runc run": summary(runc.get("start", [])),
        "docker run": summary(docker.get("start", [])),
        "pod, 1 at a time": summary(cluster.get("alone", {}).get("start", [])),
        "docker, 1 at a time": summary(docker.get("alone", {}).get("start", [])),
    }
    goals = {"p50": "<= 100", "p90": "", "p99": "<= 300 (SLO 5000)", "max": ""}
    lines = [f"start → running at {args.rate:g}/s, {args.pods} each (ms; dockyard: create "
             "sent → Running on the watch)",
             f"{'':8}" + "".join(f"{c:>20}" for c in cols) + f"{'goal':>20}"]
    for q in ("p50", "p90", "p99", "max"):
        lines.append(f"{q:8}" + "".join(f"{fmt(s[q]):>20}" for s in cols.values())
                     + f"{goals[q]:>20}")
    commands = [summary(c.get("command", []))["p50"] for c in (runc, docker)]
    lines.append(f"{'command':8}{'':>20}" + "".join(f"{fmt(c):>20}" for c in commands)
                 + f"{'':>20}{fmt(summary(docker.get('alone', {}).get('command', []))['p50']):>20}"
                 + "  p50 of the CLI call alone")
    if cluster.get("pods", {}).get("create_call"):
        create = summary(cluster["pods"]["create_call"])
        lines.append(f"dockyard create call p50 / p99: {fmt(create['p50'], 2)} / "
                     f"{fmt(create['p99'], 2)} ms; all {args.pods} Running "
                     f"{fmt(cluster['pods']['all_running_after'], 2)} s after the first create")
    if cluster.get("pods", {}).get("not_running"):
        lines.append(f"NOT running: {cluster['pods']['not_running'][:5]}")
    lines.append("")
    lines.append(f"{'delete all (s)':30}{'dockyard':>16}{'runc':>16}{'docker':>16}")
    delete = cluster.get("delete", {})
    lines.append(f"{f'{args.pods} pods / containers':30}{fmt(delete.get('seconds'), 2):>16}"
                 f"{fmt(runc.get('delete_seconds'), 2):>16}"
                 f"{fmt(docker.get('delete_seconds'), 2):>16}")
    lines.append("  (dockyard: DELETE of every pod → last DELETED event, 1 s grace; runc: "
                 "delete --force one by one; docker: one rm -f of all)")
    dense = cluster.get("density")
    if dense:
        lines += ["", f"density: {dense['running']} of {dense['pods']} pods Running on one node "
                  f"({fmt(dense['all_running_after'])} s after the first create)",
                  f"{'measure':52}{'dockyard':>14}{'goal':>16}",
                  f"{'cluster process RSS (MB; API + agent, one process)':52}"
                  f"{fmt(dense['cluster_rss_mb']):>14}{'< 150':>16}",
                  f"{f'cluster process CPU, {args.idle:g} s idle (% of a core)':52}"
                  f"{fmt(dense['cluster_cpu_pct'], 2):>14}{'< 2':>16}",
                  f"{'  + children it reaped in that window (runc, CNI)':52}"
                  f"{fmt(dense['cluster_children_cpu_pct'], 2):>14}",
                  f"{'all pod processes CPU, same window (%)':52}"
                  f"{fmt(dense['pod_processes_cpu_pct'], 2):>14}",
                  f"{'host memory per pod (MemAvailable drop / pods, MB)':52}"
                  f"{fmt(dense['host_mb_per_pod'], 2):>14}",
                  f"{'pods memory cgroup / pods (kB: usage, rss, cache, kmem)':52}"
                  + "".join(f"{fmt(v, 0):>8}" for v in dense["cgroup_kb_per_pod"].values()),
                  f"{'one pod processes RSS / PSS (kB)':52}"
                  f"{dense['one_pod_rss_kb']:>8,} / {dense['one_pod_pss_kb']:,}",
                  f"  ({dense['pod_process_count']} pod processes in {dense['pod_netns_count']} "
                  "pod network namespaces)"]
        for p in dense["one_pod_processes"]:
            lines.append(f"    {p['comm']:16} rss {p['rss_kb']:>6,} kB  pss {p['pss_kb']:>6,} kB"
                         f"  {p['args'][:50]}")
        for child in dense["children"]:
            lines.append(f"  child of the cluster process: {child['comm']} "
                         f"{fmt(child['rss_mb'])} MB")
        if dense["not_running"]:
            lines.append(f"NOT running (first 5): {dense['not_running']}")
        cleanup = results.get("cleanup", {})
        label = f"cluster stop, then `dockyard cleanup` of {dense['running']} pods (s)"
        lines.append(f"{label:52}{fmt(cleanup.get('seconds'), 2):>14}")
    return lines


def main(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("podstart needs root (runc, mounts, network namespaces, dockerd)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # like ^C: the `finally` cleanups run
    # A short /tmp path: dockerd's and containerd's unix sockets live under it (108-byte limit).
    tmp = Path(tempfile.mkdtemp(prefix="dyb-", dir="/tmp"))
    # `dyk`: not a hex digit after `dy`, so never the prefix of a cluster (runtime/naming.py).
    prefix = "dyk" + secrets.token_hex(3)[:5]
    data_dir = tmp / "cluster"
    max_pods = max(args.pods, args.density) + 10
    pod_net, docker_net = free_subnets([pod_prefixlen(max_pods), 24], secrets.randbelow(1 << 16))
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": loadavg(),
                     "args": vars(args), "pod_cidr": str(pod_net), "docker_subnet": str(docker_net)}
    cluster = Cluster(data_dir, str(pod_net), max_pods)
    say(f"work dir {tmp}, prefixes {prefix} (baselines) and {cluster.prefix} (cluster), "
        f"pod CIDR {pod_net}, load {loadavg()}")
    try:
        data_dir.mkdir()
        image = prepare(data_dir, tmp)
        results["image"] = image.source
        say(f"image: {image.source}")
        part(results, "runc", runc_part, tmp / "runc", prefix, image.layer_dirs, args)
        if not args.skip_docker:
            part(results, "docker", docker_part, tmp / "docker", prefix, docker_net,
                 image.archive, args)
        if not args.skip_dockyard:
            try:
                part(results, "dockyard", cluster_part, cluster, args)
            finally:
                say("stopping the cluster; dockyard cleanup")
                results["cleanup"] = cluster.stop()
                if results["cleanup"]["rc"] != 0:
                    results.setdefault("errors", {})["cleanup"] = results["cleanup"]["output"]
    finally:
        results["loadavg_end"] = loadavg()
        found = wait_clean([prefix, cluster.prefix], [tmp])
        results["leftovers"] = found
        if found or "cleanup" in results.get("errors", {}):
            print(f"kept {tmp} to finish by hand: dockyard cleanup --data-dir {data_dir}",
                  file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    docker = results.get("docker", {})
    return report_end(results, table(results, args),
                      f"image: {results['image']}; docker {docker.get('version', '-')} "
                      f"(network {docker.get('network', '-')})", found, args.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=100, help="pods (and baseline containers)")
    parser.add_argument("--rate", type=float, default=20.0, help="creates per second")
    parser.add_argument("--density", type=int, default=500,
                        help="pods of the density run (0: skip it)")
    parser.add_argument("--density-rate", type=float, default=0.0,
                        help="creates/s of the density run (default: --rate)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds after all density pods run before measuring")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the idle CPU window")
    parser.add_argument("--alone", type=int, default=10,
                        help="extra pods and `docker run`s one at a time, each waiting for the "
                        "previous to run (latency without queueing; 0: skip)")
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument("--skip-dockyard", action="store_true",
                        help="baselines only (e.g. while the node agent is not there)")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON here")
    sys.exit(main(parser.parse_args()))
