"""The proxy's rules renderer and NetworkPolicy fragments: objects in, nftables text out.

Rendered rulesets are also checked by the real `nft` when it runs as root, in a private network
namespace (`unshare --net`), so the host's rules are never touched.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dockyard.network.policy import pod_policies
from dockyard.network.proxy.rules import NodeInfo, render, service_ports

Obj = dict[str, Any]
NODE = NodeInfo(table="dytest01", bridge="dytest01br", node_name="node-1",
                cluster_networks=("10.42.0.0/24", "10.42.1.0/24", "192.0.2.2"))


def service(name: str, ip: str | None, *ports: Obj, ns: str = "default", **spec: Any) -> Obj:
    body: Obj = {"ports": list(ports) or [{"name": "http", "port": 80, "protocol": "TCP",
                                           "targetPort": "web"}], **spec}
    if ip is not None:
        body["clusterIP"] = ip
    body.setdefault("type", "ClusterIP")
    return {"metadata": {"name": name, "namespace": ns}, "spec": body}


def endpoint_slice(svc: str, endpoints: list[tuple[str, bool | None]], *,
                   ports: list[Obj] | None = None, ns: str = "default",
                   node: str = "node-1", name: str = "") -> Obj:
    eps = []
    for ip, ready in endpoints:
        conditions = {} if ready is None else {"ready": ready}
        eps.append({"addresses": [ip], "conditions": conditions, "nodeName": node})
    return {"metadata": {"name": name or f"{svc}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": eps,
            "ports": ports if ports is not None else [{"name": "http", "port": 8080,
                                                       "protocol": "TCP"}]}


def chain(text: str, name: str) -> list[str]:
    """The rules of one chain in a rendered table."""
    match = re.search(r"\tchain " + re.escape(name) + r" \{\n(.*?)\n\t\}", text, re.S)
    assert match, f"no chain {name}"
    return [line.strip() for line in match.group(1).splitlines()
            if not line.strip().startswith(("comment", "type "))]


def elements(text: str, name: str) -> list[str]:
    match = re.search(r"\t(?:set|map) " + re.escape(name) + r" \{\n(.*?)\n\t\}", text, re.S)
    assert match, f"no set {name}"
    return [line.strip().rstrip(",") for line in match.group(1).splitlines()
            if line.startswith("\t\t\t")]


THREE = [("10.42.0.11", True), ("10.42.0.12", True), ("10.42.0.13", True)]


def test_service_with_three_ready_endpoints_is_balanced_with_equal_weight() -> None:
    rs = render([service("web", "10.43.0.10")], [endpoint_slice("web", THREE)], NODE)
    assert elements(rs.text, "services") == [
        "10.43.0.10 . tcp . 80 : goto svc-default/web/tcp/http"]
    assert chain(rs.text, "svc-default/web/tcp/http") == [
        "meta l4proto tcp dnat to numgen random mod 3 map { 0 : 10.42.0.11 . 8080, "
        "1 : 10.42.0.12 . 8080, 2 : 10.42.0.13 . 8080 }"]
    assert elements(rs.text, "cluster-ips") == ["10.43.0.10"]
    assert elements(rs.text, "service-ports") == ["10.43.0.10 . tcp . 80"]
    assert elements(rs.text, "no-endpoint-services") == []
    # Hairpin: only a pod talking to itself through the service is masqueraded.
    assert elements(rs.text, "hairpin") == [f"{ip} . {ip}" for ip, _ in THREE]
    post = chain(rs.text, "nat-postrouting")
    assert post[0] == "ct status dnat ip saddr . ip daddr @hairpin masquerade"
    assert all("masquerade" not in rule or "@hairpin" in rule or "meta mark" in rule
               for rule in post)
    # Pods reach it through the bridge, the node itself through the output hook.
    assert 'iifname "dytest01br" ip daddr . meta l4proto . th dport vmap @services' in \
        chain(rs.text, "nat-prerouting")
    assert "ip daddr . meta l4proto . th dport vmap @services" in chain(rs.text, "nat-output")


def test_only_ready_endpoints_and_none_ready_rejects() -> None:
    rs = render([service("web", "10.43.0.10")],
                [endpoint_slice("web", [("10.42.0.11", True), ("10.42.0.12", False),
                                        ("10.42.0.13", None)])], NODE)
    dnat = chain(rs.text, "svc-default/web/tcp/http")[0]
    assert "10.42.0.12" not in dnat  # ready: false
    assert "mod 2" in dnat and "10.42.0.13 . 8080" in dnat  # ready unset counts as ready

    rs = render([service("web", "10.43.0.10")],
                [endpoint_slice("web", [("10.42.0.11", False)])], NODE)
    assert elements(rs.text, "services") == []
    assert elements(rs.text, "no-endpoint-services") == [
        "10.43.0.10 . tcp . 80 : goto reject-service"]
    assert chain(rs.text, "reject-service") == ["meta l4proto tcp reject with tcp reset",
                                                "reject with icmp type port-unreachable"]
    assert "svc-default/web/tcp/http" not in rs.chains
    # A ClusterIP on a port the service does not have is refused too.
    assert ("ip daddr @cluster-ips ip daddr . meta l4proto . th dport != @service-ports "
            "goto reject-service") in chain(rs.text, "service-checks")


def test_single_endpoint_is_a_plain_dnat() -> None:
    rs = render([service("one", "10.43.0.9")], [endpoint_slice("one", THREE[:1])], NODE)
    assert chain(rs.text, "svc-default/one/tcp/http") == [
        "meta l4proto tcp dnat to 10.42.0.11:8080"]


def test_session_affinity_client_ip() -> None:
    svc = service("sticky", "10.43.0.20", sessionAffinity="ClientIP",
                  sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}})
    rs = render([svc], [endpoint_slice("sticky", THREE[:2])], NODE)
    rules = chain(rs.text, "svc-default/sticky/tcp/http")
    ep0 = "ep-default/sticky/tcp/http/10.42.0.11/8080"
    ep1 = "ep-default/sticky/tcp/http/10.42.0.12/8080"
    aff0 = "aff-default/sticky/tcp/http/10.42.0.11/8080/600"
    assert rules == [f"ip saddr @{aff0} goto {ep0}",
                     f"ip saddr @aff-default/sticky/tcp/http/10.42.0.12/8080/600 goto {ep1}",
                     f"numgen random mod 2 vmap {{ 0 : goto {ep0}, 1 : goto {ep1} }}"]
    assert chain(rs.text, ep0) == [f"update @{aff0} {{ ip saddr }}",
                                   "meta l4proto tcp dnat to 10.42.0.11:8080"]
    assert f"\tset {aff0} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n" \
           "\t\ttimeout 600s\n\t}" in rs.text
    assert rs.sets[aff0].dynamic
    # The default timeout is Kubernetes' 3 hours.
    default = service("sticky", "10.43.0.20", sessionAffinity="ClientIP")
    rs = render([default], [endpoint_slice("sticky", THREE[:2])], NODE)
    assert "timeout 10800s" in rs.text


def test_node_port_on_local_addresses_with_masquerade_for_outside_traffic() -> None:
    svc = service("np", "10.43.0.30", {"name": "http", "port": 80, "protocol": "TCP",
                                       "nodePort": 30080}, type="NodePort")
    rs = render([svc], [endpoint_slice("np", THREE)], NODE)
    assert elements(rs.text, "nodeports") == ["tcp . 30080 : goto svc-default/np/tcp/http"]
    assert elements(rs.text, "nodeport-ports") == ["tcp . 30080"]
    assert "fib daddr type local jump nodeports-in" in chain(rs.text, "nat-prerouting")
    assert ("fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
            "vmap @nodeports") in chain(rs.text, "nat-output")
    assert chain(rs.text, "nodeports-in")[0] == (
        'iifname != "dytest01br" meta l4proto . th dport @nodeport-ports '
        "meta mark set meta mark | 0x4000")
    assert "meta mark & 0x4000 == 0x4000 meta mark set meta mark & 0xffffbfff masquerade" in \
        chain(rs.text, "nat-postrouting")
    # Without ready endpoints the node port is refused, like the cluster IP.
    rs = render([svc], [endpoint_slice("np", [("10.42.0.11", False)])], NODE)
    assert elements(rs.text, "nodeports") == []
    assert elements(rs.text, "no-endpoint-nodeports") == ["tcp . 30080 : goto reject-service"]
    # A ClusterIP service's stray nodePort is not served.
    plain = service("cp", "10.43.0.31", {"name": "http", "port": 80, "nodePort": 30081})
    assert elements(render([plain], [endpoint_slice("cp", THREE)], NODE).text,
                    "nodeports") == []


def test_headless_external_name_and_unallocated_services_get_no_rules() -> None:
    services = [service("headless", "None"), service("pending", None),
                {"metadata": {"name": "ext", "namespace": "default"},
                 "spec": {"type": "ExternalName", "externalName": "example.com"}}]
    slices = [endpoint_slice(s["metadata"]["name"], THREE) for s in services]
    rs = render(services, slices, NODE)
    assert service_ports(services, slices) == []
    for name in ("services", "no-endpoint-services", "cluster-ips", "hairpin"):
        assert elements(rs.text, name) == []
    assert not any(c.startswith("svc-") for c in rs.chains)


def test_named_target_ports_use_the_numbers_resolved_in_the_slice() -> None:
    svc = service("multi", "10.43.0.40",
                  {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"},
                  {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"})
    ports = [{"name": "http", "port": 8080, "protocol": "TCP"},
             {"name": "dns", "port": 5353, "protocol": "UDP"}]
    # Two slices (e.g. more than 100 endpoints) are merged.
    slices = [endpoint_slice("multi", THREE[:2], ports=ports, name="multi-a"),
              endpoint_slice("multi", THREE[2:], ports=ports, name="multi-b")]
    rs = render([svc], slices, NODE)
    assert sorted(elements(rs.text, "services")) == [
        "10.43.0.40 . tcp . 80 : goto svc-default/multi/tcp/http",
        "10.43.0.40 . udp . 53 : goto svc-default/multi/udp/dns"]
    assert "10.42.0.13 . 5353" in chain(rs.text, "svc-default/multi/udp/dns")[0]
    assert chain(rs.text, "svc-default/multi/udp/dns")[0].startswith(
        "meta l4proto udp dnat to numgen random mod 3")
    assert "10.42.0.11 . 8080" in chain(rs.text, "svc-default/multi/tcp/http")[0]


def test_forward_guard_and_policy_dispatch() -> None:
    rs = render([], [], NODE)
    forward = chain(rs.text, "filter-forward")
    assert forward == [
        "ct state established,related accept",
        'iifname "dytest01br" oifname != "dytest01br" ip daddr != @cluster-networks '
        "reject with icmp type host-unreachable",
        "ip daddr vmap @policy-pods"]
    assert elements(rs.text, "cluster-networks") == ["10.42.0.0/23", "192.0.2.2"]


def test_render_is_deterministic_and_objects_are_listed() -> None:
    services = [service("b", "10.43.0.2"), service("a", "10.43.0.1")]
    slices = [endpoint_slice("a", THREE), endpoint_slice("b", THREE)]
    one = render(services, slices, NODE)
    two = render(list(reversed(services)), list(reversed(slices)), NODE)
    assert one.text == two.text
    assert one == two
    assert {"svc-default/a/tcp/http", "svc-default/b/tcp/http", "nat-prerouting"} <= \
        set(one.chains)
    assert one.sets["services"].kind == "map" and one.sets["hairpin"].kind == "set"


def test_update_sends_only_what_changed() -> None:
    services = [service("a", "10.43.0.1"), service("b", "10.43.0.2"),
                service("gone", "10.43.0.3")]
    slices = [endpoint_slice("a", THREE), endpoint_slice("b", THREE),
              endpoint_slice("gone", THREE)]
    before = render(services, slices, NODE)
    moved = [("10.42.0.11", True), ("10.42.0.12", True), ("10.42.0.14", True)]
    after = render(services[:2], [endpoint_slice("a", THREE), endpoint_slice("b", moved)],
                   NODE)
    lines = after.transaction(before).splitlines()
    assert lines == [
        "flush chain ip dytest01 svc-default/b/tcp/http",
        "flush chain ip dytest01 svc-default/gone/tcp/http",
        "add rule ip dytest01 svc-default/b/tcp/http meta l4proto tcp dnat to numgen random "
        "mod 3 map { 0 : 10.42.0.11 . 8080, 1 : 10.42.0.12 . 8080, 2 : 10.42.0.14 . 8080 }",
        "delete element ip dytest01 cluster-ips { 10.43.0.3 }",
        "delete element ip dytest01 service-ports { 10.43.0.3 . tcp . 80 }",
        "delete element ip dytest01 services { 10.43.0.3 . tcp . 80 }",
        "add element ip dytest01 hairpin { 10.42.0.14 . 10.42.0.14 }",
        "delete chain ip dytest01 svc-default/gone/tcp/http"]
    assert after.transaction(after) == ""  # nothing to do (the proxy skips it anyway)
    # An endpoint moving keeps the hairpin pair of an address another service still uses.
    assert "10.42.0.13 . 10.42.0.13" in after.sets["hairpin"].elements


def test_transaction_replaces_atomically_and_keeps_affinity_of_live_endpoints() -> None:
    svc = service("sticky", "10.43.0.20", sessionAffinity="ClientIP")
    before = render([svc, service("gone", "10.43.0.21")],
                    [endpoint_slice("sticky", THREE[:2]), endpoint_slice("gone", THREE)], NODE)
    after = render([svc], [endpoint_slice("sticky", THREE[1:2])], NODE)
    fresh = after.transaction(None)
    assert fresh.startswith("table ip dytest01 {}\ndelete table ip dytest01\ntable ip dytest01 {")
    text = after.transaction(before.existing())
    lines = text.splitlines()
    assert lines[:2] == ["table ip dytest01 {}", "flush table ip dytest01"]
    assert "flush map ip dytest01 services" in lines
    assert "delete chain ip dytest01 svc-default/gone/tcp/http" in lines
    assert "delete set ip dytest01 aff-default/sticky/tcp/http/10.42.0.11/8080/10800" in lines
    kept = "aff-default/sticky/tcp/http/10.42.0.12/8080/10800"
    assert not any(kept in line for line in lines[:lines.index("table ip dytest01 {")])
    assert "delete chain ip dytest01 ep-default/sticky/tcp/http/10.42.0.11/8080" in lines


# -- NetworkPolicy ---------------------------------------------------------------------------


def pod(name: str, ip: str, labels: dict[str, str], *, ns: str = "default",
        node: str = "node-1", ports: list[Obj] | None = None, **status: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node,
                     "containers": [{"name": "main", "image": "busybox",
                                     "ports": ports or []}]},
            "status": {"phase": "Running", "podIP": ip, **status}}


def policy(name: str, selector: Obj, ingress: list[Obj] | None, *, ns: str = "default",
           types: list[str] | None = None) -> Obj:
    spec: Obj = {"podSelector": selector}
    if ingress is not None:
        spec["ingress"] = ingress
    if types is not None:
        spec["policyTypes"] = types
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


NAMESPACES = [{"metadata": {"name": "default"}},
              {"metadata": {"name": "team", "labels": {"team": "a"}}}]
PODS = [
    pod("db", "10.42.0.5", {"app": "db"}, ports=[{"name": "pg", "containerPort": 5432}]),
    pod("front", "10.42.0.6", {"role": "frontend"}),
    pod("other", "10.42.0.7", {"role": "other"}),
    pod("remote-front", "10.42.1.6", {"role": "frontend"}, node="node-2"),
    pod("team-pod", "10.42.1.9", {"x": "y"}, ns="team", node="node-2"),
    pod("done", "10.42.0.99", {"role": "frontend"}, phase="Succeeded"),
]


def test_policy_allows_only_frontend_on_a_port() -> None:
    allow = policy("allow-frontend", {"matchLabels": {"app": "db"}},
                   [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}],
                     "ports": [{"protocol": "TCP", "port": 8080}]}])
    isolated = pod_policies([allow], PODS, NAMESPACES, "node-1")
    assert [(p.pod, p.ip) for p in isolated] == [("default/db", "10.42.0.5")]
    # Frontends on any node, not the finished one.
    assert isolated[0].rules == ("ip saddr { 10.42.0.6, 10.42.1.6 } tcp dport 8080 accept",)
    rs = render([], [], NODE, isolated)
    assert elements(rs.text, "policy-pods") == ["10.42.0.5 : jump pol-default/db"]
    assert chain(rs.text, "pol-default/db") == [
        "ip saddr { 10.42.0.6, 10.42.1.6 } tcp dport 8080 accept", "drop"]
    # Pods on other nodes are isolated there, not here.
    assert pod_policies([allow], PODS, NAMESPACES, "node-3") == []


def test_policy_peers_ports_and_types() -> None:
    peers = policy("mixed", {}, [
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}},
                  {"ipBlock": {"cidr": "192.168.0.0/16",
                               "except": ["192.168.1.0/24", "192.168.1.128/25"]}}],
         "ports": [{"port": "pg"}, {"protocol": "UDP", "port": 53},
                   {"protocol": "TCP", "port": 9000, "endPort": 9010},
                   {"protocol": "TCP", "port": 9005}, {"protocol": "SCTP"}]}])
    by_pod = {p.pod: p for p in pod_policies([peers], PODS, NAMESPACES, "node-1")}
    assert set(by_pod) == {"default/db", "default/front", "default/other"}
    assert by_pod["default/db"].rules == (
        "ip saddr 10.42.1.9 meta l4proto sctp accept",
        "ip saddr 10.42.1.9 tcp dport { 5432, 9000-9010 } accept",
        "ip saddr 10.42.1.9 udp dport 53 accept",
        "ip saddr 192.168.0.0/16 ip saddr != 192.168.1.0/24 meta l4proto sctp accept",
        "ip saddr 192.168.0.0/16 ip saddr != 192.168.1.0/24 tcp dport { 5432, 9000-9010 } "
        "accept",
        "ip saddr 192.168.0.0/16 ip saddr != 192.168.1.0/24 udp dport 53 accept")
    # The named port "pg" exists only on db: the others get the numeric ports.
    assert "tcp dport 9000-9010" in by_pod["default/front"].rules[1]

    # ingress [] isolates with nothing allowed; ingress [{}] allows everything.
    deny = pod_policies([policy("deny", {}, [])], PODS, NAMESPACES, "node-1")
    assert {p.pod: p.rules for p in deny}["default/db"] == ()
    open_ = pod_policies([policy("open", {}, [{}])], PODS, NAMESPACES, "node-1")
    assert {p.pod: p.rules for p in open_}["default/db"] == ("accept",)
    # Egress-only policies do not isolate for ingress; peers matching nothing allow nothing.
    assert pod_policies([policy("eg", {}, None, types=["Egress"])], PODS, NAMESPACES,
                        "node-1") == []
    nobody = policy("nobody", {"matchLabels": {"app": "db"}},
                    [{"from": [{"podSelector": {"matchLabels": {"role": "absent"}}}]}])
    assert pod_policies([nobody], PODS, NAMESPACES, "node-1")[0].rules == ()
    # The namespace's own name label selects it, as the API server sets it.
    by_name = policy("by-name", {"matchLabels": {"app": "db"}}, [{"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team"}},
         "podSelector": {"matchLabels": {"x": "y"}}}]}])
    assert pod_policies([by_name], PODS, NAMESPACES, "node-1")[0].rules == (
        "ip saddr 10.42.1.9 accept",)


def test_rules_of_several_policies_add_up() -> None:
    one = policy("one", {"matchLabels": {"app": "db"}},
                 [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}])
    two = policy("two", {"matchLabels": {"app": "db"}},
                 [{"from": [{"podSelector": {"matchLabels": {"role": "other"}}}]}])
    isolated = pod_policies([two, one], PODS, NAMESPACES, "node-1")
    assert isolated[0].rules == ("ip saddr { 10.42.0.6, 10.42.1.6 } accept",
                                 "ip saddr 10.42.0.7 accept")


# -- the real nft, in a private network namespace --------------------------------------------

needs_nft = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None
                               or shutil.which("unshare") is None,
                               reason="needs root, nft and unshare")


def nft_in_netns(tmp: Path, *scripts: str,
                 json_listing: bool = False) -> subprocess.CompletedProcess[str]:
    """Apply each script with `nft -f` in one new network namespace; then list the table."""
    files = []
    for i, script in enumerate(scripts):
        files.append(tmp / f"step{i}.nft")
        files[-1].write_text(script)
    steps = " && ".join(f"nft -f {shlex.quote(str(f))}" for f in files)
    return subprocess.run(["unshare", "--net", "sh", "-c",
                           f"{steps} && nft {'-j' if json_listing else ''} list table ip "
                           f"{NODE.table}"],
                          capture_output=True, text=True, timeout=60)


def big_input() -> tuple[list[Obj], list[Obj], list[Any]]:
    services = [
        service("web", "10.43.0.10"),
        service("sticky", "10.43.0.20", sessionAffinity="ClientIP"),
        service("np", "10.43.0.30", {"name": "http", "port": 80, "nodePort": 30080,
                                     "protocol": "TCP"}, type="NodePort"),
        service("empty", "10.43.0.40", {"name": "dns", "port": 53, "protocol": "UDP",
                                        "nodePort": 30053}, type="NodePort"),
        service("sctp", "10.43.0.50", {"name": "s", "port": 7, "protocol": "SCTP"}),
        service("headless", "None"),
    ]
    slices = [endpoint_slice(n, THREE) for n in ("web", "sticky", "np", "headless")]
    slices.append(endpoint_slice("sctp", THREE, ports=[{"name": "s", "port": 7,
                                                        "protocol": "SCTP"}]))
    peers = policy("mixed", {}, [
        {"from": [{"namespaceSelector": {}},
                  {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
         "ports": [{"port": "pg"}, {"protocol": "UDP", "port": 53}, {"protocol": "SCTP"}]}])
    return services, slices, pod_policies([peers], PODS, NAMESPACES, "node-1")


def content(listing: str) -> tuple[list[Any], dict[str, Any]]:
    """Rules and static set elements of `nft -j list table` output (order of rules kept)."""
    rules, sets = [], {}
    for item in json.loads(listing)["nftables"]:
        if "rule" in item:
            rules.append((item["rule"]["chain"], item["rule"]["expr"]))
        for kind in ("set", "map"):
            if kind in item and "timeout" not in (item[kind].get("flags") or []):
                sets[item[kind]["name"]] = sorted(map(json.dumps, item[kind].get("elem") or []))
    return sorted(rules, key=json.dumps), sets


def affinity_sets(listing: str) -> dict[str, Any]:
    return {item["set"]["name"]: item["set"].get("elem") or []
            for item in json.loads(listing)["nftables"]
            if "set" in item and item["set"]["name"].startswith("aff-")}


@needs_nft
def test_nft_applies_every_kind_of_transaction_to_the_same_table(tmp_path: Path) -> None:
    services, slices, isolated = big_input()
    first = render(services, slices, NODE, isolated)
    check = subprocess.run(["nft", "-c", "-f", "-"], input=first.transaction(None),
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    # An update: one endpoint of the sticky service gone, a service gone, a policy changed.
    second = render([s for s in services if s["metadata"]["name"] != "web"],
                    [s for s in slices if s["metadata"]["name"] != "sticky-abc"]
                    + [endpoint_slice("sticky", THREE[1:])], NODE, isolated[1:])
    kept = "aff-default/sticky/tcp/http/10.42.0.12/8080/10800"
    gone = "aff-default/sticky/tcp/http/10.42.0.11/8080/10800"
    remember = f"add element ip {NODE.table} {kept} {{ 10.42.0.99 }}"
    listings = {}
    for how, previous in (("delta", first), ("by-name", first.existing()), ("fresh", None)):
        result = nft_in_netns(tmp_path, first.transaction(None), remember,
                              second.transaction(previous), json_listing=True)
        assert result.returncode == 0, f"{how}: {result.stderr}"
        listings[how] = result.stdout
        if how != "fresh":  # the client remembered by the surviving endpoint stays
            assert "10.42.0.99" in json.dumps(affinity_sets(result.stdout)[kept]), how
        assert gone not in result.stdout
    fresh = nft_in_netns(tmp_path, second.transaction(None), json_listing=True)
    assert fresh.returncode == 0, fresh.stderr
    want = content(fresh.stdout)
    assert want[1]["services"] and want[1]["policy-pods"]
    for how, listing in listings.items():
        assert content(listing) == want, how


@needs_nft
def test_nft_accepts_an_empty_cluster(tmp_path: Path) -> None:
    empty = render([], [], NodeInfo("dytest01", "dytest01br", "n"))
    result = nft_in_netns(tmp_path, empty.transaction(None),
                          render([], [], NODE).transaction(empty.existing()))
    assert result.returncode == 0, result.stderr
