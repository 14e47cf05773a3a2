"""The per-pod /etc/hosts, /etc/hostname and /etc/resolv.conf every container mounts.

Kubelet writes the pod's hosts file (kubelet_pods.go managedHostsFileContent) and computes the
DNS configuration (pkg/kubelet/network/dns); the CRI runtime writes hostname and resolv.conf
from it. dockyard does both here, byte for byte as that pair does, so programs in a pod see
the same files as on Kubernetes: the pod's own IP under its hostname, cluster DNS with the
`<ns>.svc.<domain>` search path and `ndots:5`, and the node's files for hostNetwork pods.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
log = logging.getLogger(__name__)

HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
HOSTS_HEADER_HOST_NETWORK = "# Kubernetes-managed hosts file (host network).\n"
HOST_HOSTS = "/etc/hosts"
HOST_RESOLV_CONF = "/etc/resolv.conf"
HOSTNAME_MAX = 63
# pkg/apis/core/validation: the resolver's limits kubelet trims a pod's configuration to.
MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_CHARS = 2048
DEFAULT_OPTIONS = ("ndots:5",)


def pod_hostname(pod: Obj, cluster_domain: str) -> tuple[str, str]:
    """(hostname, domain) of a pod: spec.hostname or the name cut to 63 characters, and
    `<subdomain>.<ns>.svc.<cluster-domain>` when spec.subdomain is set (kubelet's
    GeneratePodHostNameAndDomain)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    hostname = str(spec.get("hostname") or meta.get("name") or "")
    if len(hostname) > HOSTNAME_MAX:
        hostname = hostname[:HOSTNAME_MAX].rstrip("-.")
    domain = ""
    if spec.get("subdomain"):
        domain = f"{spec['subdomain']}.{meta.get('namespace') or 'default'}.svc.{cluster_domain}"
    return hostname, domain


def sandbox_hostname(pod: Obj, cluster_domain: str) -> str:
    """The kernel hostname of the pod's UTS namespace: the node's for hostNetwork pods, the
    FQDN with setHostnameAsFQDN, else the pod hostname."""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return os.uname().nodename
    hostname, domain = pod_hostname(pod, cluster_domain)
    if spec.get("setHostnameAsFQDN") and domain:
        return f"{hostname}.{domain}"
    return hostname


def _alias_lines(pod: Obj) -> str:
    aliases = (pod.get("spec") or {}).get("hostAliases") or []
    if not aliases:
        return ""
    lines = ["", "# Entries added by HostAliases."]
    for alias in aliases:
        lines.append("\t".join([str(alias.get("ip") or ""), *map(str, alias.get("hostnames")
                                                                   or [])]))
    return "\n".join(lines) + "\n"


def hosts_file(pod: Obj, pod_ips: list[str], cluster_domain: str,
               host_hosts: str = HOST_HOSTS) -> str:
    """The pod's /etc/hosts. hostNetwork pods get the node's own file (kubelet's
    nodeHostsFileContent), with the host-network header and the pod's hostAliases."""
    if (pod.get("spec") or {}).get("hostNetwork"):
        try:
            node = Path(host_hosts).read_text()
        except OSError:
            node = ""
        return HOSTS_HEADER_HOST_NETWORK + node + _alias_lines(pod)
    hostname, domain = pod_hostname(pod, cluster_domain)
    out = [HOSTS_HEADER,
           "127.0.0.1\tlocalhost\n",
           "::1\tlocalhost ip6-localhost ip6-loopback\n",
           "fe00::0\tip6-localnet\n",
           "fe00::0\tip6-mcastprefix\n",
           "fe00::1\tip6-allnodes\n",
           "fe00::2\tip6-allrouters\n"]
    for ip in pod_ips:
        out.append(f"{ip}\t{hostname}.{domain}\t{hostname}\n" if domain else f"{ip}\t{hostname}\n")
    return "".join(out) + _alias_lines(pod)


def hostname_file(pod: Obj, cluster_domain: str) -> str:
    return sandbox_hostname(pod, cluster_domain) + "\n"


@dataclass
class DNSConfig:
    """What a resolv.conf says (CRI's DNSConfig)."""

    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def render(self) -> str:
        """containerd's order: search, nameserver(s), options."""
        out = ""
        if self.searches:
            out += "search " + " ".join(self.searches) + "\n"
        out += "".join(f"nameserver {server}\n" for server in self.servers)
        if self.options:
            out += "options " + " ".join(self.options) + "\n"
        return out


