"""Images across nodes: an image that only the server has (imported into its data directory, or
pushed to it with `dockyard image push`) runs on a joined agent that never had it. The agent
pulls it from the cluster registry (the API server's /v2/), with Kubernetes' events, and the
container reports the server's image ID; an image no registry here has fails with a message
that says so, quickly, and backs off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.runtime.imagebuild import build_busybox
from dockyard.runtime.images import ImageStore
from tests.integration.test_multinode import wait_for
from tests.multinode import DOCKYARD, MultiNodeCluster, running_cluster
from tests.unit.test_registry import derived_image

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and containers need root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed"),
]

Obj = dict[str, Any]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MultiNodeCluster]:
    with running_cluster(tmp_path / "cluster", nodes=1) as mn:
        yield mn


def _pod(name: str, image: str, command: str, **container: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": image, "command": ["sh", "-c", command],
                 **container}]}}


def _events(mn: MultiNodeCluster, pod: str) -> list[tuple[str, str]]:
    out = json.loads(mn.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [(e["reason"], e["message"]) for e in out
            if e["involvedObject"].get("name") == pod]


def test_image_only_on_the_server_runs_on_a_joined_agent(cluster: MultiNodeCluster,
                                                         tmp_path: Path) -> None:
    mn = cluster
    # A workstation makes two busybox-derived images the agent cannot build.
    workstation = tmp_path / "workstation"
    store = ImageStore(workstation / "images")
    busybox = build_busybox(store, workstation / "cache")
    imported = derived_image(store, busybox, "dist/imported:v1", "imported on the server",
                             tmp_path)
    pushed = derived_image(store, busybox, "dist/pushed:latest", "pushed to the server",
                           tmp_path)
    archive = tmp_path / "imported.tar"
    store.export_docker_archive("dist/imported:v1", archive)
    out = subprocess.run([*DOCKYARD, "image", "import", str(archive), "--data-dir",
                          str(mn.server_dir)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "Loaded image: dist/imported:v1", out.stderr
    out = subprocess.run([*DOCKYARD, "image", "push", "dist/pushed", "--data-dir",
                          str(workstation), "--kubeconfig", str(mn.server.kubeconfig)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "latest: digest: " in out.stdout, out.stderr
    server_images = ImageStore(mn.server_dir / "images")
    node_images = ImageStore(mn.hosts[0].data_dir / "images")
    for ref in ("dist/imported:v1", "dist/pushed"):
        assert server_images.resolve(ref) is not None and node_images.resolve(ref) is None

    mn.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        _pod("imported", "dist/imported:v1", "echo $(cat /hello.txt); exec sleep 3600"),
        # :latest, so imagePullPolicy defaults to Always.
        _pod("pushed", "dist/pushed", "echo $(cat /hello.txt); exec sleep 3600"),
        _pod("elsewhere", "docker.io/library/nginx:1.25", "exec sleep 3600")]))

    def running() -> dict[str, Obj] | None:
        pods = json.loads(mn.kubectl("get", "pods", "-o", "json").stdout)["items"]
        by_name = {p["metadata"]["name"]: p for p in pods}
        ok = all((by_name.get(n, {}).get("status") or {}).get("phase") == "Running"
                 for n in ("imported", "pushed"))
        return by_name if ok else None

    pods = wait_for(running, 40, "pods running the server's images")
    for name, ref, image in (("imported", "dist/imported:v1", imported),
                             ("pushed", "dist/pushed", pushed)):
        status = pods[name]["status"]["containerStatuses"][0]
        assert status["imageID"] == server_images.get(ref).id == image.id
        assert pods[name]["spec"]["containers"][0]["imagePullPolicy"] == \
            ("IfNotPresent" if name == "imported" else "Always")
        events = _events(mn, name)
        assert ("Pulling", f'Pulling image "{ref}"') in events, events
        assert any(reason == "Pulled" and message.startswith(
            f'Successfully pulled image "{ref}" in ') for reason, message in events), events
        assert node_images.get(ref).id == image.id  # now in the node's own store
        text = "imported on the server" if name == "imported" else "pushed to the server"
        wait_for(lambda name=name, text=text: mn.kubectl("logs", name).stdout.strip() == text,
                 10, f"{name}'s log")

    # Nothing but the cluster registry is asked: a clear failure, then back-off.
    def waiting() -> Obj | None:
        pod = json.loads(mn.kubectl("get", "pod", "elsewhere", "-o", "json").stdout)
        state = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0].get("state")
        return (state or {}).get("waiting") if (state or {}).get("waiting", {}).get(
            "reason") in ("ErrImagePull", "ImagePullBackOff") else None

    wait_for(waiting, 20, "elsewhere waiting on its image")
    failed = [m for r, m in _events(mn, "elsewhere") if r == "Failed"]
    assert any(m.startswith('Failed to pull image "docker.io/library/nginx:1.25": nginx:1.25 '
                            "not found in the cluster registry at ") and
               "never from docker.io (this cluster has no internet access)" in m
               for m in failed), failed
    wait_for(lambda: any(r == "BackOff" and m == 'Back-off pulling image '
                         '"docker.io/library/nginx:1.25"' for r, m in _events(mn, "elsewhere")),
             20, "ImagePullBackOff")
