"""`dockyard service` and `dockyard node` on a real single-node cluster (`dockyard up`), run
as a user runs them: the `dockyard` command with KUBECONFIG set, its output and exit code.

The lecture's `dockyard service create --replicas 2 --name mynginx nginx` needs an image named
nginx and there is no registry here, so the test makes stand-ins in the cluster's image store
(DATA_DIR/images) from the busybox image's layer: `nginx` (alias `nginx:latest`) and `nginx:v2`
run busybox's httpd on port 80 serving "v1 <hostname>" / "v2 <hostname>"; `nginx:broken`
serves nothing, so a health check on its index page fails. They are busybox, not nginx.

One cluster for the module, tests in order on one worker; the last stops it, cleans up and
checks that nothing is left on the host.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dockyard.runtime.imagebuild import build_busybox, default_cache_dir
from dockyard.runtime.images import Image, ImageStore
from dockyard.runtime.naming import cluster_prefix
from tests.conftest import ServerProcess
from tests.hostcheck import leftovers
from tests.nodecluster import single_node, wait_for
from tests.terminal import run_in_terminal

pytestmark = [
    pytest.mark.xdist_group("swarm-cli"),  # one cluster, tests in order, on one worker
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed"),
]

Obj = dict[str, Any]
NODE = "swarm-node"
PROGRESS_DONE = "[" + "=" * 50 + ">]"
HEALTH = ["--health-cmd", "test -s /www/index.html", "--health-interval", "1s",
          "--health-retries", "2"]


def standin_image(store: ImageStore, tag: str, script: str) -> Image:
    """An image of the busybox layer whose Cmd is `sh -c script`, tagged `tag`."""
    busybox = store.resolve("busybox") or build_busybox(store, default_cache_dir())
    manifest = json.loads((store.blobs / busybox.manifest_digest.removeprefix("sha256:"))
                          .read_bytes())
    layer = store.blobs / manifest["layers"][0]["digest"].removeprefix("sha256:")
    config = {k: v for k, v in busybox.config.items() if k != "rootfs"}
    config["config"] = {"Env": busybox.config["config"]["Env"], "Cmd": ["sh", "-c", script]}
    config["history"] = [{"created_by": f"dockyard test: busybox httpd standing in for {tag}"}]
    return store.add_image([layer], config, [tag])


def httpd_script(page: str) -> str:
    return (f"mkdir -p /www && echo \"{page} $(hostname)\" > /www/index.html && "
            f"echo 'busybox httpd standing in for nginx: {page}' && "
            "exec httpd -f -p 80 -h /www")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("swarm") / "data"
    data.mkdir()
    store = ImageStore(data / "images")
    standin_image(store, "nginx:latest", httpd_script("v1"))
    standin_image(store, "nginx:v2", httpd_script("v2"))
    standin_image(store, "nginx:broken", "echo 'broken: serves nothing'; exec sleep 3600")
    with single_node(data, NODE) as srv:
        yield srv


def dockyard(cluster: ServerProcess, *args: str, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    result = subprocess.run([sys.executable, "-m", "dockyard.cli.main", *args], text=True,
                            capture_output=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"dockyard {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def table(output: str) -> list[dict[str, str]]:
    """Rows of a Docker table, cut at the header's column starts."""
    lines = output.rstrip("\n").splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?:(?<=\s{2})|^)\S.*?(?=\s{2,}|$)", header)]
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    return [{n: line[s:e].strip() for n, s, e in zip(names, starts, [*starts[1:], None],
                                                     strict=True)} for line in lines[1:]]


def services(cluster: ServerProcess) -> dict[str, dict[str, str]]:
    return {row["NAME"]: row for row in table(dockyard(cluster, "service", "ls").stdout)}


def pods(cluster: ServerProcess, service: str) -> list[Obj]:
    out = cluster.kubectl("get", "pods", "-l", f"swarm.dockyard.io/service={service}",
                          "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def wait_ready(cluster: ServerProcess, service: str, count: int, timeout: float = 60) -> None:
    """Until `count` pods of the service are ready (kubectl: quicker to poll than the CLI)."""
    wait_for(lambda: len([p for p in pods(cluster, service) if ready(p)]) == count, timeout,
             f"{count} ready tasks of {service}")


def ready(p: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in p["status"].get("conditions") or [])


def get(host: str, port: int) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=3)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode().strip()
    except OSError:
        return ""
    finally:
        conn.close()


