"""Three agents on three "hosts" (network namespaces on a test bridge) join one control plane.

As users see it: `dockyard token create` prints the join command, agents join and get their
own pod ranges, pods on different nodes reach each other by IP over the routes the agents
keep, logs and exec reach agents at their node addresses, a wrong token is refused. One cluster
per module; its teardown checks that nothing is left on the machine.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import kubectl_binary
from tests.multinode import DOCKYARD, MultiNodeCluster, running_cluster
from tests.nodecluster import wait_for

pytestmark = [
    pytest.mark.xdist_group("multinode"),  # one cluster, tests in order, on one worker
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and containers need root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed"),
]

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def mn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiNodeCluster]:
    with running_cluster(tmp_path_factory.mktemp("multinode")) as cluster:
        yield cluster


def test_agents_join_ready_with_distinct_pod_cidrs(mn: MultiNodeCluster) -> None:
    nodes = {h.node_name: mn.node(h.node_name) for h in mn.hosts}
    cidrs = {name: n["spec"]["podCIDR"] for name, n in nodes.items()}
    assert len(set(cidrs.values())) == 3
    cluster = ipaddress.ip_network(mn.cluster_cidr)
    for name, node in nodes.items():
        net = ipaddress.ip_network(cidrs[name])
        assert net.subnet_of(cluster) and net.prefixlen == 24  # type: ignore[arg-type]
        assert node["spec"]["podCIDRs"] == [cidrs[name]]
    for h in mn.hosts:
        addresses = {a["type"]: a["address"] for a in nodes[h.node_name]["status"]["addresses"]}
        assert addresses["InternalIP"] == h.ip
        # Each host routes every other node's pods to that node, and forwards (it is not
        # the machine's root namespace).
        others = {cidrs[o.node_name]: o.ip for o in mn.hosts if o is not h}
        wait_for(lambda h=h, others=others: h.pod_routes() == others, 10, f"{h.netns} routes")
        assert h.sysctl("net.ipv4.ip_forward") == "1"

    # Each node got its own credentials: a kubeconfig with a node token the API accepts.
    kubeconfig = mn.hosts[0].data_dir / "agent" / "kubeconfig.yaml"
    config = yaml.safe_load(kubeconfig.read_text())
    assert config["users"][0]["name"] == "system:node:node-1"
    own = subprocess.run([kubectl_binary(), "--kubeconfig", str(kubeconfig), "get", "node",
                          "node-1", "-o", "name"], capture_output=True, text=True, timeout=30)
    assert own.stdout.strip() == "node/node-1", own.stderr
    secrets = json.loads(mn.kubectl("get", "secrets", "-n", "kube-system", "-o", "json").stdout)
    node_tokens = [s for s in secrets["items"] if s["type"] == "dockyard.io/node-token"]
    assert sorted(base64.b64decode(s["data"]["node-name"]).decode() for s in node_tokens) == \
        ["node-1", "node-2", "node-3"]
    assert any(s["type"] == "bootstrap.kubernetes.io/token" for s in secrets["items"])


def _refused(tmp: Path, *runs: list[str]) -> list[str]:
    """Agents that must be refused before they do anything on this host (run side by side):
    the error output of each, after checking it exited non-zero."""
    procs = [subprocess.Popen([*DOCKYARD, "agent", *args, "--data-dir", str(tmp / str(i)),
                               "--node-name", "intruder", "--node-ip", "127.0.0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, args in enumerate(runs)]
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0, err
        errors.append(err)
    return errors


def test_wrong_or_expired_token_is_refused(mn: MultiNodeCluster, tmp_path: Path) -> None:
    server, token, pin = (mn.join_command[mn.join_command.index(flag) + 1]
                          for flag in ("--server", "--token", "--ca-cert-hash"))
    token_id = token.split(".")[0]
    wrong_secret = f"{token_id}.{'0' * 16}"
    other_ca = "sha256:" + "ab" * 32
    refused, unpinned, pinned = _refused(
        tmp_path,
        ["--server", server, "--token", wrong_secret, "--ca-cert-hash", pin],
        # Without a pin, a wrong secret fails the CA signature check: the token is never sent.
        ["--server", server, "--token", wrong_secret],
        ["--server", server, "--token", token, "--ca-cert-hash", other_ca])
    assert f'bootstrap token "{token_id}" is invalid: its secret does not match' in refused
    assert "HTTP 401" in refused
    assert "could not prove it knows bootstrap token" in unpinned
    assert f"does not match --ca-cert-hash {other_ca}" in pinned

    # What the join endpoint answers for unknown and expired tokens (a kubeadm-style token
    # Secret whose expiration has passed).
    expired = {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
               "metadata": {"name": "bootstrap-token-old000", "namespace": "kube-system"},
               "stringData": {"token-id": "old000", "token-secret": "0123456789abcdef",
                              "expiration": "2020-01-01T00:00:00Z",
                              "usage-bootstrap-authentication": "true"}}
    mn.kubectl("apply", "-f", "-", input=json.dumps(expired))
    with httpx.Client(base_url=server, verify=mn.server.tls(), timeout=30) as http:
        for presented, message in (
                ("zzzzzz.0123456789abcdef", 'bootstrap token "zzzzzz" is not known'),
                ("old000.0123456789abcdef", 'bootstrap token "old000" expired at 2020-01-01')):
            answer = http.post("/dockyard/v1/join", json={"nodeName": "intruder"},
                               headers={"Authorization": f"Bearer {presented}"})
            assert answer.status_code == 401
            assert answer.json()["reason"] == "Unauthorized"
            assert message in answer.json()["message"]

    nodes = json.loads(mn.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["node-1", "node-2", "node-3"]


def _pod(name: str, command: str, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, **spec, "containers": [
                {"name": "main", "image": "busybox", "command": ["sh", "-c", command]}]}}


def _running(mn: MultiNodeCluster, namespace: str, names: list[str]) -> dict[str, Obj]:
    def check() -> dict[str, Obj] | None:
        out = json.loads(mn.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
        pods = {p["metadata"]["name"]: p for p in out["items"]
                if (p.get("status") or {}).get("phase") == "Running"}
        return pods if set(names) <= set(pods) else None

    return wait_for(check, 60, f"pods {names} Running")


def test_pods_on_different_nodes_reach_each_other(mn: MultiNodeCluster) -> None:
    web = _pod("web", "mkdir /www && hostname > /www/index.html && echo serving && "
               "exec httpd -f -p 8080 -h /www", nodeName="node-2")
    client = _pod("client", "exec sleep 3600", nodeName="node-1")
    third = _pod("third", "echo on $(hostname); exec sleep 3600",
                 nodeSelector={"kubernetes.io/hostname": "node-3"})
    mn.kubectl("create", "namespace", "net")
    mn.kubectl("apply", "-n", "net", "-f", "-", input=yaml.safe_dump_all([web, client, third]))
    pods = _running(mn, "net", ["web", "client", "third"])
    cidrs = {h.node_name: mn.node(h.node_name)["spec"]["podCIDR"] for h in mn.hosts}
    for name, node in (("client", "node-1"), ("web", "node-2"), ("third", "node-3")):
        assert pods[name]["spec"]["nodeName"] == node
        assert ipaddress.ip_address(pods[name]["status"]["podIP"]) in \
            ipaddress.ip_network(cidrs[node])
        assert pods[name]["status"]["hostIP"] == mn.hosts[int(node[-1]) - 1].ip

    for target in ("web", "third"):
        ping = mn.kubectl("exec", "-n", "net", "client", "--", "ping", "-c", "1", "-W", "2",
                          pods[target]["status"]["podIP"], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    # (busybox 1.35's `wget -T` crashes: no timeout flag.)
    page = wait_for(lambda: mn.kubectl(
        "exec", "-n", "net", "client", "--", "wget", "-q", "-O", "-",
        f"http://{pods['web']['status']['podIP']}:8080/", check=False).stdout, 15, "web page")
    assert page.strip() == "web"

    # The API server reaches each agent at its node address for logs and exec.
    assert mn.kubectl("logs", "-n", "net", "web").stdout.strip() == "serving"
    assert mn.kubectl("logs", "-n", "net", "third").stdout.strip() == "on third"
    hostname = mn.kubectl("exec", "-n", "net", "third", "--", "cat", "/etc/hostname")
    assert hostname.stdout.strip() == "third"
    mn.kubectl("delete", "namespace", "net", "--wait=false")


def test_zz_node_leaves_and_rejoins_with_stored_credentials(mn: MultiNodeCluster) -> None:
    """A deleted node's routes disappear everywhere and its range is released; the agent
    restarted from the same data directory joins again without a token."""
    h1, h3 = mn.hosts[0], mn.hosts[2]
    old = mn.node("node-3")["spec"]["podCIDR"]
    wait_for(lambda: not json.loads(mn.kubectl("get", "pods", "-A", "-o", "json",
                                               "--field-selector", "spec.nodeName=node-3")
                                    .stdout)["items"], 30, "no pods left on node-3")
    mn.stop_agent(h3)
    mn.kubectl("delete", "node", "node-3")
    wait_for(lambda: old not in h1.pod_routes(), 10, "route to node-3's pods removed on h1")

    server = mn.join_command[mn.join_command.index("--server") + 1]
    mn.start_agent(h3, ["--server", server])  # no token: the stored credentials
    nodes = mn.wait_ready()
    new = nodes[2]["spec"]["podCIDR"]
    assert new not in {n["spec"]["podCIDR"] for n in nodes[:2]}
    wait_for(lambda: h1.pod_routes().get(new) == h3.ip, 10, "route to node-3's new range")
    assert "reusing the credentials of node node-3" in h3.log.read_text()
