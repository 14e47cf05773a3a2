"""Unit tests for the PATCH formats (dockyard.apiserver.patch) and their metadata (patchmeta).

Expected results follow k8s.io/apimachinery's strategicpatch, including its element ordering:
an element the live list does not have goes *before* the live elements (see the kubectl patch
task docs, where a patched-in container is listed first).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from dockyard.api.patchmeta import SUPPORTED_KINDS, list_paths, patch_meta
from dockyard.apiserver.patch import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)

TEMPLATE_SPEC = ("spec", "template", "spec")


def deployment() -> dict[str, Any]:
    """A Deployment as the server stores it (trimmed of defaults the tests do not need)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": "5f1c1d2e-8f0a-4a8e-9d55-0d3c1a7b9e21",
            "resourceVersion": "4711",
            "generation": 2,
            "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
            "finalizers": ["example.com/protect"],
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.25",
                            "ports": [
                                {"containerPort": 80, "protocol": "TCP", "name": "http"},
                                {"containerPort": 443, "protocol": "TCP", "name": "https"},
                            ],
                            "env": [
                                {"name": "MODE", "value": "prod"},
                                {"name": "LOG_LEVEL", "value": "info"},
                                {"name": "WORKERS", "value": "4"},
                            ],
                            "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx/conf.d"}],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                                "requests": {"cpu": "250m", "memory": "64Mi"},
                            },
                        },
                        {
                            "name": "log-shipper",
                            "image": "busybox:1.36",
                            "command": ["sh", "-c", "tail -F /var/log/nginx/access.log"],
                        },
                    ],
                    "volumes": [
                        {"name": "conf", "configMap": {"name": "nginx-conf"}},
                        {"name": "cache", "emptyDir": {}},
                    ],
                    "tolerations": [
                        {"key": "dedicated", "operator": "Equal", "value": "web",
                         "effect": "NoSchedule"},
                    ],
                    "nodeSelector": {"disktype": "ssd", "zone": "eu-1a"},
                    "restartPolicy": "Always",
                },
            },
        },
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        },
    }


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "app", "image": "example/app:1"}],
            "nodeName": "node-1",
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            ],
        },
    }


def template_patch(spec_patch: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": spec_patch}}}


def smp(doc: dict[str, Any], patch: dict[str, Any], kind: str = "Deployment") -> dict[str, Any]:
    return apply_strategic_merge_patch(doc, patch, kind)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(obj)["containers"] if c["name"] == name)


def names(items: list[dict[str, Any]], key: str = "name") -> list[Any]:
    return [item[key] for item in items]


