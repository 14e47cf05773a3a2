"""The service proxy's kernel rules: Services, EndpointSlices and policies → one nftables table.

Pure: objects in, a `Ruleset` (and its nft text) out; proxier.py watches and applies, nothing
here touches the host.

The table (`ip <prefix>`, one per cluster) is built around verdict maps, so the cost of a
packet does not grow with the number of services (kube-proxy's iptables mode walks a chain of
one rule per service; its nftables mode uses maps like these):

- `services` maps `clusterIP . protocol . port` to the service port's chain, which DNATs to a
  ready endpoint chosen by `numgen random mod N` over an anonymous map (equal weights). It is
  consulted for traffic from this cluster's pods (`iifname <bridge>`, prerouting) and from the
  node itself (output).
- `nodeports` maps `protocol . nodePort` to the same chains, for any local address of the node
  (`fib daddr type local`, not 127.0.0.0/8).
- Service ports without a ready endpoint are in `no-endpoint-services`/`no-endpoint-nodeports`
  and rejected before DNAT (TCP reset, ICMP port unreachable), as kube-proxy does; so is a
  ClusterIP on a port the service does not have.
- `sessionAffinity: ClientIP`: one chain and one dynamic set (client addresses, with the
  service's timeout) per endpoint; the service chain first sends a known client to its
  endpoint, and an endpoint chain adds the client to its set.
- Masquerade only where replies would otherwise miss the node: a pod reaching itself through
  its service (`hairpin` set of `endpoint . endpoint`, only after DNAT), and NodePort traffic
  that arrived from outside the node (marked in prerouting). Never a general masquerade.
- Filter, forward hook (bridged traffic passes it through br_netfilter, after DNAT): accept
  established connections; refuse new connections from this cluster's pods that would be
  routed anywhere but to pod networks and node addresses of the cluster (the bridge forwards
  so that DNAT to a pod on the same bridge works, see proxier.py); then NetworkPolicy, one
  chain per isolated local pod (policy.py) found by its address in `policy-pods`.

Chains and sets are named after what they serve (`svc-default/web/tcp/http`), so `nft list
table` reads like the cluster. `Ruleset.transaction` turns a render into one `nft -f` input,
one atomic transaction: against the previous render, only what changed (chains flushed and
refilled, set elements added and deleted: one endpoint change among 1,000 services is a few
lines); against a table known only by its object names (after a restart), every rule flushed
and the whole content added back; against an unknown table, delete and make it again. The
first two keep the affinity sets of endpoints that still exist.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from dockyard.network.policy import PROTOCOLS, PodPolicy

Obj = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_TIMEOUT = 10800
MASQUERADE_MARK = 0x4000  # kube-proxy's bit: "masquerade this connection in postrouting"
NAME_LIMIT = 200  # nft allows 256 bytes per chain or set name


@dataclass(frozen=True)
class NodeInfo:
    table: str  # the cluster prefix: the table's name
    bridge: str  # this node's pod bridge
    node_name: str
    # Where pods may be routed to: every node's pod CIDRs and addresses (multi-node).
    cluster_networks: tuple[str, ...] = ()


class Endpoint(NamedTuple):  # a tuple: hashing and sorting 10,000 of them stays cheap
    ip: str
    port: int
    node: str = ""


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str  # tcp, udp, sctp
    cluster_ip: str
    port: int
    node_port: int = 0
    endpoints: tuple[Endpoint, ...] = ()  # ready ones, sorted
    affinity_timeout: int = 0  # seconds; 0: no session affinity

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name or self.port}"


@dataclass(frozen=True)
class Existing:
    """What a table holds now, by name only (from `nft list` after a restart)."""

    chains: frozenset[str] = frozenset()
    sets: tuple[tuple[str, str], ...] = ()  # (name, "set" | "map")


@dataclass(frozen=True)
class SetDef:
    kind: str  # "set" or "map"
    spec: tuple[str, ...]  # declaration statements: "type ...", "flags ...", "timeout ..."
    elements: tuple[str, ...] = ()  # "key" or "key : value"
    dynamic: bool = False  # filled by the packet path (affinity): never flushed by us


@dataclass(frozen=True)
class ChainDef:
    rules: tuple[str, ...]
    base: str = ""  # "type ... hook ... priority ...; policy accept;" for base chains
    comment: str = ""


@dataclass(frozen=True)
class Ruleset:
    """One table's whole content; equal rulesets render equal text."""

    table: str
    sets: dict[str, SetDef]
    chains: dict[str, ChainDef]

    def existing(self) -> Existing:
        return Existing(frozenset(self.chains),
                        tuple(sorted((n, s.kind) for n, s in self.sets.items())))

    @functools.cached_property
    def text(self) -> str:
        """`table ip <name> { ... }` with every set, map and chain."""
        lines = [f"table ip {self.table} {{",
                 f'\tcomment "dockyard: services and network policy of cluster {self.table}"']
        for name, st in self.sets.items():
            lines += [f"\t{st.kind} {name} {{", *[f"\t\t{x}" for x in st.spec]]
            if st.elements:
                lines += ["\t\telements = {", *[f"\t\t\t{e}," for e in st.elements], "\t\t}"]
            lines.append("\t}")
        for name, chain in self.chains.items():
            lines.append(f"\tchain {name} {{")
            if chain.base:
                lines.append(f"\t\t{chain.base}")
            if chain.comment:
                lines.append(f'\t\tcomment "{chain.comment}"')
            lines += [*[f"\t\t{rule}" for rule in chain.rules], "\t}"]
        lines.append("}")
        return "\n".join(lines)

    def transaction(self, previous: Ruleset | Existing | None) -> str:
        """One `nft -f` input that makes the table this ruleset, in a single transaction.

        `previous`: the ruleset applied last (only the differences are sent), or the names the
        table holds (every rule flushed, static sets emptied, objects no longer wanted deleted,
        everything added back), or None (the table deleted and made again).
        """
        t = self.table
        if isinstance(previous, Ruleset):
            delta = self._delta(previous)
            if delta is not None:
                return delta
            previous = previous.existing()
        head = [f"table ip {t} {{}}"]
        if previous is None:
            return "\n".join([*head, f"delete table ip {t}", self.text, ""])
        head.append(f"flush table ip {t}")
        for name, kind in previous.sets:
            st = self.sets.get(name)
            if st is not None and st.dynamic and kind == "set":
                continue
            verb = "flush" if st is not None and st.kind == kind else "delete"
            head.append(f"{verb} {kind} ip {t} {name}")
        for name in sorted(previous.chains - set(self.chains)):
            head.append(f"delete chain ip {t} {name}")
        return "\n".join([*head, self.text, ""])

    def _delta(self, old: Ruleset) -> str | None:
        """Only what changed since `old`; None when a declaration itself changed."""
        t = self.table
        if any(name in old.sets and (old.sets[name].kind, old.sets[name].spec)
               != (st.kind, st.spec) for name, st in self.sets.items()) or any(
                name in old.chains and old.chains[name].base != chain.base
                for name, chain in self.chains.items()):
            return None
        out = []
        for name, st in self.sets.items():  # 1. new sets and chains, empty
            if name not in old.sets:
                out.append(f"add {st.kind} ip {t} {name} {{ {'; '.join(st.spec)}; }}")
        for name, chain in self.chains.items():
            if name not in old.chains:
                comment = f' {{ comment "{chain.comment}"; }}' if chain.comment else ""
                out.append(f"add chain ip {t} {name}{comment}")
        changed = [n for n, c in self.chains.items() if old.chains.get(n) not in (None, c)]
        for name in [*changed, *(n for n in old.chains if n not in self.chains)]:
            out.append(f"flush chain ip {t} {name}")  # 2. emptied, refilled below
        for name, chain in self.chains.items():  # 3. rules of new and changed chains
            if name in changed or name not in old.chains:
                out += [f"add rule ip {t} {name} {rule}" for rule in chain.rules]
        for name, st in self.sets.items():  # 4. elements: deleted, then added
            if st.dynamic:
                continue
            before = set(old.sets[name].elements) if name in old.sets else set()
            now = set(st.elements)
            gone = sorted(_element_key(e) for e in before - now)
            if gone:
                out.append(f"delete element ip {t} {name} {{ {', '.join(gone)} }}")
            new = [e for e in st.elements if e not in before]
            if new:
                out.append(f"add element ip {t} {name} {{ {', '.join(new)} }}")
        for name in old.chains:  # 5. what is no longer referenced
            if name not in self.chains:
                out.append(f"delete chain ip {t} {name}")
        for name, st in old.sets.items():
            if name not in self.sets:
                out.append(f"delete {st.kind} ip {t} {name}")
        return "\n".join([*out, ""])


