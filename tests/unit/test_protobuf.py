"""Kubernetes protobuf request bodies decode to the dict a JSON client would have sent.

Bodies are built with a tiny encoder below (the mirror of the reader), plus a few byte strings
captured from real kubectl 1.32 requests (`kubectl create ... -v=9`).
"""

from __future__ import annotations

import pytest

from dockyard.apiserver import errors
from dockyard.apiserver.negotiation import parse_body
from dockyard.apiserver.protobuf import CorruptProtobuf, ProtobufError, decode_k8s_protobuf
from dockyard.apiserver.protobuf_types import ANY_VERSION, MAPS, MESSAGES, SCALARS, TOP_LEVEL

PROTOBUF = "application/vnd.kubernetes.protobuf"

# --- a minimal proto2 encoder ------------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative ints travel as 64-bit two's complement
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def f(number: int, value: int | bool | str | bytes) -> bytes:
    """One field: ints and bools as varints, str and bytes as length-delimited."""
    if isinstance(value, (bool, int)):
        return varint(number << 3) + varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def msg(*fields: bytes) -> bytes:
    return b"".join(fields)


def entry(number: int, key: str, value: str | bytes) -> bytes:
    """A map entry: protobuf maps are repeated key=1/value=2 messages."""
    return f(number, msg(f(1, key), f(2, value)))


def quantity(text: str) -> bytes:
    return msg(f(1, text))


def int_or_string(value: int | str) -> bytes:
    if isinstance(value, int):
        return msg(f(1, 0), f(2, value), f(3, ""))
    return msg(f(1, 1), f(2, 0), f(3, value))


def envelope(api_version: str, kind: str, body: bytes) -> bytes:
    type_meta = msg(f(1, api_version), f(2, kind))
    return b"k8s\x00" + msg(f(1, type_meta), f(2, body), f(3, ""), f(4, ""))


def go_meta(name: str, *extra: bytes, created: bytes = b"") -> bytes:
    """ObjectMeta as Go writes it: every non-pointer string, generation 0, creationTimestamp."""
    return msg(f(1, name), f(2, ""), f(3, ""), f(4, ""), f(5, ""), f(6, ""), f(7, 0),
               f(8, created), *extra)


def decode(api_version: str, kind: str, *fields: bytes) -> dict:
    return decode_k8s_protobuf(envelope(api_version, kind, msg(*fields)))


# --- bodies captured from kubectl 1.32 ---------------------------------------------------------

KUBECTL_CONFIGMAP = bytes.fromhex(  # kubectl create configmap cfg --from-literal=a=1
    "6b3873000a0f0a0276311209436f6e6669674d6170121d0a130a0363666712001a0022002a003200"
    "3800420012060a01611201311a002200")
KUBECTL_SECRET = bytes.fromhex(  # kubectl create secret generic s2 --from-literal=p=q
    "6b3873000a0c0a0276311206536563726574121e0a120a02733212001a0022002a00320038004200"
    "12060a01701201711a001a002200")
KUBECTL_DEPLOYMENT = bytes.fromhex(  # kubectl create deployment web2 --image=nginx --replicas=3
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412bc010a210a04776562321200"  # --port=80
    "1a0022002a003200380042005a0b0a036170701204776562321288010803120d0a0b0a0361707012"
    "04776562321a6d0a1d0a0012001a0022002a003200380042005a0b0a03617070120477656232124c"
    "122e0a056e67696e7812056e67696e782a00320a0a001000185022002a0042006a00720080010088"
    "0100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00"
    "280038001a0c0800100018002000280038001a002200")
KUBECTL_SERVICE = bytes.fromhex(  # kubectl create service clusterip api2 --tcp=80:8080,443:https
    "6b3873000a0d0a0276311207536572766963651290010a210a046170693212001a0022002a003200"
    "380042005a0b0a0361707012046170693212670a1b0a0738302d3830383012035443501850220708"
    "0010903f1a0028000a220a093434332d6874747073120354435018bb03220b080110001a05687474"
    "70732800120b0a036170701204617069321a002209436c757374657249503a00420052005a006000"
    "68001a020a001a002200")


