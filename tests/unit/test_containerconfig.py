"""Unit tests for kubelet/containerconfig.py: a pod's container → the runtime's
ContainerConfig, with Kubernetes' rules for argv, $(VAR) expansion, the environment,
resources and the security context, and the kubelet's error messages.
"""

from __future__ import annotations

import base64
import copy
import os
from pathlib import Path
from typing import Any

import pytest

from dockyard.kubelet import containerconfig as cc
from dockyard.kubelet.containerconfig import ContainerConfigError, container_config, expand
from dockyard.runtime.cri import ImageSpec, Mount

Obj = dict[str, Any]
IMAGE = ImageSpec(ref="busybox", image_id="sha256:abc", layer_dirs=(), user="")
IMAGE_CONFIG: Obj = {"Entrypoint": ["/entry"], "Cmd": ["default", "cmd"],
                     "Env": ["PATH=/usr/bin:/bin", "MODE=image", "IMAGE_ONLY=1"],
                     "WorkingDir": "/app"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


OBJECTS: dict[tuple[str, str, str], Obj] = {
    ("ConfigMap", "default", "app"): {"data": {"MODE": "configmap", "LEVEL": "3",
                                               "1st": "x", "greeting": "$(LEVEL)"}},
    ("Secret", "default", "creds"): {"data": {"USER": b64("admin"), "PASS": b64("s3cr=t")}},
}


async def get_object(kind: str, namespace: str, name: str) -> Obj | None:
    return copy.deepcopy(OBJECTS.get((kind, namespace, name)))


def pod(container: Obj | None = None, **spec: Any) -> Obj:
    return {
        "metadata": {"name": "web-1", "namespace": "default", "uid": "uid-1",
                     "labels": {"app": "web", "tier": 'front"end'},
                     "annotations": {"note": "hi"}},
        "spec": {"containers": [container or {"name": "main", "image": "busybox"}],
                 "nodeName": "node-a", "serviceAccountName": "default", **spec},
    }


async def build(container: Obj, the_pod: Obj | None = None, image: ImageSpec = IMAGE,
                image_config: Obj | None = None, **kw: Any):
    the_pod = the_pod or pod(container)
    the_pod["spec"]["containers"] = [container]
    return await container_config(
        the_pod, container, image=image,
        image_config=IMAGE_CONFIG if image_config is None else image_config,
        mounts=kw.pop("mounts", []), attempt=kw.pop("attempt", 0),
        log_path=Path("/logs/main/0.log"), pod_ip="10.42.0.7", host_ip="192.168.1.5",
        node_name="node-a", get_object=get_object, pids_limit=kw.pop("pids_limit", 4096),
        **kw)


def env_dict(config) -> dict[str, str]:
    return dict(e.split("=", 1) for e in config.env)


# ---------------------------------------------------------------------------------- argv


@pytest.mark.parametrize(("command", "args", "argv"), [
    (None, None, ["/entry", "default", "cmd"]),
    (["/bin/sh"], None, ["/bin/sh"]),  # command drops the image's Cmd
    (None, ["run", "fast"], ["/entry", "run", "fast"]),  # args replace Cmd
    (["/bin/sh"], ["-c", "true"], ["/bin/sh", "-c", "true"]),
])
async def test_argv(command: list | None, args: list | None, argv: list[str]) -> None:
    container: Obj = {"name": "main", "image": "busybox"}
    if command is not None:
        container["command"] = command
    if args is not None:
        container["args"] = args
    assert list((await build(container)).argv) == argv


async def test_argv_without_entrypoint() -> None:
    config = await build({"name": "main"}, image_config={"Entrypoint": [""], "Cmd": ["sh"]})
    assert config.argv == ("sh",)
    with pytest.raises(ContainerConfigError, match="no command specified") as err:
        await build({"name": "main"}, image_config={})
    assert err.value.reason == "CreateContainerError"


async def test_argv_expansion() -> None:
    container = {"name": "main", "command": ["/bin/echo", "$(GREETING)", "$$(GREETING)"],
                 "args": ["$(MISSING)", "$(IMAGE_ONLY)"],
                 "env": [{"name": "GREETING", "value": "hello"}]}
    # Only the container's own variables expand: IMAGE_ONLY comes from the image.
    assert (await build(container)).argv == ("/bin/echo", "hello", "$(GREETING)",
                                             "$(MISSING)", "$(IMAGE_ONLY)")


@pytest.mark.parametrize(("text", "expected"), [
    ("$(A)", "a"),
    ("x$(A)y$(B)z", "xaybz"),
    ("$$(A)", "$(A)"),
    ("$$$(A)", "$a"),
    ("$$", "$"),
    ("$$$$", "$$"),
    ("$(C)", "$(C)"),
    ("$(A", "$(A"),
    ("$(", "$("),
    ("$A", "$A"),
    ("a$", "a$"),
    ("$", "$"),
    ("$()", "$()"),
    ("100$", "100$"),
    ("$(A)$(A)", "aa"),
    ("$(EMPTY)x", "x"),
])
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "a", "B": "b", "EMPTY": ""}.get) == expected