def _element_key(element: str) -> str:
    return element.split(" : ", 1)[0]


# -- the model: service ports with their ready endpoints -------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def _ipv4(text: Any) -> str | None:
    """The canonical dotted quad, or None (IPv6, garbage). Cached: addresses repeat."""
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, str(text)))
    except (OSError, ValueError):
        return None


def _port(value: Any) -> int:
    return value if isinstance(value, int) and 0 < value <= 65535 else 0


def _ready(endpoint: Obj) -> bool:
    """EndpointConditions.ready; nil means ready (discovery/v1)."""
    return (endpoint.get("conditions") or {}).get("ready") is not False


def _slices_by_service(slices: Iterable[Obj]) -> dict[tuple[str, str], list[Obj]]:
    out: dict[tuple[str, str], list[Obj]] = {}
    for eps in slices:
        meta = eps.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service and eps.get("addressType") == "IPv4":
            out.setdefault((meta.get("namespace") or "", service), []).append(eps)
    return out


def service_ports(services: Iterable[Obj], slices: Iterable[Obj]) -> list[ServicePort]:
    """Every IPv4 service port that gets rules, with its ready endpoints; sorted by key.

    Headless and ExternalName services get none. A service port's endpoint port is the slice
    port of the same name and protocol (the controller resolved named targetPorts already).
    """
    by_service = _slices_by_service(slices)
    out = []
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        cluster_ip = _ipv4(spec.get("clusterIP"))
        if cluster_ip is None:  # headless ("None"), not allocated yet, or IPv6
            continue
        ns, name = meta.get("namespace") or "", meta.get("name") or ""
        timeout = 0
        if spec.get("sessionAffinity") == "ClientIP":
            config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
            value = config.get("timeoutSeconds")
            timeout = value if isinstance(value, int) and 0 < value <= 86400 \
                else DEFAULT_AFFINITY_TIMEOUT
        node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
        for sp in spec.get("ports") or []:
            protocol = PROTOCOLS.get(str(sp.get("protocol") or "TCP"))
            port = _port(sp.get("port"))
            if protocol is None or not port:
                continue
            port_name = str(sp.get("name") or "")
            endpoints = set()
            for eps in by_service.get((ns, name), ()):
                numbers = [_port(p.get("port")) for p in eps.get("ports") or []
                           if str(p.get("name") or "") == port_name
                           and PROTOCOLS.get(str(p.get("protocol") or "TCP")) == protocol]
                target = next((n for n in numbers if n), 0)
                if not target:
                    continue
                for endpoint in eps.get("endpoints") or []:
                    ip = _ipv4((endpoint.get("addresses") or [None])[0])
                    if ip is not None and _ready(endpoint):
                        endpoints.add(Endpoint(ip, target, str(endpoint.get("nodeName") or "")))
            out.append(ServicePort(
                namespace=ns, name=name, port_name=port_name, protocol=protocol,
                cluster_ip=cluster_ip, port=port,
                node_port=_port(sp.get("nodePort")) if node_ports else 0,
                endpoints=tuple(sorted(endpoints)), affinity_timeout=timeout))
    return sorted(out, key=lambda s: s.key)


