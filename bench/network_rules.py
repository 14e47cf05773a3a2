"""Service rule sync time: the proxy's nftables table against kube-proxy's iptables layout.

For S services x E endpoints (default 100 and 1,000 services of 10 endpoints), timed the way
the proxy syncs: render (Services + EndpointSlices -> text, network/proxy/rules.py) and apply
(`nft -f`, one transaction). Three syncs: the first (table made), an update after one
endpoint changed (flush + refill in one transaction), and a no-op (render, equal text, skip).

Baseline, same run, same services: kube-proxy's iptables mode layout (KUBE-SERVICES with one
rule per service port, a KUBE-SVC chain of `statistic` rules per service, a KUBE-SEP chain per
endpoint) generated as an `iptables-restore` input and applied in full, as kube-proxy does.

Everything runs in a network namespace made for the run and removed after it (the host's
rules are never touched). Needs root, nft and (for the baseline) iptables-restore.

    .venv/bin/python bench/network_rules.py [--services 100,1000] [--endpoints 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dockyard.network import netns  # noqa: E402
from dockyard.network.proxy.rules import NodeInfo, Ruleset, render  # noqa: E402
from dockyard.runtime.naming import cluster_prefix  # noqa: E402

Obj = dict[str, Any]


def cluster(services: int, endpoints: int, changed: int = -1) -> tuple[list[Obj], list[Obj]]:
    """Services with ClusterIPs in 10.43.0.0/16 and one slice each; endpoint 0 of service
    `changed` moved to another address (an update)."""
    base = int(ipaddress.ip_address("10.43.0.10"))
    pods = int(ipaddress.ip_address("10.42.0.2"))
    svcs, slices = [], []
    for i in range(services):
        name = f"svc-{i:05d}"
        svcs.append({"metadata": {"name": name, "namespace": "bench"},
                     "spec": {"type": "ClusterIP",
                              "clusterIP": str(ipaddress.ip_address(base + i)),
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                         "targetPort": 8080}]}})
        eps = []
        for j in range(endpoints):
            ip = pods + (i * endpoints + j) % 60000
            if i == changed and j == 0:
                ip = pods + 61000
            eps.append({"addresses": [str(ipaddress.ip_address(ip))],
                        "conditions": {"ready": True}, "nodeName": "node-1"})
        slices.append({"metadata": {"name": f"{name}-x", "namespace": "bench",
                                    "labels": {"kubernetes.io/service-name": name}},
                       "addressType": "IPv4", "endpoints": eps,
                       "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    return svcs, slices


def iptables_restore_input(services: list[Obj], slices: list[Obj]) -> str:
    """kube-proxy iptables mode's nat table for these services (the parts on the data path)."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
             ":KUBE-POSTROUTING - [0:0]"]
    rules = ["-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES",
             "-A POSTROUTING -j KUBE-POSTROUTING",
             "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
             "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE"]
    for n, (svc, eps) in enumerate(zip(services, slices, strict=True)):
        chain = f"KUBE-SVC-{n:011d}"
        lines.append(f":{chain} - [0:0]")
        ip = svc["spec"]["clusterIP"]
        rules.append(f"-A KUBE-SERVICES -d {ip}/32 -p tcp -m tcp --dport 80 "
                     f"-m comment --comment \"bench/{svc['metadata']['name']}:http\" -j {chain}")
        endpoints = [e["addresses"][0] for e in eps["endpoints"]]
        for k, ep in enumerate(endpoints):
            sep = f"KUBE-SEP-{n:06d}{k:05d}"
            lines.append(f":{sep} - [0:0]")
            left = len(endpoints) - k
            chance = "" if left == 1 else \
                f"-m statistic --mode random --probability {1 / left:.10f} "
            rules.append(f"-A {chain} {chance}-j {sep}")
            rules += [f"-A {sep} -s {ep}/32 -j KUBE-MARK-MASQ",
                      f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ep}:8080"]
    return "\n".join([*lines, *rules, "COMMIT", ""])


