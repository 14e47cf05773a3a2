"""Network benchmark (issue 5): request latency through the proxy rules, rule sync time, DNS.

1. Request latency, pod → pod directly vs pod → ClusterIP, in a real 2-node cluster: the
   multi-node test harness (tests/multinode.py: a control plane, two agents, each node a
   network namespace "host" on a test bridge, routes between them). Two nodes rather than the
   single-node `dockyard up` because a Service's endpoints are on the client's node *and* on
   other nodes, and both paths cost differently (the same-node one is DNATed and re-bridged by
   br_netfilter; the other crosses two hosts' forwarding and the route between them).
   Client and servers are one tiny static C program (`tcplat`, below, built with gcc on each
   run), mounted into busybox pods by a hostPath volume: the server answers an HTTP-shaped
   request with its hostname without forking; the client, run inside the client pod with
   `kubectl exec`, times each request with CLOCK_MONOTONIC. The exec and kubectl costs are
   outside the numbers. Two shapes:
     - new connection per request (socket, connect, GET, response, close): the first packet of
       each connection goes through the nat chains (the service map lookup and DNAT) and a new
       conntrack entry; this is what the proxy rules cost.
     - keep-alive (one connection, request/response round trips): only established packets,
       translated by conntrack; the rules are not evaluated again.
   Paths from a client pod on node-1: loopback inside the pod (the floor: the TCP stack and
   the program), pod → pod on the same node and on the other node, and the same pods through a
   ClusterIP of one endpoint each, in interleaved rounds (a busy moment of the machine hits
   every path alike). Then 1,000 more services of 10 endpoints each are created through the
   API and every path is measured again with the large table in place (kube-proxy's iptables
   mode walks one rule per service for a connection's first packet; the map lookup should
   not care); the time both nodes' proxies take to hold them all is printed too.
2. Rule sync time for 1,000 services x 10 endpoints: bench/network_rules.py (our nftables
   table vs kube-proxy's iptables layout applied with iptables-restore, same run).
3. DNS queries per second of the node DNS server: bench/dns.py (vs the same server without
   its reply cache, and dnsmasq), run as its own process.

Needs root, runc, nft, gcc with static glibc (libc6-dev), iptables-restore for the rules
baseline, dnsperf and dnsmasq for the DNS numbers (each part says what it misses). Nothing
leaves the namespaces and the bridge the run makes; everything is removed at the end.

    .venv/bin/python bench/network.py [--requests 1000] [--rounds 20] [--services 1000]
                                      [--dns-seconds 5] [--skip-cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/dns.py would shadow dnspython's `dns` package (dockyard.network.dns imports it).
HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
import yaml  # noqa: E402

from dockyard.network import netns  # noqa: E402
from dockyard.runtime.naming import cluster_prefix  # noqa: E402

Obj = dict[str, Any]
PORT = 8080

TCPLAT_C = r"""
/* tcplat: a request/response server that does not fork, and a latency client (static, so it
 * runs in a busybox pod).  serve PORT | conn IP PORT N | keep IP PORT N
 * conn: a new TCP connection per request; keep: N requests over one connection.
 * The client prints each request's time in nanoseconds, one per line, after a line
 * "# <body of the first response>". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }
static void on_term(int sig) { (void)sig; _exit(0); }

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void serve(int port) {
    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);
    char host[200] = "?", response[400];
    gethostname(host, sizeof host - 1);
    int body = (int)strlen(host) + 1;
    int len = snprintf(response, sizeof response,
                       "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s\n", body, host);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (s < 0) die("socket");
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(s, 512) < 0) die("listen");
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        nodelay(c);
        struct timeval idle = {.tv_sec = 5};  /* a vanished client cannot hold the server */
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
        char buf[4096];
        size_t have = 0;
        int done = 0;
        while (!done) {
            ssize_t n = read(c, buf + have, sizeof buf - 1 - have);
            if (n <= 0) break;
            have += (size_t)n;
            buf[have] = 0;
            char *end;
            while ((end = strstr(buf, "\r\n\r\n")) != NULL) {
                char *v10 = strstr(buf, "HTTP/1.0");
                if (write(c, response, (size_t)len) != len) { done = 1; break; }
                size_t used = (size_t)(end + 4 - buf);
                memmove(buf, buf + used, have - used + 1);
                have -= used;
                if (v10 != NULL && v10 < end) { done = 1; break; }
            }
            if (have >= sizeof buf - 1) break;
        }
        close(c);
    }
}

