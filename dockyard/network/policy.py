"""NetworkPolicy (networking.k8s.io/v1, ingress) as nftables rule fragments, one per local pod.

A pod is isolated for ingress when at least one policy of its namespace selects it and lists
`Ingress` in its policyTypes (the default when policyTypes is absent). Traffic reaches an
isolated pod only if it matches one ingress rule of one of those policies: from a source
(`podSelector` in the policy's namespace, `namespaceSelector` with an optional `podSelector`,
`ipBlock` cidr minus `except`) to a port (number, range with `endPort`, or a container port
name resolved against *this* pod's spec) with a protocol. Replies of allowed connections pass
by conntrack (rules.py accepts established traffic before any pod chain). Pods selected by no
policy accept everything, as in Kubernetes.

This module only decides *what* a pod accepts: `pod_policies` turns the objects into plain
rule bodies (`ip saddr { ... } tcp dport 8080 accept`); rules.py names the chains and hooks them
where forwarded and bridged traffic passes, after DNAT, so a policy applies to the pod a
Service address was translated to. Egress policies are not enforced; traffic from the node
itself (the agent's probes) is never filtered.

Every value that ends up in a rule is parsed here (addresses, ports): a bad element would
make nft refuse the whole ruleset, so it is left out instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dockyard.controllers.podutil import is_terminal, pod_ips
from dockyard.scheduler.labels import label_selector

Obj = dict[str, Any]
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # the API server's immutable label
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


@dataclass(frozen=True)
class PodPolicy:
    """What one isolated pod on this node accepts: `rules` in order, then everything else
    is dropped."""

    pod: str  # namespace/name, for names and comments
    ip: str  # the pod's IPv4 address: forwarded traffic is matched on it
    rules: tuple[str, ...]


def ipv4(pod: Obj) -> str | None:
    for ip in pod_ips(pod):
        try:
            if ipaddress.ip_address(ip).version == 4:
                return ip
        except ValueError:
            continue
    return None


def _peer_pod(pod: Obj) -> bool:
    """Pods that can be sources or targets: with an address, not finished, own network."""
    spec = pod.get("spec") or {}
    return not spec.get("hostNetwork") and not is_terminal(pod) and ipv4(pod) is not None


def policy_types(policy: Obj) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def namespace_labels(namespaces: Iterable[Obj]) -> dict[str, dict[str, str]]:
    """name -> labels, with the `kubernetes.io/metadata.name` label every namespace has."""
    out = {}
    for ns in namespaces:
        meta = ns.get("metadata") or {}
        name = meta.get("name") or ""
        out[name] = {**(meta.get("labels") or {}), NAMESPACE_NAME_LABEL: name}
    return out


def _set(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _networks(cidrs: Iterable[str]) -> list[str]:
    """Parsed, merged IPv4 networks (overlapping elements are an error in an nft set)."""
    nets = []
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(str(cidr).strip(), strict=False)
        except ValueError:
            continue
        if net.version == 4:
            nets.append(net)
    return [str(n) if n.prefixlen < 32 else str(n.network_address)
            for n in ipaddress.collapse_addresses(nets)]  # type: ignore[arg-type]


def _merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[str]:
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in merged]


class _Cluster:
    """The cluster's pods and namespaces, indexed for selector evaluation."""

    def __init__(self, pods: Iterable[Obj], namespaces: Iterable[Obj]) -> None:
        self.namespaces = namespace_labels(namespaces)
        self.by_namespace: dict[str, list[Obj]] = {}
        for pod in pods:
            if _peer_pod(pod):
                ns = (pod.get("metadata") or {}).get("namespace") or ""
                self.by_namespace.setdefault(ns, []).append(pod)

    def pod_ips(self, namespaces: Iterable[str], selector: Obj | None) -> list[str]:
        match = label_selector(selector if selector is not None else {})
        return [ip for ns in namespaces for pod in self.by_namespace.get(ns, ())
                if match((pod.get("metadata") or {}).get("labels") or {})
                and (ip := ipv4(pod)) is not None]