def has_directive(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k.startswith("$") or has_directive(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_directive(v) for v in value)
    return False


# ---------------------------------------------------------------------------------------------
# patchmeta


@pytest.mark.parametrize(
    ("kind", "spec"),
    [("Pod", ("spec",)), ("Deployment", TEMPLATE_SPEC), ("ReplicaSet", TEMPLATE_SPEC),
     ("Job", TEMPLATE_SPEC)],
)
def test_pod_spec_metadata_is_per_type(kind: str, spec: tuple[str, ...]) -> None:
    expected = {
        ("containers",): ("merge", "name"),
        ("initContainers",): ("merge", "name"),
        ("ephemeralContainers",): ("merge", "name"),
        ("containers", "ports"): ("merge", "containerPort"),
        ("containers", "env"): ("merge", "name"),
        ("containers", "volumeMounts"): ("merge", "mountPath"),
        ("containers", "volumeDevices"): ("merge", "devicePath"),
        ("initContainers", "env"): ("merge", "name"),
        ("volumes",): ("merge,retainKeys", "name"),
        ("imagePullSecrets",): ("merge", "name"),
        ("hostAliases",): ("merge", "ip"),
        ("topologySpreadConstraints",): ("merge", "topologyKey"),
        ("tolerations",): None,
        ("containers", "envFrom"): None,
        ("containers", "command"): None,
        ("nodeSelector",): None,
    }
    for path, meta in expected.items():
        assert patch_meta(kind, spec + path) == meta, path


@pytest.mark.parametrize(
    ("kind", "path", "meta"),
    [
        ("Pod", ("status", "conditions"), ("merge", "type")),
        ("Pod", ("status", "podIPs"), ("merge", "ip")),
        ("Pod", ("status", "containerStatuses"), None),
        ("Deployment", ("spec", "strategy"), ("retainKeys", None)),
        ("Deployment", ("status", "conditions"), ("merge", "type")),
        ("ReplicaSet", ("status", "conditions"), ("merge", "type")),
        ("Job", ("status", "conditions"), ("merge", "type")),
        ("Service", ("spec", "ports"), ("merge", "port")),
        ("Service", ("status", "conditions"), ("merge", "type")),
        ("Node", ("spec", "podCIDRs"), ("merge", None)),
        ("Node", ("spec", "taints"), None),
        ("Node", ("status", "conditions"), ("merge", "type")),
        ("Node", ("status", "addresses"), ("merge", "type")),
        ("Node", ("status", "images"), None),
        ("Namespace", ("status", "conditions"), ("merge", "type")),
        ("Namespace", ("spec", "finalizers"), None),
        ("ServiceAccount", ("secrets",), ("merge", "name")),
        ("ServiceAccount", ("imagePullSecrets",), None),
        ("Endpoints", ("subsets",), None),
        ("EndpointSlice", ("endpoints",), None),
        ("ConfigMap", ("data",), None),
        ("Deployment", ("spec", "nope", "containers"), None),
        ("Widget", ("metadata", "finalizers"), None),
    ],
)
def test_patch_meta(kind: str, path: tuple[str, ...], meta: tuple[str, str | None] | None
                    ) -> None:
    assert patch_meta(kind, path) == meta


@pytest.mark.parametrize("kind", sorted(SUPPORTED_KINDS))
def test_object_meta_tags_for_every_kind(kind: str) -> None:
    assert patch_meta(kind, ("metadata", "finalizers")) == ("merge", None)
    assert patch_meta(kind, ("metadata", "ownerReferences")) == ("merge", "uid")
    assert patch_meta(kind, ("metadata", "labels")) is None


@pytest.mark.parametrize("kind", sorted(SUPPORTED_KINDS))
def test_list_paths_agrees_with_patch_meta(kind: str) -> None:
    paths = list_paths(kind)
    assert ("metadata", "finalizers") in paths
    for path, meta in paths.items():
        assert patch_meta(kind, path) == meta


def test_list_paths_of_a_deployment() -> None:
    paths = list_paths("Deployment")
    assert paths[(*TEMPLATE_SPEC, "containers", "ports")] == ("merge", "containerPort")
    assert paths[("spec", "template", "metadata", "finalizers")] == ("merge", None)
    assert paths[("spec", "strategy")] == ("retainKeys", None)
    assert (*TEMPLATE_SPEC, "tolerations") not in paths
    assert list_paths("Widget") == {}


# ---------------------------------------------------------------------------------------------
# strategic merge patch: lists with a merge key


def test_container_image_change_keeps_the_other_container() -> None:
    result = smp(deployment(), template_patch(
        {"containers": [{"name": "nginx", "image": "nginx:1.26"}]}))
    assert names(pod_spec(result)["containers"]) == ["nginx", "log-shipper"]
    nginx = container(result, "nginx")
    assert nginx["image"] == "nginx:1.26"
    assert nginx["ports"] == container(deployment(), "nginx")["ports"]
    assert container(result, "log-shipper") == container(deployment(), "log-shipper")


def test_new_container_is_placed_before_live_ones_like_kubernetes() -> None:
    result = smp(deployment(), template_patch(
        {"containers": [{"name": "redis", "image": "redis:7"}]}))
    assert names(pod_spec(result)["containers"]) == ["redis", "nginx", "log-shipper"]


def test_env_merged_by_name() -> None:
    result = smp(deployment(), template_patch({"containers": [{
        "name": "nginx",
        "env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "TZ", "value": "UTC"}],
    }]}))
    assert container(result, "nginx")["env"] == [
        {"name": "MODE", "value": "prod"},
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "TZ", "value": "UTC"},
        {"name": "WORKERS", "value": "4"},
    ]


