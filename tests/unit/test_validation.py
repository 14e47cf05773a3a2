"""Validation of realistic objects: each common mistake yields Kubernetes' exact message."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dockyard.api import kinds
from dockyard.api.resources import by_kind

GROUPS = {"Deployment": "apps", "ReplicaSet": "apps", "Job": "batch",
          "Lease": "coordination.k8s.io", "EndpointSlice": "discovery.k8s.io"}

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
QUALIFIED_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
ENV_MSG = (
    "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', "
    "or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or "
    "'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')")
POD_UPDATE_MSG = (
    "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set "
    "to 1 if it was previously negative)\n")


def info_for(obj: dict[str, Any]):
    return by_kind(GROUPS.get(obj["kind"], ""), obj["kind"])


def errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Default then validate, as the API server does, and return the messages."""
    info = info_for(obj)
    kinds.apply_defaults(info, obj)
    return [e.message() for e in kinds.validate(info, obj, old)]


def stored(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server would store it after a successful create."""
    obj = copy.deepcopy(obj)
    assert errors(obj) == []
    obj["metadata"]["resourceVersion"] = "1"
    return obj


def pod(**spec: Any) -> dict[str, Any]:
    base = {"containers": [{"name": "app", "image": "nginx:1.25",
                            "ports": [{"containerPort": 80, "name": "http"}]}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "default", "uid": "pod-uid",
                         "labels": {"app": "web"}},
            "spec": {**base, **spec}}


def container(pod_obj: dict[str, Any]) -> dict[str, Any]:
    return pod_obj["spec"]["containers"][0]


def deployment(**spec: Any) -> dict[str, Any]:
    base = {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "tier": "frontend"}},
                         "spec": {"containers": [
                             {"name": "nginx", "image": "nginx:1.25",
                              "ports": [{"containerPort": 80}],
                              "env": [{"name": "MODE", "value": "blue"},
                                      {"name": "POD_IP", "valueFrom": {
                                          "fieldRef": {"fieldPath": "status.podIP"}}}],
                              "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                            "limits": {"cpu": "500m", "memory": "128Mi"}},
                              "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                              "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
                             "volumes": [{"name": "cache", "emptyDir": {}}]}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "dep-uid"},
            "spec": {**base, **spec}}


def job(**spec: Any) -> dict[str, Any]:
    base = {"template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "pi", "image": "perl:5.34", "command": ["perl", "-e", "print 1"]}]}}}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default", "uid": "job-uid"},
            "spec": {**base, **spec}}


def service(**spec: Any) -> dict[str, Any]:
    base = {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
            "spec": {**base, **spec}}


# ---------------------------------------------------------------------- valid objects


def test_valid_objects_have_no_errors() -> None:
    assert errors(pod()) == []
    assert errors(deployment()) == []
    assert errors(job()) == []
    assert errors(service()) == []
    assert errors(service(type="NodePort", ports=[{"port": 80, "nodePort": 30080}])) == []
    assert errors(service(clusterIP="None")) == []


def test_valid_simple_kinds_have_no_errors() -> None:
    objs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "cfg", "namespace": "default"},
         "data": {"app.properties": "a=1", "KEY_1": "x"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
         "data": {"password": "aHVudGVyMg=="}, "stringData": {"user": "admin"}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "builder", "namespace": "default"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
         "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]},
         "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}},
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": {"name": "leader", "namespace": "kube-system"},
         "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web",
                                                               "namespace": "default"},
         "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 8080}]}]},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
         "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}}],
         "ports": [{"name": "http", "port": 8080}]},
        {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web-0.17a", "namespace":
                                                           "default"},
         "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default"},
         "reason": "Scheduled", "message": "ok", "type": "Normal"},
    ]
    for obj in objs:
        assert errors(obj) == [], obj["kind"]


# ------------------------------------------------------------------------- ObjectMeta


def test_name_is_required_unless_generate_name() -> None:
    p = pod()
    del p["metadata"]["name"]
    assert errors(copy.deepcopy(p)) == [
        "metadata.name: Required value: name or generateName is required"]
    p["metadata"]["generateName"] = "web-"
    assert errors(p) == []


def test_names_follow_kubernetes_rules() -> None:
    p = pod()
    p["metadata"]["name"] = "Bad_Name"
    assert errors(p) == [f'metadata.name: Invalid value: "Bad_Name": {SUBDOMAIN_MSG}']
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}}
    assert errors(ns) == ['metadata.name: Invalid value: "team.a": must not contain dots']
    long_name = "a" * 254
    p = pod()
    p["metadata"]["name"] = long_name
    assert errors(p) == [f'metadata.name: Invalid value: "{long_name}": '
                         "must be no more than 253 characters"]
    svc = service()
    svc["metadata"]["name"] = "1web"  # Services are DNS-1035 labels: must start with a letter
    assert errors(svc) == [
        'metadata.name: Invalid value: "1web": a DNS-1035 label must consist of lower case '
        "alphanumeric characters or '-', start with an alphabetic character, and end with an "
        "alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
        "'[a-z]([-a-z0-9]*[a-z0-9])?')"]


def test_namespace_required_for_namespaced_and_forbidden_for_cluster_kinds() -> None:
    p = pod()
    del p["metadata"]["namespace"]
    assert errors(p) == ["metadata.namespace: Required value"]
    p = pod()
    p["metadata"]["namespace"] = "Prod"
    assert errors(p) == [f'metadata.namespace: Invalid value: "Prod": {LABEL_MSG}']
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "namespace": "x"}}
    info = by_kind("", "Node")
    assert [e.message() for e in kinds.validate(info, copy.deepcopy(node))] == [
        "metadata.namespace: Forbidden: not allowed on this type"]
    kinds.apply_defaults(info, node)  # like the real API server, defaulting drops it
    assert "namespace" not in node["metadata"]


def test_labels_annotations_and_finalizers() -> None:
    p = pod()
    p["metadata"]["labels"] = {"-bad": "ok", "app": "white space"}
    assert errors(p) == [f'metadata.labels: Invalid value: "-bad": {QUALIFIED_MSG}',
                         f'metadata.labels: Invalid value: "white space": {LABEL_VALUE_MSG}']
    p = pod()
    p["metadata"]["labels"] = {"app": "x" * 64}
    assert errors(p) == [f'metadata.labels: Invalid value: "{"x" * 64}": '
                         "must be no more than 63 characters"]
    p = pod()
    p["metadata"]["annotations"] = {"note": "x" * (256 * 1024)}
    assert errors(p) == ["metadata.annotations: Too long: must have at most 262144 bytes"]
    p = pod()
    p["metadata"]["finalizers"] = ["cleanup", "example.com/cleanup"]
    assert errors(p) == ['metadata.finalizers[0]: Invalid value: "cleanup": name is neither a '
                         "standard finalizer name nor is it fully qualified"]


def test_owner_references() -> None:
    p = pod()
    p["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                         "name": "web-1", "uid": ""}]
    assert errors(p) == ['metadata.ownerReferences.uid: Invalid value: "": must not be empty']


# ---------------------------------------------------------------------- pods: containers


def test_image_and_containers_are_required() -> None:
    p = pod()
    del container(p)["image"]
    assert errors(p) == ["spec.containers[0].image: Required value"]
    assert errors(pod(containers=[])) == ["spec.containers: Required value"]


def test_container_names() -> None:
    p = pod(initContainers=[{"name": "app", "image": "busybox"}])
    assert errors(p) == ['spec.initContainers[0].name: Duplicate value: "app"']
    p = pod()
    container(p)["name"] = "App"
    assert errors(p) == [f'spec.containers[0].name: Invalid value: "App": {LABEL_MSG}']


def test_container_ports() -> None:
    p = pod()
    container(p)["ports"] = [{"containerPort": 70000, "protocol": "HTTP"},
                             {"containerPort": 81, "name": "metrics-endpoint-1"},
                             {"containerPort": 82, "name": "web"}, {"containerPort": 83,
                                                                    "name": "web"}]
    assert errors(p) == [
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and "
        "65535, inclusive",
        'spec.containers[0].ports[0].protocol: Unsupported value: "HTTP": supported values: '
        '"SCTP", "TCP", "UDP"',
        'spec.containers[0].ports[1].name: Invalid value: "metrics-endpoint-1": must be no more '
        "than 15 characters",
        'spec.containers[0].ports[3].name: Duplicate value: "web"']


def test_env_names_and_value_from() -> None:
    p = pod()
    container(p)["env"] = [
        {"name": "1ST", "value": "x"},
        {"name": "A", "valueFrom": {}},
        {"name": "B", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "spec.restartPolicy"}}},
    ]
    assert errors(p) == [
        f'spec.containers[0].env[0].name: Invalid value: "1ST": {ENV_MSG}',
        'spec.containers[0].env[1].valueFrom: Invalid value: "": must specify one of: '
        "`fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        'spec.containers[0].env[2].valueFrom: Invalid value: "": may not be specified when '
        "`value` is not empty",
        'spec.containers[0].env[3].valueFrom.fieldRef.fieldPath: Unsupported value: '
        '"spec.restartPolicy": supported values: "metadata.name", "metadata.namespace", '
        '"metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.hostIP", '
        '"status.hostIPs", "status.podIP", "status.podIPs"']


def test_volumes_and_mounts() -> None:
    p = pod(volumes=[{"name": "cfg", "configMap": {"name": "app"}, "secret": {"secretName": "s"}},
                     {"name": "data", "persistentVolumeClaim": {}},
                     {"name": "tmp", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}])
    container(p)["volumeMounts"] = [{"name": "missing", "mountPath": "/x"},
                                    {"name": "tmp", "mountPath": "/x"}]
    assert errors(p) == [
        "spec.volumes[0].configMap: Forbidden: may not specify more than 1 volume type",
        "spec.volumes[1].persistentVolumeClaim.claimName: Required value",
        'spec.volumes[3].name: Duplicate value: "tmp"',
        'spec.containers[0].volumeMounts[0].name: Not found: "missing"',
        'spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/x": must be unique']


def test_pod_policies_and_node_selector() -> None:
    assert errors(pod(restartPolicy="Sometimes")) == [
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", '
        '"OnFailure", "Never"']
    assert errors(pod(dnsPolicy="Google")) == [
        'spec.dnsPolicy: Unsupported value: "Google": supported values: '
        '"ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"']
    assert errors(pod(nodeSelector={"disk": "fast ssd"})) == [
        f'spec.nodeSelector: Invalid value: "fast ssd": {LABEL_VALUE_MSG}']
    assert errors(pod(dnsPolicy="None")) == [
        "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"]


def test_resources() -> None:
    p = pod()
    container(p)["resources"] = {"limits": {"cpu": "1", "memory": "lots"},
                                 "requests": {"cpu": "2", "gpu": "1"}}
    assert errors(p) == [
        'spec.containers[0].resources.limits[memory]: Invalid value: "lots": quantities must '
        "match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        'spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal '
        "to cpu limit of 1",
        'spec.containers[0].resources.requests[gpu]: Invalid value: "gpu": must be a standard '
        "resource type or fully qualified",
        'spec.containers[0].resources.requests[gpu]: Invalid value: "gpu": must be a standard '
        "resource for containers"]
    p = pod()
    container(p)["resources"] = {"requests": {"memory": "-1Gi", "nvidia.com/gpu": "1"}}
    assert errors(p) == [
        'spec.containers[0].resources.requests[memory]: Invalid value: "-1Gi": must be greater '
        "than or equal to 0",
        "spec.containers[0].resources.limits: Required value: Limit must be set for non "
        "overcommitable resources"]


def test_probes() -> None:
    p = pod()
    container(p)["livenessProbe"] = {"initialDelaySeconds": 5}
    container(p)["readinessProbe"] = {"exec": {"command": ["true"]},
                                      "tcpSocket": {"port": 80}}
    container(p)["startupProbe"] = {"httpGet": {"port": "http"}, "successThreshold": 2}
    assert errors(p) == [
        "spec.containers[0].livenessProbe: Required value: must specify a handler type",
        "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 "
        "handler type",
        "spec.containers[0].startupProbe.successThreshold: Invalid value: 2: must be 1"]


def test_init_containers_may_not_have_probes() -> None:
    p = pod(initContainers=[{"name": "init", "image": "busybox",
                             "readinessProbe": {"exec": {"command": ["true"]}}}])
    assert errors(p) == ["spec.initContainers[0].readinessProbe: Forbidden: may not be set for "
                         "init containers without restartPolicy=Always"]


def test_tolerations() -> None:
    p = pod(tolerations=[{"key": "gpu", "operator": "Maybe"},
                         {"key": "gpu", "operator": "Exists", "value": "yes"},
                         {"operator": "Equal", "value": "x"},
                         {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}])
    assert errors(p) == [
        'spec.tolerations[0].operator: Unsupported value: "Maybe": supported values: "Equal", '
        '"Exists"',
        'spec.tolerations[1].operator: Invalid value: core.Toleration{Key:"gpu", '
        'Operator:"Exists", Value:"yes", Effect:"", TolerationSeconds:(*int64)(nil)}: value must '
        "be empty when `operator` is 'Exists'",
        'spec.tolerations[2].operator: Invalid value: "Equal": operator must be Exists when `key` '
        'is empty, which means "match all values and all keys"',
        "spec.tolerations[3].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' "
        "when `tolerationSeconds` is set"]


def test_affinity_and_selectors() -> None:
    term = {"labelSelector": {"matchExpressions": [
        {"key": "app", "operator": "In"}, {"key": "tier", "operator": "Exists",
                                           "values": ["x"]},
        {"key": "zone", "operator": "Near", "values": ["a"]}]}}
    p = pod(affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                          [term]}})
    base = ("spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]")
    assert errors(p) == [
        f"{base}.labelSelector.matchExpressions[0].values: Required value: must be specified "
        "when `operator` is 'In' or 'NotIn'",
        f"{base}.labelSelector.matchExpressions[1].values: Forbidden: may not be specified when "
        "`operator` is 'Exists' or 'DoesNotExist'",
        f'{base}.labelSelector.matchExpressions[2].operator: Invalid value: "Near": not a valid '
        "selector operator",
        f"{base}.topologyKey: Required value: can not be empty",
        f'{base}.topologyKey: Invalid value: "": name part must be non-empty',
        f'{base}.topologyKey: Invalid value: "": {QUALIFIED_MSG}']


# ------------------------------------------------------------------- Deployment, RS, Job


def test_deployment_selector_must_match_template() -> None:
    d = deployment(selector={"matchLabels": {"app": "api"}})
    assert errors(d) == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web", '
        '"tier":"frontend"}: `selector` does not match template `labels`']
    d = deployment()
    d["spec"]["template"]["metadata"]["labels"] = {"app": "x"}
    d["spec"]["selector"] = {"matchLabels": {"app": "y"}}
    assert errors(d) == ['spec.template.metadata.labels: Invalid value: '
                         'map[string]string{"app":"x"}: `selector` does not match template '
                         '`labels`']


def test_deployment_selector_required_and_not_empty() -> None:
    d = deployment()
    del d["spec"]["selector"]
    assert errors(d) == [
        "spec.selector: Required value",
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web", '
        '"tier":"frontend"}: `selector` does not match template `labels`']
    assert errors(deployment(selector={})) == [
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for "
        "deployment"]


def test_deployment_template_restart_policy_and_counts() -> None:
    d = deployment(replicas=-1)
    d["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert errors(d) == [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: '
        '"Always"']


def test_deployment_rolling_update_parameters() -> None:
    d = deployment(strategy={"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
    assert errors(d) == [
        'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, '
        'IntVal:0, StrVal:""}: may not be 0 when `maxSurge` is 0']
    d = deployment(strategy={"rollingUpdate": {"maxSurge": "lots", "maxUnavailable": "120%"}})
    assert errors(d) == [
        'spec.strategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:1, '
        'IntVal:0, StrVal:"lots"}: a valid percent string must be a numeric string followed by '
        "an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
        'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, '
        'IntVal:0, StrVal:"120%"}: must not be greater than 100%']
    d = deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})
    assert errors(d) == ["spec.strategy.rollingUpdate: Forbidden: may not be specified when "
                         "strategy `type` is 'Recreate'"]


def test_pod_template_errors_carry_the_template_path() -> None:
    d = deployment()
    d["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    assert errors(d) == ["spec.template.spec.containers[1].image: Required value"]
    d = deployment()
    d["spec"]["template"]["metadata"]["labels"]["bad key"] = "x"
    assert f'spec.template.labels: Invalid value: "bad key": {QUALIFIED_MSG}' in errors(d)


def test_replicaset_selector_rules() -> None:
    rs = deployment(selector={"matchLabels": {"app": "api"}})
    rs["kind"] = "ReplicaSet"
    del rs["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert errors(rs) == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web", '
        '"tier":"frontend"}: `selector` does not match template `labels`']


def test_job_restart_policy() -> None:
    j = job()
    del j["spec"]["template"]["spec"]["restartPolicy"]  # defaults to Always
    assert errors(j) == ['spec.template.spec.restartPolicy: Required value: valid values: '
                         '"OnFailure", "Never"']
    j = job()
    j["spec"]["template"]["spec"]["restartPolicy"] = "Sometimes"
    assert errors(j) == [
        'spec.template.spec.restartPolicy: Unsupported value: "Sometimes": supported values: '
        '"Always", "OnFailure", "Never"',
        'spec.template.spec.restartPolicy: Unsupported value: "Sometimes": supported values: '
        '"OnFailure", "Never"']


def test_job_generated_selector_conflicts() -> None:
    j = job()
    j["spec"]["template"]["metadata"] = {"labels": {"job-name": "other"}}
    assert errors(j) == [
        'spec.template.metadata.labels[job-name]: Invalid value: map[string]string{'
        '"batch.kubernetes.io/controller-uid":"job-uid", "batch.kubernetes.io/job-name":"pi", '
        '"controller-uid":"job-uid", "job-name":"other"}: must be \'pi\'']
    j = job(selector={"matchLabels": {"app": "pi"}})
    j["spec"]["template"]["metadata"] = {"labels": {"app": "pi"}}
    assert errors(j) == [
        'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{'
        '"app":"pi", "batch.kubernetes.io/controller-uid":"job-uid"}, '
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: `selector` not auto-generated"]
    manual = job(manualSelector=True, selector={"matchLabels": {"app": "pi"}})
    manual["spec"]["template"]["metadata"] = {"labels": {"app": "pi"}}
    assert errors(manual) == []


def test_job_counts() -> None:
    assert errors(job(parallelism=-1, backoffLimit=-2)) == [
        "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
        "spec.backoffLimit: Invalid value: -2: must be greater than or equal to 0"]
    assert errors(job(completionMode="Indexed", completions=None, parallelism=2)) == [
        "spec.completions: Required value: when completion mode is Indexed"]


# ----------------------------------------------------------------------------- Service


def test_service_ports() -> None:
    assert errors(service(ports=[{"port": 0}])) == [
        "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive"]
    assert errors(service(ports=[{"port": 80}, {"port": 443}])) == [
        "spec.ports[0].name: Required value", "spec.ports[1].name: Required value"]
    assert errors(service(ports=[{"name": "web", "port": 80},
                                 {"name": "web", "port": 80}])) == [
        'spec.ports[1].name: Duplicate value: "web"',
        'spec.ports[1]: Duplicate value: core.ServicePort{Name:"", Protocol:"TCP", '
        'AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, '
        'StrVal:""}, NodePort:0}']
    assert errors(service(ports=[])) == ["spec.ports: Required value"]


def test_service_types_and_node_ports() -> None:
    assert errors(service(type="Internal")) == [
        'spec.type: Unsupported value: "Internal": supported values: "ClusterIP", '
        '"ExternalName", "LoadBalancer", "NodePort"']
    assert errors(service(ports=[{"port": 80, "nodePort": 30080}])) == [
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    # The node-port range is the allocator's (a server flag), not validation's:
    # tests/integration/test_service_alloc.py checks its message.
    assert errors(service(type="NodePort", ports=[{"port": 80, "nodePort": 80}])) == []
    assert errors(service(type="NodePort", clusterIP="None")) == [
        "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort "
        "services"]
    assert errors(service(type="ExternalName", externalName="db.example.com", ports=[])) == []
    assert errors(service(clusterIP="10.96.0.500")) == [
        'spec.clusterIPs[0]: Invalid value: "10.96.0.500": must be a valid IP address, (e.g. '
        "10.9.8.7 or 2001:db8::ffff)"]


# ----------------------------------------------------------------------- simple kinds


def test_config_map_and_secret_keys() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c",
                                                                "namespace": "default"},
          "data": {"bad key!": "x"}}
    assert errors(cm) == [
        'data[bad key!]: Invalid value: "bad key!": a valid config key must consist of '
        "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
        "'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s",
                                                                 "namespace": "default"},
              "data": {"token": "not base64!"}}
    assert errors(secret) == ['data[token]: Invalid value: "<secret contents redacted>": '
                              "illegal base64 data at input byte 3"]
    tls = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": "t", "namespace": "default"}, "data": {"tls.crt": "eA=="}}
    assert errors(tls) == ["data[tls.key]: Required value"]


def test_simple_kind_rules() -> None:
    eps = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "e", "namespace": "default"}, "endpoints": []}
    assert errors(eps) == ["addressType: Required value"]
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "l", "namespace": "default"},
             "spec": {"leaseDurationSeconds": 0}}
    assert errors(lease) == ["spec.leaseDurationSeconds: Invalid value: 0: must be greater "
                             "than 0"]
    ep = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e",
                                                                "namespace": "default"},
          "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 80}]}]}
    assert errors(ep) == ['subsets[0].addresses[0].ip: Invalid value: "127.0.0.1": may not be in '
                          "the loopback range (127.0.0.0/8, ::1/128)"]
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"},
          "spec": {"finalizers": ["cleanup"]}}
    assert errors(ns) == ['spec.finalizers: Invalid value: "cleanup": name is neither a '
                          "standard finalizer name nor is it fully qualified"]
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "a"},
             "involvedObject": {"kind": "Pod", "name": "p", "namespace": "b"}}
    assert errors(event) == ['involvedObject.namespace: Invalid value: "b": does not match '
                             "event.namespace"]
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "a", "effect": "Sometimes"}]}}
    assert errors(node) == ['metadata.taints[0].effect: Unsupported value: "Sometimes": '
                            'supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"']


# ------------------------------------------------------------------------------ updates


def test_pod_update_may_only_change_images_and_friends() -> None:
    old = stored(pod(activeDeadlineSeconds=100))
    new = copy.deepcopy(old)
    container(new)["image"] = "nginx:1.26"
    new["spec"]["activeDeadlineSeconds"] = 50
    new["spec"]["tolerations"].append({"key": "gpu", "operator": "Exists"})
    assert errors(new, old) == []

    new = copy.deepcopy(old)
    container(new)["ports"][0]["containerPort"] = 8080
    (message,) = errors(new, old)
    assert message.startswith(POD_UPDATE_MSG)
    assert '- \tContainers: [{"name":"app"' in message

    new = copy.deepcopy(old)
    new["spec"]["activeDeadlineSeconds"] = 200
    assert errors(new, old) == ["spec.activeDeadlineSeconds: Invalid value: 200: must be less "
                                "than or equal to previous value"]
    new = copy.deepcopy(old)
    new["spec"]["containers"].append({"name": "two", "image": "busybox"})
    assert errors(new, old) == ["spec.containers: Forbidden: pod updates may not add or remove "
                                "containers"]
    old = stored(pod(tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]))
    new = copy.deepcopy(old)
    new["spec"]["tolerations"][0]["effect"] = "NoExecute"
    assert errors(new, old) == ["spec.tolerations: Forbidden: existing toleration can not be "
                                "modified except its tolerationSeconds"]
    new = copy.deepcopy(old)
    new["spec"]["tolerations"][1]["tolerationSeconds"] = 60  # the one change allowed
    assert errors(new, old) == []


def test_deployment_and_replicaset_selectors_are_immutable() -> None:
    old = stored(deployment())
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "frontend"}}
    new["spec"]["replicas"] = 5
    assert errors(new, old) == [
        'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{'
        '"app":"web", "tier":"frontend"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: '
        "field is immutable"]
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
    assert errors(new, old) == []
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "api"}}
    assert errors(new, old) == [  # the spec errors come first, as in Kubernetes
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web", '
        '"tier":"frontend"}: `selector` does not match template `labels`',
        'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{'
        '"app":"api"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable']


def test_job_selector_template_and_completions_are_immutable() -> None:
    old = stored(job())
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "perl:5.36"
    (message,) = errors(new, old)
    assert message.startswith("spec.template: Invalid value: {")
    assert '"image":"perl:5.36"' in message
    assert message.endswith(": field is immutable")
    new = copy.deepcopy(old)
    new["spec"]["completions"] = 3
    assert errors(new, old) == ["spec.completions: Invalid value: 3: field is immutable"]
    new = copy.deepcopy(old)
    new["spec"]["selector"]["matchLabels"]["extra"] = "x"
    assert "`selector` does not match template `labels`" in "\n".join(errors(new, old))
    assert any(m.endswith("field is immutable") and m.startswith("spec.selector")
               for m in errors(copy.deepcopy(new), old))
    new = copy.deepcopy(old)
    new["spec"]["parallelism"] = 4  # mutable
    assert errors(new, old) == []


def test_service_cluster_ip_is_immutable_once_set() -> None:
    old = stored(service(clusterIP="10.96.0.10"))
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.96.0.20"
    assert errors(new, old) == ['spec.clusterIPs[0]: Invalid value: []string{"10.96.0.20"}: '
                                "may not change once set"]
    new = copy.deepcopy(old)
    del new["spec"]["clusterIP"], new["spec"]["clusterIPs"]  # omitted: kept by the registry
    assert errors(new, old) == []


def test_namespace_name_and_secret_type_are_immutable() -> None:
    old = stored({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
    new = copy.deepcopy(old)
    new["metadata"]["name"] = "b"
    assert errors(new, old) == ['metadata.name: Invalid value: "b": field is immutable']
    old = stored({"apiVersion": "v1", "kind": "Secret", "immutable": True,
                  "metadata": {"name": "s", "namespace": "default"}, "data": {"a": "eA=="}})
    new = copy.deepcopy(old)
    new["type"] = "kubernetes.io/basic-auth"
    new["data"] = {"username": "eA=="}
    assert errors(new, old) == [
        'type: Invalid value: "kubernetes.io/basic-auth": field is immutable',
        "data: Forbidden: field is immutable when `immutable` is set"]


def test_status_updates() -> None:
    info = by_kind("", "Namespace")
    old = stored({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
    new = copy.deepcopy(old)
    new["status"]["phase"] = "Terminating"
    assert [e.message() for e in kinds.validate_status(info, new, old)] == [
        "status.Phase: Invalid value: \"Terminating\": may only be 'Active' if "
        "`deletionTimestamp` is empty"]
    info = by_kind("apps", "Deployment")
    old = stored(deployment())
    new = copy.deepcopy(old)
    new["status"] = {"replicas": 1, "readyReplicas": 2}
    assert [e.message() for e in kinds.validate_status(info, new, old)] == [
        "status.readyReplicas: Invalid value: 2: cannot be greater than status.replicas"]


def test_field_errors_keep_reason_and_field() -> None:
    p = pod()
    del container(p)["image"]
    info = info_for(p)
    kinds.apply_defaults(info, p)
    (err,) = kinds.validate(info, p)
    assert (err.field, err.reason) == ("spec.containers[0].image", "FieldValueRequired")


@pytest.mark.parametrize("mount_name", ["data", "DATA"])
def test_not_found_reason(mount_name: str) -> None:
    p = pod()
    container(p)["volumeMounts"] = [{"name": mount_name, "mountPath": "/d"}]
    info = info_for(p)
    kinds.apply_defaults(info, p)
    (err,) = kinds.validate(info, p)
    assert err.reason == "FieldValueNotFound"
    assert err.message() == f'spec.containers[0].volumeMounts[0].name: Not found: "{mount_name}"'


GARBAGE = [None, 0, -1, "x", "", [], {}, True, [1], {"a": 1}, 3.5]


@pytest.mark.parametrize("make", [pod, deployment, job, service])
def test_wrong_types_never_crash(make: Any) -> None:
    """Real API servers reject these while decoding; we must at least not raise."""
    sample = make()
    for field in list(sample["spec"]):
        for value in GARBAGE:
            obj = make()
            obj["spec"][field] = copy.deepcopy(value)
            errors(obj)
            errors(copy.deepcopy(obj), stored(make()))
    for value in GARBAGE:
        obj = make()
        obj["spec"] = copy.deepcopy(value)
        errors(obj)
