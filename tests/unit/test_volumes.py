"""Pod volumes on the host: what a container would see in each volume, the files' modes and
groups, kubelet's error messages, atomic updates, tmpfs mounts and their removal.

The API is a fake `get_object` over a dict; directories and mounts are real (tmpfs and bind
mounts need root). Every test ends with nothing mounted under its data directory.
"""

from __future__ import annotations

import base64
import copy
import os
import socket
import stat
from pathlib import Path

import pytest

from dockyard.kubelet.config import KubeletConfig
from dockyard.kubelet.containerconfig import ContainerConfigError
from dockyard.kubelet.context import VolumeSetupError
from dockyard.kubelet.mountutil import mount_points_under, safe_open
from dockyard.kubelet.volumes import HostVolumeManager, unmount_all
from dockyard.runtime.cri import Mount
from dockyard.runtime.naming import cluster_prefix

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs and bind mounts need root")
UID = "0f6b4a52-77a1-4c1e-9a45-5cbd1e1c2d3e"


class FakeAPI:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], object] = {}

    def put(self, kind: str, name: str, **body: object) -> None:
        self.objects[(kind, "default", name)] = {"metadata": {"name": name}, **body}

    async def get(self, kind: str, namespace: str, name: str) -> dict | None:
        value = self.objects.get((kind, namespace, name))
        if isinstance(value, Exception):
            raise value
        return copy.deepcopy(value)  # type: ignore[return-value]


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def config(tmp_path: Path) -> KubeletConfig:
    data = tmp_path / "data"
    return KubeletConfig(node_name="node-a", data_dir=data, prefix=cluster_prefix(data),
                         cluster_dns=["10.43.0.10"])


@pytest.fixture
def manager(config: KubeletConfig, api: FakeAPI, tmp_path: Path):
    resolv = tmp_path / "host-resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    yield HostVolumeManager(config, api.get, host_resolv_conf=str(resolv))
    leftover = mount_points_under(config.data_dir)
    unmount_all(config.data_dir)
    assert leftover == [], "the test left mounts behind"


def make_pod(volumes: list[dict], mounts: list[dict] | None = None, **spec: object) -> dict:
    return {"metadata": {"name": "web", "namespace": "default", "uid": UID,
                         "labels": {"app": "web", "tier": "front"},
                         "annotations": {"note": 'say "hi"'}},
            "spec": {"volumes": volumes,
                     "containers": [{"name": "app", "image": "busybox",
                                     "volumeMounts": mounts or []}],
                     **spec}}


def mountinfo(path: Path) -> list[tuple[str, str, str]]:
    """(mount point, fs type, options) of mounts at `path`."""
    real = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == real:
                tail = fields[fields.index("-") + 1:]
                found.append((fields[4], tail[0], tail[2]))
    return found