def test_env_value_from_replaces_value_via_null() -> None:
    patch = template_patch({"containers": [{"name": "nginx", "env": [{
        "name": "MODE", "value": None,
        "valueFrom": {"configMapKeyRef": {"name": "web", "key": "mode"}},
    }]}]})
    env = container(smp(deployment(), patch), "nginx")["env"]
    assert env[0] == {"name": "MODE",
                      "valueFrom": {"configMapKeyRef": {"name": "web", "key": "mode"}}}


def test_ports_merged_by_container_port() -> None:
    result = smp(deployment(), template_patch({"containers": [{
        "name": "nginx", "ports": [{"containerPort": 443, "name": "tls"}],
    }]}))
    assert container(result, "nginx")["ports"] == [
        {"containerPort": 80, "protocol": "TCP", "name": "http"},
        {"containerPort": 443, "protocol": "TCP", "name": "tls"},
    ]


def test_patch_delete_removes_a_container() -> None:
    result = smp(deployment(), template_patch(
        {"containers": [{"name": "log-shipper", "$patch": "delete"}]}))
    assert names(pod_spec(result)["containers"]) == ["nginx"]


def test_patch_delete_of_an_absent_element_is_a_no_op() -> None:
    result = smp(deployment(), template_patch(
        {"volumes": [{"name": "not-there", "$patch": "delete"}]}))
    assert pod_spec(result)["volumes"] == pod_spec(deployment())["volumes"]


def test_patch_replace_replaces_a_whole_list() -> None:
    result = smp(deployment(), template_patch({"containers": [
        {"$patch": "replace"},
        {"name": "app", "image": "example/app:2"},
    ]}))
    assert pod_spec(result)["containers"] == [{"name": "app", "image": "example/app:2"}]


def test_status_conditions_merge_by_type() -> None:
    result = smp(pod(), {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": None},
    ]}}, kind="Pod")
    assert result["status"]["conditions"] == [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "True"},
    ]


def test_service_ports_merge_by_port() -> None:
    service = {
        "metadata": {"name": "web"},
        "spec": {"type": "ClusterIP", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
        ]},
    }
    result = smp(service, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, "Service")
    assert result["spec"]["ports"][0] == {
        "name": "http", "port": 80, "targetPort": 9090, "protocol": "TCP"}
    assert result["spec"]["ports"][1]["port"] == 443


def test_owner_references_merge_by_uid() -> None:
    doc = {"metadata": {"name": "web-0", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u1"},
    ]}}
    patch = {"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}]}}
    assert smp(doc, patch, "Pod")["metadata"]["ownerReferences"] == [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u1",
         "controller": True},
    ]


def test_list_without_metadata_is_replaced() -> None:
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    result = smp(deployment(), template_patch({"tolerations": [toleration]}))
    assert pod_spec(result)["tolerations"] == [toleration]
    command = smp(deployment(), template_patch(
        {"containers": [{"name": "log-shipper", "command": ["sleep", "1"]}]}))
    assert container(command, "log-shipper")["command"] == ["sleep", "1"]


def test_element_without_merge_key_is_rejected() -> None:
    with pytest.raises(PatchError, match="merge key 'name'"):
        smp(deployment(), template_patch({"containers": [{"image": "nginx:1.26"}]}))


def test_unknown_list_directive_is_rejected() -> None:
    with pytest.raises(PatchError, match="unknown patch type"):
        smp(deployment(), template_patch({"containers": [{"name": "nginx", "$patch": "nuke"}]}))


