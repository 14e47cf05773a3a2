"""The cluster's DNS records (Kubernetes' DNS specification) and the answers to questions.

Pure: objects in, dnspython records out, no I/O. `service_records` and `pod_records` turn one
object into its records; `ClusterZone` holds every object's contribution, so an informer event
replaces only that object's records, and answers each question from them. Answers are cached
per (name, type) until the next change, so a busy name costs one dictionary lookup.

What is answered (zone `cluster.local` here, any `cluster_domain` in practice):
- `<svc>.<ns>.svc.cluster.local`: A/AAAA of the ClusterIPs; for a headless service, of every
  ready endpoint; CNAME to `spec.externalName` for an ExternalName service.
- `<host>.<svc>.<ns>.svc.cluster.local` per ready endpoint of a headless service, `<host>` being
  the endpoint's hostname or its dashed address (`10-42-0-5`), as CoreDNS names them.
- SRV `_<port>._<proto>.<svc>.<ns>.svc.cluster.local` for named ports: the service name as
  target, or each endpoint's name for a headless service (A records in the additional section).
- `<a-b-c-d>.<ns>.pod.cluster.local` for each running pod's IP ("pods verified": only IPs a pod
  in that namespace has).
- PTR in in-addr.arpa/ip6.arpa for ClusterIPs, endpoints and pod IPs.
- `dns-version.cluster.local` TXT "1.1.0" (the specification's version record).
Anything else under the cluster domain is NXDOMAIN, names that exist with other types are
NOERROR and empty (no AAAA on an IPv4 cluster), both with the zone's SOA in the authority
section so resolvers cache the negative answer for the TTL. Names outside the zone are refused
(marked forwardable, for a server with an upstream).
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

Obj = dict[str, Any]
Name = dns.name.Name
Record = tuple[bytes, dns.rdata.Rdata | None]  # (key_of(name), record); None: no data

DEFAULT_TTL = 5  # seconds; CoreDNS' kubernetes plugin default
SPEC_VERSION = "1.1.0"
MAX_CNAME_CHAIN = 8
MAX_CACHED_ANSWERS = 50_000  # random names (NXDOMAIN) must not grow the cache without bound
REVERSE_ZONES = (dns.name.from_text("in-addr.arpa."), dns.name.from_text("ip6.arpa."))

IN = dns.rdataclass.IN
A, AAAA, CNAME, PTR, SOA, SRV, TXT = (dns.rdatatype.A, dns.rdatatype.AAAA,
                                      dns.rdatatype.CNAME, dns.rdatatype.PTR,
                                      dns.rdatatype.SOA, dns.rdatatype.SRV, dns.rdatatype.TXT)


@dataclass(frozen=True)
class Answer:
    """What to reply: the sections and the response code. `forwardable` marks questions this
    zone has no authority over (an upstream, when configured, answers them instead)."""

    rcode: int
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    authoritative: bool = True
    forwardable: bool = False


# -- records of one object -----------------------------------------------------------------


def dashed(ip: str) -> str:
    """`10.42.0.5` → `10-42-0-5`, `fd00::1` → `fd00--1` (the pod and endpoint name form)."""
    return ip.replace(".", "-").replace(":", "-")


def _address(ip: str) -> dns.rdata.Rdata | None:
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if parsed.version == 4:
        return dns.rdtypes.IN.A.A(IN, A, str(parsed))
    return dns.rdtypes.IN.AAAA.AAAA(IN, AAAA, str(parsed))


def _ptr(target: Name) -> dns.rdata.Rdata:
    return dns.rdtypes.ANY.PTR.PTR(IN, PTR, target)


def key_of(name: Name) -> bytes:
    """A name's lookup key: its labels joined by dots, lowercased (DNS compares names
    case-insensitively, and ASCII only). Hashing bytes is far cheaper than hashing a
    dnspython Name. A label holding a dot itself gets an escaped key no record has."""
    key = b".".join(name.labels).lower()
    if key.count(b".") != len(name.labels) - 1:
        return b"\\" + name.to_text().lower().encode()
    return key


def _key(text: str) -> bytes:
    """Key of a name we make from API object fields (DNS labels, validated by the API)."""
    return text.lower().encode() + b"."


def _reverse_key(ip: str) -> bytes:
    return ipaddress.ip_address(ip).reverse_pointer.encode() + b"."


def service_name(namespace: str, name: str, domain: Name) -> Name:
    return Name((name.lower(), namespace.lower(), "svc")).concatenate(domain)


def service_records(service: Obj, slices: list[Obj], domain: Name) -> list[Record]:
    """The records of one Service, given the EndpointSlices labelled with its name."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    base = service_name(meta.get("namespace") or "default", meta["name"], domain)
    base_key = key_of(base)
    out: list[Record] = [(base_key, None)]
    if spec.get("type") == "ExternalName":
        target = str(spec.get("externalName") or "").rstrip(".")
        if target:
            out.append((base_key, dns.rdtypes.ANY.CNAME.CNAME(
                IN, CNAME, dns.name.from_text(target + "."))))
        return out
    cluster_ips = list(spec.get("clusterIPs") or
                       ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    if cluster_ips == ["None"]:
        return out + _headless_records(base, base_key, slices)
    addresses = [(ip, rdata) for ip in cluster_ips if (rdata := _address(ip)) is not None]
    for ip, rdata in addresses:
        out.append((base_key, rdata))
        out.append((_reverse_key(ip), _ptr(base)))
    if addresses:
        for port in spec.get("ports") or []:
            if port.get("name") and port.get("port"):
                out.append((_srv_key(port, base_key),
                            dns.rdtypes.IN.SRV.SRV(IN, SRV, 0, 100, int(port["port"]), base)))
    return out


def _srv_key(port: Obj, base_key: bytes) -> bytes:
    proto = str(port.get("protocol") or "TCP").lower()
    return f"_{str(port['name']).lower()}._{proto}.".encode() + base_key


def _headless_records(base: Name, base_key: bytes, slices: list[Obj]) -> list[Record]:
    out: list[Record] = []
    srv_targets: dict[bytes, list[tuple[int, Name]]] = {}
    for eps in slices:
        if eps.get("addressType") not in ("IPv4", "IPv6"):
            continue  # FQDN slices carry no addresses to answer with
        ports = [p for p in eps.get("ports") or [] if p.get("name") and p.get("port")]
        for endpoint in eps.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue  # nil means ready (the EndpointSlice API's rule)
            for ip in endpoint.get("addresses") or []:
                rdata = _address(ip)
                if rdata is None:
                    continue
                host = str(endpoint.get("hostname") or dashed(ip)).lower()
                try:
                    own = Name((host,)).concatenate(base)
                except dns.exception.DNSException:
                    continue  # a name longer than DNS allows cannot be asked for
                out += [(base_key, rdata), (key_of(own), rdata),
                        (_reverse_key(ip), _ptr(own))]
                for port in ports:
                    srv_targets.setdefault(_srv_key(port, base_key), []).append(
                        (int(port["port"]), own))
    for key, targets in srv_targets.items():
        weight = max(1, 100 // len(targets))  # CoreDNS spreads 100 over the targets
        out += [(key, dns.rdtypes.IN.SRV.SRV(IN, SRV, 0, weight, port, target))
                for port, target in targets]
    return out


def pod_records(pod: Obj, domain: Name) -> list[Record]:
    """`<dashed-ip>.<ns>.pod.<domain>` for each IP of a pod that holds its IPs."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return []  # its addresses went back to the pool
    ips = [entry.get("ip") for entry in status.get("podIPs") or []] or [status.get("podIP")]
    out: list[Record] = []
    host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
    namespace = str(meta.get("namespace") or "default").lower()
    for ip in ips:
        rdata = _address(ip) if ip else None
        if rdata is None:
            continue
        text = f"{dashed(str(rdata))}.{namespace}.pod.{domain.to_text(omit_final_dot=True)}"
        out.append((_key(text), rdata))
        if not host_network:  # a host-network pod's IP is the node's, not the pod's
            out.append((_reverse_key(ip), _ptr(dns.name.from_text(text + "."))))
    return out


def soa_record(zone: Name, serial: int, ttl: int) -> dns.rrset.RRset:
    """The zone's SOA, its minimum (the negative-caching TTL) equal to the record TTL."""
    rdata = dns.rdtypes.ANY.SOA.SOA(
        IN, SOA, Name(("ns", "dns")).concatenate(zone),
        Name(("hostmaster",)).concatenate(zone), serial, 7200, 1800, 86400, ttl)
    return dns.rrset.from_rdata(zone, ttl, rdata)


# -- the zone ------------------------------------------------------------------------------


@dataclass
class _Node:
    """One name: the records each owner (a service, a pod) gives it."""

    by_owner: dict[str, list[dns.rdata.Rdata]] = field(default_factory=dict)


class ClusterZone:
    """All records of the cluster, kept per owner, answering questions from a cache."""

    def __init__(self, domain: str = "cluster.local", ttl: int = DEFAULT_TTL,
                 serial: int | None = None) -> None:
        self.domain = dns.name.from_text(domain.strip(".") + ".")
        self.ttl = ttl
        self._ready = False
        self.version = 0  # bumps on every change; the server keys rendered replies by it
        serial = serial if serial is not None else int(time.time()) & 0xFFFFFFFF
        # zone key -> (zone name, its SOA); the cluster domain first
        self._zones = {key_of(zone): (zone, soa_record(zone, serial, ttl))
                       for zone in (self.domain, *REVERSE_ZONES)}
        self._domain_key = key_of(self.domain)
        self._nodes: dict[bytes, _Node] = {}
        self._owned: dict[str, list[Record]] = {}
        self._ancestors: Counter[bytes] = Counter()  # empty non-terminals, reference counted
        self._cache: dict[tuple[bytes, int], Answer] = {}
        version = Name(("dns-version",)).concatenate(self.domain)
        self._set("static:dns-version", [(key_of(version), dns.rdtypes.ANY.TXT.TXT(
            IN, TXT, [SPEC_VERSION.encode()]))])

    @property
    def ready(self) -> bool:
        """Set once the caches have listed: before that nothing is known, and an NXDOMAIN
        would be cached by clients, so questions get SERVFAIL (clients retry)."""
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        if value != self._ready:
            self._ready = value
            self._changed()

    def _changed(self) -> None:
        self._cache.clear()
        self.version += 1

    # -- changes ---------------------------------------------------------------------------

    def set_service(self, service: Obj, slices: list[Obj]) -> None:
        meta = service["metadata"]
        self._set(f"svc:{meta.get('namespace')}/{meta['name']}",
                  service_records(service, slices, self.domain))

    def remove_service(self, key: str) -> None:
        self._set(f"svc:{key}", [])

    def set_pod(self, pod: Obj) -> None:
        meta = pod["metadata"]
        self._set(f"pod:{meta.get('namespace')}/{meta['name']}", pod_records(pod, self.domain))

    def remove_pod(self, key: str) -> None:
        self._set(f"pod:{key}", [])

    def _set(self, owner: str, records: list[Record]) -> None:
        old = self._owned.get(owner, [])
        if old == records:
            return  # e.g. a pod status change that did not touch its IPs
        for key in {key for key, _ in old}:
            node = self._nodes.get(key)
            if node is not None:
                node.by_owner.pop(owner, None)
                if not node.by_owner:
                    del self._nodes[key]
                    self._count_ancestors(key, -1)
        for key, rdata in records:
            node = self._nodes.get(key)
            if node is None:
                node = self._nodes[key] = _Node()
                self._count_ancestors(key, +1)
            mine = node.by_owner.setdefault(owner, [])
            if rdata is not None:
                mine.append(rdata)
        if records:
            self._owned[owner] = records
        else:
            self._owned.pop(owner, None)
        self._changed()

    def _count_ancestors(self, key: bytes, delta: int) -> None:
        """Every name between a record's name and its zone exists (an empty non-terminal)."""
        zone = self._zone_of(key)
        if zone is None:
            return
        while key != zone:
            key = key.split(b".", 1)[1]
            self._ancestors[key] += delta
            if self._ancestors[key] <= 0:
                del self._ancestors[key]

    # -- questions -------------------------------------------------------------------------

    def _zone_of(self, key: bytes) -> bytes | None:
        for zone in self._zones:
            if key.endswith(zone) and (len(key) == len(zone) or key[-len(zone) - 1] == 46):
                return zone  # 46: the dot before the zone's first label
        return None

    def resolve(self, qname: Name, rdtype: int) -> Answer:
        """The answer to `qname`/`rdtype` (class IN). Names are compared case-insensitively."""
        cache_key = (key_of(qname), rdtype)
        cached = self._cache.get(cache_key)
        if cached is None:
            cached = self._resolve(qname, cache_key[0], rdtype)
            if len(self._cache) >= MAX_CACHED_ANSWERS:
                self._cache.clear()
            self._cache[cache_key] = cached
        return cached

    def _resolve(self, qname: Name, key: bytes, rdtype: int) -> Answer:
        zone = self._zone_of(key)
        if zone is None:
            return Answer(dns.rcode.REFUSED, authoritative=False, forwardable=True)
        if not self.ready:
            return Answer(dns.rcode.SERVFAIL, authoritative=False)
        answer: list[dns.rrset.RRset] = []
        name = qname
        for _ in range(MAX_CNAME_CHAIN):
            soa = self._zones[zone][1]
            rdatas = self._rdatas(key)
            if rdatas is None:
                # An unknown address in a reverse zone may still be known upstream.
                return Answer(dns.rcode.NXDOMAIN, tuple(answer), (soa,),
                              forwardable=zone != self._domain_key and not answer)
            wanted = [r for r in rdatas if r.rdtype == rdtype or rdtype == dns.rdatatype.ANY]
            if wanted:
                answer += _rrsets(name, wanted, self.ttl)
                additional = self._additional(wanted)
                return Answer(dns.rcode.NOERROR, tuple(answer), (), tuple(additional))
            cnames = [r for r in rdatas if r.rdtype == CNAME]
            if not cnames:
                return Answer(dns.rcode.NOERROR, tuple(answer), (soa,))
            answer += _rrsets(name, cnames[:1], self.ttl)
            name = cnames[0].target  # type: ignore[attr-defined]
            key = key_of(name)
            next_zone = self._zone_of(key)
            if next_zone is None:  # outside the cluster: the client resolves the target
                return Answer(dns.rcode.NOERROR, tuple(answer))
            zone = next_zone
        return Answer(dns.rcode.SERVFAIL, tuple(answer), authoritative=False)

    def _rdatas(self, key: bytes) -> list[dns.rdata.Rdata] | None:
        """The name's records, [] for a name that exists without any (an empty
        non-terminal), None for a name that does not exist."""
        node = self._nodes.get(key)
        apex = self._zones.get(key)
        if node is None:
            if apex is not None:
                return [apex[1][0]]
            return [] if key in self._ancestors else None
        by_owner = node.by_owner
        # A reverse name owned by a service (ClusterIP, endpoint) names it; the pod name of
        # the same IP is then left out, as CoreDNS answers only the endpoint's name.
        owners = [o for o in by_owner if o.startswith("svc:")] or list(by_owner)
        out = [rdata for owner in sorted(owners) for rdata in by_owner[owner]]
        if apex is not None:
            out.append(apex[1][0])
        return out

    def _additional(self, rdatas: list[dns.rdata.Rdata]) -> list[dns.rrset.RRset]:
        """Addresses of SRV targets inside the zone, so clients need no second question."""
        out: list[dns.rrset.RRset] = []
        seen: set[bytes] = set()
        for rdata in rdatas:
            if rdata.rdtype != SRV:
                continue
            target = rdata.target  # type: ignore[attr-defined]
            key = key_of(target)
            if key in seen:
                continue
            seen.add(key)
            addresses = [r for r in self._rdatas(key) or [] if r.rdtype in (A, AAAA)]
            out += _rrsets(target, addresses, self.ttl)
        return out


def _rrsets(name: Name, rdatas: list[dns.rdata.Rdata], ttl: int) -> list[dns.rrset.RRset]:
    """Group records of one name into RRsets by type, in first-seen order."""
    sets: dict[int, dns.rrset.RRset] = {}
    for rdata in rdatas:
        rrset = sets.get(rdata.rdtype)
        if rrset is None:
            rrset = sets[rdata.rdtype] = dns.rrset.RRset(name, IN, rdata.rdtype)
            rrset.update_ttl(ttl)
        rrset.add(rdata)
    return list(sets.values())