def test_real_kubectl_configmap_and_secret() -> None:
    assert decode_k8s_protobuf(KUBECTL_CONFIGMAP) == {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"},
    }
    assert decode_k8s_protobuf(KUBECTL_SECRET) == {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s2"}, "data": {"p": "cQ=="},
    }


def test_real_kubectl_deployment_matches_its_json() -> None:
    # The same object `kubectl create deployment ... --dry-run=client -o json` prints, minus the
    # `creationTimestamp: null` that JSON spells out and protobuf cannot.
    labels = {"app": "web2"}
    assert decode_k8s_protobuf(KUBECTL_DEPLOYMENT) == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web2", "labels": labels},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                         "ports": [{"containerPort": 80}], "resources": {}}]},
            },
            "strategy": {},
        },
        "status": {},
    }


def test_real_kubectl_service_with_int_and_named_target_ports() -> None:
    assert decode_k8s_protobuf(KUBECTL_SERVICE) == {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api2", "labels": {"app": "api2"}},
        "spec": {
            "ports": [
                {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "443-https", "protocol": "TCP", "port": 443, "targetPort": "https"},
            ],
            "selector": {"app": "api2"},
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    }


# --- built bodies ------------------------------------------------------------------------------


def test_configmap_with_data_and_binary_data() -> None:
    body = decode("v1", "ConfigMap", f(1, go_meta("cfg")), entry(2, "a", "1"),
                  entry(2, "b", "two"), entry(3, "bin", b"\x00\xff"), f(4, True))
    assert body == {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
        "immutable": True, "data": {"a": "1", "b": "two"}, "binaryData": {"bin": "AP8="},
    }


def test_secret_data_is_base64_and_pointer_false_is_kept() -> None:
    body = decode("v1", "Secret", f(1, go_meta("s")), entry(2, "p", b"q"),
                  entry(2, "blob", b"\x01\x02\x03\xfe"), entry(4, "plain", "text"),
                  f(3, "Opaque"), f(5, False))
    assert body["data"] == {"p": "cQ==", "blob": "AQID/g=="}
    assert body["stringData"] == {"plain": "text"}
    assert body["type"] == "Opaque"
    assert body["immutable"] is False  # *bool: an explicit false is data, not an absent field


def test_secret_empty_type_is_omitted_like_json_omitempty() -> None:
    assert "type" not in decode("v1", "Secret", f(1, go_meta("s")), f(3, ""))


def test_namespace_spec_and_status() -> None:
    body = decode("v1", "Namespace", f(1, go_meta("team")),
                  f(2, msg(f(1, "kubernetes"))), f(3, msg(f(1, ""))))
    assert body == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {}}


def test_service_account_references() -> None:
    body = decode("v1", "ServiceAccount", f(1, go_meta("bot")),
                  f(2, msg(f(1, ""), f(3, "tok"))), f(3, msg(f(1, "regcred"))), f(4, False))
    assert body["secrets"] == [{"name": "tok"}]
    assert body["imagePullSecrets"] == [{"name": "regcred"}]
    assert body["automountServiceAccountToken"] is False


def container(*extra: bytes) -> bytes:
    """A Container as Go writes it, with its zero-valued non-pointer fields."""
    return msg(f(1, "web"), f(2, "nginx"), f(5, ""), f(13, ""), f(14, ""), f(16, False),
               f(17, False), f(18, False), f(20, ""), *extra)


