"""Services, cluster DNS and NetworkPolicy across three nodes, as pods and users see them.

Three agents on three "hosts" (network namespaces on a test bridge, tests/multinode.py), each
running its own proxy rules and DNS server. A Deployment of busybox `httpd` pods, each serving
its own hostname, is spread over the nodes behind Service `web`; a client pod on node-1 asks
for `http://web.default.svc.cluster.local:80/` (busybox `wget` once, then HTTP/1.0 over `nc`
in a loop), the name resolved by the cluster DNS through the pod's resolv.conf. So every
request crosses the client node's rules, and two thirds of them the routes to another node.
One cluster for the module (tests in order on one worker); its teardown checks that nothing
is left on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.multinode import Host, MultiNodeCluster, running_cluster
from tests.nodecluster import wait_for

pytestmark = [
    pytest.mark.xdist_group("multinode-services"),  # one cluster, tests in order, one worker
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and containers need root"),
    pytest.mark.skipif(shutil.which("runc") is None or shutil.which("nft") is None,
                       reason="needs runc and nft (Debian: runc, nftables)"),
]

Obj = dict[str, Any]
WEB = "web.default.svc.cluster.local"
SERVE = ("mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && "
         "exec httpd -f -p 8080 -h /www")
NETPOL = "netpol"


@pytest.fixture(scope="module")
def mn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiNodeCluster]:
    with running_cluster(tmp_path_factory.mktemp("mnsvc")) as cluster:
        yield cluster


# -- objects ---------------------------------------------------------------------------------


def web_container() -> Obj:
    return {"name": "web", "image": "busybox", "command": ["sh", "-c", SERVE],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]},
                               "periodSeconds": 1, "failureThreshold": 1}}


def on_node(node: str) -> Obj:
    return {"nodeSelector": {"kubernetes.io/hostname": node}}


def pod(name: str, labels: dict[str, str], node: str, container: Obj | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, **on_node(node), "containers": [
                container or {"name": "main", "image": "busybox",
                              "command": ["sleep", "3600"]}]}}


def service(name: str, selector: dict[str, str], **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector,
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}}


DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                 "terminationGracePeriodSeconds": 1,
                 # one pod per node while there are no more pods than nodes
                 "topologySpreadConstraints": [{
                     "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                     "whenUnsatisfiable": "DoNotSchedule",
                     "labelSelector": {"matchLabels": {"app": "web"}}}],
                 "containers": [web_container()]}}}}

POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "db-frontend-only"},
          "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                   "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}],
                                "ports": [{"protocol": "TCP", "port": 8080}]}]}}


# -- reading the cluster ---------------------------------------------------------------------


def get(mn: MultiNodeCluster, namespace: str, *what: str) -> Obj:
    out = mn.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def _is_ready(p: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


def ready_pods(mn: MultiNodeCluster, namespace: str, selector: str) -> dict[str, Obj]:
    items = get(mn, namespace, "pods", "-l", selector).get("items") or []
    return {p["metadata"]["name"]: p for p in items
            if not p["metadata"].get("deletionTimestamp") and _is_ready(p)}


def wait_ready(mn: MultiNodeCluster, namespace: str, selector: str, count: int,
               timeout: float = 60) -> dict[str, Obj]:
    return wait_for(lambda: (lambda r: r if len(r) == count else None)(
        ready_pods(mn, namespace, selector)), timeout, f"{count} ready pods {selector}")


def running(mn: MultiNodeCluster, namespace: str, names: list[str]) -> dict[str, Obj]:
    def check() -> dict[str, Obj] | None:
        items = get(mn, namespace, "pods").get("items") or []
        pods = {p["metadata"]["name"]: p for p in items
                if (p.get("status") or {}).get("phase") == "Running"}
        return pods if set(names) <= set(pods) else None

    return wait_for(check, 60, f"pods {names} Running")


def spec_of(mn: MultiNodeCluster, namespace: str, name: str, field: str) -> Any:
    return wait_for(lambda: (get(mn, namespace, "service", name).get("spec") or {}).get(field),
                    10, f"{field} of service {name}")


# -- asking --------------------------------------------------------------------------------

# HTTP/1.0 over busybox `nc -w` (1.35's `wget -T` crashes; `timeout wget` leaves a watcher
# process per request that a `sleep` PID 1 never reaps, and the pod's pids limit is reached).
# `busybox` spelled out: the same loop runs in a pod and on a node host (which has no nc).
REQUEST = ("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w {wait} {host} {port} "
           "| busybox tail -n 1")


def loop_script(host: str, port: int, count: int, wait: int = 2) -> str:
    """A shell loop of `count` HTTP requests, printing `=<body>` per request ("=" if none)."""
    one = REQUEST.format(wait=wait, host=host, port=port)
    return f"for i in $(busybox seq {count}); do r=$({one}); echo \"=$r\"; done"


def bodies(out: str) -> list[str]:
    return [line[1:] for line in out.splitlines() if line.startswith("=")]


def fetch(mn: MultiNodeCluster, namespace: str, pod: str, host: str, port: int = 80,
          count: int = 1, wait: int = 2) -> list[str]:
    """The bodies (hostnames) of `count` requests from `pod`; "" for each failed one."""
    out = mn.kubectl("exec", "-n", namespace, pod, "--", "sh", "-c",
                     loop_script(host, port, count, wait), check=False).stdout
    return bodies(out)


def fetch_from_host(host: Host, address: str, port: int, count: int) -> list[str]:
    """Requests from a node host's own network namespace (not a pod), with busybox nc."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", "busybox", "sh", "-c",
                          loop_script(address, port, count)],
                         capture_output=True, text=True, timeout=60).stdout
    return bodies(out)


