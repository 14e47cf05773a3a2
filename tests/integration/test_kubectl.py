"""kubectl against a real `dockyard server`: what a kubectl user types, and what they see."""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.conftest import ServerProcess, kubectl_binary

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:latest
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - containerPort: 8080
        env:
        - {name: MODE, value: blue}
        - {name: EXTRA, value: "1"}
      - name: sidecar
        image: busybox:latest
        command: ["sleep", "3600"]
"""


def get_json(server: ServerProcess, *args: str) -> dict:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def test_apply_get_describe_and_defaults(server: ServerProcess) -> None:
    out = server.kubectl("apply", "-f", "-", input=DEPLOYMENT).stdout
    assert "deployment.apps/web created" in out
    table = server.kubectl("get", "deploy,rs,pods", "-o", "wide").stdout
    assert "NAME" in table and "deployment.apps/web" in table
    assert "CONTAINERS" in table and "web,sidecar" in table  # a wide column
    dep = get_json(server, "deployment", "web")
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%",
                                                        "maxUnavailable": "25%"}
    assert dep["spec"]["revisionHistoryLimit"] == 10
    pod_spec = dep["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always"
    assert pod_spec["terminationGracePeriodSeconds"] == 30
    assert pod_spec["dnsPolicy"] == "ClusterFirst"
    assert pod_spec["containers"][0]["imagePullPolicy"] == "Always"
    assert dep["metadata"]["generation"] == 1 and dep["metadata"]["uid"]
    described = server.kubectl("describe", "deployment", "web").stdout
    assert "Name:" in described and "web" in described
    assert "Replicas:" in described and "3 desired" in described


def test_label_annotate_patch_scale_replace(server: ServerProcess) -> None:
    server.kubectl("apply", "-f", "-", input=DEPLOYMENT)
    server.kubectl("label", "deployment", "web", "tier=frontend")
    server.kubectl("annotate", "deployment", "web", "owner=team-a")
    selected = server.kubectl("get", "deploy", "-l", "tier=frontend", "-o", "name").stdout
    assert selected.strip() == "deployment.apps/web"
    assert server.kubectl("get", "deploy", "-l", "tier notin (frontend)").stdout == ""

    # Strategic merge: one container's env entry changes, the other container stays.
    server.kubectl("patch", "deployment", "web", "-p", json.dumps({"spec": {"template": {
        "spec": {"containers": [{"name": "web", "env": [{"name": "MODE", "value": "green"}]}]}
    }}}))
    dep = get_json(server, "deployment", "web")
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "sidecar"]
    assert {e["name"]: e["value"] for e in containers[0]["env"]} == {"MODE": "green",
                                                                     "EXTRA": "1"}
    assert dep["metadata"]["generation"] == 2
    # Merge patch replaces lists; JSON patch edits by path.
    server.kubectl("patch", "deployment", "web", "--type", "merge", "-p",
                   '{"metadata": {"labels": {"tier": null, "color": "green"}}}')
    server.kubectl("patch", "deployment", "web", "--type", "json", "-p",
                   '[{"op": "add", "path": "/spec/minReadySeconds", "value": 5}]')
    dep = get_json(server, "deployment", "web")
    assert dep["metadata"]["labels"] == {"app": "web", "color": "green"}
    assert dep["spec"]["minReadySeconds"] == 5

    assert "scaled" in server.kubectl("scale", "deployment", "web", "--replicas", "5").stdout
    assert get_json(server, "deployment", "web")["spec"]["replicas"] == 5

    dep = get_json(server, "deployment", "web")
    dep["spec"]["replicas"] = 2
    server.kubectl("replace", "-f", "-", input=json.dumps(dep))
    assert get_json(server, "deployment", "web")["spec"]["replicas"] == 2
    # Replacing from a stale copy is refused: the user would overwrite someone's change.
    stale = server.kubectl("replace", "-f", "-", input=json.dumps(dep), check=False)
    assert stale.returncode != 0
    assert "the object has been modified" in stale.stderr


def test_apply_again_is_a_three_way_merge(server: ServerProcess) -> None:
    server.kubectl("apply", "-f", "-", input=DEPLOYMENT)
    # Someone scales by hand; that field is not in the manifest and must survive.
    server.kubectl("annotate", "deployment", "web", "by-hand=yes")
    changed = DEPLOYMENT.replace("value: blue", "value: red").replace(
        "        - {name: EXTRA, value: \"1\"}\n", "")
    out = server.kubectl("apply", "-f", "-", input=changed).stdout
    assert "deployment.apps/web configured" in out
    dep = get_json(server, "deployment", "web")
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "MODE", "value": "red"}]  # changed, and the removed one is gone
    assert dep["metadata"]["annotations"]["by-hand"] == "yes"
    unchanged = server.kubectl("apply", "-f", "-", input=changed).stdout
    assert "deployment.apps/web unchanged" in unchanged


def test_invalid_objects_are_refused_with_the_field(server: ServerProcess) -> None:
    bad = DEPLOYMENT.replace("image: busybox:latest\n        command: [\"sleep\"", "command: "
                             "[\"sleep\"")
    result = server.kubectl("create", "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert "spec.template.spec.containers[1].image: Required value" in result.stderr
    assert "NotFound" in server.kubectl("get", "deploy", "web", check=False).stderr


def test_delete_with_cascade(server: ServerProcess) -> None:
    server.kubectl("apply", "-f", "-", input=DEPLOYMENT)
    out = server.kubectl("delete", "deployment", "web", "--cascade=foreground",
                         "--wait=false").stdout
    assert 'deployment.apps "web" deleted' in out
    # Foreground deletion waits for the garbage collector: the object is marked, not gone.
    dep = get_json(server, "deployment", "web")
    assert "foregroundDeletion" in dep["metadata"]["finalizers"]
    assert dep["metadata"]["deletionTimestamp"]
    server.kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\n"
                   "metadata: {name: cfg}\ndata: {a: '1'}\n")
    server.kubectl("delete", "configmap", "cfg", "--cascade=orphan", "--wait=false")
    assert "orphan" in get_json(server, "configmap", "cfg")["metadata"]["finalizers"]
    server.kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\n"
                   "metadata: {name: plain}\n")
    server.kubectl("delete", "configmap", "plain")  # background: gone at once, kubectl waits
    assert "NotFound" in server.kubectl("get", "cm", "plain", check=False).stderr


def test_get_watch_receives_events(server: ServerProcess) -> None:
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
    watcher = subprocess.Popen([kubectl_binary(), "get", "configmaps", "-w", "--no-headers"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(1.0)
        server.kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\n"
                       "metadata: {name: seen}\ndata: {k: v}\n")
        server.kubectl("delete", "configmap", "seen")
        time.sleep(1.0)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    lines = [line for line in out.splitlines() if line.startswith("seen")]
    assert len(lines) >= 2, out  # one line for the create, one for the delete


def test_pods_table_columns(server: ServerProcess) -> None:
    server.kubectl("run", "solo", "--image=busybox:latest", "--", "sleep", "60")
    header = server.kubectl("get", "pods").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    wide = server.kubectl("get", "pods", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert wide[1].split()[:3] == ["solo", "0/1", "Pending"]
