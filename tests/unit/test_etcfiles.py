"""The pod's /etc/hosts, /etc/hostname and /etc/resolv.conf, as kubelet + containerd write
them, for each dnsPolicy and for hostNetwork pods."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.kubelet import etcfiles

HOST_RESOLV = """# written by the host's network setup
nameserver 192.0.2.53
nameserver 192.0.2.54
search corp.example lab.example.
options timeout:2 ndots:1
"""


@pytest.fixture
def host_resolv(tmp_path: Path) -> str:
    path = tmp_path / "resolv.conf"
    path.write_text(HOST_RESOLV)
    return str(path)


def pod(**spec: object) -> dict:
    return {"metadata": {"name": "web-0", "namespace": "shop", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def test_hosts_file_has_localhost_ip6_and_the_pod_ip_under_its_hostname() -> None:
    assert etcfiles.hosts_file(pod(), ["10.42.0.7"], "cluster.local") == (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        "10.42.0.7\tweb-0\n")


def test_hosts_file_with_subdomain_gives_the_fqdn_first_and_host_aliases_last() -> None:
    p = pod(hostname="db", subdomain="backend",
            hostAliases=[{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]},
                         {"ip": "10.1.2.4", "hostnames": ["baz"]}])
    text = etcfiles.hosts_file(p, ["10.42.0.7"], "corp.internal")
    assert "10.42.0.7\tdb.backend.shop.svc.corp.internal\tdb\n" in text
    assert text.endswith("fe00::2\tip6-allrouters\n"
                         "10.42.0.7\tdb.backend.shop.svc.corp.internal\tdb\n"
                         "\n# Entries added by HostAliases.\n"
                         "10.1.2.3\tfoo.local\tbar.local\n"
                         "10.1.2.4\tbaz\n")


def test_host_network_pod_gets_the_nodes_hosts_file_with_its_aliases(tmp_path: Path) -> None:
    node_hosts = tmp_path / "hosts"
    node_hosts.write_text("127.0.0.1 localhost\n192.0.2.9 node-a\n")
    p = pod(hostNetwork=True, hostAliases=[{"ip": "10.1.2.3", "hostnames": ["x"]}])
    assert etcfiles.hosts_file(p, ["192.0.2.9"], "cluster.local", str(node_hosts)) == (
        "# Kubernetes-managed hosts file (host network).\n"
        "127.0.0.1 localhost\n192.0.2.9 node-a\n"
        "\n# Entries added by HostAliases.\n10.1.2.3\tx\n")


def test_hostname_file_is_the_pod_name_or_spec_hostname() -> None:
    assert etcfiles.hostname_file(pod(), "cluster.local") == "web-0\n"
    assert etcfiles.hostname_file(pod(hostname="db"), "cluster.local") == "db\n"
    fqdn = pod(hostname="db", subdomain="backend", setHostnameAsFQDN=True)
    assert etcfiles.hostname_file(fqdn, "cluster.local") == "db.backend.shop.svc.cluster.local\n"
    assert etcfiles.hostname_file(pod(hostNetwork=True), "cluster.local") == \
        os.uname().nodename + "\n"


def test_long_pod_names_are_cut_to_63_characters_without_a_trailing_dash() -> None:
    long = pod()
    long["metadata"]["name"] = "a" * 62 + "-bcdef"
    assert etcfiles.pod_hostname(long, "cluster.local") == ("a" * 62, "")


def test_cluster_first_uses_cluster_dns_search_paths_and_ndots(host_resolv: str) -> None:
    text, warnings = etcfiles.resolv_conf(pod(dnsPolicy="ClusterFirst"), ["10.43.0.10"],
                                          "cluster.local", host_resolv)
    assert text == ("search shop.svc.cluster.local svc.cluster.local cluster.local "
                    "corp.example lab.example\n"
                    "nameserver 10.43.0.10\n"
                    "options ndots:5\n")
    assert warnings == []


def test_cluster_first_without_cluster_dns_falls_back_to_default(host_resolv: str) -> None:
    text, warnings = etcfiles.resolv_conf(pod(dnsPolicy="ClusterFirst"), [], "cluster.local",
                                          host_resolv)
    assert text == ("search corp.example lab.example\n"
                    "nameserver 192.0.2.53\nnameserver 192.0.2.54\n"
                    "options timeout:2 ndots:1\n")
    assert "does not have ClusterDNS IP configured" in warnings[0]


def test_default_policy_copies_the_hosts_resolver_settings(host_resolv: str) -> None:
    text, _ = etcfiles.resolv_conf(pod(dnsPolicy="Default"), ["10.43.0.10"], "cluster.local",
                                   host_resolv)
    assert text == ("search corp.example lab.example\n"
                    "nameserver 192.0.2.53\nnameserver 192.0.2.54\n"
                    "options timeout:2 ndots:1\n")


def test_none_policy_has_only_the_pods_dns_config(host_resolv: str) -> None:
    p = pod(dnsPolicy="None", dnsConfig={
        "nameservers": ["1.2.3.4"], "searches": ["ns1.svc.cluster-domain.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})
    text, _ = etcfiles.resolv_conf(p, ["10.43.0.10"], "cluster.local", host_resolv)
    assert text == ("search ns1.svc.cluster-domain.example\n"
                    "nameserver 1.2.3.4\n"
                    "options ndots:2 edns0\n")


def test_dns_config_is_merged_into_cluster_first(host_resolv: str) -> None:
    p = pod(dnsConfig={"nameservers": ["10.43.0.10", "1.1.1.1"], "searches": ["extra.example"],
                       "options": [{"name": "ndots", "value": "3"}, {"name": "single-request"}]})
    text, _ = etcfiles.resolv_conf(p, ["10.43.0.10"], "cluster.local", host_resolv)
    assert text == ("search shop.svc.cluster.local svc.cluster.local cluster.local "
                    "corp.example lab.example extra.example\n"
                    "nameserver 10.43.0.10\nnameserver 1.1.1.1\n"
                    "options ndots:3 single-request\n")


def test_host_network_pods_use_the_host_resolver_unless_cluster_first_with_host_net(
        host_resolv: str) -> None:
    plain, _ = etcfiles.resolv_conf(pod(hostNetwork=True), ["10.43.0.10"], "cluster.local",
                                    host_resolv)
    assert "nameserver 192.0.2.53\n" in plain and "10.43.0.10" not in plain
    with_net, _ = etcfiles.resolv_conf(
        pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), ["10.43.0.10"],
        "cluster.local", host_resolv)
    assert "nameserver 10.43.0.10\n" in with_net and "192.0.2.53" not in with_net


def test_more_than_three_nameservers_are_cut_with_a_warning(host_resolv: str) -> None:
    p = pod(dnsConfig={"nameservers": ["1.1.1.1", "8.8.8.8"]})
    text, warnings = etcfiles.resolv_conf(p, ["10.43.0.10", "10.43.0.11"], "cluster.local",
                                          host_resolv)
    assert text.count("nameserver") == 3 and "8.8.8.8" not in text
    assert warnings == ["Nameserver limits were exceeded, some nameservers have been omitted, "
                        "the applied nameserver line is: 10.43.0.10 10.43.0.11 1.1.1.1"]


def test_write_if_changed_replaces_the_file_only_when_content_differs(tmp_path: Path) -> None:
    path = tmp_path / "etc-hosts"
    etcfiles.write_if_changed(path, "a\n")
    inode = path.stat().st_ino
    etcfiles.write_if_changed(path, "a\n")
    assert path.stat().st_ino == inode
    etcfiles.write_if_changed(path, "b\n")
    assert path.read_text() == "b\n" and oct(path.stat().st_mode & 0o777) == "0o644"