# ---------------------------------------------------------------------------------------------
# strategic merge patch: maps


def test_null_deletes_a_label() -> None:
    result = smp(deployment(), {"metadata": {"labels": {"tier": None, "track": "stable"}}})
    assert result["metadata"]["labels"] == {"app": "web", "track": "stable"}


def test_null_for_a_missing_key_is_ignored() -> None:
    result = smp(deployment(), {"metadata": {"annotations": {"absent": None}},
                                "spec": {"paused": None}})
    assert result == deployment()


def test_scalars_and_nested_maps_merge() -> None:
    result = smp(deployment(), {"spec": {"replicas": 5, "template": {"spec": {
        "containers": [{"name": "nginx", "resources": {"limits": {"cpu": "1"}}}],
    }}}})
    assert result["spec"]["replicas"] == 5
    assert container(result, "nginx")["resources"] == {
        "limits": {"cpu": "1", "memory": "128Mi"},
        "requests": {"cpu": "250m", "memory": "64Mi"},
    }


def test_patch_replace_replaces_a_whole_map() -> None:
    result = smp(deployment(), template_patch(
        {"nodeSelector": {"$patch": "replace", "disktype": "hdd"}}))
    assert pod_spec(result)["nodeSelector"] == {"disktype": "hdd"}


def test_patch_delete_removes_a_map() -> None:
    result = smp(deployment(), template_patch({"nodeSelector": {"$patch": "delete"}}))
    assert "nodeSelector" not in pod_spec(result)


def test_patch_merge_in_a_map_is_the_default() -> None:
    result = smp(deployment(), {"metadata": {"labels": {"$patch": "merge", "x": "1"}}})
    assert result["metadata"]["labels"] == {"app": "web", "tier": "frontend", "x": "1"}


def test_unknown_map_directive_is_rejected() -> None:
    with pytest.raises(PatchError, match="unknown patch type"):
        smp(deployment(), {"metadata": {"labels": {"$patch": "nuke"}}})


def test_patch_delete_at_the_root_empties_the_object() -> None:
    assert smp(deployment(), {"$patch": "delete"}) == {}


def test_retain_keys_switches_rolling_update_to_recreate() -> None:
    # What `kubectl apply` sends when the strategy type changes.
    result = smp(deployment(), {"spec": {"strategy": {
        "$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None,
    }}})
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    plain = smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"],
                                                     "type": "Recreate"}}})
    assert plain["spec"]["strategy"] == {"type": "Recreate"}


def test_without_retain_keys_rolling_update_survives() -> None:
    result = smp(deployment(), {"spec": {"strategy": {"type": "Recreate"}}})
    assert result["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%",
                                                          "maxUnavailable": "25%"}


def test_retain_keys_on_a_volume_switches_its_source() -> None:
    result = smp(deployment(), template_patch({"volumes": [{
        "name": "cache", "$retainKeys": ["name", "hostPath"],
        "hostPath": {"path": "/var/cache/nginx"},
    }]}))
    assert pod_spec(result)["volumes"][1] == {"name": "cache",
                                              "hostPath": {"path": "/var/cache/nginx"}}


def test_retain_keys_must_name_every_patched_field() -> None:
    with pytest.raises(PatchError, match=r"\$retainKeys"):
        smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate",
                                                 "rollingUpdate": {"maxSurge": 1}}}})


# ---------------------------------------------------------------------------------------------
# strategic merge patch: primitive lists and ordering


def test_finalizers_are_unioned() -> None:
    result = smp(deployment(), {"metadata": {"finalizers": [
        "example.com/protect", "foregroundDeletion"]}})
    assert result["metadata"]["finalizers"] == ["example.com/protect", "foregroundDeletion"]


def test_new_finalizer_goes_first_like_kubernetes() -> None:
    result = smp(deployment(), {"metadata": {"finalizers": ["foregroundDeletion"]}})
    assert result["metadata"]["finalizers"] == ["foregroundDeletion", "example.com/protect"]