def run_in(ns: str, argv: list[str], text: str) -> float:
    """Seconds for one command inside the namespace, fed `text` on stdin."""
    started = time.perf_counter()
    result = subprocess.run(["nsenter", f"--net={netns.path_of(ns)}", *argv], input=text,
                            capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {result.stderr[:2000]}")
    return took


def timed_render(services: list[Obj], slices: list[Obj], node: NodeInfo) -> tuple[Ruleset, float]:
    started = time.perf_counter()
    ruleset = render(services, slices, node)
    return ruleset, time.perf_counter() - started


def bench(ns: str, node: NodeInfo, services: int, endpoints: int, runs: int) -> dict[str, Any]:
    svcs, slices = cluster(services, endpoints)
    svcs2, slices2 = cluster(services, endpoints, changed=services // 2)
    out: dict[str, list[float]] = {k: [] for k in (
        "render", "first", "update", "by_name", "noop", "ipt_render", "ipt_apply", "ipt_update")}
    lines = 0
    for _ in range(runs):
        run_in(ns, ["nft", "delete", "table", "ip", node.table], "") if _table(ns, node) \
            else None
        first, r1 = timed_render(svcs, slices, node)
        out["render"].append(r1)
        out["first"].append(r1 + run_in(ns, ["nft", "-f", "-"], first.transaction(None)))
        second, r2 = timed_render(svcs2, slices2, node)
        out["update"].append(r2 + run_in(ns, ["nft", "-f", "-"], second.transaction(first)))
        # The same change after a restart, when only the objects' names are known.
        out["by_name"].append(r2 + run_in(ns, ["nft", "-f", "-"],
                                           first.transaction(second.existing())))
        third, r3 = timed_render(svcs, slices, node)
        assert third == first
        out["noop"].append(r3)
        lines = first.text.count("\n")
        if shutil.which("iptables-restore"):
            started = time.perf_counter()
            text = iptables_restore_input(svcs, slices)
            rendered = time.perf_counter() - started
            out["ipt_render"].append(rendered)
            out["ipt_apply"].append(rendered + run_in(ns, ["iptables-restore"], text))
            started = time.perf_counter()
            text = iptables_restore_input(svcs2, slices2)
            rendered = time.perf_counter() - started
            out["ipt_update"].append(rendered + run_in(ns, ["iptables-restore"], text))
    return {"lines": lines, **{k: statistics.median(v) if v else None for k, v in out.items()}}


def _table(ns: str, node: NodeInfo) -> bool:
    try:
        run_in(ns, ["nft", "list", "table", "ip", node.table], "")
        return True
    except RuntimeError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", default="100,1000")
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("nft") is None:
        sys.exit("needs root and nft (apt-get install nftables)")
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-rules-") as tmp:
        prefix = cluster_prefix(tmp)
        ns = f"{prefix}-bench"
        asyncio.run(netns.create(ns))
        try:
            node = NodeInfo(table=prefix, bridge=f"{prefix}br", node_name="node-1",
                            cluster_networks=("10.42.0.0/16",))
            print(f"rule sync, {args.endpoints} endpoints per service, median of {args.runs} "
                  f"(nft {_version(['nft', '--version'])}, "
                  f"{_version(['iptables-restore', '--version'])})")
            cols = [("render", "render"), ("first", "first"), ("update", "update"),
                    ("by_name", "full"), ("noop", "no-op"), ("ipt_apply", "ipt first"),
                    ("ipt_update", "ipt update")]
            print(f"{'services':>9} {'nft lines':>9} " +
                  " ".join(f"{title:>10}" for _, title in cols))
            for count in [int(c) for c in args.services.split(",")]:
                r = bench(ns, node, count, args.endpoints, args.runs)
                cells = [f"{r[k] * 1000:8.1f}ms" if isinstance(r[k], float) else f"{'-':>10}"
                         for k, _ in cols]
                print(f"{count:>9} {r['lines']:>9} " + " ".join(cells))
            print("first: render + `nft -f` making the table; update: render + the changes for "
                  "one moved endpoint\n(one transaction); full: the whole content again over "
                  "a table known by names (after a restart);\nno-op: render only (equal, "
                  "nothing applied). ipt: kube-proxy's iptables layout, render + full "
                  "iptables-restore,\nas kube-proxy's iptables mode does on every sync.")
        finally:
            netns.delete(ns)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return f"{argv[0]} absent"
    return out.strip().splitlines()[0] if out.strip() else argv[0]


if __name__ == "__main__":
    main()