def files(root: Path) -> dict[str, str]:
    """What a container sees: visible names (dot-dot names hidden), content by name."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith("..")]
        for name in filenames:
            if not name.startswith(".."):
                path = Path(dirpath) / name
                out[str(path.relative_to(root))] = path.read_bytes().decode("latin-1")
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------- emptyDir


async def test_empty_dir_is_a_world_writable_directory_in_the_pod_dir(manager) -> None:
    paths = await manager.setup(make_pod([{"name": "scratch", "emptyDir": {}}]))
    path = paths["scratch"]
    assert path == manager.config.pods_dir / UID / "volumes/kubernetes.io~empty-dir/scratch"
    assert path.is_dir() and mode(path) == 0o777
    (path / "kept").write_text("x")
    await manager.setup(make_pod([{"name": "scratch", "emptyDir": {}}]))
    assert (path / "kept").read_text() == "x"  # a second setup leaves the content alone
    await manager.teardown(UID)


@needs_root
async def test_memory_empty_dir_is_a_tmpfs_of_its_size_limit_until_teardown(manager) -> None:
    pod = make_pod([{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}])
    path = (await manager.setup(pod))["cache"]
    [(_, fstype, _)] = mountinfo(path)
    assert fstype == "tmpfs"
    vfs = os.statvfs(path)
    assert vfs.f_blocks * vfs.f_frsize == 8 * 1024 * 1024
    await manager.setup(pod)
    assert len(mountinfo(path)) == 1  # mounted once, not stacked
    await manager.teardown(UID)
    assert mountinfo(path) == [] and not (manager.config.pods_dir / UID).exists()
    await manager.teardown(UID)  # idempotent


@needs_root
async def test_memory_empty_dir_without_size_limit_gets_the_pods_memory_limit(manager) -> None:
    pod = make_pod([{"name": "cache", "emptyDir": {"medium": "Memory"}}])
    pod["spec"]["containers"].append({"name": "side", "image": "busybox"})
    for container, limit in zip(pod["spec"]["containers"], ("16Mi", "4Mi"), strict=True):
        container["resources"] = {"limits": {"memory": limit}}
    path = (await manager.setup(pod))["cache"]
    vfs = os.statvfs(path)
    assert vfs.f_blocks * vfs.f_frsize == 20 * 1024 * 1024
    await manager.teardown(UID)


@needs_root
async def test_fs_group_owns_empty_dir_with_setgid(manager) -> None:
    pod = make_pod([{"name": "scratch", "emptyDir": {}}], securityContext={"fsGroup": 2345})
    path = (await manager.setup(pod))["scratch"]
    st = path.stat()
    assert st.st_gid == 2345 and st.st_mode & stat.S_ISGID
    (path / "new").write_text("x")
    assert (path / "new").stat().st_gid == 2345  # inherited through setgid
    await manager.teardown(UID)


# ------------------------------------------------------------------------- hostPath


@pytest.mark.parametrize(("kind", "make", "message"), [
    ("Directory", None, "hostPath type check failed: {p} is not a directory"),
    ("Directory", "file", "hostPath type check failed: {p} is not a directory"),
    ("File", "dir", "hostPath type check failed: {p} is not a file"),
    ("Socket", "file", "hostPath type check failed: {p} is not a socket file"),
    ("CharDevice", "file", "hostPath type check failed: {p} is not a character device"),
    ("BlockDevice", "file", "hostPath type check failed: {p} is not a block device"),
])
async def test_host_path_type_check_failures(manager, tmp_path: Path, kind: str,
                                             make: str | None, message: str) -> None:
    path = tmp_path / "target"
    if make == "file":
        path.write_text("x")
    elif make == "dir":
        path.mkdir()
    pod = make_pod([{"name": "h", "hostPath": {"path": str(path), "type": kind}}])
    with pytest.raises(VolumeSetupError) as err:
        await manager.setup(pod)
    assert str(err.value) == ('MountVolume.SetUp failed for volume "h" : '
                              + message.format(p=path))
    await manager.teardown(UID)


async def test_host_path_types_that_hold(manager, tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.sock"))
    (tmp_path / "file").write_text("x")
    volumes = [
        {"name": "dir", "hostPath": {"path": str(tmp_path / "new/dir"),
                                     "type": "DirectoryOrCreate"}},
        {"name": "file", "hostPath": {"path": str(tmp_path / "new.txt"), "type": "FileOrCreate"}},
        {"name": "f", "hostPath": {"path": str(tmp_path / "file"), "type": "File"}},
        {"name": "sock", "hostPath": {"path": str(tmp_path / "s.sock"), "type": "Socket"}},
        {"name": "null", "hostPath": {"path": "/dev/null", "type": "CharDevice"}},
        {"name": "any", "hostPath": {"path": str(tmp_path / "absent"), "type": ""}},
    ]
    try:
        paths = await manager.setup(make_pod(volumes))
    finally:
        sock.close()
    assert paths["dir"] == tmp_path / "new/dir" and mode(paths["dir"]) == 0o755
    assert paths["file"].read_text() == "" and mode(paths["file"]) == 0o644
    assert paths["null"] == Path("/dev/null")
    assert not (tmp_path / "absent").exists()  # type "" checks nothing
    await manager.teardown(UID)
    assert (tmp_path / "new/dir").is_dir()  # teardown never touches the host's paths


async def test_host_path_file_or_create_does_not_create_the_parent(manager, tmp_path) -> None:
    path = tmp_path / "missing/f"
    pod = make_pod([{"name": "h", "hostPath": {"path": str(path), "type": "FileOrCreate"}}])
    with pytest.raises(VolumeSetupError, match=f"open {path}: no such file or directory"):
        await manager.setup(pod)
    await manager.teardown(UID)


async def test_host_path_with_dot_dot_is_refused(manager) -> None:
    pod = make_pod([{"name": "h", "hostPath": {"path": "/tmp/../etc", "type": ""}}])
    with pytest.raises(VolumeSetupError, match="invalid HostPath `/tmp/../etc`: must not "
                                               "contain '..'"):
        await manager.setup(pod)
    await manager.teardown(UID)


# ------------------------------------------------------------------------ configMap


async def test_config_map_keys_become_files_in_kubelets_atomic_layout(manager, api) -> None:
    api.put("ConfigMap", "app", data={"app.conf": "port=80\n", "mode": "prod"},
            binaryData={"logo.bin": base64.b64encode(b"\x89PNG").decode()})
    path = (await manager.setup(make_pod([{"name": "cfg", "configMap": {"name": "app"}}])))["cfg"]
    assert path == manager.config.pods_dir / UID / "volumes/kubernetes.io~configmap/cfg"
    assert files(path) == {"app.conf": "port=80\n", "mode": "prod", "logo.bin": "\x89PNG"}
    assert os.readlink(path / "app.conf") == "..data/app.conf"
    data_target = os.readlink(path / "..data")
    assert data_target.startswith("..") and (path / data_target).is_dir()
    assert mode(path / "app.conf") == 0o644  # the default defaultMode
    await manager.teardown(UID)


async def test_items_choose_keys_paths_and_modes(manager, api) -> None:
    api.put("ConfigMap", "app", data={"a": "A", "b": "B", "c": "C"})
    volume = {"name": "cfg", "configMap": {"name": "app", "defaultMode": 0o600, "items": [
        {"key": "a", "path": "conf/a.txt"}, {"key": "b", "path": "b.sh", "mode": 0o755}]}}
    path = (await manager.setup(make_pod([volume])))["cfg"]
    assert files(path) == {"conf/a.txt": "A", "b.sh": "B"}
    assert mode(path / "conf/a.txt") == 0o600 and mode(path / "b.sh") == 0o755
    assert os.readlink(path / "conf") == "..data/conf"
    await manager.teardown(UID)


async def test_missing_config_map_and_key_give_kubelets_messages(manager, api) -> None:
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app"}}])
    with pytest.raises(VolumeSetupError) as err:
        await manager.setup(pod)
    assert str(err.value) == 'MountVolume.SetUp failed for volume "cfg" : configmap "app" ' \
                             'not found'
    api.put("ConfigMap", "app", data={"a": "A"})
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app", "items": [
        {"key": "nope", "path": "n"}]}}])
    with pytest.raises(VolumeSetupError, match="configmap references non-existent config "
                                               "key: nope"):
        await manager.setup(pod)
    await manager.teardown(UID)


async def test_optional_missing_config_map_gives_an_empty_volume(manager, api) -> None:
    volumes = [{"name": "cfg", "configMap": {"name": "absent", "optional": True}},
               {"name": "part", "configMap": {"name": "app", "optional": True, "items": [
                   {"key": "a", "path": "a"}, {"key": "gone", "path": "g"}]}}]
    api.put("ConfigMap", "app", data={"a": "A"})
    paths = await manager.setup(make_pod(volumes))
    assert files(paths["cfg"]) == {}
    assert files(paths["part"]) == {"a": "A"}
    await manager.teardown(UID)


async def test_changed_config_map_is_swapped_in_atomically_on_the_next_setup(manager,
                                                                              api) -> None:
    api.put("ConfigMap", "app", data={"a": "one", "b": "B"})
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app"}}])
    path = (await manager.setup(pod))["cfg"]
    first = os.readlink(path / "..data")
    await manager.setup(pod)
    assert os.readlink(path / "..data") == first  # unchanged content: nothing rewritten
    reader = open(path / "a")  # a reader of the old version keeps a whole file
    api.put("ConfigMap", "app", data={"a": "two", "c": "C"})
    await manager.setup(pod)
    assert files(path) == {"a": "two", "c": "C"}
    assert not os.path.lexists(path / "b")
    second = os.readlink(path / "..data")
    assert second != first and not (path / first).exists()
    assert reader.read() == "one"
    reader.close()
    assert sorted(p.name for p in path.iterdir()) == sorted(["..data", second, "a", "c"])
    await manager.teardown(UID)


async def test_an_api_failure_keeps_the_volumes_last_content(manager, api) -> None:
    api.put("ConfigMap", "app", data={"a": "one"})
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app"}}])
    path = (await manager.setup(pod))["cfg"]
    api.objects[("ConfigMap", "default", "app")] = ConnectionError("API server unreachable")
    await manager.setup(pod)
    assert files(path) == {"a": "one"}
    await manager.teardown(UID)
    with pytest.raises(VolumeSetupError, match='failed to get configmap "app": API server '
                                               'unreachable'):
        await manager.setup(pod)  # never set up: nothing to keep
    await manager.teardown(UID)


@needs_root
async def test_fs_group_makes_config_map_files_group_readable(manager, api) -> None:
    api.put("ConfigMap", "app", data={"a": "A"})
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app", "defaultMode": 0o400}}],
                   securityContext={"fsGroup": 3000})
    path = (await manager.setup(pod))["cfg"]
    st = (path / "a").stat()
    assert st.st_gid == 3000 and stat.S_IMODE(st.st_mode) == 0o440
    await manager.teardown(UID)


# ------------------------------------------------------------------------------ secret


@needs_root
async def test_secret_is_decoded_onto_a_tmpfs(manager, api) -> None:
    api.put("Secret", "db", data={"password": base64.b64encode(b"s3cr3t").decode()})
    pod = make_pod([{"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}}])
    path = (await manager.setup(pod))["creds"]
    assert path == manager.config.pods_dir / UID / "volumes/kubernetes.io~secret/creds"
    assert files(path) == {"password": "s3cr3t"} and mode(path / "password") == 0o400
    [(_, fstype, _)] = mountinfo(path)
    assert fstype == "tmpfs"
    await manager.teardown(UID)
    assert mountinfo(path) == []


@needs_root
async def test_missing_secret_and_key_give_kubelets_messages(manager, api) -> None:
    pod = make_pod([{"name": "creds", "secret": {"secretName": "db"}}])
    with pytest.raises(VolumeSetupError, match='volume "creds" : secret "db" not found$'):
        await manager.setup(pod)
    api.put("Secret", "db", data={})
    pod = make_pod([{"name": "creds", "secret": {"secretName": "db", "items": [
        {"key": "k", "path": "k"}]}}])
    with pytest.raises(VolumeSetupError, match="references non-existent secret key: k"):
        await manager.setup(pod)
    await manager.teardown(UID)


# ------------------------------------------------------------- downwardAPI / projected


@needs_root
async def test_downward_api_files_follow_the_pods_metadata(manager) -> None:
    volume = {"name": "info", "downwardAPI": {"items": [
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
        {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "app",
                                             "resource": "limits.memory", "divisor": "1Mi"}},
    ]}}
    pod = make_pod([volume])
    pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": "64Mi"}}
    path = (await manager.setup(pod))["info"]
    assert files(path) == {"name": "web", "ns": "default", "uid": UID,
                           "labels": 'app="web"\ntier="front"',
                           "annotations": 'note="say \\"hi\\""', "tier": "front", "mem": "64"}
    pod["metadata"]["labels"]["tier"] = "back"
    await manager.setup(pod)
    assert (path / "tier").read_text() == "back"
    assert (path / "labels").read_text() == 'app="web"\ntier="back"'
    await manager.teardown(UID)


@needs_root
async def test_projected_volume_merges_its_sources_and_skips_tokens(manager, api) -> None:
    api.put("ConfigMap", "app", data={"app.conf": "x=1"})
    api.put("Secret", "db", data={"user": base64.b64encode(b"admin").decode()})
    volume = {"name": "all", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": "app"}},
        {"secret": {"name": "db", "items": [{"key": "user", "path": "db/user", "mode": 0o400}]}},
        {"configMap": {"name": "absent", "optional": True}},
        {"downwardAPI": {"items": [{"path": "pod", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
    ]}}
    path = (await manager.setup(make_pod([volume])))["all"]
    assert files(path) == {"app.conf": "x=1", "db/user": "admin", "pod": "web"}
    assert mode(path / "app.conf") == 0o440 and mode(path / "db/user") == 0o400
    [(_, fstype, _)] = mountinfo(path)
    assert fstype == "tmpfs"
    await manager.teardown(UID)


@needs_root
async def test_projected_missing_source_fails_with_its_name(manager) -> None:
    volume = {"name": "all", "projected": {"sources": [{"secret": {"name": "db"}}]}}
    with pytest.raises(VolumeSetupError, match='volume "all" : secret "db" not found'):
        await manager.setup(make_pod([volume]))
    await manager.teardown(UID)


async def test_unsupported_volume_types_are_refused_by_name(manager) -> None:
    pod = make_pod([{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}])
    with pytest.raises(VolumeSetupError) as err:
        await manager.setup(pod)
    assert str(err.value).startswith('MountVolume.SetUp failed for volume "data" : '
                                     "persistentVolumeClaim volumes are not supported by "
                                     "dockyard's node agent")
    await manager.teardown(UID)


# ------------------------------------------------------------------------------ mounts


@needs_root
async def test_container_mounts_in_order_then_pod_files(manager, api) -> None:
    api.put("ConfigMap", "app", data={"a": "A"})
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app"}},
                    {"name": "scratch", "emptyDir": {}}],
                   [{"name": "scratch", "mountPath": "/data"},
                    {"name": "cfg", "mountPath": "/etc/app"},
                    {"name": "scratch", "mountPath": "/ro", "readOnly": True,
                     "mountPropagation": "HostToContainer"}])
    volumes = await manager.setup(pod)
    pod_dir = manager.config.pods_dir / UID
    got = manager.mounts(pod, pod["spec"]["containers"][0], volumes, "10.42.0.7")
    assert got == [
        Mount("/data", str(volumes["scratch"])),
        Mount("/etc/app", str(volumes["cfg"]), readonly=True),  # configMaps are read-only
        Mount("/ro", str(volumes["scratch"]), readonly=True, options=("rslave",)),
        Mount("/etc/hosts", str(pod_dir / "etc-hosts")),
        Mount("/etc/hostname", str(pod_dir / "etc-hostname")),
        Mount("/etc/resolv.conf", str(pod_dir / "resolv.conf")),
        Mount("/dev/shm", str(pod_dir / "shm")),
    ]
    assert "10.42.0.7\tweb\n" in (pod_dir / "etc-hosts").read_text()
    assert (pod_dir / "etc-hostname").read_text() == "web\n"
    assert (pod_dir / "resolv.conf").read_text() == (
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.43.0.10\noptions ndots:5\n")
    [(_, fstype, options)] = mountinfo(pod_dir / "shm")  # one /dev/shm shared by the pod
    assert fstype == "tmpfs" and "size=65536k" in options
    await manager.teardown(UID)
    assert mountinfo(pod_dir / "shm") == []


async def test_own_mounts_at_etc_hosts_and_dev_shm_replace_the_pods(manager, tmp_path) -> None:
    pod = make_pod([{"name": "h", "hostPath": {"path": str(tmp_path / "h"),
                                               "type": "DirectoryOrCreate"}}],
                   [{"name": "h", "mountPath": "/etc/hosts", "subPath": ""},
                    {"name": "h", "mountPath": "/dev/shm"}])
    volumes = await manager.setup(pod)
    targets = [m.container_path for m in
               manager.mounts(pod, pod["spec"]["containers"][0], volumes, "10.42.0.7")]
    assert targets == ["/etc/hosts", "/dev/shm", "/etc/hostname", "/etc/resolv.conf"]
    await manager.teardown(UID)


async def test_host_network_pod_mounts_the_nodes_hosts_file(manager, tmp_path) -> None:
    pod = make_pod([], hostNetwork=True, hostIPC=True)
    await manager.setup(pod)
    got = {m.container_path: m for m in manager.mounts(pod, pod["spec"]["containers"][0], {})}
    hosts = Path(got["/etc/hosts"].host_path).read_text()
    assert hosts.startswith("# Kubernetes-managed hosts file (host network).\n")
    assert hosts.endswith(Path("/etc/hosts").read_text())
    assert got["/dev/shm"] == Mount("/dev/shm", "/dev/shm")  # hostIPC: the host's
    assert Path(got["/etc/resolv.conf"].host_path).read_text() == "nameserver 192.0.2.53\n"
    await manager.teardown(UID)


async def test_read_only_root_makes_hostname_and_resolv_conf_read_only(manager) -> None:
    pod = make_pod([])
    pod["spec"]["containers"][0]["securityContext"] = {"readOnlyRootFilesystem": True}
    await manager.setup(pod)
    got = {m.container_path: m.readonly for m in
           manager.mounts(pod, pod["spec"]["containers"][0], {}, "10.42.0.7")}
    assert got == {"/etc/hosts": False, "/etc/hostname": True, "/etc/resolv.conf": True,
                   "/dev/shm": False}
    await manager.teardown(UID)


async def test_mount_errors_are_container_config_errors(manager) -> None:
    pod = make_pod([{"name": "a", "emptyDir": {}}],
                   [{"name": "a", "mountPath": "/x"}, {"name": "a", "mountPath": "/x"}])
    volumes = await manager.setup(pod)
    container = pod["spec"]["containers"][0]
    with pytest.raises(ContainerConfigError, match='container "app" mounts "/x" more than once'):
        manager.mounts(pod, container, volumes, "10.42.0.7")
    container["volumeMounts"] = [{"name": "nope", "mountPath": "/y"}]
    with pytest.raises(ContainerConfigError,
                       match='cannot find volume "nope" to mount into container "app"'):
        manager.mounts(pod, container, volumes, "10.42.0.7")
    container["volumeMounts"] = [{"name": "a", "mountPath": "/y", "subPath": "../../etc"}]
    with pytest.raises(ContainerConfigError, match=r"unable to provision SubPath `../../etc`: "
                                                   r"must not contain '..'"):
        manager.mounts(pod, container, volumes, "10.42.0.7")
    await manager.teardown(UID)


@needs_root
async def test_sub_path_is_created_and_bound_inside_the_volume(manager) -> None:
    pod = make_pod([{"name": "a", "emptyDir": {}}],
                   [{"name": "a", "mountPath": "/logs", "subPath": "logs/app"},
                    {"name": "a", "mountPath": "/named", "subPathExpr": "pods/$(POD)"}])
    container = pod["spec"]["containers"][0]
    container["env"] = [{"name": "POD", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.name"}}}]
    volumes = await manager.setup(pod)
    got = manager.mounts(pod, container, volumes, "10.42.0.7")
    logs, named = Path(got[0].host_path), Path(got[1].host_path)
    assert logs == manager.config.pods_dir / UID / "volume-subpaths/a/app/0"
    (logs / "out.log").write_text("hello")  # written through the bind...
    assert (volumes["a"] / "logs/app/out.log").read_text() == "hello"  # ...lands in the volume
    assert (volumes["a"] / "pods/web").is_dir() and named.is_dir()
    assert mode(volumes["a"] / "logs/app") == 0o777  # the volume's mode
    manager.mounts(pod, container, volumes, "10.42.0.7")  # a restarted container: rebound
    assert len(mountinfo(logs)) == 1
    await manager.teardown(UID)
    assert mountinfo(logs) == []


@needs_root
async def test_sub_path_of_a_config_map_key_is_that_file(manager, api) -> None:
    api.put("ConfigMap", "app", data={"nginx.conf": "worker_processes 1;"})
    pod = make_pod([{"name": "cfg", "configMap": {"name": "app"}}],
                   [{"name": "cfg", "mountPath": "/etc/nginx/nginx.conf",
                     "subPath": "nginx.conf"}])
    volumes = await manager.setup(pod)
    [mount, *_] = manager.mounts(pod, pod["spec"]["containers"][0], volumes, "10.42.0.7")
    assert mount.readonly and Path(mount.host_path).read_text() == "worker_processes 1;"
    await manager.teardown(UID)


@needs_root
async def test_sub_path_through_a_symlink_out_of_the_volume_is_refused(manager,
                                                                       tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    pod = make_pod([{"name": "a", "emptyDir": {}}],
                   [{"name": "a", "mountPath": "/x", "subPath": "escape"}])
    volumes = await manager.setup(pod)
    os.symlink(outside, volumes["a"] / "escape")  # what a container could do in the volume
    with pytest.raises(ContainerConfigError, match="not within volume path"):
        manager.mounts(pod, pod["spec"]["containers"][0], volumes, "10.42.0.7")
    await manager.teardown(UID)
    assert outside.is_dir()


# ------------------------------------------------------------------------------ restart


@needs_root
async def test_teardown_by_a_new_manager_finds_the_earlier_mounts(config, api,
                                                                  tmp_path) -> None:
    api.put("Secret", "db", data={"k": base64.b64encode(b"v").decode()})
    pod = make_pod([{"name": "creds", "secret": {"secretName": "db"}},
                    {"name": "cache", "emptyDir": {"medium": "Memory"}},
                    {"name": "a", "emptyDir": {}}],
                   [{"name": "a", "mountPath": "/x", "subPath": "sub"}])
    first = HostVolumeManager(config, api.get)
    volumes = await first.setup(pod)
    first.mounts(pod, pod["spec"]["containers"][0], volumes, "10.42.0.7")
    pod_dir = config.pods_dir / UID
    assert len(mount_points_under(pod_dir)) == 4  # secret, cache, shm, subpath
    restarted = HostVolumeManager(config, api.get)  # the agent restarted: no memory of it
    await restarted.teardown(UID)
    assert mount_points_under(pod_dir) == [] and not pod_dir.exists()
    await restarted.teardown(UID)


@needs_root
async def test_unmount_all_clears_every_pod(config, api) -> None:
    manager = HostVolumeManager(config, api.get)
    for uid in ("p1", "p2"):
        pod = make_pod([{"name": "m", "emptyDir": {"medium": "Memory"}}])
        pod["metadata"]["uid"] = uid
        await manager.setup(pod)
    assert len(mount_points_under(config.pods_dir)) == 4
    unmount_all(config.pods_dir)
    assert mount_points_under(config.pods_dir) == []


def test_safe_open_refuses_a_symlink_anywhere_in_the_path(tmp_path: Path) -> None:
    """What stops a container that swaps a directory for a symlink between the check and the
    bind (CVE-2017-1002101): every component is opened without following links."""
    (tmp_path / "vol/real").mkdir(parents=True)
    (tmp_path / "vol/real/f").write_text("x")
    os.symlink("/etc", tmp_path / "vol/link")
    os.symlink("/etc/passwd", tmp_path / "vol/real/flink")
    fd = safe_open(str(tmp_path / "vol"), "real/f")
    assert os.readlink(f"/proc/self/fd/{fd}") == str(tmp_path / "vol/real/f")
    os.close(fd)
    for rel in ("link/passwd", "real/flink", "link"):
        with pytest.raises(OSError):
            safe_open(str(tmp_path / "vol"), rel)