static int connect_to(const char *ip, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    nodelay(fd);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) { fprintf(stderr, "bad ip %s\n", ip); exit(2); }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    return fd;
}

/* Reads one response (headers, then Content-Length bytes); returns its body (static). */
static const char *read_response(int fd, int until_eof) {
    static char buf[4096];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n < 0) die("read");
        if (n == 0) break;
        have += (size_t)n;
        buf[have] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (!until_eof && end) {
            char *cl = strstr(buf, "Content-Length: ");
            size_t want = cl ? (size_t)atoi(cl + 16) : 0;
            if (have >= (size_t)(end + 4 - buf) + want) break;
        }
        if (have >= sizeof buf - 1) break;
    }
    char *end = strstr(buf, "\r\n\r\n");
    if (!end) { fprintf(stderr, "no response\n"); exit(3); }
    char *body = end + 4, *nl = strchr(body, '\n');
    if (nl) *nl = 0;
    return body;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "serve") == 0) { serve(atoi(argv[2])); return 0; }
    if (argc != 5) { fprintf(stderr, "usage: serve PORT | conn|keep IP PORT N\n"); return 2; }
    const char *ip = argv[2];
    int port = atoi(argv[3]), n = atoi(argv[4]), keep = strcmp(argv[1], "keep") == 0;
    static const char req10[] = "GET / HTTP/1.0\r\n\r\n";
    static const char req11[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    long long *t = calloc((size_t)n, sizeof *t);
    char first[256] = "";
    int fd = keep ? connect_to(ip, port) : -1;
    for (int i = 0; i < n; i++) {
        long long start = now_ns();
        if (!keep) fd = connect_to(ip, port);
        const char *req = keep ? req11 : req10;
        size_t len = keep ? sizeof req11 - 1 : sizeof req10 - 1;
        if (write(fd, req, len) != (ssize_t)len) die("write");
        const char *body = read_response(fd, !keep);
        if (!keep) close(fd);
        t[i] = now_ns() - start;
        if (i == 0) snprintf(first, sizeof first, "%s", body);
    }
    if (keep) close(fd);
    printf("# %s\n", first);
    for (int i = 0; i < n; i++) printf("%lld\n", t[i]);
    return 0;
}
"""


def build_tool(directory: Path) -> Path:
    source = directory / "tcplat.c"
    source.write_text(TCPLAT_C)
    binary = directory / "tcplat"
    subprocess.run(["gcc", "-O2", "-static", "-Wall", "-o", str(binary), str(source)],
                   check=True, capture_output=True, text=True)
    return binary


def _load(name: str) -> Any:
    """A sibling bench module, by its file (the bench directory is not on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 (nearest rank) of samples in milliseconds."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan"), float("nan")
    rank = max(0, min(len(ordered) - 1, round(0.99 * len(ordered)) - 1))
    return statistics.median(ordered), ordered[rank]


# -- 1. request latency in a 2-node cluster ---------------------------------------------------


def tool_pod(name: str, labels: dict[str, str], node: str, bindir: Path) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "nodeSelector": {"kubernetes.io/hostname": node},
                     "volumes": [{"name": "bench", "hostPath": {"path": str(bindir),
                                                                "type": "Directory"}}],
                     "containers": [{
                         "name": "main", "image": "busybox",
                         "command": ["/bench/tcplat", "serve", str(PORT)],
                         "ports": [{"name": "tcplat", "containerPort": PORT}],
                         "volumeMounts": [{"name": "bench", "mountPath": "/bench",
                                           "readOnly": True}]}]}}