def test_delete_from_primitive_list_removes_finalizers() -> None:
    doc = deployment()
    doc["metadata"]["finalizers"] = ["a.example.com/x", "b.example.com/y", "c.example.com/z"]
    result = smp(doc, {"metadata": {
        "$deleteFromPrimitiveList/finalizers": ["b.example.com/y", "not-present"]}})
    assert result["metadata"]["finalizers"] == ["a.example.com/x", "c.example.com/z"]


def test_delete_from_primitive_list_works_on_atomic_lists_too() -> None:
    # k8s #110472: the deletion list deletes whatever the field's strategy.
    result = smp(deployment(), template_patch({"containers": [{
        "name": "log-shipper", "$deleteFromPrimitiveList/command": ["-c"],
    }]}))
    assert container(result, "log-shipper")["command"] == [
        "sh", "tail -F /var/log/nginx/access.log"]


def test_delete_from_primitive_list_of_a_missing_field_is_a_no_op() -> None:
    result = smp(pod(), {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}, "Pod")
    assert "finalizers" not in result["metadata"]


def test_set_element_order_reorders_a_list() -> None:
    result = smp(deployment(), template_patch({"$setElementOrder/containers": [
        {"name": "log-shipper"}, {"name": "nginx"}]}))
    assert names(pod_spec(result)["containers"]) == ["log-shipper", "nginx"]
    assert container(result, "nginx") == container(deployment(), "nginx")


def test_set_element_order_with_changes_as_kubectl_apply_sends_it() -> None:
    result = smp(deployment(), template_patch({
        "$setElementOrder/containers": [{"name": "log-shipper"}, {"name": "nginx"},
                                        {"name": "redis"}],
        "containers": [{"name": "nginx", "image": "nginx:1.26"},
                       {"name": "redis", "image": "redis:7"}],
    }))
    assert names(pod_spec(result)["containers"]) == ["log-shipper", "nginx", "redis"]
    assert container(result, "nginx")["image"] == "nginx:1.26"


def test_set_element_order_weaves_in_unlisted_elements_by_live_position() -> None:
    # MODE is not listed: it keeps its live position relative to the listed elements.
    result = smp(deployment(), template_patch({"containers": [{
        "name": "nginx", "$setElementOrder/env": [{"name": "WORKERS"}, {"name": "LOG_LEVEL"}],
    }]}))
    assert names(container(result, "nginx")["env"]) == ["MODE", "WORKERS", "LOG_LEVEL"]


def test_set_element_order_of_primitives() -> None:
    doc = deployment()
    doc["metadata"]["finalizers"] = ["a", "b", "c"]
    result = smp(doc, {"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"]}})
    assert result["metadata"]["finalizers"] == ["c", "b", "a"]


def test_set_element_order_must_agree_with_the_patch_list() -> None:
    with pytest.raises(PatchError, match="doesn't match"):
        smp(deployment(), template_patch({
            "$setElementOrder/containers": [{"name": "log-shipper"}],
            "containers": [{"name": "nginx", "image": "nginx:1.26"}],
        }))


def test_mixed_element_types_are_rejected() -> None:
    with pytest.raises(PatchError, match="not identical"):
        smp(deployment(), {"metadata": {"finalizers": [1]}})


# ---------------------------------------------------------------------------------------------
# strategic merge patch: new fields, errors


def test_directives_inside_new_fields_are_applied_not_stored() -> None:
    result = smp(deployment(), template_patch({
        "initContainers": [
            {"name": "migrate", "image": "example/migrate:1"},
            {"name": "gone", "$patch": "delete"},
        ],
        "securityContext": {"$retainKeys": ["runAsNonRoot"], "runAsNonRoot": True},
        "dnsConfig": {"$patch": "delete"},
        "affinity": {"nodeAffinity": {"$patch": "replace", "x": {"y": None}}},
    }))
    spec = pod_spec(result)
    assert not has_directive(result)
    assert spec["initContainers"] == [{"name": "migrate", "image": "example/migrate:1"}]
    assert spec["securityContext"] == {"runAsNonRoot": True}
    assert "dnsConfig" not in spec
    assert spec["affinity"] == {"nodeAffinity": {"x": {}}}