# -- names -----------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_./-]")


def object_name(kind: str, key: str) -> str:
    """`<kind>-<key>` as an nft identifier; unsafe or long keys get a hash to stay unique."""
    safe = _UNSAFE.sub("_", key)
    if safe == key and len(key) <= NAME_LIMIT:
        return f"{kind}-{key}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{kind}-{safe[:NAME_LIMIT - 12]}-{digest}"


def _endpoint_key(sp: ServicePort, ep: Endpoint) -> str:
    return f"{sp.key}/{ep.ip}/{ep.port}"


# -- rendering -------------------------------------------------------------------------------

_UNSAFE_COMMENT = re.compile(r'["\\\n]')
SVC_TYPE = "ipv4_addr . inet_proto . inet_service"
PORT_TYPE = "inet_proto . inet_service"


def _comment(text: str) -> str:
    return _UNSAFE_COMMENT.sub("_", text)[:120]


def _dnat(sp: ServicePort, endpoints: tuple[Endpoint, ...]) -> str:
    if len(endpoints) == 1:
        return f"meta l4proto {sp.protocol} dnat to {endpoints[0].ip}:{endpoints[0].port}"
    choices = ", ".join(f"{i} : {ep.ip} . {ep.port}" for i, ep in enumerate(endpoints))
    return (f"meta l4proto {sp.protocol} dnat to numgen random mod {len(endpoints)} "
            f"map {{ {choices} }}")