def test_deployment_with_resources_probe_env_and_strategy() -> None:
    resources = msg(f(1, msg(f(1, "cpu"), f(2, quantity("500m")))),
                    f(1, msg(f(1, "memory"), f(2, quantity("128Mi")))),
                    f(2, msg(f(1, "cpu"), f(2, quantity("")))))
    probe = msg(f(1, msg(f(2, msg(f(1, "/healthz"), f(2, int_or_string("http")), f(3, ""),
                                  f(4, "HTTPS"), f(5, msg(f(1, "X-A"), f(2, "b"))))))),
                f(2, 0), f(3, 1), f(4, 10), f(5, 1), f(6, 3))
    env = [
        f(7, msg(f(1, "MODE"), f(2, "blue"))),
        f(7, msg(f(1, "EMPTY"), f(2, ""))),
        f(7, msg(f(1, "NODE"), f(2, ""), f(3, msg(f(1, msg(f(1, "v1"), f(2, "spec.nodeName"))))))),
        f(7, msg(f(1, "CM"), f(2, ""),
                 f(3, msg(f(3, msg(f(1, msg(f(1, "cfg"))), f(2, "a"), f(3, True))))))),
        f(7, msg(f(1, "MEM"), f(2, ""), f(3, msg(f(2, msg(f(1, ""), f(2, "limits.memory"),
                                                           f(3, quantity("1Mi")))))))),
    ]
    ports = f(6, msg(f(1, ""), f(2, 0), f(3, 80), f(4, "TCP"), f(5, "")))
    pod_spec = msg(f(2, container(ports, f(8, resources), f(11, probe), *env)),
                   f(3, "Always"), f(4, 30), f(6, ""), f(11, False), f(21, False))
    strategy = msg(f(1, "RollingUpdate"),
                   f(2, msg(f(1, int_or_string("25%")), f(2, int_or_string(1)))))
    spec = msg(f(1, 0), f(2, msg(entry(1, "app", "web"))),
               f(3, msg(f(1, go_meta("", entry(11, "app", "web"))), f(2, pod_spec))),
               f(4, strategy), f(5, 0), f(7, False))
    body = decode("apps/v1", "Deployment", f(1, go_meta("web")), f(2, spec), f(3, b""))
    assert body["spec"]["replicas"] == 0  # *int32: zero replicas is a request, not a default
    assert "minReadySeconds" not in body["spec"] and "paused" not in body["spec"]
    assert body["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}}
    template = body["spec"]["template"]
    assert template["metadata"] == {"labels": {"app": "web"}}
    pod = template["spec"]
    assert pod == {"containers": pod["containers"], "restartPolicy": "Always",
                   "terminationGracePeriodSeconds": 30, "automountServiceAccountToken": False}
    (c,) = pod["containers"]
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert c["resources"] == {"limits": {"cpu": "500m", "memory": "128Mi"},
                              "requests": {"cpu": "0"}}
    assert c["readinessProbe"] == {
        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTPS",
                    "httpHeaders": [{"name": "X-A", "value": "b"}]},
        "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3,
    }
    assert c["env"] == [
        {"name": "MODE", "value": "blue"},
        {"name": "EMPTY"},
        {"name": "NODE", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                    "fieldPath": "spec.nodeName"}}},
        {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a",
                                                         "optional": True}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                           "divisor": "1Mi"}}},
    ]
    assert set(c) == {"name", "image", "ports", "resources", "readinessProbe", "env"}


def test_container_port_zero_is_kept_but_host_port_zero_is_not() -> None:
    ports = f(6, msg(f(2, 0), f(3, 0)))
    body = decode("v1", "Pod", f(1, go_meta("p")), f(2, msg(f(2, container(ports)))))
    assert body["spec"]["containers"][0]["ports"] == [{"containerPort": 0}]


