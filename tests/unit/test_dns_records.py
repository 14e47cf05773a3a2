"""Cluster DNS answers (Kubernetes' DNS specification) from Services, EndpointSlices and Pods,
and the server's handling of DNS messages (dnspython on both sides), including over real
loopback UDP and TCP sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from dockyard.network.dns import node_dns_address, parse_upstream
from dockyard.network.dns.records import ClusterZone
from dockyard.network.dns.server import DnsServer

Obj = dict[str, Any]


def service(name: str, namespace: str = "default", cluster_ip: str = "10.43.0.10",
            ports: list[Obj] | None = None, **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "ports": ports if ports is not None else
                     [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}}


def endpoint(ip: str, ready: bool | None = True, hostname: str | None = None) -> Obj:
    out: Obj = {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}}
    if hostname:
        out["hostname"] = hostname
    return out


def eps_slice(svc: str, endpoints: list[Obj], namespace: str = "default",
              ports: list[Obj] | None = None, address_type: str = "IPv4") -> Obj:
    return {"metadata": {"name": f"{svc}-abc", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": address_type, "endpoints": endpoints,
            "ports": ports if ports is not None else
            [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def pod(name: str, ip: str, namespace: str = "default", phase: str = "Running",
        **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": spec, "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}


@pytest.fixture
def zone() -> ClusterZone:
    z = ClusterZone("cluster.local")
    z.ready = True
    return z


def ask(zone: ClusterZone, name: str, rdtype: str = "A") -> tuple[str, list[str]]:
    answer = zone.resolve(dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
    lines = [f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
             for rrset in answer.answer for rdata in rrset]
    return dns.rcode.to_text(answer.rcode), sorted(lines)


def addresses(zone: ClusterZone, name: str, rdtype: str = "A") -> list[str]:
    return sorted(line.split()[-1] for line in ask(zone, name, rdtype)[1])


# -- services -------------------------------------------------------------------------------


def test_cluster_ip_service_answers_its_address_with_a_5s_ttl(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    assert ask(zone, "web.default.svc.cluster.local") == (
        "NOERROR", ["web.default.svc.cluster.local. 5 A 10.43.0.10"])


def test_names_are_case_insensitive(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    assert addresses(zone, "WEB.Default.SVC.cluster.LOCAL") == ["10.43.0.10"]


def test_aaaa_for_an_ipv4_service_is_an_empty_noerror_with_the_soa(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    answer = zone.resolve(dns.name.from_text("web.default.svc.cluster.local"),
                          dns.rdatatype.AAAA)
    assert answer.rcode == dns.rcode.NOERROR and answer.answer == ()
    assert [r.rdtype for r in answer.authority] == [dns.rdatatype.SOA]
    assert answer.authority[0].name == dns.name.from_text("cluster.local")


def test_unknown_names_in_the_zone_are_nxdomain_with_the_soa(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    for name in ("nothing.default.svc.cluster.local",
                 "web.other.svc.cluster.local",
                 # what ndots:5 search expansion asks first for a full name
                 "web.default.svc.cluster.local.default.svc.cluster.local"):
        answer = zone.resolve(dns.name.from_text(name), dns.rdatatype.A)
        assert answer.rcode == dns.rcode.NXDOMAIN, name
        assert answer.authority[0].rdtype == dns.rdatatype.SOA
        assert answer.authority[0][0].minimum == 5  # negative answers cached 5 s


def test_parent_names_exist_without_records(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    assert ask(zone, "default.svc.cluster.local") == ("NOERROR", [])
    assert ask(zone, "svc.cluster.local") == ("NOERROR", [])
    assert ask(zone, "cluster.local", "SOA")[1][0].startswith("cluster.local. 5 SOA ns.dns.")


def test_names_outside_the_cluster_are_refused_and_marked_forwardable(
        zone: ClusterZone) -> None:
    answer = zone.resolve(dns.name.from_text("example.com"), dns.rdatatype.A)
    assert answer.rcode == dns.rcode.REFUSED and answer.forwardable
    assert not answer.authoritative


def test_before_the_caches_list_everything_is_servfail() -> None:
    z = ClusterZone()
    z.set_service(service("web"), [])
    assert ask(z, "web.default.svc.cluster.local")[0] == "SERVFAIL"
    z.ready = True
    assert addresses(z, "web.default.svc.cluster.local") == ["10.43.0.10"]


def test_srv_for_named_ports_targets_the_service(zone: ClusterZone) -> None:
    zone.set_service(service("web", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                           {"name": "dns", "port": 53, "protocol": "UDP"},
                                           {"port": 9000}]), [])
    assert ask(zone, "_http._tcp.web.default.svc.cluster.local", "SRV") == (
        "NOERROR", ["_http._tcp.web.default.svc.cluster.local. 5 SRV 0 100 80 "
                    "web.default.svc.cluster.local."])
    assert ask(zone, "_dns._udp.web.default.svc.cluster.local", "SRV")[1][0].endswith(
        "SRV 0 100 53 web.default.svc.cluster.local.")
    assert ask(zone, "_http._udp.web.default.svc.cluster.local", "SRV")[0] == "NXDOMAIN"
    answer = zone.resolve(dns.name.from_text("_http._tcp.web.default.svc.cluster.local"),
                          dns.rdatatype.SRV)
    assert [str(a[0]) for a in answer.additional] == ["10.43.0.10"]


def test_headless_service_answers_every_ready_endpoint(zone: ClusterZone) -> None:
    svc = service("db", cluster_ip="None")
    zone.set_service(svc, [eps_slice("db", [endpoint("10.42.0.5"), endpoint("10.42.0.6"),
                                            endpoint("10.42.0.7", ready=False),
                                            endpoint("10.42.0.8", ready=None)])])
    assert addresses(zone, "db.default.svc.cluster.local") == [
        "10.42.0.5", "10.42.0.6", "10.42.0.8"]
    # Each endpoint has its own name: the dashed address when it has no hostname.
    assert addresses(zone, "10-42-0-5.db.default.svc.cluster.local") == ["10.42.0.5"]
    assert ask(zone, "10-42-0-7.db.default.svc.cluster.local")[0] == "NXDOMAIN"


def test_headless_endpoints_update_when_slices_change(zone: ClusterZone) -> None:
    svc = service("db", cluster_ip="None")
    zone.set_service(svc, [eps_slice("db", [endpoint("10.42.0.5")])])
    assert addresses(zone, "db.default.svc.cluster.local") == ["10.42.0.5"]
    zone.set_service(svc, [eps_slice("db", [endpoint("10.42.0.6")])])
    assert addresses(zone, "db.default.svc.cluster.local") == ["10.42.0.6"]
    zone.set_service(svc, [])
    assert ask(zone, "db.default.svc.cluster.local") == ("NOERROR", [])
    zone.remove_service("default/db")
    assert ask(zone, "db.default.svc.cluster.local")[0] == "NXDOMAIN"


def test_headless_hostnames_and_srv_per_endpoint(zone: ClusterZone) -> None:
    svc = service("db", cluster_ip="None", ports=[{"name": "pg", "port": 5432}])
    zone.set_service(svc, [eps_slice("db", [endpoint("10.42.0.5", hostname="db-0"),
                                            endpoint("10.42.0.6", hostname="db-1")],
                                     ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}])])
    assert addresses(zone, "db-0.db.default.svc.cluster.local") == ["10.42.0.5"]
    assert addresses(zone, "DB-1.db.default.svc.cluster.local") == ["10.42.0.6"]
    srv = ask(zone, "_pg._tcp.db.default.svc.cluster.local", "SRV")[1]
    assert srv == ["_pg._tcp.db.default.svc.cluster.local. 5 SRV 0 50 5432 "
                   "db-0.db.default.svc.cluster.local.",
                   "_pg._tcp.db.default.svc.cluster.local. 5 SRV 0 50 5432 "
                   "db-1.db.default.svc.cluster.local."]
    answer = zone.resolve(dns.name.from_text("_pg._tcp.db.default.svc.cluster.local"),
                          dns.rdatatype.SRV)
    assert sorted(str(a[0]) for a in answer.additional) == ["10.42.0.5", "10.42.0.6"]


def test_external_name_is_a_cname(zone: ClusterZone) -> None:
    zone.set_service({"metadata": {"name": "ext", "namespace": "default"},
                      "spec": {"type": "ExternalName", "externalName": "db.example.com"}}, [])
    assert ask(zone, "ext.default.svc.cluster.local") == (
        "NOERROR", ["ext.default.svc.cluster.local. 5 CNAME db.example.com."])
    assert ask(zone, "ext.default.svc.cluster.local", "AAAA")[1] == [
        "ext.default.svc.cluster.local. 5 CNAME db.example.com."]


def test_external_name_inside_the_cluster_is_followed(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    zone.set_service({"metadata": {"name": "alias", "namespace": "default"},
                      "spec": {"type": "ExternalName",
                               "externalName": "web.default.svc.cluster.local"}}, [])
    assert ask(zone, "alias.default.svc.cluster.local") == ("NOERROR", [
        "alias.default.svc.cluster.local. 5 CNAME web.default.svc.cluster.local.",
        "web.default.svc.cluster.local. 5 A 10.43.0.10"])


def test_dns_version_record(zone: ClusterZone) -> None:
    assert ask(zone, "dns-version.cluster.local", "TXT") == (
        "NOERROR", ['dns-version.cluster.local. 5 TXT "1.1.0"'])


# -- pods and reverse names -----------------------------------------------------------------


def test_pod_a_records_only_for_ips_a_pod_in_that_namespace_has(zone: ClusterZone) -> None:
    zone.set_pod(pod("p", "10.42.0.9", namespace="shop"))
    assert addresses(zone, "10-42-0-9.shop.pod.cluster.local") == ["10.42.0.9"]
    assert ask(zone, "10-42-0-9.default.pod.cluster.local")[0] == "NXDOMAIN"
    assert ask(zone, "10-42-0-10.shop.pod.cluster.local")[0] == "NXDOMAIN"
    zone.set_pod(pod("p", "10.42.0.9", namespace="shop", phase="Succeeded"))
    assert ask(zone, "10-42-0-9.shop.pod.cluster.local")[0] == "NXDOMAIN"
    zone.set_pod(pod("p", "10.42.0.9", namespace="shop"))
    zone.remove_pod("shop/p")
    assert ask(zone, "10-42-0-9.shop.pod.cluster.local")[0] == "NXDOMAIN"


def reverse(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text()


def test_ptr_for_service_endpoint_and_pod_addresses(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    zone.set_service(service("db", cluster_ip="None"),
                     [eps_slice("db", [endpoint("10.42.0.5", hostname="db-0")])])
    zone.set_pod(pod("db-0", "10.42.0.5"))
    zone.set_pod(pod("other", "10.42.0.6"))
    assert ask(zone, reverse("10.43.0.10"), "PTR")[1] == [
        "10.0.43.10.in-addr.arpa. 5 PTR web.default.svc.cluster.local."]
    # An endpoint's address names the endpoint, not the pod.
    assert ask(zone, reverse("10.42.0.5"), "PTR")[1] == [
        "5.0.42.10.in-addr.arpa. 5 PTR db-0.db.default.svc.cluster.local."]
    assert ask(zone, reverse("10.42.0.6"), "PTR")[1] == [
        "6.0.42.10.in-addr.arpa. 5 PTR 10-42-0-6.default.pod.cluster.local."]
    unknown = zone.resolve(dns.reversename.from_address("192.0.2.1"), dns.rdatatype.PTR)
    assert unknown.rcode == dns.rcode.NXDOMAIN and unknown.forwardable


def test_host_network_pods_get_a_name_but_not_the_nodes_ptr(zone: ClusterZone) -> None:
    zone.set_pod(pod("h", "192.0.2.10", hostNetwork=True))
    assert addresses(zone, "192-0-2-10.default.pod.cluster.local") == ["192.0.2.10"]
    assert ask(zone, reverse("192.0.2.10"), "PTR")[0] == "NXDOMAIN"


def test_other_cluster_domain() -> None:
    z = ClusterZone("corp.internal.")
    z.ready = True
    z.set_service(service("web"), [])
    assert addresses(z, "web.default.svc.corp.internal") == ["10.43.0.10"]
    assert ask(z, "web.default.svc.cluster.local")[0] == "REFUSED"


def test_answers_are_cached_until_the_next_change(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    name = dns.name.from_text("web.default.svc.cluster.local")
    first = zone.resolve(name, dns.rdatatype.A)
    assert zone.resolve(name, dns.rdatatype.A) is first
    version = zone.version
    zone.set_service(service("web"), [])  # the same records: nothing changes
    assert zone.version == version and zone.resolve(name, dns.rdatatype.A) is first
    zone.set_service(service("web", cluster_ip="10.43.0.11"), [])
    assert addresses(zone, "web.default.svc.cluster.local") == ["10.43.0.11"]


# -- the server's message handling ---------------------------------------------------------


def reply(server: DnsServer, query: dns.message.Message, tcp: bool = False
          ) -> dns.message.Message:
    out = server.respond(query.to_wire(), tcp)
    assert isinstance(out, bytes)
    return dns.message.from_wire(out)


def test_server_replies_authoritatively_with_the_query_id_and_case(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    server = DnsServer(zone)
    for spelled in ("web.default.svc.cluster.local", "WeB.DEFAULT.svc.cluster.local"):
        query = dns.message.make_query(spelled, "A", use_edns=False)
        response = reply(server, query)
        assert response.id == query.id and query.is_response(response)
        assert response.flags & dns.flags.AA and not response.flags & dns.flags.RA
        assert response.question[0].name.to_text() == spelled + "."  # echoed as asked
        assert [str(r) for r in response.answer[0]] == ["10.43.0.10"]


def test_server_refuses_outside_names_without_an_upstream(zone: ClusterZone) -> None:
    response = reply(DnsServer(zone), dns.message.make_query("example.com", "A"))
    assert response.rcode() == dns.rcode.REFUSED and not response.answer


def test_server_hands_outside_names_to_the_upstream_when_configured(
        zone: ClusterZone) -> None:
    server = DnsServer(zone, upstream=("192.0.2.53", 53))
    out = server.respond(dns.message.make_query("example.com", "A").to_wire(), False)
    assert isinstance(out, dns.message.Message)  # to forward; cluster names are not
    zone.set_service(service("web"), [])
    assert reply(server, dns.message.make_query("web.default.svc.cluster.local", "A")
                 ).flags & dns.flags.RA


def test_server_nxdomain_and_refusals_of_odd_messages(zone: ClusterZone) -> None:
    server = DnsServer(zone)
    response = reply(server, dns.message.make_query("nothing.default.svc.cluster.local", "A"))
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    chaos = dns.message.make_query("version.bind", "TXT", rdclass="CH")
    assert reply(server, chaos).rcode() == dns.rcode.REFUSED
    notify = dns.message.make_query("cluster.local", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert reply(server, notify).rcode() == dns.rcode.NOTIMP
    garbage = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff"
    out = server.respond(garbage, False)
    assert isinstance(out, bytes)
    formerr = dns.message.from_wire(out)
    assert formerr.id == 0x1234 and formerr.rcode() == dns.rcode.FORMERR
    response_packet = dns.message.make_response(dns.message.make_query("a.b", "A"))
    assert server.respond(response_packet.to_wire(), False) is None  # never answer answers
    assert server.respond(b"\x00", False) is None


def test_large_udp_answers_are_truncated_and_whole_over_tcp(zone: ClusterZone) -> None:
    many = [endpoint(f"10.42.{i // 250}.{i % 250 + 1}") for i in range(100)]
    zone.set_service(service("big", cluster_ip="None"), [eps_slice("big", many)])
    server = DnsServer(zone)
    query = dns.message.make_query("big.default.svc.cluster.local", "A", use_edns=False)
    udp = reply(server, query)
    assert udp.flags & dns.flags.TC
    tcp = reply(server, query, tcp=True)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 100
    edns = dns.message.make_query("big.default.svc.cluster.local", "A", use_edns=0,
                                  payload=4096)
    assert len(reply(server, edns).answer[0]) == 100  # fits the client's EDNS size


def test_repeated_plain_queries_are_served_from_the_rendered_cache(
        zone: ClusterZone, monkeypatch: pytest.MonkeyPatch) -> None:
    zone.set_service(service("web"), [])
    server = DnsServer(zone)
    first = dns.message.make_query("web.default.svc.cluster.local", "A", use_edns=False)
    assert [str(r) for r in reply(server, first).answer[0]] == ["10.43.0.10"]

    def no_resolving(*_: object) -> None:
        raise AssertionError("resolved again")

    monkeypatch.setattr(zone, "resolve", no_resolving)
    again = dns.message.make_query("WEB.default.svc.cluster.local", "A", use_edns=False)
    response = reply(server, again)
    assert response.id == again.id and again.is_response(response)
    assert response.question[0].name.to_text() == "WEB.default.svc.cluster.local."
    assert [str(r) for r in response.answer[0]] == ["10.43.0.10"]


def test_rendered_replies_follow_zone_changes(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    server = DnsServer(zone)
    query = dns.message.make_query("web.default.svc.cluster.local", "A")
    assert [str(r) for r in reply(server, query).answer[0]] == ["10.43.0.10"]
    zone.set_service(service("web", cluster_ip="10.43.0.99"), [])
    assert [str(r) for r in reply(server, query).answer[0]] == ["10.43.0.99"]


async def test_udp_and_tcp_on_loopback(zone: ClusterZone) -> None:
    zone.set_service(service("web"), [])
    server = DnsServer(zone)
    await server.start("127.0.0.1", 0)
    try:
        query = dns.message.make_query("web.default.svc.cluster.local", "A")
        for send in (dns.asyncquery.udp, dns.asyncquery.tcp):
            response = await send(query, "127.0.0.1", port=server.port, timeout=2)
            assert [str(r) for r in response.answer[0]] == ["10.43.0.10"]
    finally:
        await server.close()


async def test_forwarding_to_a_configured_upstream(zone: ClusterZone) -> None:
    """A second server on loopback stands for the upstream (nothing leaves the machine)."""
    other = ClusterZone("example.test")
    other.ready = True
    other.set_service(service("api", cluster_ip="10.99.0.1"), [])
    upstream = DnsServer(other)
    await upstream.start("127.0.0.1", 0)
    server = DnsServer(zone, upstream=("127.0.0.1", upstream.port), upstream_timeout=0.3)
    await server.start("127.0.0.1", 0)
    try:
        query = dns.message.make_query("api.default.svc.example.test", "A")
        response = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2)
        assert [str(r) for r in response.answer[0]] == ["10.99.0.1"]
        await upstream.close()
        response = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2)
        assert response.rcode() == dns.rcode.SERVFAIL  # the upstream went away
    finally:
        await server.close()
        await upstream.close()


async def test_start_waits_for_the_address_to_exist(zone: ClusterZone) -> None:
    # An address no interface has (TEST-NET) cannot be bound yet: start() keeps retrying, as
    # it does until the pod network gives the bridge its address.
    server = DnsServer(zone)
    task = asyncio.create_task(server.start("192.0.2.254", 0, retry_seconds=0.01))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.close()


def test_node_dns_address_is_the_bridge_gateway_and_upstream_parsing() -> None:
    assert node_dns_address("10.42.3.0/24") == "10.42.3.1"
    assert node_dns_address("10.200.7.0/24") == "10.200.7.1"
    assert parse_upstream("192.0.2.53") == ("192.0.2.53", 53)
    assert parse_upstream("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_upstream("[fd00::53]:54") == ("fd00::53", 54)