def nslookup(mn: MultiNodeCluster, name: str) -> subprocess.CompletedProcess[str]:
    return mn.kubectl("exec", "client", "--", "nslookup", name, check=False)


def addresses(out: str) -> set[str]:
    return {line.split()[-1] for line in out.splitlines() if line.startswith("Address: ")}


# -- the workload ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(mn: MultiNodeCluster) -> Obj:
    """Everything at once (pods start in parallel): the spread Deployment `web` behind Service
    `web` and a headless `web-headless`, a client on node-1; in namespace `netpol`, a `db`
    server on node-2 with a `frontend` on node-1 and an `other` pod on node-3."""
    mn.kubectl("create", "namespace", NETPOL)
    mn.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        DEPLOYMENT, service("web", {"app": "web"}),
        service("web-headless", {"app": "web"}, clusterIP="None"),
        pod("client", {}, "node-1")]))
    mn.kubectl("apply", "-n", NETPOL, "-f", "-", input=yaml.safe_dump_all([
        pod("db", {"app": "db"}, "node-2", web_container()), service("db", {"app": "db"}),
        pod("frontend", {"role": "frontend"}, "node-1"),
        pod("other", {"role": "other"}, "node-3")]))
    pods = wait_ready(mn, "default", "app=web", 3)
    running(mn, "default", ["client"])
    return {"pods": pods, "ip": spec_of(mn, "default", "web", "clusterIP")}


def test_deployment_is_spread_and_the_service_name_reaches_every_pod(
        mn: MultiNodeCluster, web: Obj) -> None:
    nodes = {name: p["spec"]["nodeName"] for name, p in web["pods"].items()}
    assert set(nodes.values()) == {"node-1", "node-2", "node-3"}, nodes  # spread
    client = get(mn, "default", "pod", "client")
    assert client["spec"]["nodeName"] == "node-1"

    # The URL as a user types it (wget without a timeout: bounded by kubectl's).
    page = mn.kubectl("exec", "client", "--", "wget", "-q", "-O", "-", f"http://{WEB}:80/")
    assert page.stdout.strip() in web["pods"]

    answers = fetch(mn, "default", "client", WEB, count=60)
    counts = Counter(answers)
    assert len(answers) == 60 and "" not in counts, counts  # every request answered
    assert set(counts) == set(web["pods"]), counts  # by every pod, on three nodes


