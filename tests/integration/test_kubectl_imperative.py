"""kubectl's imperative generators send protobuf bodies; the server must take them like JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ServerProcess

PROTOBUF = "application/vnd.kubernetes.protobuf"


def get_json(server: ServerProcess, *args: str) -> dict:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def test_create_configmap_and_secret(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "app.conf").write_text("port = 80\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\xff\x10")
    out = server.kubectl("create", "configmap", "cfg", "--from-literal=a=1",
                         f"--from-file={tmp_path / 'app.conf'}",
                         f"--from-file={tmp_path / 'blob.bin'}").stdout
    assert "configmap/cfg created" in out
    cfg = get_json(server, "configmap", "cfg")
    assert cfg["data"] == {"a": "1", "app.conf": "port = 80\n"}
    assert cfg["binaryData"] == {"blob.bin": "AP8Q"}

    assert "secret/s created" in server.kubectl(
        "create", "secret", "generic", "s", "--from-literal=p=q").stdout
    secret = get_json(server, "secret", "s")
    assert secret["data"] == {"p": "cQ=="}
    assert secret["type"] == "Opaque"


def test_create_namespace_and_service_account(server: ServerProcess) -> None:
    assert "namespace/team created" in server.kubectl("create", "namespace", "team").stdout
    assert get_json(server, "namespace", "team")["metadata"]["name"] == "team"
    assert "serviceaccount/bot created" in server.kubectl(
        "create", "serviceaccount", "bot", "-n", "team").stdout
    assert get_json(server, "serviceaccount", "bot", "-n", "team")["metadata"]["namespace"] == (
        "team")


def test_create_deployment_job_and_run(server: ServerProcess) -> None:
    assert "deployment.apps/web created" in server.kubectl(
        "create", "deployment", "web", "--image=busybox", "--replicas=3", "--port=80").stdout
    spec = get_json(server, "deployment", "web")["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"app": "web"}}
    assert spec["template"]["metadata"]["labels"] == {"app": "web"}
    (container,) = spec["template"]["spec"]["containers"]
    assert container["name"] == "busybox" and container["image"] == "busybox"
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert container["resources"] == {}

    assert "job.batch/once created" in server.kubectl(
        "create", "job", "once", "--image=busybox", "--", "echo", "hi").stdout
    job_pod = get_json(server, "job", "once")["spec"]["template"]["spec"]
    assert job_pod["containers"][0]["command"] == ["echo", "hi"]
    assert job_pod["restartPolicy"] == "Never"

    assert "pod/solo created" in server.kubectl(
        "run", "solo", "--image=busybox", "--labels=a=b", "--", "sleep", "1").stdout
    pod = get_json(server, "pod", "solo")
    assert pod["metadata"]["labels"] == {"a": "b"}
    assert pod["spec"]["containers"][0]["args"] == ["sleep", "1"]


def test_create_service_clusterip(server: ServerProcess) -> None:
    assert "service/api created" in server.kubectl(
        "create", "service", "clusterip", "api", "--tcp=80:8080,443:https").stdout
    spec = get_json(server, "service", "api")["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["selector"] == {"app": "api"}
    assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [(80, 8080), (443, "https")]


def test_unsupported_or_corrupt_protobuf_is_rejected_with_a_reason(server: ServerProcess) -> None:
    type_meta = b"\x0a\x02v1\x12\x06Widget"
    unknown_kind = b"k8s\x00\x0a" + bytes([len(type_meta)]) + type_meta
    with server.client() as client:
        url = "/api/v1/namespaces/default/configmaps"
        reply = client.post(url, content=unknown_kind, headers={"Content-Type": PROTOBUF})
        assert reply.status_code == 415
        assert "Widget" in reply.json()["message"] and "send JSON" in reply.json()["message"]
        reply = client.post(url, content=b"k8s\x00\x0a\x7f", headers={"Content-Type": PROTOBUF})
        assert reply.status_code == 400
        assert reply.json()["reason"] == "BadRequest"
