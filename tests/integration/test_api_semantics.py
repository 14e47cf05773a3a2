"""The REST API's semantics over raw HTTP: errors as `Status`, subresources, deletion,
watch resumption. What a client library author relies on."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import API_ONLY, ServerProcess

PODS = "/api/v1/namespaces/default/pods"
CMS = "/api/v1/namespaces/default/configmaps"


def a_pod(name: str = "p", **meta: object) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


@pytest.fixture
def api(server: ServerProcess) -> httpx.Client:
    with server.client() as c:
        yield c


def test_errors_are_status_objects(server: ServerProcess, api: httpx.Client) -> None:
    anonymous = httpx.get(f"{server.url}{PODS}", verify=server.tls())
    assert anonymous.status_code == 401 and anonymous.json()["kind"] == "Status"
    wrong = httpx.get(f"{server.url}{PODS}", verify=server.tls(),
                      headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401

    malformed = api.post(PODS, content=b'{"metadata": ', headers={"Content-Type":
                                                                  "application/json"})
    assert malformed.status_code == 400 and malformed.json()["reason"] == "BadRequest"
    bad_yaml = api.post(PODS, content=b"metadata: [unclosed",
                        headers={"Content-Type": "application/yaml"})
    assert bad_yaml.status_code == 400

    unknown = api.get("/api/v1/namespaces/default/widgets")
    assert unknown.status_code == 404 and unknown.json()["kind"] == "Status"

    huge = a_pod("huge")
    huge["metadata"]["annotations"] = {"blob": "x" * (3 * 1024 * 1024 + 10)}
    too_large = api.post(PODS, json=huge)
    assert too_large.status_code == 413

    invalid = a_pod("Bad_Name")
    invalid["spec"]["containers"][0].pop("image")
    r = api.post(PODS, json=invalid)
    assert r.status_code == 422
    status = r.json()
    assert status["reason"] == "Invalid"
    fields = {c["field"] for c in status["details"]["causes"]}
    assert {"metadata.name", "spec.containers[0].image"} <= fields
    assert "spec.containers[0].image: Required value" in status["message"]
    assert api.get(f"{PODS}/Bad_Name").status_code == 404  # nothing half-written

    assert api.post(PODS, json=a_pod("dup")).status_code == 201
    again = api.post(PODS, json=a_pod("dup"))
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"

    missing_ns = api.post("/api/v1/namespaces/nowhere/pods", json=a_pod())
    assert missing_ns.status_code == 404
    assert 'namespaces "nowhere" not found' in missing_ns.json()["message"]


def test_system_namespaces_and_discovery(api: httpx.Client) -> None:
    names = {n["metadata"]["name"] for n in api.get("/api/v1/namespaces").json()["items"]}
    assert {"default", "kube-system", "kube-node-lease", "kube-public"} <= names
    refused = api.delete("/api/v1/namespaces/kube-system")
    assert refused.status_code == 403 and "may not be deleted" in refused.json()["message"]
    groups = {g["name"] for g in api.get("/apis").json()["groups"]}
    assert {"apps", "batch", "coordination.k8s.io", "discovery.k8s.io"} <= groups
    core = {r["name"] for r in api.get("/api/v1").json()["resources"]}
    assert {"pods", "pods/status", "pods/binding", "pods/log", "nodes", "services",
            "endpoints", "configmaps", "secrets", "events", "serviceaccounts"} <= core
    apps = {r["name"] for r in api.get("/apis/apps/v1").json()["resources"]}
    assert {"deployments", "deployments/scale", "replicasets/status"} <= apps


def test_generate_name_uid_generation_and_status(api: httpx.Client) -> None:
    r = api.post(PODS, json={**a_pod(""), "metadata": {"generateName": "web-"}})
    assert r.status_code == 201
    pod = r.json()
    name = pod["metadata"]["name"]
    assert name.startswith("web-") and len(name) == len("web-") + 5
    assert pod["metadata"]["uid"] and pod["metadata"]["creationTimestamp"]

    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    url = "/apis/apps/v1/namespaces/default/deployments"
    created = api.post(url, json=dep).json()
    assert created["metadata"]["generation"] == 1
    # A status write changes only status, and does not bump generation.
    created["status"] = {"observedGeneration": 1, "replicas": 3}
    created["spec"]["replicas"] = 9
    after_status = api.put(f"{url}/d/status", json=created).json()
    assert after_status["status"]["replicas"] == 3 and after_status["spec"]["replicas"] == 1
    assert after_status["metadata"]["generation"] == 1
    # A spec write keeps status and bumps generation.
    after_status["spec"]["replicas"] = 4
    after_status.pop("status")
    after_spec = api.put(f"{url}/d", json=after_status).json()
    assert after_spec["metadata"]["generation"] == 2 and after_spec["status"]["replicas"] == 3
    scale = api.get(f"{url}/d/scale").json()
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4
    assert scale["status"]["selector"] == "a=b"


def test_binding_assigns_a_node_once(api: httpx.Client) -> None:
    api.post(PODS, json=a_pod("b"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}
    assert api.post(f"{PODS}/b/binding", json=binding).status_code == 201
    pod = api.get(f"{PODS}/b").json()
    assert pod["spec"]["nodeName"] == "node-1"
    assert {"type": "PodScheduled", "status": "True"}.items() <= pod["status"][
        "conditions"][0].items()
    assert api.post(f"{PODS}/b/binding", json=binding).status_code == 409
    on_node = api.get(PODS, params={"fieldSelector": "spec.nodeName=node-1"}).json()
    assert [p["metadata"]["name"] for p in on_node["items"]] == ["b"]
    assert api.get(f"{PODS}/b/log").status_code == 503


def test_graceful_delete_and_finalizers(api: httpx.Client) -> None:
    api.post(PODS, json=a_pod("g"))
    api.post(f"{PODS}/g/binding", json={"target": {"name": "node-1"}})
    r = api.delete(f"{PODS}/g")
    assert r.status_code in (200, 202)
    pod = api.get(f"{PODS}/g").json()  # a bound pod waits for its node to stop it
    assert pod["metadata"]["deletionTimestamp"]
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
    api.delete(f"{PODS}/g", params={"gracePeriodSeconds": "0"})
    assert api.get(f"{PODS}/g").status_code == 404

    api.post(CMS, json={"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})
    api.delete(f"{CMS}/f")
    held = api.get(f"{CMS}/f").json()
    assert held["metadata"]["deletionTimestamp"]
    adding = api.patch(f"{CMS}/f", content=json.dumps(
        {"metadata": {"finalizers": ["example.com/hold", "other.io/x"]}}),
        headers={"Content-Type": "application/merge-patch+json"})
    assert adding.status_code == 403
    released = api.patch(f"{CMS}/f", content=b'{"metadata": {"finalizers": null}}',
                         headers={"Content-Type": "application/merge-patch+json"})
    assert released.status_code == 200
    assert api.get(f"{CMS}/f").status_code == 404

    for i in range(3):
        api.post(CMS, json={"metadata": {"name": f"c{i}", "labels": {"batch": "x"}}})
    api.post(CMS, json={"metadata": {"name": "keep"}})
    api.delete(CMS, params={"labelSelector": "batch=x"})
    left = [c["metadata"]["name"] for c in api.get(CMS).json()["items"]]
    assert left == ["keep"]


def test_watch_resume_bookmark_and_gone(server: ServerProcess, api: httpx.Client) -> None:
    start = api.get(CMS).json()["metadata"]["resourceVersion"]
    api.post(CMS, json={"metadata": {"name": "w1", "labels": {"x": "1"}}})
    api.post(CMS, json={"metadata": {"name": "w2"}})
    api.patch(f"{CMS}/w1", content=b'{"metadata": {"labels": {"x": "2"}}}',
              headers={"Content-Type": "application/merge-patch+json"})
    with api.stream("GET", CMS, params={"watch": "1", "resourceVersion": start,
                                        "labelSelector": "x=1", "timeoutSeconds": "1"}) as r:
        events = [json.loads(line) for line in r.iter_lines() if line]
    # w1 entered the selector, then left it (a DELETED for this watcher); w2 never matched.
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w1"), ("DELETED", "w1")]

    with api.stream("GET", CMS, params={"watch": "1", "resourceVersion": start,
                                        "allowWatchBookmarks": "true",
                                        "timeoutSeconds": "0.5"}) as r:
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert events[-1]["type"] == "BOOKMARK"
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= int(
        events[-2]["object"]["metadata"]["resourceVersion"])



def test_watch_from_an_unretained_revision_is_gone(tmp_path) -> None:
    srv = ServerProcess(tmp_path / "small", extra_args=["--watch-window", "5", *API_ONLY])
    srv.data_dir.mkdir()
    srv.start()
    try:
        with srv.client() as api:
            first = api.post(CMS, json={"metadata": {"name": "old"}}).json()
            for i in range(10):
                api.post(CMS, json={"metadata": {"name": f"n{i}"}})
            rv = first["metadata"]["resourceVersion"]
            with api.stream("GET", CMS, params={"watch": "1", "resourceVersion": rv,
                                                "timeoutSeconds": "1"}) as r:
                events = [json.loads(line) for line in r.iter_lines() if line]
            assert r.status_code == 200
            assert events[0]["type"] == "ERROR"
            assert events[0]["object"]["code"] == 410
            assert events[0]["object"]["reason"] == "Expired"
    finally:
        srv.stop()
