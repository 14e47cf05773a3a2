"""Defaulting as the Kubernetes API server does it, plus quantity parsing."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest

from dockyard.api import kinds
from dockyard.api.pod import compute_qos_class, image_pull_policy
from dockyard.api.quantity import (
    BINARY_SI,
    DECIMAL_EXPONENT,
    DECIMAL_SI,
    QuantityError,
    canonical,
    parse_quantity,
)
from dockyard.api.resources import by_kind


def defaulted(group: str, obj: dict[str, Any]) -> dict[str, Any]:
    kinds.apply_defaults(by_kind(group, obj["kind"]), obj)
    return obj


def a_pod(**spec: Any) -> dict[str, Any]:
    base = {"containers": [{"name": "app", "image": "nginx"}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {**base, **spec}}


# ---------------------------------------------------------------------------- quantities


@pytest.mark.parametrize(("text", "value", "fmt"), [
    ("100m", Fraction(1, 10), DECIMAL_SI),
    ("1Gi", Fraction(2**30), BINARY_SI),
    ("2", Fraction(2), DECIMAL_SI),
    ("1e3", Fraction(1000), DECIMAL_EXPONENT),
    ("500Mi", Fraction(500 * 2**20), BINARY_SI),
    ("1.5", Fraction(3, 2), DECIMAL_SI),
    ("-250m", Fraction(-1, 4), DECIMAL_SI),
    ("12k", Fraction(12000), DECIMAL_SI),
    ("1E", Fraction(10**18), DECIMAL_SI),
    (2, Fraction(2), DECIMAL_SI),
    (0.5, Fraction(1, 2), DECIMAL_SI),
])
def test_parse_quantity(text: Any, value: Fraction, fmt: str) -> None:
    q = parse_quantity(text)
    assert (q.value, q.format) == (value, fmt)


@pytest.mark.parametrize(("text", "expected"), [
    ("100m", "100m"), ("1Gi", "1Gi"), ("2", "2"), ("1e3", "1e3"), ("500Mi", "500Mi"),
    ("1000m", "1"), ("0.5", "500m"), ("1000", "1k"), ("1500", "1500"), ("1024Mi", "1Gi"),
    ("1.5Gi", "1536Mi"), ("0.1Ki", "102400m"), ("0", "0"), ("-1", "-1"), ("1.0", "1"),
    ("0.0000000001", "1n"),  # rounded up to the smallest unit, like Go
])
def test_canonical_quantity(text: str, expected: str) -> None:
    assert canonical(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("abc", "quantities must match the regular expression "
            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
    ("", "quantities must match the regular expression "
         "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
    ("1K", "unable to parse quantity's suffix"),
    ("5e", "unable to parse quantity's suffix"),
    ("1.2.3", "quantities must match the regular expression "
              "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
])
def test_bad_quantities(text: str, message: str) -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity(text)
    assert str(info.value) == message


def test_quantity_arithmetic_for_the_scheduler() -> None:
    cpu = parse_quantity("250m") + parse_quantity("1")
    assert str(cpu) == "1250m" and cpu.milli_value() == 1250
    assert parse_quantity("1Gi") > parse_quantity("1G")
    assert parse_quantity("1000m") == parse_quantity("1")
    assert parse_quantity("1.5").int_value() == 2
    assert parse_quantity("100Mi").int_value() == 104857600
    assert str(parse_quantity("0.0001").round_up(-3)) == "1m"


# -------------------------------------------------------------------------------- pods


def test_pod_defaults() -> None:
    pod = defaulted("", a_pod())
    spec, ctr = pod["spec"], pod["spec"]["containers"][0]
    assert {k: spec[k] for k in ("restartPolicy", "terminationGracePeriodSeconds", "dnsPolicy",
                                 "schedulerName", "securityContext", "enableServiceLinks",
                                 "serviceAccountName", "serviceAccount", "priority",
                                 "preemptionPolicy")} == {
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
        "securityContext": {}, "enableServiceLinks": True, "serviceAccountName": "default",
        "serviceAccount": "default", "priority": 0, "preemptionPolicy": "PreemptLowerPriority"}
    assert ctr == {"name": "app", "image": "nginx", "imagePullPolicy": "Always",
                   "terminationMessagePath": "/dev/termination-log",
                   "terminationMessagePolicy": "File", "resources": {}}
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert spec["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300}]


def test_pod_defaults_keep_what_the_user_set() -> None:
    pod = defaulted("", a_pod(restartPolicy="Never", serviceAccountName="builder",
                              tolerations=[{"operator": "Exists"}],
                              terminationGracePeriodSeconds=0))
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "builder"
    assert spec["tolerations"] == [{"operator": "Exists"}]  # already tolerates everything
    assert spec["terminationGracePeriodSeconds"] == 0


def test_defaults_on_update_keep_what_the_pod_has() -> None:
    """The API server re-defaults merged objects on update (without resourceVersion)."""
    pod = a_pod(serviceAccountName="builder", priority=5)
    pod["status"] = {"phase": "Running", "podIP": "10.0.0.5", "qosClass": "BestEffort"}
    once = defaulted("", pod)
    assert once["status"] == {"phase": "Running", "podIP": "10.0.0.5", "qosClass": "BestEffort"}
    assert (once["spec"]["serviceAccountName"], once["spec"]["priority"]) == ("builder", 5)
    assert defaulted("", copy.deepcopy(once)) == once  # idempotent: no spurious changes


def test_client_status_without_phase_is_replaced() -> None:
    pod = a_pod()
    pod["status"] = {}  # what kubectl sends
    assert defaulted("", pod)["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_ports_probes_and_env_defaults() -> None:
    pod = a_pod()
    pod["spec"]["containers"][0].update({
        "ports": [{"containerPort": 80}],
        "livenessProbe": {"httpGet": {"port": 80}},
        "readinessProbe": {"grpc": {"port": 9000}, "periodSeconds": 5},
        "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/quit"}}},
        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]})
    ctr = defaulted("", pod)["spec"]["containers"][0]
    assert ctr["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert ctr["livenessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                                    "timeoutSeconds": 1, "periodSeconds": 10,
                                    "successThreshold": 1, "failureThreshold": 3}
    assert ctr["readinessProbe"]["periodSeconds"] == 5
    assert ctr["readinessProbe"]["grpc"] == {"port": 9000, "service": ""}
    assert ctr["lifecycle"]["preStop"]["httpGet"] == {"port": 80, "path": "/quit",
                                                      "scheme": "HTTP"}
    assert ctr["env"][0]["valueFrom"]["fieldRef"] == {"fieldPath": "spec.nodeName",
                                                      "apiVersion": "v1"}
    assert ctr["env"][1]["valueFrom"]["resourceFieldRef"]["divisor"] == "0"


def test_volume_defaults() -> None:
    pod = a_pod(volumes=[{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "c"}},
                         {"name": "host", "hostPath": {"path": "/var/log"}},
                         {"name": "token", "projected": {"sources": [
                             {"serviceAccountToken": {"path": "token"}}]}}])
    volumes = defaulted("", pod)["spec"]["volumes"]
    assert volumes[0] == {"name": "scratch", "emptyDir": {}}
    assert volumes[1]["configMap"] == {"name": "c", "defaultMode": 420}
    assert volumes[2]["hostPath"] == {"path": "/var/log", "type": ""}
    assert volumes[3]["projected"] == {"sources": [{"serviceAccountToken": {
        "path": "token", "expirationSeconds": 3600}}], "defaultMode": 420}


def test_resources_requests_from_limits_and_qos() -> None:
    pod = a_pod()
    pod["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1000m", "memory": "0.5Gi"}}
    pod = defaulted("", pod)
    assert pod["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "1", "memory": "512Mi"}}
    assert pod["status"]["qosClass"] == "Guaranteed"

    burstable = a_pod()
    burstable["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "0.0001"}}
    burstable = defaulted("", burstable)
    assert burstable["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1m"}
    assert burstable["status"]["qosClass"] == "Burstable"


@pytest.mark.parametrize(("containers", "expected"), [
    ([{}], "BestEffort"),
    ([{"requests": {"cpu": "1"}}], "Burstable"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}],
     "Guaranteed"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}}],
     "Burstable"),
    ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}, {}],
     "Burstable"),
])
def test_qos_class(containers: list[dict[str, Any]], expected: str) -> None:
    spec = {"containers": [{"name": f"c{i}", "resources": r} for i, r in enumerate(containers)]}
    assert compute_qos_class(spec) == expected


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    ("library/nginx:1.25-alpine", "IfNotPresent"),
    ("registry.k8s.io/pause:3.9", "IfNotPresent"),
    ("localhost:5000/team/app", "Always"),
    ("localhost:5000/team/app:v2", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
    ("nginx:latest@sha256:" + "a" * 64, "Always"),
    ("Nginx", "IfNotPresent"),  # unparsable reference: no tag known
    ("", "IfNotPresent"),
])
def test_image_pull_policy(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy


def test_explicit_pull_policy_is_kept() -> None:
    pod = a_pod()
    pod["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    assert defaulted("", pod)["spec"]["containers"][0]["imagePullPolicy"] == "Never"


# -------------------------------------------------------------------------- workloads


def a_deployment() -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{
                                      "name": "web", "image": "nginx:1.25",
                                      "resources": {"limits": {"cpu": "1"}}}]}}}}


def test_deployment_defaults() -> None:
    spec = defaulted("apps", a_deployment())["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    template = spec["template"]["spec"]
    assert template["restartPolicy"] == "Always"
    assert template["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    # Pod-only defaults and admission do not touch templates.
    for field in ("enableServiceLinks", "tolerations", "serviceAccountName", "priority"):
        assert field not in template
    assert template["containers"][0]["resources"] == {"limits": {"cpu": "1"}}


def test_deployment_recreate_has_no_rolling_update() -> None:
    dep = a_deployment()
    dep["spec"]["strategy"] = {"type": "Recreate"}
    dep["spec"]["replicas"] = 0
    spec = defaulted("apps", dep)["spec"]
    assert spec["strategy"] == {"type": "Recreate"} and spec["replicas"] == 0


def test_replicaset_defaults() -> None:
    rs = a_deployment()
    rs["kind"] = "ReplicaSet"
    spec = defaulted("apps", rs)["spec"]
    assert spec["replicas"] == 1 and "strategy" not in spec


def a_job(**spec: Any) -> dict[str, Any]:
    base = {"template": {"spec": {"restartPolicy": "Never",
                                  "containers": [{"name": "pi", "image": "perl"}]}}}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default", "uid": "1234-abcd"},
            "spec": {**base, **spec}}


def test_job_defaults_and_generated_selector() -> None:
    job = defaulted("batch", a_job())
    spec = job["spec"]
    assert {k: spec[k] for k in ("completions", "parallelism", "backoffLimit", "completionMode",
                                 "suspend", "podReplacementPolicy")} == {
        "completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
        "suspend": False, "podReplacementPolicy": "TerminatingOrFailed"}
    labels = {"batch.kubernetes.io/controller-uid": "1234-abcd",
              "batch.kubernetes.io/job-name": "pi", "controller-uid": "1234-abcd",
              "job-name": "pi"}
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid":
                                                "1234-abcd"}}
    assert spec["template"]["metadata"]["labels"] == labels
    assert job["metadata"]["labels"] == labels
    assert "manualSelector" not in spec


def test_job_parallelism_only_and_user_labels() -> None:
    job = a_job(parallelism=3)
    job["spec"]["template"]["metadata"] = {"labels": {"app": "pi", "job-name": "custom"}}
    job["metadata"]["labels"] = {"team": "math"}
    job = defaulted("batch", job)
    assert "completions" not in job["spec"] and job["spec"]["parallelism"] == 3
    assert job["spec"]["template"]["metadata"]["labels"]["job-name"] == "custom"
    assert job["metadata"]["labels"] == {"team": "math"}


def test_manual_selector_is_left_alone() -> None:
    job = a_job(manualSelector=True, selector={"matchLabels": {"app": "pi"}})
    job["spec"]["template"]["metadata"] = {"labels": {"app": "pi"}}
    spec = defaulted("batch", job)["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "pi"}}
    assert spec["template"]["metadata"]["labels"] == {"app": "pi"}


def test_job_backoff_limit_per_index() -> None:
    spec = defaulted("batch", a_job(completionMode="Indexed", completions=3,
                                    backoffLimitPerIndex=1))["spec"]
    assert spec["backoffLimit"] == 2**31 - 1


# ----------------------------------------------------------------------------- services


def a_service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec}}


def test_service_defaults() -> None:
    svc = defaulted("", a_service())
    assert svc["spec"] == {
        "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
        "sessionAffinity": "None", "type": "ClusterIP", "internalTrafficPolicy": "Cluster",
        "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}
    assert svc["status"] == {"loadBalancer": {}}


def test_service_type_dependent_defaults() -> None:
    spec = defaulted("", a_service(type="LoadBalancer"))["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"
    assert spec["allocateLoadBalancerNodePorts"] is True
    spec = defaulted("", a_service(type="ExternalName", externalName="db.example.com",
                                   ports=[]))["spec"]
    assert "ipFamilies" not in spec and "ipFamilyPolicy" not in spec
    assert "internalTrafficPolicy" not in spec
    spec = defaulted("", a_service(clusterIP="None", selector=None))["spec"]
    assert spec["clusterIPs"] == ["None"] and spec["ipFamilyPolicy"] == "RequireDualStack"
    spec = defaulted("", a_service(clusterIP="fd00::10"))["spec"]
    assert spec["ipFamilies"] == ["IPv6"]
    spec = defaulted("", a_service(sessionAffinity="ClientIP"))["spec"]
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


def test_service_named_target_port_is_kept() -> None:
    spec = defaulted("", a_service(ports=[{"port": 80, "targetPort": "http"}]))["spec"]
    assert spec["ports"][0]["targetPort"] == "http"


# ------------------------------------------------------------------------- simple kinds


def test_namespace_defaults() -> None:
    ns = defaulted("", {"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": "team-a", "namespace": "ignored"}})
    assert ns["metadata"] == {"name": "team-a",
                              "labels": {"kubernetes.io/metadata.name": "team-a"}}
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}
    ns = defaulted("", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"},
                        "spec": {"finalizers": ["example.com/cleanup"]}})
    assert ns["spec"] == {"finalizers": ["example.com/cleanup", "kubernetes"]}


def test_secret_defaults_fold_string_data() -> None:
    secret = defaulted("", {"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "s", "namespace": "default"},
                            "data": {"a": "eA=="}, "stringData": {"password": "hunter2"}})
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"a": "eA==", "password": "aHVudGVyMg=="}
    assert "stringData" not in secret


def test_node_allocatable_defaults_to_capacity() -> None:
    node = defaulted("", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                          "status": {"capacity": {"cpu": "4000m", "memory": "8Gi"}}})
    assert node["status"]["capacity"] == {"cpu": "4", "memory": "8Gi"}
    assert node["status"]["allocatable"] == {"cpu": "4", "memory": "8Gi"}


def test_endpoint_defaults() -> None:
    eps = defaulted("discovery.k8s.io", {"apiVersion": "discovery.k8s.io/v1",
                                         "kind": "EndpointSlice", "addressType": "IPv4",
                                         "metadata": {"name": "e", "namespace": "default"},
                                         "ports": [{"port": 80}]})
    assert eps["ports"] == [{"port": 80, "name": "", "protocol": "TCP"}]
    ep = defaulted("", {"apiVersion": "v1", "kind": "Endpoints",
                        "metadata": {"name": "e", "namespace": "default"},
                        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]})
    assert ep["subsets"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]