def service(name: str, selector: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector,
                     "ports": [{"name": "tcplat", "port": 80, "targetPort": PORT}]}}


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def run_client(cluster: Any, paths: list[tuple[str, str, str, int]], count: int,
               mode: str) -> tuple[dict[str, list[float]], dict[str, str]]:
    """One `kubectl exec` into the client pod running `tcplat <mode>` for every path in turn:
    the samples (ms) per path and the body of each path's first answer."""
    script = "set -e; " + "; ".join(f"echo '@ {key}'; /bench/tcplat {mode} {ip} {port} {count}"
                                    for key, _, ip, port in paths)
    out = cluster.kubectl("exec", "client", "--", "sh", "-c", script)
    samples: dict[str, list[float]] = {}
    bodies: dict[str, str] = {}
    key = ""
    for line in out.stdout.splitlines():
        if line.startswith("@ "):
            key = line[2:]
            samples[key] = []
        elif line.startswith("# "):
            bodies[key] = line[2:]
        elif line.strip():
            samples[key].append(int(line) / 1e6)
    return samples, bodies


def measure(cluster: Any, paths: list[tuple[str, str, str, int]], requests: int,
            rounds: int) -> dict[tuple[str, str], tuple[float, float]]:
    """(path, mode) -> (p50, p99) over `requests` per path, taken in interleaved rounds (so a
    slow moment of the machine hits every path alike; each round starts with another path)
    after a warm-up round."""
    per_round = max(1, requests // rounds)
    out = {}
    for mode in ("conn", "keep"):
        run_client(cluster, paths, 20, mode)  # warm-up: caches, conntrack, ARP
        collected: dict[str, list[float]] = {key: [] for key, *_ in paths}
        for i in range(rounds):
            order = paths[i % len(paths):] + paths[:i % len(paths)]  # no path always first
            samples, _ = run_client(cluster, order, per_round, mode)
            for key, values in samples.items():
                collected[key] += values
        for key, values in collected.items():
            out[(key, mode)] = percentiles(values)
    return out


async def create_services(cluster: Any, count: int, endpoints: int) -> float:
    """`count` selector-less services with one EndpointSlice of `endpoints` addresses each
    (198.18.0.0/15, the benchmarking range: nothing is ever sent there). Seconds taken."""
    headers = {"Authorization": f"Bearer {cluster.server.token}"}
    limit = asyncio.Semaphore(16)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=cluster.server.url, verify=cluster.server.tls(),
                                 headers=headers, timeout=60) as http:

        async def one(i: int) -> None:
            name = f"load-{i:05d}"
            eps = [{"addresses": [f"198.18.{(i * endpoints + j) // 250 % 250}."
                                  f"{(i * endpoints + j) % 250 + 1}"],
                    "conditions": {"ready": True}} for j in range(endpoints)]
            async with limit:
                r = await http.post("/api/v1/namespaces/load/services", json={
                    "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
                r.raise_for_status()
                r = await http.post(
                    "/apis/discovery.k8s.io/v1/namespaces/load/endpointslices", json={
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": f"{name}-1",
                                     "labels": {"kubernetes.io/service-name": name}},
                        "addressType": "IPv4", "endpoints": eps,
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - started


def table_services(host: Any) -> int:
    """Elements of the `services` map in a node's table (inside its host)."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", "nft", "-j", "list",
                          "map", "ip", host.prefix, "services"],
                         capture_output=True, text=True, timeout=60).stdout
    for item in json.loads(out or "{}").get("nftables") or []:
        if "map" in item:
            return len(item["map"].get("elem") or [])
    return 0


def latency_part(args: argparse.Namespace) -> dict[str, Any]:
    from tests.multinode import MultiNodeCluster

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-net-") as tmp:
        base = Path(tmp)
        bindir = base / "bin"
        bindir.mkdir()
        build_tool(bindir)
        cluster = MultiNodeCluster(base / "cluster", nodes=2)
        try:
            cluster.start()
            cluster.wait_ready()
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
                tool_pod("client", {"role": "client"}, "node-1", bindir),
                tool_pod("near", {"bench": "near"}, "node-1", bindir),
                tool_pod("far", {"bench": "far"}, "node-2", bindir),
                service("near", {"bench": "near"}), service("far", {"bench": "far"})]))

            def running() -> dict[str, Obj] | None:
                items = json.loads(cluster.kubectl("get", "pods", "-o", "json").stdout)["items"]
                pods = {p["metadata"]["name"]: p for p in items
                        if p["status"].get("phase") == "Running" and p["status"].get("podIP")}
                return pods if len(pods) == 3 else None

            pods = _wait(running, 90, "the benchmark pods Running")
            ips = {name: pods[name]["status"]["podIP"] for name in pods}
            vips = {name: cluster.kubectl("get", "service", name, "-o",
                                          "jsonpath={.spec.clusterIP}").stdout.strip()
                    for name in ("near", "far")}
            paths = [
                ("loopback", "in the client pod, loopback (floor)", "127.0.0.1", PORT),
                ("pod-near", "pod -> pod, same node", ips["near"], PORT),
                ("svc-near", "pod -> ClusterIP -> pod, same node", vips["near"], 80),
                ("pod-far", "pod -> pod, other node", ips["far"], PORT),
                ("svc-far", "pod -> ClusterIP -> pod, other node", vips["far"], 80),
            ]

            def answering() -> bool:  # the endpoints are in both nodes' rules
                try:
                    _, bodies = run_client(cluster, paths, 1, "conn")
                except AssertionError:
                    return False
                return bodies == {"loopback": "client", "pod-near": "near", "svc-near": "near",
                                  "pod-far": "far", "svc-far": "far"}

            _wait(answering, 30, "every path answering from the right pod")
            result["labels"] = {key: label for key, label, *_ in paths}
            result["base"] = measure(cluster, paths, args.requests, args.rounds)

            if args.services:
                cluster.kubectl("create", "namespace", "load")
                before = [table_services(h) for h in cluster.hosts]
                took = asyncio.run(create_services(cluster, args.services, 10))
                created = time.perf_counter()
                _wait(lambda: all(table_services(h) >= n + args.services
                                  for h, n in zip(cluster.hosts, before, strict=True)),
                      120, f"{args.services} more services in both nodes' tables")
                result["load"] = {"services": args.services, "create": took,
                                  "converge": time.perf_counter() - created}
                time.sleep(3)  # the agents' informers (DNS, proxy) settle after the burst
                result["loaded"] = measure(cluster, paths, args.requests, args.rounds)
        finally:
            left = cluster.stop()
            if left:
                print(f"warning: left behind: {left}", file=sys.stderr)
    return result


# -- 2. rule sync -------------------------------------------------------------------------


def rules_part(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    rules = _load("network_rules")
    out = {}
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-rules-") as tmp:
        prefix = cluster_prefix(tmp)
        ns = f"{prefix}-bench"
        asyncio.run(netns.create(ns))
        try:
            node = rules.NodeInfo(table=prefix, bridge=f"{prefix}br", node_name="node-1",
                                  cluster_networks=("10.42.0.0/16",))
            for count in args.rule_services:
                out[count] = rules.bench(ns, node, count, 10, args.rule_runs)
        finally:
            netns.delete(ns)
    return out


# -- 3. DNS ------------------------------------------------------------------------------------


def dns_part(args: argparse.Namespace) -> tuple[str, list[tuple[str, str]]]:
    out = subprocess.run([sys.executable, str(HERE / "dns.py"), "--seconds",
                          str(args.dns_seconds)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return f"bench/dns.py failed: {out.stderr.strip()[-500:]}", []
    lines = out.stdout.splitlines()
    notes = [line for line in lines if line.startswith(("zone:", "load generator:"))]
    rows = []
    table = False
    for line in lines:
        if line.startswith("server"):
            table = True
            continue
        found = re.match(r"(.*?)\s{2,}(\S.*)$", line)
        if table and found:
            rows.append((found.group(1).strip(), found.group(2).strip()))
    return "\n".join(notes), rows


# -- report ------------------------------------------------------------------------------------


def report(latency: dict[str, Any], rules: dict[int, dict[str, Any]],
           dns: tuple[str, list[tuple[str, str]]]) -> None:
    if latency:
        base, labels = latency["base"], latency["labels"]
        print("\n== request latency, client pod on node-1 of 2 (ms; p50 / p99) ==")
        print(f"{'path':<40} {'new connection':>17} {'overhead p50':>13} {'keep-alive':>17}")
        direct = {"svc-near": "pod-near", "svc-far": "pod-far"}

        def row(key: str, table: dict[tuple[str, str], tuple[float, float]], label: str
                ) -> None:
            c50, c99 = table[(key, "conn")]
            k50, k99 = table[(key, "keep")]
            extra = ""
            if key in direct:  # against the direct path measured in the same rounds
                extra = f"{(c50 - table[(direct[key], 'conn')][0]) * 1000:+10.0f} us"
            print(f"{label:<40} {c50:7.3f} / {c99:7.3f} {extra:>13} {k50:7.3f} / {k99:7.3f}")

        for key, label in labels.items():
            row(key, base, label)
        if "loaded" in latency:
            load = latency["load"]
            print(f"-- with {load['services']:,} more services x 10 endpoints in the table "
                  f"(created through the API in {load['create']:.1f} s; both nodes' rules "
                  f"held them {load['converge']:.2f} s after the last create):")
            for key, label in labels.items():
                row(key, latency["loaded"], label)
        print("new connection: socket+connect+GET+response+close per request (the nat rules "
              "see its first packet);\nkeep-alive: request/response on one open connection "
              "(conntrack only). Overhead: ClusterIP p50 minus the direct path's p50.")
    if rules:
        print("\n== rule sync, 10 endpoints per service (ms, median) ==")
        print(f"{'services':>9} {'nft lines':>9} {'render':>8} {'nft first':>10} "
              f"{'nft update':>11} {'nft full':>9} {'no-op':>8} {'ipt first':>10} "
              f"{'ipt update':>11}")

        def ms(r: dict[str, Any], key: str) -> str:
            return f"{r[key] * 1000:.1f}" if isinstance(r.get(key), float) else "-"

        for count, r in rules.items():
            print(f"{count:>9} {r['lines']:>9} {ms(r, 'render'):>8} {ms(r, 'first'):>10} "
                  f"{ms(r, 'update'):>11} {ms(r, 'by_name'):>9} {ms(r, 'noop'):>8} "
                  f"{ms(r, 'ipt_apply'):>10} {ms(r, 'ipt_update'):>11}")
        print("render: Services+EndpointSlices -> our table (Python, the whole table each "
              "sync). nft: render + `nft -f`\n(first: made; update: one endpoint moved, only the "
              "change applied; full: everything again over a\ntable known by names; no-op: "
              "render, equal, nothing applied). ipt: kube-proxy's iptables layout,\nrender + "
              "full iptables-restore, as its iptables mode does on every sync.")
    notes, rows = dns
    if notes or rows:
        print("\n== cluster DNS (bench/dns.py) ==")
        if notes:
            print(notes)
        for label, qps in rows:
            print(f"{label:<44} {qps:>12} queries/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per path and shape")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--services", type=int, default=1000,
                        help="extra services (x10 endpoints) for the loaded run; 0: none")
    parser.add_argument("--rule-services", default="1000",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--rule-runs", type=int, default=3)
    parser.add_argument("--dns-seconds", type=float, default=5.0)
    parser.add_argument("--skip-cluster", action="store_true",
                        help="only the rule sync and DNS parts")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, containers, nft)")
    missing = [b for b in ("nft", "gcc", "runc") if shutil.which(b) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)} (apt-get install nftables gcc libc6-dev runc)")
    latency = {} if args.skip_cluster else latency_part(args)
    rules = rules_part(args)
    dns = dns_part(args)
    report(latency, rules, dns)


if __name__ == "__main__":
    main()