def test_value_of_another_type_replaces() -> None:
    result = smp(deployment(), {"metadata": {"annotations": "oops"}})
    assert result["metadata"]["annotations"] == "oops"


@pytest.mark.parametrize("bad", [
    {"metadata": {"$deleteFromPrimitiveList": ["x"]}},
    {"metadata": {"$setElementOrder/finalizers": "a"}},
    {"metadata": {"$retainKeys": "name"}},
])
def test_malformed_directives_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(PatchError):
        smp(deployment(), bad)


def test_unsupported_kind_and_non_object_patch_are_rejected() -> None:
    with pytest.raises(PatchError, match="not supported"):
        apply_strategic_merge_patch(deployment(), {}, "Widget")
    with pytest.raises(PatchError, match="JSON object"):
        apply_strategic_merge_patch(deployment(), [], "Deployment")  # type: ignore[arg-type]


def test_deeply_nested_patch_is_a_patch_error() -> None:
    patch: dict[str, Any] = {}
    for _ in range(5000):
        patch = {"x": patch}
    with pytest.raises(PatchError, match="nested"):
        smp(deployment(), {"metadata": {"annotations": patch}})


# ---------------------------------------------------------------------------------------------
# JSON merge patch


def test_merge_patch_merges_maps_and_deletes_nulls() -> None:
    result = apply_merge_patch(deployment(), {
        "metadata": {"labels": {"tier": None, "track": "canary"}},
        "spec": {"replicas": 1, "paused": True},
    })
    assert result["metadata"]["labels"] == {"app": "web", "track": "canary"}
    assert result["spec"]["replicas"] == 1
    assert result["spec"]["paused"] is True
    assert result["spec"]["strategy"] == deployment()["spec"]["strategy"]


def test_merge_patch_replaces_lists() -> None:
    result = apply_merge_patch(deployment(), template_patch(
        {"containers": [{"name": "nginx", "image": "nginx:1.26"}]}))
    assert pod_spec(result)["containers"] == [{"name": "nginx", "image": "nginx:1.26"}]


def test_merge_patch_drops_nulls_in_new_objects_and_replaces_scalars_with_objects() -> None:
    result = apply_merge_patch({"a": "text"}, {"a": {"b": 1, "c": None}, "d": {"e": None}})
    assert result == {"a": {"b": 1}, "d": {}}


def test_merge_patch_must_be_an_object() -> None:
    for bad in ([], "x", None, 3):
        with pytest.raises(PatchError):
            apply_merge_patch(deployment(), bad)


# ---------------------------------------------------------------------------------------------
# JSON patch


def test_json_patch_add_remove_replace() -> None:
    result = apply_json_patch(deployment(), [
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "add", "path": "/metadata/labels/track", "value": "stable"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "add", "path": "/spec/template/spec/containers/-",
         "value": {"name": "redis", "image": "redis:7"}},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
        {"op": "add", "path": "/metadata/annotations/example.com~1owner", "value": "team-a"},
    ])
    assert result["spec"]["replicas"] == 5
    assert result["metadata"]["labels"] == {"app": "web", "track": "stable"}
    assert names(pod_spec(result)["containers"]) == ["nginx", "redis"]
    assert result["metadata"]["annotations"]["example.com/owner"] == "team-a"


def test_json_patch_test_op() -> None:
    ok = apply_json_patch(deployment(), [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "4711"},
        {"op": "replace", "path": "/spec/replicas", "value": 0},
    ])
    assert ok["spec"]["replicas"] == 0
    with pytest.raises(PatchError):
        apply_json_patch(deployment(), [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
            {"op": "replace", "path": "/spec/replicas", "value": 0},
        ])