# ----------------------------------------------------------------------------- environment


async def test_environment_order_and_precedence() -> None:
    container = {
        "name": "main",
        "envFrom": [{"configMapRef": {"name": "app"}},
                    {"secretRef": {"name": "creds"}, "prefix": "DB_"}],
        "env": [{"name": "MODE", "value": "env"},
                {"name": "URL", "value": "$(DB_USER):$(DB_PASS)@$(HOST)"},
                {"name": "HOST", "value": "db"},
                {"name": "EMPTY"}],
    }
    config = await build(container)
    assert list(config.env) == [
        "PATH=/usr/bin:/bin", "MODE=env", "IMAGE_ONLY=1",  # image first, MODE replaced
        "LEVEL=3", "greeting=$(LEVEL)",  # envFrom values are not expanded
        "DB_PASS=s3cr=t", "DB_USER=admin",
        "URL=admin:s3cr=t@$(HOST)",  # HOST is defined later: left as written
        "HOST=db", "EMPTY=",
    ]
    assert "1st" not in env_dict(config)  # not a valid variable name: skipped


async def test_env_value_from_config_and_secret_keys() -> None:
    container = {"name": "main", "env": [
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "LEVEL"}}},
        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "PASS"}}},
        {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "nope",
                                                          "optional": True}}},
        {"name": "OPT2", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k",
                                                        "optional": True}}},
    ]}
    env = env_dict(await build(container))
    assert (env["LEVEL"], env["PASS"]) == ("3", "s3cr=t")
    assert "OPT" not in env and "OPT2" not in env


@pytest.mark.parametrize(("env", "env_from", "message"), [
    ([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}], [],
     'configmap "nope" not found'),
    ([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "k"}}}], [],
     "couldn't find key k in ConfigMap default/app"),
    ([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}], [],
     'secret "nope" not found'),
    ([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}], [],
     "couldn't find key k in Secret default/creds"),
    ([], [{"configMapRef": {"name": "nope"}}], 'configmap "nope" not found'),
    ([], [{"secretRef": {"name": "nope"}}], 'secret "nope" not found'),
    ([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}], [],
     "unsupported fieldPath: spec.bogus"),
])
async def test_missing_references(env: list, env_from: list, message: str) -> None:
    container = {"name": "main", "env": env, "envFrom": env_from}
    with pytest.raises(ContainerConfigError) as err:
        await build(container)
    assert str(err.value) == message
    assert err.value.reason == "CreateContainerConfigError"


async def test_optional_env_from_that_is_missing() -> None:
    container = {"name": "main", "envFrom": [{"configMapRef": {"name": "x", "optional": True}},
                                             {"secretRef": {"name": "y", "optional": True}}]}
    assert list((await build(container)).env) == IMAGE_CONFIG["Env"]


async def test_api_failure_is_a_config_error() -> None:
    async def broken(kind: str, namespace: str, name: str) -> Obj | None:
        raise ConnectionError("connection refused")
    container = {"name": "main", "envFrom": [{"configMapRef": {"name": "app"}}]}
    with pytest.raises(ContainerConfigError, match="couldn't get configmap default/app: "
                                                   "connection refused"):
        await container_config(pod(container), container, image=IMAGE,
                               image_config=IMAGE_CONFIG, mounts=[], attempt=0,
                               log_path=Path("x"), pod_ip="", host_ip="", node_name="n",
                               get_object=broken, pids_limit=None)