def parse_resolv_conf(text: str) -> DNSConfig:
    """kubelet's parseResolvConf: nameserver lines add up, the last search line wins, options
    accumulate (a later value for the same option replaces the earlier one)."""
    config = DNSConfig()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            config.servers.append(fields[1])
        elif fields[0] == "search":
            config.searches = [s.removesuffix(".") for s in fields[1:] if s != "."]
        elif fields[0] == "options":
            config.options = _merge_options(config.options, fields[1:])
    return config


def _merge_options(existing: list[str], extra: list[str]) -> list[str]:
    """Options by name, later ones overriding (`ndots:5` + `ndots:2` → `ndots:2`)."""
    merged: dict[str, str] = {}
    for option in [*existing, *extra]:
        name, _, value = option.partition(":")
        merged[name] = value
    return [f"{name}:{value}" if value else name for name, value in merged.items()]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def dns_policy_type(pod: Obj) -> str:
    """"cluster", "host" or "none" (kubelet's getPodDNSType): ClusterFirst falls back to the
    host's configuration for hostNetwork pods; ClusterFirstWithHostNet does not."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        return "none"
    if policy == "ClusterFirstWithHostNet":
        return "cluster"
    if policy == "ClusterFirst" and not spec.get("hostNetwork"):
        return "cluster"
    return "host"


def resolv_conf(pod: Obj, cluster_dns: list[str], cluster_domain: str,
                host_resolv_conf: str = HOST_RESOLV_CONF) -> tuple[str, list[str]]:
    """The pod's resolv.conf and the warnings kubelet would report as events
    (MissingClusterDNS, DNSConfigForming).

    The base is the host's configuration (Default); ClusterFirst replaces the nameservers with
    the cluster DNS, puts the cluster search paths before the host's and sets ndots:5; None
    starts empty. spec.dnsConfig is then merged in: nameservers and searches appended without
    duplicates, options by name with the pod's winning.
    """
    warnings: list[str] = []
    kind = dns_policy_type(pod)
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    if kind == "none":
        config = DNSConfig()
    else:
        try:
            config = parse_resolv_conf(Path(host_resolv_conf).read_text())
        except OSError:
            config = DNSConfig()
    if kind == "cluster":
        if cluster_dns:
            config.servers = list(cluster_dns)
            if cluster_domain:
                config.searches = _unique([f"{namespace}.svc.{cluster_domain}",
                                           f"svc.{cluster_domain}", cluster_domain,
                                           *config.searches])
            config.options = list(DEFAULT_OPTIONS)
        else:
            warnings.append('kubelet does not have ClusterDNS IP configured and cannot create '
                            'Pod using "ClusterFirst" policy. Falling back to "Default" policy.')
    extra = (pod.get("spec") or {}).get("dnsConfig") or {}
    if extra:
        config.servers = _unique([*config.servers, *map(str, extra.get("nameservers") or [])])
        config.searches = _unique([*config.searches, *map(str, extra.get("searches") or [])])
        pod_options = []
        for option in extra.get("options") or []:
            value = option.get("value")
            pod_options.append(f"{option.get('name')}:{value}" if value else
                               str(option.get("name")))
        config.options = _merge_options(config.options, pod_options)
    if len(config.servers) > MAX_NAMESERVERS:
        config.servers = config.servers[:MAX_NAMESERVERS]
        warnings.append("Nameserver limits were exceeded, some nameservers have been omitted, "
                        f"the applied nameserver line is: {' '.join(config.servers)}")
    searches = config.searches
    if len(searches) > MAX_SEARCH_PATHS:
        searches = searches[:MAX_SEARCH_PATHS]
    while len(" ".join(searches)) > MAX_SEARCH_CHARS:
        searches = searches[:-1]
    if searches != config.searches:
        config.searches = searches
        warnings.append("Search Line limits were exceeded, some search paths have been "
                        f"omitted, the applied search line is: {' '.join(searches)}")
    return config.render(), warnings


def write_if_changed(path: Path, content: str) -> None:
    """Replace `path` by rename when its content differs. Containers that already bound the
    old file keep it; a new container gets the new one, never a half-written file."""
    try:
        if path.read_text() == content:
            return
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