@pytest.mark.parametrize("bad", [
    {"patch": "replace"},
    [{"op": "frobnicate", "path": "/spec"}],
    [{"op": "add", "value": 1}],
    [{"op": "remove", "path": "/spec/absent"}],
    [{"op": "replace", "path": "spec/replicas", "value": 1}],
    [{"op": "add", "path": "/spec/template/spec/containers/9", "value": {}}],
    [{"op": "add", "path": 5, "value": 1}],
    ["not-an-operation"],
    [{"op": "replace", "path": "", "value": [1, 2]}],
])
def test_json_patch_errors(bad: Any) -> None:
    with pytest.raises(PatchError):
        apply_json_patch(deployment(), bad)


# ---------------------------------------------------------------------------------------------
# inputs are never mutated, results share nothing with them

STRATEGIC = template_patch({
    "$setElementOrder/containers": [{"name": "log-shipper"}, {"name": "nginx"}],
    "containers": [
        {"name": "nginx", "image": "nginx:1.26", "env": [{"name": "MODE", "value": None}]},
    ],
    "volumes": [{"name": "cache", "$patch": "delete"}],
    "nodeSelector": {"$patch": "replace", "disktype": "hdd"},
    "tolerations": [{"key": "gpu", "operator": "Exists"}],
})
STRATEGIC["metadata"] = {"labels": {"tier": None},
                         "$deleteFromPrimitiveList/finalizers": ["example.com/protect"]}
STRATEGIC["spec"]["strategy"] = {"$retainKeys": ["type"], "type": "Recreate"}

APPLIERS: list[tuple[Callable[[dict[str, Any], Any], dict[str, Any]], Any]] = [
    (lambda d, p: apply_strategic_merge_patch(d, p, "Deployment"), STRATEGIC),
    (apply_merge_patch, {"metadata": {"labels": {"tier": None}}, "spec": {
        "template": {"spec": {"tolerations": [{"key": "gpu"}]}}}}),
    (apply_json_patch, [
        {"op": "add", "path": "/spec/template/spec/tolerations/-", "value": {"key": "gpu"}},
        {"op": "remove", "path": "/metadata/labels/tier"},
    ]),
]


@pytest.mark.parametrize(("apply", "patch"), APPLIERS)
def test_inputs_are_not_mutated(apply: Callable[[dict[str, Any], Any], dict[str, Any]],
                                patch: Any) -> None:
    doc, patch_copy = deployment(), copy.deepcopy(patch)
    result = apply(doc, patch)
    assert doc == deployment()
    assert patch == patch_copy
    assert result != doc


@pytest.mark.parametrize(("apply", "patch"), APPLIERS)
def test_results_share_nothing_with_inputs(
        apply: Callable[[dict[str, Any], Any], dict[str, Any]], patch: Any) -> None:
    doc, patch_copy = deployment(), copy.deepcopy(patch)
    result = apply(doc, patch)
    pod_spec(result)["tolerations"][-1]["key"] = "changed"
    result["spec"]["selector"]["matchLabels"]["app"] = "changed"
    assert doc == deployment()
    assert patch == patch_copy


def test_strategic_patch_of_everything_at_once() -> None:
    result = apply_strategic_merge_patch(deployment(), STRATEGIC, "Deployment")
    spec = pod_spec(result)
    assert names(spec["containers"]) == ["log-shipper", "nginx"]
    assert names(container(result, "nginx")["env"]) == ["MODE", "LOG_LEVEL", "WORKERS"]
    assert container(result, "nginx")["env"][0] == {"name": "MODE"}
    assert names(spec["volumes"]) == ["conf"]
    assert spec["nodeSelector"] == {"disktype": "hdd"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert result["metadata"]["labels"] == {"app": "web"}
    assert result["metadata"]["finalizers"] == []
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    assert not has_directive(result)