async def test_field_refs() -> None:
    paths = {
        "NAME": "metadata.name", "NS": "metadata.namespace", "UID": "metadata.uid",
        "APP": "metadata.labels['app']", "NOTE": "metadata.annotations['note']",
        "NOPE": "metadata.labels['nope']", "LABELS": "metadata.labels",
        "NODE": "spec.nodeName", "SA": "spec.serviceAccountName",
        "POD_IP": "status.podIP", "POD_IPS": "status.podIPs", "HOST_IP": "status.hostIP",
        "HOST_IPS": "status.hostIPs",
    }
    container = {"name": "main", "env": [
        {"name": n, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": p}}}
        for n, p in paths.items()]}
    the_pod = pod(container)
    the_pod["status"] = {"podIPs": [{"ip": "10.42.0.7"}, {"ip": "fd00::7"}]}
    env = env_dict(await build(container, the_pod))
    assert env == {**env_dict(await build({"name": "main"})),
                   "NAME": "web-1", "NS": "default", "UID": "uid-1", "APP": "web",
                   "NOTE": "hi", "NOPE": "", "LABELS": 'app="web"\ntier="front\\"end"',
                   "NODE": "node-a", "SA": "default", "POD_IP": "10.42.0.7",
                   "POD_IPS": "10.42.0.7,fd00::7", "HOST_IP": "192.168.1.5",
                   "HOST_IPS": "192.168.1.5"}


async def test_resource_field_refs() -> None:
    def ref(resource: str, divisor: str | None = None, name: str | None = None) -> Obj:
        out: Obj = {"resource": resource}
        if divisor:
            out["divisor"] = divisor
        if name:
            out["containerName"] = name
        return {"resourceFieldRef": out}
    container = {"name": "main",
                 "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                               "requests": {"cpu": "250m", "memory": "64Mi"}},
                 "env": [{"name": "CPU", "valueFrom": ref("limits.cpu")},
                         {"name": "CPU_M", "valueFrom": ref("limits.cpu", "1m")},
                         {"name": "REQ_M", "valueFrom": ref("requests.cpu", "1m")},
                         {"name": "MEM", "valueFrom": ref("limits.memory")},
                         {"name": "MEM_MI", "valueFrom": ref("limits.memory", "1Mi")},
                         {"name": "REQ_MI", "valueFrom": ref("requests.memory", "1Mi",
                                                             "main")}]}
    env = env_dict(await build(container))
    assert (env["CPU"], env["CPU_M"], env["REQ_M"]) == ("1", "500", "250")
    assert (env["MEM"], env["MEM_MI"], env["REQ_MI"]) == (str(128 << 20), "128", "64")


async def test_resource_field_without_limit_is_the_nodes() -> None:
    container = {"name": "main", "env": [
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}}]}
    env = env_dict(await build(container))
    assert env["CPU"] == str(os.cpu_count())
    assert env["REQ"] == "0"
    assert env["MEM"] == str(cc.memory_capacity())


# ----------------------------------------------------------------------------- resources


@pytest.mark.parametrize(("resources", "shares", "quota", "memory"), [
    ({}, 2, None, None),
    ({"requests": {"cpu": "100m"}}, 102, None, None),
    ({"requests": {"cpu": "1"}}, 1024, None, None),
    ({"requests": {"cpu": "1m"}}, 2, None, None),
    ({"requests": {"cpu": "2"}, "limits": {"cpu": "3"}}, 2048, 300_000, None),
    ({"limits": {"cpu": "500m"}}, 512, 50_000, None),  # no request: the limit
    ({"limits": {"cpu": "1m"}}, 2, 1000, None),  # at least 1 ms per period
    ({"limits": {"memory": "64Mi"}}, 2, None, 64 << 20),
    ({"limits": {"memory": "1G"}}, 2, None, 10**9),
])
async def test_resources(resources: Obj, shares: int, quota: int | None,
                         memory: int | None) -> None:
    res = (await build({"name": "main", "resources": resources}, pids_limit=321)).resources
    assert (res.cpu_shares, res.cpu_quota, res.memory_limit) == (shares, quota, memory)
    assert (res.cpu_period, res.pids_limit) == (100_000, 321)