def _fixed_chains(bridge: str) -> dict[str, ChainDef]:
    """The hooks and the chains every table has, whatever the cluster holds."""
    br = f'"{bridge}"'
    mark = f"0x{MASQUERADE_MARK:x}"
    unmark = f"0x{0xFFFFFFFF ^ MASQUERADE_MARK:08x}"
    return {
        "reject-service": ChainDef((
            "meta l4proto tcp reject with tcp reset",
            "reject with icmp type port-unreachable"),
            comment="a service port without ready endpoints"),
        "service-checks": ChainDef((
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
            "ip daddr @cluster-ips ip daddr . meta l4proto . th dport != @service-ports "
            "goto reject-service")),
        "nodeport-checks": ChainDef(("meta l4proto . th dport vmap @no-endpoint-nodeports",)),
        "filter-prerouting": ChainDef((
            f"ct state new iifname {br} jump service-checks",
            "ct state new fib daddr type local jump nodeport-checks"),
            base="type filter hook prerouting priority dstnat - 10; policy accept;"),
        "filter-output": ChainDef((
            "ct state new jump service-checks",
            "ct state new fib daddr type local ip daddr != 127.0.0.0/8 jump nodeport-checks"),
            base="type filter hook output priority -110; policy accept;"),
        "filter-forward": ChainDef((
            "ct state established,related accept",
            f"iifname {br} oifname != {br} ip daddr != @cluster-networks "
            "reject with icmp type host-unreachable",
            "ip daddr vmap @policy-pods"),
            base="type filter hook forward priority filter; policy accept;"),
        "nodeports-in": ChainDef((
            f"iifname != {br} meta l4proto . th dport @nodeport-ports "
            f"meta mark set meta mark | {mark}",
            "meta l4proto . th dport vmap @nodeports")),
        "nat-prerouting": ChainDef((
            f"iifname {br} ip daddr . meta l4proto . th dport vmap @services",
            "fib daddr type local jump nodeports-in"),
            base="type nat hook prerouting priority dstnat; policy accept;"),
        "nat-output": ChainDef((
            "ip daddr . meta l4proto . th dport vmap @services",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
            "vmap @nodeports"),
            base="type nat hook output priority -100; policy accept;"),
        "nat-postrouting": ChainDef((
            "ct status dnat ip saddr . ip daddr @hairpin masquerade",
            f"meta mark & {mark} == {mark} meta mark set meta mark & {unmark} masquerade"),
            base="type nat hook postrouting priority srcnat; policy accept;"),
    }