def read_lines(proc: subprocess.Popen[bytes], count: int, timeout: float) -> list[str]:
    """Up to `count` lines a running process prints within `timeout` seconds."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data.decode().splitlines()[:count]


def inspect(cluster: ServerProcess, name: str) -> Obj:
    found = json.loads(dockyard(cluster, "service", "inspect", name).stdout)
    assert isinstance(found, list) and len(found) == 1
    return found[0]


def test_lecture_service_create_converges(cluster: ServerProcess) -> None:
    result = dockyard(cluster, "service", "create", "--replicas", "2", "--name", "mynginx",
                      "nginx")
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{25}", lines[0]), result.stdout  # the service ID
    assert "overall progress: 2 out of 2 tasks" in lines
    assert "1/2: running" in lines and "2/2: running" in lines
    assert lines[-1] == "verify: Service converged"

    row = services(cluster)["mynginx"]
    assert row["ID"] == lines[0][:12]
    assert (row["MODE"], row["REPLICAS"], row["IMAGE"], row["PORTS"]) == \
        ("replicated", "2/2", "nginx:latest", "")
    tasks = table(dockyard(cluster, "service", "ps", "mynginx").stdout)
    assert [t["NAME"] for t in tasks] == ["mynginx.1", "mynginx.2"]
    assert all(t["NODE"] == NODE and t["DESIRED STATE"] == "Running"
               and t["CURRENT STATE"].startswith("Running ") and t["IMAGE"] == "nginx:latest"
               for t in tasks), tasks
    # The tasks really serve (from the node, on their pod addresses).
    for p in pods(cluster, "mynginx"):
        assert get(p["status"]["podIP"], 80) == f"v1 {p['metadata']['name']}"


def test_logs_and_inspect(cluster: ServerProcess) -> None:
    logs = dockyard(cluster, "service", "logs", "mynginx").stdout.splitlines()
    prefix = rf"^mynginx\.[12]\.[0-9a-f]{{12}}@{NODE} +\| "
    assert len(logs) == 2 and all(re.match(prefix + "busybox httpd standing in for nginx: v1$",
                                           line) for line in logs), logs
    # Follow: the last line of each task, then it keeps streaming until stopped.
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    follow = subprocess.Popen([sys.executable, "-m", "dockyard.cli.main", "service", "logs",
                               "-f", "--tail", "1", "mynginx"], stdout=subprocess.PIPE,
                              env=env)
    try:
        followed = read_lines(follow, 2, timeout=15)
        assert len(followed) == 2 and all(re.match(prefix, line) for line in followed), \
            followed
        assert follow.poll() is None  # still following
    finally:
        follow.terminate()
        follow.wait(10)

    info = inspect(cluster, "mynginx")
    assert re.fullmatch(r"[0-9a-f]{25}", info["ID"])
    spec = info["Spec"]
    assert spec["Name"] == "mynginx" and spec["Mode"] == {"Replicated": {"Replicas": 2}}
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx"
    assert spec["UpdateConfig"] == {"Parallelism": 1, "Delay": 0, "FailureAction": "pause",
                                    "Monitor": 5_000_000_000, "MaxFailureRatio": 0.0,
                                    "Order": "stop-first"}
    pretty = dockyard(cluster, "service", "inspect", "--pretty", "mynginx").stdout
    assert "Name:\t\tmynginx" in pretty and " Replicas:\t2" in pretty
    assert " Image:\t\tnginx" in pretty


def test_published_service_with_options(cluster: ServerProcess) -> None:
    assert dockyard(cluster, "node", "update", "--label-add", "zone=blue", NODE).stdout \
        .strip() == NODE
    port = random.randrange(30000, 32768)
    result = dockyard(cluster, "service", "create", "--name", "web", "--replicas", "2",
                      "--publish", f"{port}:80", "--env", "GREETING=hello", "--limit-cpu",
                      "0.5", "--limit-memory", "64M", "--constraint", "node.labels.zone==blue",
                      *HEALTH, "--stop-grace-period", "1s", "--update-monitor", "1s",
                      "--rollback-monitor", "1s", "--detach", "nginx")
    assert re.fullmatch(r"[0-9a-f]{25}\n", result.stdout)  # detached: the ID only
    wait_ready(cluster, "web", 2)
    row = services(cluster)["web"]
    assert row["REPLICAS"] == "2/2"
    assert row["PORTS"] == f"*:{port}->80/tcp"
    # Published on the node (the proxy's NodePort on the node's bridge address).
    gateway = str(next(ipaddress.ip_network(cluster.pod_cidr).hosts()))  # type: ignore[attr-defined]
    names = {p["metadata"]["name"] for p in pods(cluster, "web")}
    answer = wait_for(lambda: get(gateway, port), 15, "the published port answers")
    assert answer.split()[0] == "v1" and answer.split()[1] in names
    p = pods(cluster, "web")[0]
    container = p["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "64Mi"}
    assert container["readinessProbe"]["exec"]["command"][-1] == "test -s /www/index.html"
    env = cluster.kubectl("exec", p["metadata"]["name"], "--", "sh", "-c", "echo $GREETING")
    assert env.stdout.strip() == "hello"
    term = p["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"] == [{"key": "zone", "operator": "In", "values": ["blue"]}]

    # Swarm publishes 8080 on every node; outside the NodePort range the cluster picks one.
    edge = dockyard(cluster, "service", "create", "--name", "edge", "--replicas", "0",
                    "--publish", "8080:80", "-d", "nginx")
    assert "published port 8080 is outside the cluster's NodePort range (30000-32767)" \
        in edge.stderr
    published = re.fullmatch(r"\*:(\d+)->80/tcp", services(cluster)["edge"]["PORTS"])
    assert published and 30000 <= int(published.group(1)) <= 32767
    assert dockyard(cluster, "service", "rm", "edge").stdout.strip() == "edge"


def test_scale_shows_progress_on_a_terminal(cluster: ServerProcess) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "TERM": "xterm"}
    code, output = run_in_terminal([sys.executable, "-m", "dockyard.cli.main", "service",
                                    "scale", "web=3"], env, rows=40, cols=120, timeout=60)
    assert code == 0, output
    assert "web scaled to 3" in output
    assert f"3/3: running   {PROGRESS_DONE}" in output
    assert "\x1b[" in output  # lines redrawn in place
    assert re.findall(r"verify: [^\r\n\x1b]*", output)[-1] == "verify: Service converged"
    names = [t["NAME"] for t in table(dockyard(cluster, "service", "ps", "web").stdout)]
    assert names == ["web.1", "web.2", "web.3"]
    scaled = dockyard(cluster, "service", "scale", "-d", "web=2", "mynginx=1")
    assert scaled.stdout.splitlines() == ["web scaled to 2", "mynginx scaled to 1"]
    wait_ready(cluster, "web", 2)
    assert services(cluster)["web"]["REPLICAS"] == "2/2"


def creation(p: Obj) -> float:
    return datetime.fromisoformat(p["metadata"]["creationTimestamp"].replace("Z", "+00:00")
                                  ).timestamp()


def test_rolling_update_waits_between_batches(cluster: ServerProcess) -> None:
    started = time.time()
    result = dockyard(cluster, "service", "update", "--image", "nginx:v2",
                      "--update-parallelism", "1", "--update-delay", "3s", "--update-order",
                      "start-first", "web")
    assert result.stdout.splitlines()[0] == "web"
    assert result.stdout.splitlines()[-1] == "verify: Service converged"
    new = sorted(pods(cluster, "web"), key=creation)
    assert len(new) == 2 and all(ready(p) for p in new)
    assert {p["spec"]["containers"][0]["image"] for p in new} == {"nginx:v2"}
    for p in new:
        assert get(p["status"]["podIP"], 80) == f"v2 {p['metadata']['name']}"
    # One new task at a time, the second only after the first was up for the delay.
    assert creation(new[0]) >= int(started)
    assert creation(new[1]) - creation(new[0]) >= 3, [p["metadata"] for p in new]
    info = inspect(cluster, "web")
    assert info["UpdateStatus"]["State"] == "completed"
    assert info["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx"
    assert info["Spec"]["UpdateConfig"]["Delay"] == 3_000_000_000
    assert info["Spec"]["UpdateConfig"]["Order"] == "start-first"


def test_failing_update_pauses_by_default(cluster: ServerProcess) -> None:
    result = dockyard(cluster, "service", "update", "--image", "nginx:broken",
                      "--update-order", "stop-first", "web", check=False, timeout=90)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^Error: service update paused: update paused due to failure or early "
                     r"termination of task [0-9a-f]{25}$", result.stderr, re.M), result.stderr
    deployment = json.loads(cluster.kubectl("get", "deployment", "web", "-o", "json").stdout)
    assert deployment["spec"]["paused"] is True
    assert inspect(cluster, "web")["UpdateStatus"]["State"] == "paused"
    # Stop-first, one at a time: one v2 task was replaced by the failing one, one still serves.
    serving = [p for p in pods(cluster, "web") if ready(p)]
    assert [p["spec"]["containers"][0]["image"] for p in serving] == ["nginx:v2"]


def test_manual_rollback(cluster: ServerProcess) -> None:
    result = dockyard(cluster, "service", "rollback", "web")
    lines = result.stdout.splitlines()
    assert lines[:2] == ["web", "rollback: manually requested rollback"]
    assert "overall progress: rolling back update: 2 out of 2 tasks" in lines
    assert lines[-1] == "verify: Service converged"
    after = pods(cluster, "web")
    assert len(after) == 2 and all(ready(p) for p in after)
    assert {p["spec"]["containers"][0]["image"] for p in after} == {"nginx:v2"}
    info = inspect(cluster, "web")
    assert info["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx:v2"
    assert info["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx:broken"
    assert info["UpdateStatus"]["State"] == "rollback_completed"


def test_failing_update_rolls_back(cluster: ServerProcess) -> None:
    before = {p["metadata"]["name"] for p in pods(cluster, "web")}
    result = dockyard(cluster, "service", "update", "--image", "nginx:broken",
                      "--update-failure-action", "rollback", "web", check=False, timeout=90)
    assert result.returncode == 1, result.stdout + result.stderr
    message = re.search(r"^rollback: (update rolled back due to failure or early termination "
                        r"of task [0-9a-f]{25})$", result.stdout, re.M)
    assert message, result.stdout
    assert f"Error: {message.group(1)}" in result.stderr
    assert result.stdout.splitlines()[-1] == "verify: Service converged"
    after = pods(cluster, "web")
    assert len(after) == 2 and all(ready(p) for p in after)
    assert {p["spec"]["containers"][0]["image"] for p in after} == {"nginx:v2"}
    for p in after:
        assert get(p["status"]["podIP"], 80) == f"v2 {p['metadata']['name']}"
    # The v2 spec updates start-first: the new task started beside the old ones, which kept
    # serving and are still the service's tasks.
    assert {p["metadata"]["name"] for p in after} == before
    info = inspect(cluster, "web")
    assert info["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx:v2"
    assert info["Spec"]["UpdateConfig"]["FailureAction"] == "pause"  # the spec before
    assert "PreviousSpec" not in info  # an automatic rollback forgets the failed spec
    assert info["UpdateStatus"]["State"] == "rollback_completed"
    assert info["UpdateStatus"]["Message"] == message.group(1)
    again = dockyard(cluster, "service", "rollback", "web", check=False)
    assert again.returncode == 1
    assert "service web does not have a previous spec" in again.stderr


def test_nodes_global_service_and_availability(cluster: ServerProcess) -> None:
    info = json.loads(dockyard(cluster, "node", "inspect", NODE).stdout)[0]
    node_id = info["ID"]
    created = dockyard(cluster, "service", "create", "--mode", "global", "--name", "agent",
                       "--stop-grace-period", "1s", "--update-monitor", "1s", "nginx")
    lines = created.stdout.splitlines()
    assert "overall progress: 1 out of 1 tasks" in lines  # one task per node
    assert f"{node_id[:12]}: running" in lines and lines[-1] == "verify: Service converged"
    assert (services(cluster)["agent"]["MODE"], services(cluster)["agent"]["REPLICAS"]) == \
        ("global", "1/1")
    refused = dockyard(cluster, "service", "scale", "agent=2", check=False)
    assert refused.returncode == 1
    assert "agent: scale can only be used with replicated mode" in refused.stderr
    assert table(dockyard(cluster, "service", "ps", "agent").stdout)[0]["NAME"] == \
        f"agent.{node_id}"
    rows = table(dockyard(cluster, "node", "ls").stdout)
    assert rows == [{"ID": f"{node_id} *", "HOSTNAME": NODE, "STATUS": "Ready",
                     "AVAILABILITY": "Active", "MANAGER STATUS": "Leader",
                     "ENGINE VERSION": rows[0]["ENGINE VERSION"]}]
    pretty = dockyard(cluster, "node", "inspect", "--pretty", "self").stdout
    assert f"Hostname:\t\t{NODE}" in pretty and "Leader:\t\tYes" in pretty
    assert info["Spec"]["Role"] == "manager" and info["Spec"]["Labels"]["zone"] == "blue"

    def availability() -> str:
        return table(dockyard(cluster, "node", "ls").stdout)[0]["AVAILABILITY"]

    # pause: no new tasks, the running ones stay.
    dockyard(cluster, "node", "update", "--availability", "pause", NODE)
    assert availability() == "Pause"
    assert json.loads(cluster.kubectl("get", "node", NODE, "-o", "json").stdout)["spec"][
        "unschedulable"] is True
    listed = services(cluster)
    assert (listed["agent"]["REPLICAS"], listed["web"]["REPLICAS"]) == ("1/1", "2/2")

    # drain: the node's tasks are stopped and wait for a node (there is no other one).
    web_pods = {p["metadata"]["name"] for p in pods(cluster, "web")}
    dockyard(cluster, "node", "update", "--availability", "drain", NODE)
    assert availability() == "Drain"
    wait_for(lambda: not web_pods & {p["metadata"]["name"] for p in pods(cluster, "web")},
             30, "web's pods evicted")
    listed = services(cluster)
    assert (listed["agent"]["REPLICAS"], listed["web"]["REPLICAS"]) == ("0/0", "0/2")
    tasks = table(dockyard(cluster, "service", "ps", "web").stdout)
    pending = [t for t in tasks if t["DESIRED STATE"] == "Running"]
    assert len(pending) == 2 and all(t["CURRENT STATE"].startswith("Pending")
                                     and t["ERROR"].startswith('"no suitable node')
                                     for t in pending), tasks

    dockyard(cluster, "node", "update", "--availability", "active", "--label-rm", "zone", NODE)
    assert availability() == "Active"
    # The constraint node.labels.zone==blue no longer matches: web waits; agent comes back.
    wait_ready(cluster, "agent", 1)
    listed = services(cluster)
    assert (listed["agent"]["REPLICAS"], listed["web"]["REPLICAS"]) == ("1/1", "0/2")
    dockyard(cluster, "node", "update", "--label-add", "zone=blue", NODE)
    wait_ready(cluster, "web", 2)
    assert services(cluster)["web"]["REPLICAS"] == "2/2"


def test_rm_removes_services(cluster: ServerProcess) -> None:
    result = dockyard(cluster, "service", "rm", "mynginx", "web", "agent", "nope", check=False)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["mynginx", "web", "agent"]
    assert "no such service: nope" in result.stderr
    assert dockyard(cluster, "service", "ls").stdout.strip() == \
        "ID        NAME      MODE      REPLICAS   IMAGE     PORTS"
    left = cluster.kubectl("get", "deployments,services", "-l", "swarm.dockyard.io/service",
                           "-o", "name").stdout
    assert left.strip() == ""


def test_zz_cleanup_leaves_nothing(cluster: ServerProcess) -> None:
    prefix = cluster_prefix(cluster.data_dir)
    cluster.stop()
    result = subprocess.run([sys.executable, "-m", "dockyard.cli.main", "cleanup",
                             "--data-dir", str(cluster.data_dir)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert leftovers(prefix, Path(cluster.data_dir)) == []