async def test_oom_score_by_qos_class() -> None:
    guaranteed = {"limits": {"cpu": "1", "memory": "1Gi"},
                  "requests": {"cpu": "1", "memory": "1Gi"}}
    assert (await build({"name": "c", "resources": guaranteed})).resources.oom_score_adj == -997
    assert (await build({"name": "c"})).resources.oom_score_adj == 1000
    capacity = cc.memory_capacity()
    burstable = {"requests": {"memory": str(capacity // 4)}}
    adj = (await build({"name": "c", "resources": burstable})).resources.oom_score_adj
    assert adj == 1000 - (1000 * (capacity // 4)) // capacity  # 750
    tiny = {"requests": {"cpu": "1m"}}
    assert (await build({"name": "c", "resources": tiny})).resources.oom_score_adj == 999
    the_pod = pod(priorityClassName="system-node-critical")
    assert (await build({"name": "c"}, the_pod)).resources.oom_score_adj == -997


def test_oom_score_floor() -> None:
    container = {"name": "c", "resources": {"requests": {"memory": "1Gi"}}}
    assert cc.oom_score_adj(pod(container), container, 1 << 30) == 3


# ------------------------------------------------------------------------------ security


async def test_security_defaults() -> None:
    sec = (await build({"name": "main"})).security
    assert sec.seccomp == "RuntimeDefault"  # dockyard's default (see the module docstring)
    assert (sec.privileged, sec.read_only_rootfs, sec.no_new_privileges) == (False,) * 3
    assert (sec.run_as_user, sec.run_as_group, sec.supplemental_groups) == (None, None, ())
    assert sec.masked_paths is True


async def test_security_pod_and_container_merge() -> None:
    the_pod = pod(securityContext={"runAsUser": 1000, "runAsGroup": 2000,
                                   "supplementalGroups": [3000, 3001], "fsGroup": 4000,
                                   "seccompProfile": {"type": "Unconfined"}})
    container = {"name": "main", "securityContext": {
        "runAsUser": 1001, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "procMount": "Unmasked"}}
    sec = (await build(container, the_pod)).security
    assert (sec.run_as_user, sec.run_as_group) == (1001, 2000)
    assert sec.supplemental_groups == (3000, 3001, 4000)
    assert (sec.capabilities_add, sec.capabilities_drop) == (("NET_ADMIN",), ("ALL",))
    assert (sec.read_only_rootfs, sec.no_new_privileges) == (True, True)
    assert sec.seccomp == "Unconfined"  # the pod's profile applies
    assert sec.masked_paths is False


async def test_seccomp_profiles(tmp_path: Path) -> None:
    the_pod = pod(securityContext={"seccompProfile": {"type": "Unconfined"}})
    container = {"name": "main",
                 "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}
    assert (await build(container, the_pod)).security.seccomp == "RuntimeDefault"
    container["securityContext"] = {"seccompProfile": {"type": "Localhost",
                                                       "localhostProfile": "team/p.json"}}
    sec = (await build(container, seccomp_root=tmp_path)).security
    assert sec.seccomp == str(tmp_path / "team/p.json")
    container["securityContext"]["seccompProfile"]["localhostProfile"] = "../etc/x"
    with pytest.raises(ContainerConfigError, match="invalid localhostProfile"):
        await build(container)


async def test_privileged_and_explicit_escalation() -> None:
    container = {"name": "main", "securityContext": {"privileged": True,
                                                     "allowPrivilegeEscalation": True}}
    sec = (await build(container)).security
    assert (sec.privileged, sec.no_new_privileges) == (True, False)


@pytest.mark.parametrize(("pod_sc", "sc", "user", "message"), [
    ({"runAsNonRoot": True}, {}, "",
     'container has runAsNonRoot and image will run as root (pod: "web-1_default(uid-1)", '
     "container: main)"),
    ({"runAsNonRoot": True}, {}, "0:0", "image will run as root"),
    ({}, {"runAsNonRoot": True}, "nobody",
     "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify "
     "user is non-root"),
    ({"runAsNonRoot": True, "runAsUser": 0}, {}, "1000",
     "container's runAsUser breaks non-root policy"),
])
async def test_run_as_non_root_refused(pod_sc: Obj, sc: Obj, user: str, message: str) -> None:
    image = ImageSpec(ref="x", image_id="sha256:x", layer_dirs=(), user=user)
    with pytest.raises(ContainerConfigError, match=message.replace("(", r"\(")
                       .replace(")", r"\)")):
        await build({"name": "main", "securityContext": sc}, pod(securityContext=pod_sc),
                    image=image)


@pytest.mark.parametrize(("pod_sc", "sc", "user"), [
    ({"runAsNonRoot": True}, {}, "1000"),
    ({"runAsNonRoot": True}, {"runAsUser": 1000}, "root"),
    ({"runAsNonRoot": True}, {"runAsNonRoot": False}, ""),
])
async def test_run_as_non_root_allowed(pod_sc: Obj, sc: Obj, user: str) -> None:
    image = ImageSpec(ref="x", image_id="sha256:x", layer_dirs=(), user=user)
    await build({"name": "main", "securityContext": sc}, pod(securityContext=pod_sc),
                image=image)


# --------------------------------------------------------------------------------- the rest


async def test_identity_and_plumbing() -> None:
    mounts = [Mount("/etc/hosts", "/pods/u/etc-hosts")]
    container = {"name": "main", "tty": True, "stdin": True}
    config = await build(container, mounts=mounts, attempt=3)
    assert (config.name, config.attempt, config.image) == ("main", 3, IMAGE)
    assert (config.tty, config.stdin) == (True, True)
    assert config.mounts == tuple(mounts)
    assert config.log_path == Path("/logs/main/0.log")
    assert config.working_dir == "/app"  # the image's WorkingDir
    assert config.hostname == "web-1"
    assert config.labels == {"io.kubernetes.pod.name": "web-1",
                             "io.kubernetes.pod.namespace": "default",
                             "io.kubernetes.pod.uid": "uid-1",
                             "io.kubernetes.container.name": "main"}
    container["workingDir"] = "/srv"
    assert (await build(container)).working_dir == "/srv"


def test_hostname() -> None:
    assert cc.pod_hostname(pod(hostname="db-0")) == "db-0"
    long = {"metadata": {"name": "a" * 62 + "-b"}, "spec": {}}
    assert cc.pod_hostname(long) == "a" * 62
    assert cc.pod_hostname(pod(hostNetwork=True)) == os.uname().nodename