def render(services: Iterable[Obj], slices: Iterable[Obj], node: NodeInfo,
           policies: Iterable[PodPolicy] = ()) -> Ruleset:
    """The whole table for this node, deterministic for the same input."""
    chains = _fixed_chains(node.bridge)
    dynamic: dict[str, SetDef] = {}
    services_map: dict[str, str] = {}
    no_endpoints: dict[str, str] = {}
    nodeports: dict[str, str] = {}
    no_endpoint_nodeports: dict[str, str] = {}
    service_keys: dict[str, None] = {}
    cluster_ips: set[str] = set()
    hairpin: set[str] = set()

    for sp in service_ports(services, slices):
        key = f"{sp.cluster_ip} . {sp.protocol} . {sp.port}"
        node_key = f"{sp.protocol} . {sp.node_port}"
        cluster_ips.add(sp.cluster_ip)
        if key in service_keys:
            continue  # two services claim one address and port: the first (by name) wins
        service_keys[key] = None
        if not sp.endpoints:
            no_endpoints[key] = "goto reject-service"
            if sp.node_port and node_key not in nodeports:
                no_endpoint_nodeports.setdefault(node_key, "goto reject-service")
            continue
        chain = object_name("svc", sp.key)
        services_map[key] = f"goto {chain}"
        if sp.node_port and node_key not in no_endpoint_nodeports:
            nodeports.setdefault(node_key, f"goto {chain}")
        for ep in sp.endpoints:
            if not ep.node or ep.node == node.node_name:
                hairpin.add(f"{ep.ip} . {ep.ip}")
        comment = _comment(f"{sp.namespace}/{sp.name}:{sp.port_name or sp.port}")
        if not sp.affinity_timeout:
            chains[chain] = ChainDef((_dnat(sp, sp.endpoints),), comment=comment)
            continue
        rules = []
        targets = []
        for ep in sp.endpoints:
            ep_key = _endpoint_key(sp, ep)
            ep_chain = object_name("ep", ep_key)
            aff = object_name("aff", f"{ep_key}/{sp.affinity_timeout}")
            dynamic[aff] = SetDef("set", ("type ipv4_addr", "flags dynamic,timeout",
                                          f"timeout {sp.affinity_timeout}s"), dynamic=True)
            chains[ep_chain] = ChainDef((f"update @{aff} {{ ip saddr }}", _dnat(sp, (ep,))))
            rules.append(f"ip saddr @{aff} goto {ep_chain}")
            targets.append(ep_chain)
        if len(targets) == 1:
            rules.append(f"goto {targets[0]}")
        else:
            choices = ", ".join(f"{i} : goto {c}" for i, c in enumerate(targets))
            rules.append(f"numgen random mod {len(targets)} vmap {{ {choices} }}")
        chains[chain] = ChainDef(tuple(rules), comment=comment)

    policy_map: dict[str, str] = {}
    for pp in policies:
        ip = _ipv4(pp.ip)
        if ip is None or ip in policy_map:
            continue
        chain = object_name("pol", pp.pod)
        policy_map[ip] = f"jump {chain}"
        chains[chain] = ChainDef((*pp.rules, "drop"), comment=_comment(f"policy: {pp.pod}"))

    networks = [str(n) if n.prefixlen < 32 else str(n.network_address)
                for n in ipaddress.collapse_addresses(_v4_networks(node.cluster_networks))]
    sets = {
        "cluster-ips": SetDef("set", ("type ipv4_addr",),
                              tuple(sorted(cluster_ips, key=socket.inet_aton))),
        "service-ports": SetDef("set", (f"type {SVC_TYPE}",), tuple(sorted(service_keys))),
        "services": SetDef("map", (f"type {SVC_TYPE} : verdict",), _pairs(services_map)),
        "no-endpoint-services": SetDef("map", (f"type {SVC_TYPE} : verdict",),
                                       _pairs(no_endpoints)),
        "nodeport-ports": SetDef("set", (f"type {PORT_TYPE}",), tuple(sorted(nodeports))),
        "nodeports": SetDef("map", (f"type {PORT_TYPE} : verdict",), _pairs(nodeports)),
        "no-endpoint-nodeports": SetDef("map", (f"type {PORT_TYPE} : verdict",),
                                        _pairs(no_endpoint_nodeports)),
        "hairpin": SetDef("set", ("type ipv4_addr . ipv4_addr",), tuple(sorted(hairpin))),
        "cluster-networks": SetDef("set", ("type ipv4_addr", "flags interval"),
                                   tuple(networks)),
        "policy-pods": SetDef("map", ("type ipv4_addr : verdict",), _pairs(policy_map)),
        **dict(sorted(dynamic.items())),
    }
    fixed = list(_fixed_chains(node.bridge))
    ordered = {n: chains[n] for n in fixed} | {n: chains[n] for n in sorted(chains)
                                                 if n not in fixed}
    return Ruleset(table=node.table, sets=sets, chains=ordered)


def _pairs(mapping: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"{k} : {v}" for k, v in sorted(mapping.items()))


def _v4_networks(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network]:
    out = []
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network):
            out.append(net)
    return out
