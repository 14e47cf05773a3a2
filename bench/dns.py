"""Cluster DNS benchmark: queries per second of the node DNS server, and how long the records
of a large cluster take to build from informer objects.

The server (network/dns/server.py over a synthetic zone: 1,000 ClusterIP services, 100
headless services of 10 endpoints, 2,000 pods) runs in its own process on 127.0.0.1; the load
is `dnsperf` (Debian's package, a C load generator) when installed, else a Python generator
(dnspython-rendered queries, a window of outstanding UDP queries). The query mix is what pods
send: service names, the ndots:5 search expansions that miss (NXDOMAIN), AAAA that is empty,
headless names, SRV.

Baselines in the same run: our server with the rendered-reply cache off (every reply
rendered by dnspython), and dnsmasq (C; kube-dns' cache once) serving the same A records
from a hosts file, when `dnsmasq` is installed. Run with `python bench/dns.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named dns.py: its own directory must not shadow dnspython's `dns` package.
HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import dns.message  # noqa: E402
import dns.name  # noqa: E402
import dns.rdatatype  # noqa: E402

from dockyard.network.dns.records import ClusterZone  # noqa: E402

SERVICES = 1000
HEADLESS = 100
ENDPOINTS = 10
PODS = 2000


def objects() -> tuple[list[dict], list[tuple[dict, list[dict]]], list[dict]]:
    """ClusterIP services, headless services with their slices, pods."""
    plain = [{"metadata": {"name": f"svc-{i}", "namespace": f"ns-{i % 20}"},
              "spec": {"clusterIP": f"10.43.{i // 250}.{i % 250 + 1}",
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
             for i in range(SERVICES)]
    headless = []
    for i in range(HEADLESS):
        ns = f"ns-{i % 20}"
        endpoints = [{"addresses": [f"10.44.{i}.{j + 1}"], "conditions": {"ready": True},
                      "hostname": f"h-{j}"} for j in range(ENDPOINTS)]
        headless.append((
            {"metadata": {"name": f"hl-{i}", "namespace": ns},
             "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
            [{"metadata": {"name": f"hl-{i}-x", "namespace": ns,
                           "labels": {"kubernetes.io/service-name": f"hl-{i}"}},
              "addressType": "IPv4", "endpoints": endpoints,
              "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]))
    pods = [{"metadata": {"name": f"pod-{i}", "namespace": f"ns-{i % 20}"},
             "status": {"phase": "Running", "podIP": f"10.42.{i // 250}.{i % 250 + 2}"}}
            for i in range(PODS)]
    return plain, headless, pods


def build_zone() -> tuple[ClusterZone, float]:
    plain, headless, pods = objects()
    start = time.perf_counter()
    zone = ClusterZone()
    for svc in plain:
        zone.set_service(svc, [])
    for svc, slices in headless:
        zone.set_service(svc, slices)
    for pod in pods:
        zone.set_pod(pod)
    zone.ready = True
    return zone, time.perf_counter() - start


def queries(count: int = 5000) -> list[tuple[str, str]]:
    """The mix pods send (seeded: the same in every run)."""
    rng = random.Random(1)
    out = []
    for _ in range(count):
        i = rng.randrange(SERVICES)
        name = f"svc-{i}.ns-{i % 20}.svc.cluster.local"
        roll = rng.random()
        if roll < 0.45:
            out.append((name, "A"))
        elif roll < 0.60:
            out.append((name, "AAAA"))  # empty: IPv4 cluster
        elif roll < 0.85:  # ndots:5 search expansion of a full name: NXDOMAIN
            out.append((f"{name}.ns-{i % 20}.svc.cluster.local", "A"))
        elif roll < 0.95:
            h = rng.randrange(HEADLESS)
            out.append((f"hl-{h}.ns-{h % 20}.svc.cluster.local", "A"))
        else:
            out.append((f"_http._tcp.{name}", "SRV"))
    return out


# -- servers ---------------------------------------------------------------------------------


def serve_ours(port: int, cached: bool) -> None:
    """Child process: our server over the synthetic zone on 127.0.0.1:port."""
    from dockyard.network.dns import server as dns_server

    if not cached:
        dns_server.MAX_RENDERED = 0  # every reply rendered afresh
        original = dns_server.DnsServer.respond

        def uncached(self, wire, tcp):  # type: ignore[no-untyped-def]
            self._rendered.clear()
            return original(self, wire, tcp)

        dns_server.DnsServer.respond = uncached  # type: ignore[method-assign]
    zone, _ = build_zone()

    async def main() -> None:
        server = dns_server.DnsServer(zone)
        await server.start("127.0.0.1", port)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def start_ours(port: int, cached: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--serve", str(port),
                             *([] if cached else ["--uncached"])])


def start_dnsmasq(port: int, workdir: Path) -> subprocess.Popen | None:
    binary = shutil.which("dnsmasq") or (Path("/usr/sbin/dnsmasq").exists() and
                                         "/usr/sbin/dnsmasq")
    if not binary:
        return None
    plain, headless, _ = objects()
    hosts = workdir / "hosts"
    lines = [f"{s['spec']['clusterIP']} {s['metadata']['name']}.{s['metadata']['namespace']}"
             ".svc.cluster.local" for s in plain]
    for svc, slices in headless:
        name = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
        lines += [f"{e['addresses'][0]} {name}" for e in slices[0]["endpoints"]]
    hosts.write_text("\n".join(lines) + "\n")
    return subprocess.Popen([
        str(binary), "--keep-in-foreground", "--no-resolv", "--no-hosts",
        f"--addn-hosts={hosts}", "--listen-address=127.0.0.1", "--bind-interfaces",
        f"--port={port}", "--user=root", "--local=/cluster.local/", "--cache-size=10000",
        "--pid-file=", "--conf-file=/dev/null", "--log-facility=-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_answering(port: int, timeout: float = 30.0) -> None:
    query = dns.message.make_query("svc-0.ns-0.svc.cluster.local", "A").to_wire()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(query, ("127.0.0.1", port))
            try:
                s.recv(4096)
                return
            except OSError:
                continue
    raise RuntimeError(f"no DNS server answering on port {port}")


# -- load ------------------------------------------------------------------------------------


def load_dnsperf(port: int, mix: list[tuple[str, str]], seconds: float,
                 workdir: Path) -> float:
    data = workdir / "queries.txt"
    data.write_text("".join(f"{name} {rdtype}\n" for name, rdtype in mix))
    out = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(data),
                          "-l", str(seconds), "-q", "200", "-t", "2"],
                         capture_output=True, text=True).stdout
    found = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not found:
        raise RuntimeError(f"dnsperf printed no rate:\n{out}")
    return float(found.group(1))


async def _load_python(port: int, mix: list[tuple[str, str]], seconds: float,
                       window: int = 64) -> float:
    wires = [dns.message.make_query(n, t, use_edns=False).to_wire() for n, t in mix]
    loop = asyncio.get_running_loop()
    done = 0
    outstanding = 0
    slot = asyncio.Event()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            nonlocal done, outstanding
            done += 1
            outstanding -= 1
            slot.set()

    transport, _ = await loop.create_datagram_endpoint(
        Proto, remote_addr=("127.0.0.1", port))
    start = time.perf_counter()
    i = 0
    try:
        while time.perf_counter() - start < seconds:
            while outstanding < window:
                transport.sendto(wires[i % len(wires)])
                outstanding += 1
                i += 1
            slot.clear()
            try:
                await asyncio.wait_for(slot.wait(), 1.0)
            except TimeoutError:
                outstanding = 0  # lost datagrams: refill the window
    finally:
        transport.close()
    return done / (time.perf_counter() - start)


def measure(port: int, mix: list[tuple[str, str]], seconds: float, workdir: Path) -> float:
    if shutil.which("dnsperf"):
        return load_dnsperf(port, mix, seconds, workdir)
    return asyncio.run(_load_python(port, mix, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--uncached", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_ours(args.serve, cached=not args.uncached)
        return
    mix = queries()
    _, build = build_zone()
    generator = "dnsperf" if shutil.which("dnsperf") else "python (dnsperf not installed)"
    print(f"zone: {SERVICES} services, {HEADLESS} headless x {ENDPOINTS} endpoints, {PODS} pods;"
          f" built from the objects in {build * 1000:.0f} ms "
          f"({build / (SERVICES + HEADLESS + PODS) * 1e6:.0f} us per object change)")
    print(f"load generator: {generator}, {args.seconds:.0f} s per server, same query mix")
    with tempfile.TemporaryDirectory(prefix="dockyard-dnsbench-") as tmp:
        workdir = Path(tmp)
        rows = []
        for label, start in (
            ("dockyard dns (rendered replies cached)", lambda p: start_ours(p, True)),
            ("dockyard dns, every reply rendered", lambda p: start_ours(p, False)),
            ("dnsmasq (C), same A records", lambda p: start_dnsmasq(p, workdir)),
        ):
            port = free_port()
            proc = start(port)
            if proc is None:
                rows.append((label, None))
                continue
            try:
                wait_answering(port)
                rows.append((label, measure(port, mix, args.seconds, workdir)))
            finally:
                proc.terminate()
                proc.wait(10)
    print(f"{'server':<44} {'queries/s':>10}")
    for label, qps in rows:
        print(f"{label:<44} {qps:>10.0f}" if qps is not None else
              f"{label:<44} {'(not installed)':>10}")


if __name__ == "__main__":
    main()