def _sources(peers: list[Obj] | None, namespace: str,
             cluster: _Cluster) -> list[str] | None:
    """Source matches of one rule (`ip saddr ...`); None: any source; []: none at all."""
    if not peers:
        return None
    ips: set[str] = set()
    blocks: list[str] = []
    for peer in peers:
        block = peer.get("ipBlock")
        if block is not None:
            cidr = _networks([block.get("cidr") or ""])
            if not cidr:
                continue
            excepts = _networks(block.get("except") or [])
            blocks.append(f"ip saddr {cidr[0]}" +
                          (f" ip saddr != {_set(excepts)}" if excepts else ""))
            continue
        ns_selector, pod_selector = peer.get("namespaceSelector"), peer.get("podSelector")
        if ns_selector is None and pod_selector is None:
            continue  # an empty peer is invalid; the API refuses it
        if ns_selector is None:
            namespaces = [namespace]
        else:
            match = label_selector(ns_selector)
            namespaces = [n for n, labels in cluster.namespaces.items() if match(labels)]
        ips.update(cluster.pod_ips(namespaces, pod_selector))
    out = [f"ip saddr {_set(_networks(ips))}"] if ips else []
    return out + blocks


def _ports(ports: list[Obj] | None, pod: Obj) -> list[str] | None:
    """Destination matches of one rule; None: any port and protocol; []: none resolved."""
    if not ports:
        return None
    wanted: dict[str, list[tuple[int, int]] | None] = {}  # protocol -> ranges, None = all
    for entry in ports:
        protocol = PROTOCOLS.get(str(entry.get("protocol") or "TCP"))
        if protocol is None:
            continue
        port = entry.get("port")
        if port is None or port == "":
            wanted[protocol] = None
            continue
        numbers = _resolve(port, str(entry.get("protocol") or "TCP"), pod)
        end = entry.get("endPort")
        for number in numbers:
            hi = int(end) if isinstance(end, int) and end >= number else number
            if wanted.get(protocol, []) is not None and 0 < number <= hi <= 65535:
                wanted.setdefault(protocol, []).append((number, hi))  # type: ignore[union-attr]
    out = []
    for protocol in sorted(wanted):
        ranges = wanted[protocol]
        out.append(f"meta l4proto {protocol}" if ranges is None
                   else f"{protocol} dport {_set(_merge_ranges(ranges))}")
    return out


def _resolve(port: Any, protocol: str, pod: Obj) -> list[int]:
    """A rule's port: its number, or the pod's container ports of that name and protocol."""
    if isinstance(port, int):
        return [port]
    text = str(port)
    if text.isdigit():
        return [int(text)]
    return [int(p["containerPort"]) for c in (pod.get("spec") or {}).get("containers") or []
            for p in c.get("ports") or []
            if p.get("name") == text and (p.get("protocol") or "TCP") == protocol
            and isinstance(p.get("containerPort"), int)]


def _rule_bodies(rule: Obj, namespace: str, pod: Obj, cluster: _Cluster) -> list[str]:
    sources = _sources(rule.get("from"), namespace, cluster)
    ports = _ports(rule.get("ports"), pod)
    if sources == [] or ports == []:
        return []  # matches nothing: no rule (an empty set is not valid nft either)
    return [" ".join(p for p in (src, dst, "accept") if p)
            for src in (sources or [""]) for dst in (ports or [""])]


def pod_policies(policies: Iterable[Obj], pods: Iterable[Obj], namespaces: Iterable[Obj],
                 node_name: str) -> list[PodPolicy]:
    """The isolated pods on `node_name` and what each accepts, sorted by pod."""
    pods = list(pods)
    cluster = _Cluster(pods, namespaces)
    local: dict[str, list[Obj]] = {}
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName") == node_name and _peer_pod(pod):
            local.setdefault((pod.get("metadata") or {}).get("namespace") or "", []).append(pod)
    selected: dict[str, tuple[Obj, list[str]]] = {}
    for policy in sorted(policies, key=lambda p: ((p.get("metadata") or {}).get("namespace")
                                                  or "", p["metadata"]["name"])):
        if "Ingress" not in policy_types(policy):
            continue
        namespace = (policy.get("metadata") or {}).get("namespace") or ""
        spec = policy.get("spec") or {}
        match = label_selector(spec.get("podSelector") or {})
        for pod in local.get(namespace, ()):
            if not match((pod.get("metadata") or {}).get("labels") or {}):
                continue
            key = f"{namespace}/{pod['metadata']['name']}"
            rules = selected.setdefault(key, (pod, []))[1]
            for rule in spec.get("ingress") or []:
                for body in _rule_bodies(rule or {}, namespace, pod, cluster):
                    if body not in rules:
                        rules.append(body)
    return [PodPolicy(pod=key, ip=ipv4(pod) or "", rules=tuple(rules))
            for key, (pod, rules) in sorted(selected.items())]