def test_unready_pod_gets_nothing_and_new_pods_get_traffic(mn: MultiNodeCluster,
                                                           web: Obj) -> None:
    # The victim is on another node than the client: its endpoint is removed from the rules
    # of node-1, where the client's connections are translated.
    victim = next(n for n, p in sorted(web["pods"].items())
                  if p["spec"]["nodeName"] != "node-1")
    mn.kubectl("exec", victim, "--", "rm", "/tmp/ready")
    wait_for(lambda: victim not in ready_pods(mn, "default", "app=web"), 15,
             f"{victim} not Ready")
    time.sleep(2.0)  # from the pod seen unready: 2 s for the slice and every node's rules
    answers = Counter(fetch(mn, "default", "client", WEB, count=60))
    assert victim not in answers and "" not in answers, answers
    assert set(answers) == set(web["pods"]) - {victim}, answers

    mn.kubectl("exec", victim, "--", "touch", "/tmp/ready")
    mn.kubectl("scale", "deployment/web", "--replicas=5")
    pods = wait_ready(mn, "default", "app=web", 5)
    assert set(web["pods"]) <= set(pods)
    assert sorted(Counter(p["spec"]["nodeName"] for p in pods.values()).values()) == [1, 2, 2]

    def all_answer() -> Counter[str] | None:
        answers = Counter(fetch(mn, "default", "client", WEB, count=60))
        return answers if set(answers) == set(pods) else None

    wait_for(all_answer, 15, "all 5 pods answering")  # the new ones included
    web["pods"] = pods


def test_node_port_at_each_node_from_another_host(mn: MultiNodeCluster, web: Obj) -> None:
    mn.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        service("web-np", {"app": "web"}, type="NodePort")))
    port = spec_of(mn, "default", "web-np", "ports")[0].get("nodePort")
    assert 30000 <= port <= 32767
    pods = set(ready_pods(mn, "default", "app=web"))
    seen: Counter[str] = Counter()
    for i, target in enumerate(mn.hosts):
        asker = mn.hosts[(i + 1) % len(mn.hosts)]  # another node's host, over the bridge
        answers = wait_for(lambda t=target, a=asker: (lambda got: got if "" not in got else None)(
            fetch_from_host(a, t.ip, port, 20)), 10, f"NodePort at {target.ip}")
        assert set(answers) <= pods, (target.node_name, answers)
        assert len(set(answers)) > 1, (target.node_name, answers)
        seen.update(answers)
    # The node ports lead to every pod, on every node (not only to the node's own).
    assert set(seen) == pods, seen


def test_nslookup_service_headless_and_unknown(mn: MultiNodeCluster, web: Obj) -> None:
    full = wait_for(lambda: (lambda out: out if out.returncode == 0 else None)(
        nslookup(mn, WEB)), 20, "web resolves")
    assert f"Name:\t{WEB}" in full.stdout
    assert addresses(full.stdout) == {web["ip"]}

    pods = ready_pods(mn, "default", "app=web")
    wanted = {p["status"]["podIP"] for p in pods.values()}
    assert {p["spec"]["nodeName"] for p in pods.values()} == {"node-1", "node-2", "node-3"}
    wait_for(lambda: addresses(nslookup(mn, "web-headless.default.svc.cluster.local").stdout)
             == wanted, 20, "the headless name answering every pod IP")

    missing = nslookup(mn, "nothing.default.svc.cluster.local")
    assert missing.returncode != 0
    assert "can't find nothing.default.svc.cluster.local: NXDOMAIN" in missing.stdout


def test_network_policy_allows_only_frontend_across_nodes(mn: MultiNodeCluster,
                                                          web: Obj) -> None:
    pods = running(mn, NETPOL, ["db", "frontend", "other"])
    assert {n: pods[n]["spec"]["nodeName"] for n in pods} == \
        {"db": "node-2", "frontend": "node-1", "other": "node-3"}
    db_ip = wait_ready(mn, NETPOL, "app=db", 1)["db"]["status"]["podIP"]
    service_ip = spec_of(mn, NETPOL, "db", "clusterIP")
    # No policy selects db yet: a pod on any node reaches it.
    wait_for(lambda: fetch(mn, NETPOL, "other", db_ip, port=8080) == ["db"], 10, "open access")

    mn.kubectl("apply", "-n", NETPOL, "-f", "-", input=yaml.safe_dump(POLICY))
    wait_for(lambda: fetch(mn, NETPOL, "other", db_ip, port=8080, wait=1) == [""], 10,
             "other (node-3) blocked")
    assert fetch(mn, NETPOL, "other", service_ip, wait=1) == [""]  # through the ClusterIP too
    assert fetch(mn, NETPOL, "frontend", db_ip, port=8080, count=3) == ["db"] * 3
    assert fetch(mn, NETPOL, "frontend", f"db.{NETPOL}.svc.cluster.local", count=3) == \
        ["db"] * 3
    # The web pods in `default` are not selected by the policy: still open to everyone.
    assert fetch(mn, NETPOL, "other", web["ip"], count=3).count("") == 0
