"""The official `kubernetes` Python client against `dockyard server`."""

from __future__ import annotations

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.conftest import ServerProcess


@pytest.fixture
def core(server: ServerProcess) -> client.CoreV1Api:
    api_client = config.new_client_from_config(config_file=str(server.kubeconfig))
    return client.CoreV1Api(api_client)


def pod(name: str, labels: dict[str, str]) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    )


def test_create_list_with_label_selector(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("a", {"app": "web", "tier": "fe"}))
    core.create_namespaced_pod("default", pod("b", {"app": "web", "tier": "be"}))
    core.create_namespaced_pod("default", pod("c", {"app": "db"}))
    names = lambda sel: sorted(p.metadata.name for p in  # noqa: E731
                               core.list_namespaced_pod("default", label_selector=sel).items)
    assert names("app=web") == ["a", "b"]
    assert names("app=web,tier!=fe") == ["b"]
    assert names("tier in (fe,be)") == ["a", "b"]
    assert names("!tier") == ["c"]
    created = core.read_namespaced_pod("a", "default")
    assert created.status.phase == "Pending"
    assert created.spec.restart_policy == "Always"


def test_pagination_and_field_selector(core: client.CoreV1Api) -> None:
    for i in range(7):
        core.create_namespaced_pod("default", pod(f"p{i}", {"n": str(i)}))
    first = core.list_namespaced_pod("default", limit=3)
    assert len(first.items) == 3 and first.metadata._continue
    seen = [p.metadata.name for p in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_pod("default", limit=3, _continue=token)
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue
    assert seen == [f"p{i}" for i in range(7)]
    by_name = core.list_namespaced_pod("default", field_selector="metadata.name=p3")
    assert [p.metadata.name for p in by_name.items] == ["p3"]
    pending = core.list_namespaced_pod("default", field_selector="status.phase=Pending")
    assert len(pending.items) == 7


def test_watch_from_resource_version(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="one")))
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="two")))
    core.patch_namespaced_config_map("two", "default", {"data": {"k": "v"}})
    core.delete_namespaced_config_map("two", "default")
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                      resource_version=rv, timeout_seconds=2):
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "two"), ("MODIFIED", "two"), ("DELETED", "two")]


def test_stale_update_conflicts(core: client.CoreV1Api) -> None:
    cm = core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"),
                                      data={"v": "1"}))
    cm.data = {"v": "2"}
    core.replace_namespaced_config_map("cfg", "default", cm)
    cm.data = {"v": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cfg", "default", cm)
    assert err.value.status == 409
    assert core.read_namespaced_config_map("cfg", "default").data == {"v": "2"}