def test_pod_volumes_security_and_scheduling() -> None:
    def volume(name: str, source_field: int, source: bytes) -> bytes:
        return f(1, msg(f(1, name), f(2, msg(f(source_field, source)))))

    items = f(2, msg(f(1, "k"), f(2, "p"), f(3, 420)))
    token = msg(f(1, ""), f(2, 3600), f(3, "token"))
    volumes = [
        volume("cache", 2, msg(f(1, "Memory"), f(2, quantity("1Gi")))),
        volume("cfg", 19, msg(f(1, msg(f(1, "app"))), items, f(3, 0))),
        volume("host", 1, msg(f(1, "/var/log"), f(2, ""))),
        volume("tok", 26, msg(f(1, msg(f(4, token))))),
    ]
    security = msg(f(2, -1), f(4, 1000), f(4, 2000), f(5, 3000),
                   f(10, msg(f(1, "RuntimeDefault"))))
    toleration = f(22, msg(f(1, "k"), f(2, "Exists"), f(3, ""), f(4, "NoSchedule"), f(5, 0)))
    requirement = msg(f(1, "zone"), f(2, "In"), f(3, "a"), f(3, "b"))
    node_selector = msg(f(1, msg(f(1, requirement))))
    affinity = f(18, msg(f(1, msg(f(1, node_selector)))))
    spread = f(33, msg(f(1, 1), f(2, "zone"), f(3, "DoNotSchedule"),
                       f(4, msg(entry(1, "app", "web")))))
    mounts = f(9, msg(f(1, "cfg"), f(2, True), f(3, "/etc/cfg"), f(4, ""), f(6, "")))
    sc = f(15, msg(f(1, msg(f(2, "ALL"))), f(5, True), f(7, False)))
    body = decode("v1", "Pod", f(1, go_meta("p")), f(2, msg(
        *volumes, f(2, container(mounts, sc)), f(14, security), toleration, affinity, spread)))
    spec = body["spec"]
    assert spec["volumes"] == [
        {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"name": "cfg", "configMap": {"name": "app", "items": [{"key": "k", "path": "p",
                                                                "mode": 420}],
                                      "defaultMode": 0}},
        {"name": "host", "hostPath": {"path": "/var/log", "type": ""}},
        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {
            "expirationSeconds": 3600, "path": "token"}}]}},
    ]
    assert spec["securityContext"] == {"runAsUser": -1, "supplementalGroups": [1000, 2000],
                                       "fsGroup": 3000,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["tolerations"] == [{"key": "k", "operator": "Exists", "effect": "NoSchedule",
                                    "tolerationSeconds": 0}]
    assert spec["affinity"] == {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}}
    assert spec["topologySpreadConstraints"] == [{
        "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}}]
    c = spec["containers"][0]
    assert c["volumeMounts"] == [{"name": "cfg", "readOnly": True, "mountPath": "/etc/cfg"}]
    assert c["securityContext"] == {"capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                                    "allowPrivilegeEscalation": False}


def test_packed_repeated_integers() -> None:
    packed = f(4, varint(1000) + varint(7))  # one length-delimited run of varints
    body = decode("v1", "Pod", f(1, go_meta("p")), f(2, msg(f(14, packed))))
    assert body["spec"]["securityContext"] == {"supplementalGroups": [1000, 7]}


def test_creation_timestamp_absent_empty_or_set() -> None:
    assert decode("v1", "ConfigMap", f(1, go_meta("a")))["metadata"] == {"name": "a"}
    zero = msg(f(1, -62135596800))  # Go's time.Time{}
    assert decode("v1", "ConfigMap", f(1, go_meta("a", created=zero)))["metadata"] == {
        "name": "a"}
    stamp = msg(f(1, 1704164645), f(2, 999))  # Time keeps whole seconds, like Go's decoder
    assert decode("v1", "ConfigMap", f(1, go_meta("a", created=stamp)))["metadata"] == {
        "name": "a", "creationTimestamp": "2024-01-02T03:04:05Z"}


def test_lease_micro_time() -> None:
    spec = msg(f(1, "me"), f(2, 15), f(3, msg(f(1, 1704164645), f(2, 123456789))),
               f(4, msg(f(1, 1704164645))), f(5, 0))
    body = decode("coordination.k8s.io/v1", "Lease", f(1, go_meta("l")), f(2, spec))
    assert body["spec"] == {"holderIdentity": "me", "leaseDurationSeconds": 15,
                            "acquireTime": "2024-01-02T03:04:05.123456Z",
                            "renewTime": "2024-01-02T03:04:05.000000Z", "leaseTransitions": 0}


def test_event_with_series_and_source() -> None:
    ref = msg(f(1, "Pod"), f(2, "default"), f(3, "p"), f(4, ""), f(5, "v1"), f(6, ""), f(7, ""))
    body = decode("v1", "Event", f(1, go_meta("p.1")), f(2, ref), f(3, "Started"), f(4, ""),
                  f(5, msg(f(1, "kubelet"), f(2, ""))), f(6, b""), f(7, b""), f(8, 2),
                  f(9, "Normal"), f(10, msg(f(1, 1704164645), f(2, 5000))),
                  f(11, msg(f(1, 3), f(2, msg(f(1, 1704164646))))), f(12, ""),
                  f(14, ""), f(15, ""))
    assert body == {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.1"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p", "apiVersion": "v1"},
        "reason": "Started", "source": {"component": "kubelet"}, "count": 2, "type": "Normal",
        "eventTime": "2024-01-02T03:04:05.000005Z",
        "series": {"count": 3, "lastObservedTime": "2024-01-02T03:04:06.000000Z"},
        "reportingComponent": "", "reportingInstance": "",  # no omitempty on these in Go
    }


def test_endpoint_slice_and_endpoints() -> None:
    endpoint = msg(f(1, "10.0.0.1"), f(2, msg(f(1, True), f(3, False))), f(6, "node-1"),
                   f(8, msg(f(1, msg(f(1, "a"))))))
    slice_ = decode("discovery.k8s.io/v1", "EndpointSlice", f(1, go_meta("s")), f(4, "IPv4"),
                    f(2, endpoint), f(3, msg(f(1, "http"), f(2, "TCP"), f(3, 80))))
    assert slice_["endpoints"] == [{"addresses": ["10.0.0.1"],
                                    "conditions": {"ready": True, "terminating": False},
                                    "nodeName": "node-1", "hints": {"forZones": [{"name": "a"}]}}]
    assert slice_["ports"] == [{"name": "http", "protocol": "TCP", "port": 80}]
    subset = msg(f(1, msg(f(1, "10.0.0.1"), f(3, ""))), f(3, msg(f(1, ""), f(2, 80), f(3, "TCP"))))
    eps = decode("v1", "Endpoints", f(1, go_meta("e")), f(2, subset))
    assert eps["subsets"] == [{"addresses": [{"ip": "10.0.0.1"}],
                               "ports": [{"port": 80, "protocol": "TCP"}]}]


def test_scale_and_delete_options() -> None:
    assert decode("autoscaling/v1", "Scale", f(1, go_meta("web")), f(2, msg(f(1, 5))),
                  f(3, msg(f(1, 0), f(2, ""))))["spec"] == {"replicas": 5}
    opts = decode("apps/v1", "DeleteOptions", f(1, 0), f(2, msg(f(1, "uid-1"))),
                  f(4, "Foreground"), f(5, "All"))
    assert opts == {"apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                    "preconditions": {"uid": "uid-1"}, "propagationPolicy": "Foreground",
                    "dryRun": ["All"]}


def test_owner_references_and_managed_fields() -> None:
    owner = msg(f(1, "ReplicaSet"), f(3, "web-1"), f(4, "u1"), f(5, "apps/v1"), f(6, True))
    managed = msg(f(1, "kubectl"), f(2, "Update"), f(3, "v1"), f(4, b""), f(6, "FieldsV1"),
                  f(7, msg(f(1, b'{"f:data":{}}'))), f(8, ""))
    meta = decode("v1", "ConfigMap", f(1, go_meta("a", f(13, owner), f(14, "x/y"),
                                                  f(17, managed))))["metadata"]
    assert meta["ownerReferences"] == [{"kind": "ReplicaSet", "name": "web-1", "uid": "u1",
                                        "apiVersion": "apps/v1", "controller": True}]
    assert meta["finalizers"] == ["x/y"]
    assert meta["managedFields"] == [{"manager": "kubectl", "operation": "Update",
                                      "apiVersion": "v1", "fieldsType": "FieldsV1",
                                      "fieldsV1": {"f:data": {}}}]


# --- refusals ----------------------------------------------------------------------------------


def test_unknown_field_is_refused_with_its_number_and_type() -> None:
    with pytest.raises(ProtobufError) as caught:
        decode("v1", "Pod", f(1, go_meta("p")), f(2, msg(f(2, container()), f(99, "x"))))
    assert str(caught.value) == (
        "unsupported protobuf field 99 in io.k8s.api.core.v1.PodSpec; send JSON instead")
    assert not isinstance(caught.value, CorruptProtobuf)


def test_unlisted_volume_source_is_refused_not_dropped() -> None:
    gce = f(2, msg(f(3, msg(f(1, "disk")))))
    with pytest.raises(ProtobufError, match="field 3 in io.k8s.api.core.v1.VolumeSource"):
        decode("v1", "Pod", f(1, go_meta("p")), f(2, msg(f(1, msg(f(1, "v"), gce)))))


def test_unknown_kind_and_encodings_are_refused() -> None:
    with pytest.raises(ProtobufError, match="kind 'Widget'"):
        decode("v1", "Widget", f(1, go_meta("w")))
    gzip = b"k8s\x00" + msg(f(1, msg(f(1, "v1"), f(2, "ConfigMap"))), f(2, b""), f(3, "gzip"))
    with pytest.raises(ProtobufError, match="content encoding 'gzip'"):
        decode_k8s_protobuf(gzip)


@pytest.mark.parametrize("raw", [
    b'{"kind": "ConfigMap"}',  # no magic
    KUBECTL_CONFIGMAP[:-5],  # truncated
    envelope("v1", "ConfigMap", f(1, go_meta("a")) + b"\x12\x05ab"),  # length past the end
    envelope("v1", "ConfigMap", f(1, b"\x0a\x02\xff\xfe")),  # name not UTF-8
    envelope("v1", "ConfigMap", f(1, 5)),  # metadata sent as a varint
    envelope("v1", "", b""),  # no kind
])
def test_corrupt_bodies(raw: bytes) -> None:
    with pytest.raises(CorruptProtobuf):
        decode_k8s_protobuf(raw)


def test_parse_body_answers_415_for_unsupported_and_400_for_corrupt() -> None:
    assert parse_body(KUBECTL_CONFIGMAP, PROTOBUF)["data"] == {"a": "1"}
    with pytest.raises(errors.APIError) as unsupported:
        parse_body(envelope("v1", "Widget", b""), PROTOBUF)
    assert unsupported.value.code == 415
    assert "Widget" in unsupported.value.message and "send JSON" in unsupported.value.message
    with pytest.raises(errors.APIError) as corrupt:
        parse_body(b"k8s\x00\x0a\x7f", PROTOBUF)
    assert corrupt.value.code == 400 and corrupt.value.reason == "BadRequest"


# --- the table itself --------------------------------------------------------------------------


def test_table_names_resolve_and_top_level_kinds_exist() -> None:
    for message in MESSAGES.values():
        for field in message.fields.values():
            assert field.kind in SCALARS or field.kind in MAPS or field.kind in MESSAGES, field
            assert not (field.repeated and field.kind in MAPS), field
            if field.name == "-":
                assert field.kind in MESSAGES and not field.repeated, field
    for name in [*TOP_LEVEL.values(), *ANY_VERSION.values()]:
        assert name in MESSAGES
    # Same short name in two packages: each package sees its own.
    assert MESSAGES["io.k8s.api.discovery.v1.EndpointSlice"].fields[3].kind == (
        "io.k8s.api.discovery.v1.EndpointPort")
    assert MESSAGES["io.k8s.api.core.v1.EndpointSubset"].fields[3].kind == (
        "io.k8s.api.core.v1.EndpointPort")
