"""Pod volumes as host directories, laid out and filled as kubelet's volume plugins do.

Every volume of a pod lives under `pods/<uid>/volumes/<plugin>/<name>` with Kubernetes'
plugin names (`kubernetes.io~empty-dir`, `~configmap`, `~secret`, `~downward-api`,
`~projected`); hostPath volumes are the host path itself. Secret, downward API and projected
volumes sit on a tmpfs, as kubelet's memory-backed wrappers do, so secrets never touch the disk.
Files of configMap/secret/downward API/projected volumes are written with kubelet's
AtomicWriter layout (atomicwriter.py), so a reader never sees half an update; downward API
values and subPathExpr come from downward.py.

Every tmpfs carries the cluster prefix as its source name, and everything is found again in
/proc/self/mountinfo by its path under the data directory (mountutil.py), so a restarted agent
(or `dockyard cleanup`, through `unmount_all` here) removes what an earlier one mounted. The
pod's /dev/shm is one tmpfs per pod (containerd's sandbox shm, 64 MiB like Docker) bound into
each container, so containers of a pod share POSIX shared memory as they share the IPC
namespace.

Sizes of memory-backed volumes follow kubelet's SizeMemoryBackedVolumes: the node's allocatable
memory, lowered to the pod's memory limit when every container has one, lowered to
emptyDir.sizeLimit when set. (A disk emptyDir's sizeLimit is not enforced: kubelet does it by
eviction, which dockyard does not have yet.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import shutil
import stat
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from dockyard.api.fielderrors import go_quote
from dockyard.api.quantity import Quantity
from dockyard.kubelet import etcfiles, mountutil
from dockyard.kubelet.atomicwriter import (
    DATA_DIR,
    Payload,
    PayloadPathError,
    set_volume_ownership,
    write_atomic,
)
from dockyard.kubelet.config import KubeletConfig
from dockyard.kubelet.containerconfig import ContainerConfigError
from dockyard.kubelet.context import VolumeSetupError
from dockyard.kubelet.downward import (
    DownwardAPIError,
    expand,
    field_value,
    quantity_or_none,
    resource_value,
    subpath_env,
)
from dockyard.kubelet.mountutil import unmount_all
from dockyard.runtime.cri import Mount

Obj = dict[str, Any]
GetObject = Callable[[str, str, str], Awaitable[Obj | None]]
log = logging.getLogger(__name__)

PLUGIN_DIRS = {"emptyDir": "kubernetes.io~empty-dir", "configMap": "kubernetes.io~configmap",
               "secret": "kubernetes.io~secret", "downwardAPI": "kubernetes.io~downward-api",
               "projected": "kubernetes.io~projected"}
MEMORY_BACKED = {"secret", "downwardAPI", "projected"}
READ_ONLY = {"configMap", "secret", "downwardAPI", "projected"}  # GetAttributes().ReadOnly
SUPPORTED = (*PLUGIN_DIRS, "hostPath")
DEFAULT_MODE = 0o644
SHM_SIZE = 64 * 1024 * 1024
SHM_OPTIONS = ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")
PROPAGATION = {"HostToContainer": ("rslave",), "Bidirectional": ("rshared",)}

# ------------------------------------------------------------------------ payloads


class _Fail(Exception):
    """One volume cannot be set up; the message is kubelet's."""


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Fail(f"{what}: invalid base64 data: {exc}") from None


def configmap_data(obj: Obj) -> dict[str, bytes]:
    data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = _b64(value, f"configmap key {key}")
    return data


def secret_data(obj: Obj) -> dict[str, bytes]:
    data = {k: _b64(v, f"secret key {k}") for k, v in (obj.get("data") or {}).items()}
    for key, value in (obj.get("stringData") or {}).items():  # only if never converted
        data[key] = str(value).encode()
    return data


def _key_payload(data: dict[str, bytes], source: Obj, default_mode: int, optional: bool,
                 missing: str) -> Payload:
    """Keys as files (all keys, or `items` with their path and mode); `missing` is kubelet's
    message prefix for an item naming an absent key."""
    items = source.get("items") or []
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    payload: Payload = {}
    for item in items:
        key = str(item.get("key"))
        if key not in data:
            if optional:
                continue
            raise _Fail(f"{missing}: {key}")
        mode = item.get("mode")
        payload[str(item.get("path"))] = (data[key], default_mode if mode is None else mode)
    return payload


def _meminfo_total() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _pod_memory_limit(spec: Obj) -> int | None:
    """The pod cgroup's memory limit (ResourceConfigForPod): only when every container has
    one; app containers add up, an init container counts alone."""
    total = 0
    for kind in ("containers", "initContainers"):
        for container in spec.get(kind) or []:
            raw = ((container.get("resources") or {}).get("limits") or {}).get("memory")
            limit = quantity_or_none(raw) if raw is not None else None
            if limit is None:
                return None
            total = total + limit.int_value() if kind == "containers" \
                else max(total, limit.int_value())
    return total or None


# ------------------------------------------------------------------------- hostPath


def _go_err(exc: OSError, op: str, path: str) -> str:
    text = exc.strerror or str(exc)
    return f"{op} {path}: {text[:1].lower()}{text[1:]}"


_HOST_PATH_KINDS = {"Directory": (stat.S_ISDIR, "a directory"),
                    "File": (stat.S_ISREG, "a file"),
                    "Socket": (stat.S_ISSOCK, "a socket file"),
                    "CharDevice": (stat.S_ISCHR, "a character device"),
                    "BlockDevice": (stat.S_ISBLK, "a block device")}


def check_host_path(path: str, kind: str) -> None:
    """hostPath's SetUp: no `..`, then the type check (host_path.go checkTypeInternal)."""
    if ".." in path.split("/"):
        raise _Fail(f"invalid HostPath `{path}`: must not contain '..'")
    if kind == "":
        return
    if kind == "DirectoryOrCreate" and not os.path.exists(path):
        try:
            os.makedirs(path, 0o755, exist_ok=True)
        except OSError as exc:
            raise _Fail(_go_err(exc, "mkdir", path)) from None
        return
    if kind == "FileOrCreate" and not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            raise _Fail(_go_err(exc, "open", path)) from None
        return
    kind = kind.removesuffix("OrCreate")
    if kind not in _HOST_PATH_KINDS:
        raise _Fail(f"{kind} is an invalid volume type")
    test, what = _HOST_PATH_KINDS[kind]
    try:
        ok = test(os.stat(path).st_mode)
    except OSError:
        ok = False
    if not ok:
        raise _Fail(f"hostPath type check failed: {path} is not {what}")


def volume_kind(volume: Obj) -> str:
    """The source of a volume (`emptyDir`, `configMap`, ...; `emptyDir` when none is set)."""
    for key, value in volume.items():
        if key != "name" and isinstance(value, dict):
            return key
    return "emptyDir"


# ---------------------------------------------------------------------------- manager


class HostVolumeManager:
    """The VolumeManager of dockyard/kubelet/context.py over real directories and tmpfs."""

    def __init__(self, config: KubeletConfig, get_object: GetObject, *,
                 host_hosts: str = etcfiles.HOST_HOSTS,
                 host_resolv_conf: str = etcfiles.HOST_RESOLV_CONF) -> None:
        self.config = config
        self.get_object = get_object
        self.host_hosts = host_hosts
        self.host_resolv_conf = host_resolv_conf
        self._locks: dict[str, asyncio.Lock] = {}
        self._noted: set[tuple[str, str]] = set()  # (uid, note) logged once per pod

    def pod_dir(self, uid: str) -> Path:
        if not uid or "/" in uid or uid in (".", ".."):
            raise ValueError(f"invalid pod uid {uid!r}")
        return self.config.pods_dir / uid

    def _note(self, uid: str, message: str) -> None:
        if (uid, message) not in self._noted:
            self._noted.add((uid, message))
            log.warning("pod %s: %s", uid, message)

    # setup

    async def setup(self, pod: Obj) -> dict[str, Path]:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid = str(meta.get("uid") or "")
        pod_dir = self.pod_dir(uid)
        async with self._locks.setdefault(uid, asyncio.Lock()):
            fetched = await self._fetch(str(meta.get("namespace") or "default"),
                                        spec.get("volumes") or [])
            pod_dir.mkdir(parents=True, exist_ok=True)
            paths: dict[str, Path] = {}
            errors = []
            for volume in spec.get("volumes") or []:
                name = str(volume.get("name"))
                try:
                    paths[name] = self._setup_volume(pod, volume, fetched)
                except (_Fail, PayloadPathError, DownwardAPIError, OSError) as exc:
                    errors.append(f'MountVolume.SetUp failed for volume "{name}" : {exc}')
            if not spec.get("hostIPC"):
                try:
                    self._ensure_shm(pod_dir / "shm")
                except OSError as exc:  # containers then get a /dev/shm each
                    self._note(uid, f"no pod-wide /dev/shm: {exc}")
            if errors:
                raise VolumeSetupError("; ".join(errors))
            return paths

    async def _fetch(self, namespace: str, volumes: list[Obj]) -> dict[tuple[str, str], Any]:
        """Every ConfigMap and Secret the volumes name, fetched concurrently: object, None
        (not found) or the exception the API client raised."""
        refs: set[tuple[str, str]] = set()
        for volume in volumes:
            sources = [volume] + list((volume.get("projected") or {}).get("sources") or [])
            for source in sources:
                if isinstance(source.get("configMap"), dict):
                    refs.add(("ConfigMap", str(source["configMap"].get("name"))))
                if isinstance(source.get("secret"), dict):
                    name = source["secret"].get("secretName") or source["secret"].get("name")
                    refs.add(("Secret", str(name)))
        keys = sorted(refs)
        results = await asyncio.gather(*(self.get_object(kind, namespace, name)
                                         for kind, name in keys), return_exceptions=True)
        return dict(zip(keys, results, strict=True))

    def _setup_volume(self, pod: Obj, volume: Obj, fetched: dict[tuple[str, str], Any]) -> Path:
        kind, name = volume_kind(volume), str(volume.get("name"))
        source = volume.get(kind) or {}
        if kind == "hostPath":
            path = str(source.get("path") or "")
            check_host_path(path, str(source.get("type") or ""))
            return Path(path)
        if kind not in PLUGIN_DIRS:
            raise _Fail(f"{kind} volumes are not supported by dockyard's node agent "
                        f"(supported: {', '.join(SUPPORTED)})")
        uid = str(pod["metadata"]["uid"])
        path = self.pod_dir(uid) / "volumes" / PLUGIN_DIRS[kind] / name
        security = (pod.get("spec") or {}).get("securityContext") or {}
        fs_group = security.get("fsGroup")
        if kind == "emptyDir":
            self._empty_dir(pod, path, source, fs_group, security)
            return path
        try:
            payload = self._payload(pod, kind, source, fetched)
        except _KeepOld as exc:
            if (path / DATA_DIR).exists():
                self._note(uid, f"volume {name} keeps its last content: {exc}")
                return path
            raise _Fail(str(exc)) from None
        if not path.exists():
            path.mkdir(parents=True, mode=0o777)
            os.chmod(path, 0o777)
        if kind in MEMORY_BACKED and not os.path.ismount(path):
            self._mount_tmpfs(path, self._memory_size(pod, None))
        write_atomic(path, payload, fs_group)
        return path

    def _empty_dir(self, pod: Obj, path: Path, source: Obj, fs_group: int | None,
                   security: Obj) -> None:
        """A 0777 directory (kubelet's emptyDir), or a tmpfs for medium Memory; made once,
        later setups leave the content alone."""
        medium = source.get("medium") or ""
        if medium not in ("", "Memory"):
            raise _Fail(f"emptyDir medium {go_quote(str(medium))} is not supported by "
                        "dockyard's node agent")
        memory = medium == "Memory"
        fresh = not path.exists()
        if fresh:
            path.mkdir(parents=True, mode=0o777)
            os.chmod(path, 0o777)
        if memory and not os.path.ismount(path):
            limit = quantity_or_none(source["sizeLimit"]) if source.get("sizeLimit") else None
            self._mount_tmpfs(path, self._memory_size(pod, limit))
            fresh = True
        if fresh and fs_group is not None:
            set_volume_ownership(path, fs_group, readonly=False,
                                 policy=security.get("fsGroupChangePolicy") or "Always")

    def _payload(self, pod: Obj, kind: str, source: Obj,
                 fetched: dict[tuple[str, str], Any]) -> Payload:
        mode = source.get("defaultMode")
        default_mode = DEFAULT_MODE if mode is None else int(mode)
        if kind == "downwardAPI":
            return self._downward(pod, source.get("items") or [], default_mode)
        if kind in ("configMap", "secret"):
            return self._object_payload(kind, source, default_mode, fetched)
        payload: Payload = {}  # projected
        for projection in source.get("sources") or []:
            if isinstance(projection.get("configMap"), dict):
                payload.update(self._object_payload("configMap", projection["configMap"],
                                                    default_mode, fetched))
            elif isinstance(projection.get("secret"), dict):
                payload.update(self._object_payload("secret", projection["secret"],
                                                    default_mode, fetched))
            elif isinstance(projection.get("downwardAPI"), dict):
                payload.update(self._downward(pod, projection["downwardAPI"].get("items") or [],
                                              default_mode))
            else:
                what = next(iter(projection), "unknown")
                self._note(str(pod["metadata"]["uid"]),
                           f"projected source {what} skipped: dockyard's node agent does not "
                           "support it yet, so its files are not written")
        return payload

    def _object_payload(self, kind: str, source: Obj, default_mode: int,
                        fetched: dict[tuple[str, str], Any]) -> Payload:
        api_kind = "ConfigMap" if kind == "configMap" else "Secret"
        name = str(source.get("secretName") or source.get("name")) if kind == "secret" \
            else str(source.get("name"))
        obj = fetched.get((api_kind, name))
        optional = bool(source.get("optional"))
        if isinstance(obj, BaseException):
            raise _KeepOld(f"failed to get {kind.lower()} {go_quote(name)}: {obj}")
        if obj is None:
            if optional:
                return {}
            raise _Fail(f"{kind.lower()} {go_quote(name)} not found")
        if kind == "configMap":
            return _key_payload(configmap_data(obj), source, default_mode, optional,
                                "configmap references non-existent config key")
        return _key_payload(secret_data(obj), source, default_mode, optional,
                            "references non-existent secret key")

    def _downward(self, pod: Obj, items: list[Obj], default_mode: int) -> Payload:
        payload: Payload = {}
        for item in items:
            mode = item.get("mode")
            mode = default_mode if mode is None else int(mode)
            if isinstance(item.get("fieldRef"), dict):
                value = field_value(pod, str(item["fieldRef"].get("fieldPath")))
            elif isinstance(item.get("resourceFieldRef"), dict):
                value = resource_value(pod, item["resourceFieldRef"], self._allocatable())
            else:
                continue
            payload[str(item.get("path"))] = (value.encode(), mode)
        return payload

    def _allocatable(self) -> dict[str, Quantity]:
        """Node allocatable (capacity less hard eviction thresholds), for resourceFieldRef
        limits not set and for tmpfs sizes."""
        disk = os.statvfs(self.config.state_dir if self.config.state_dir.exists() else "/")
        disk_total = disk.f_blocks * disk.f_frsize
        keep = 1 - self.config.eviction_hard_disk_percent / 100
        memory = max(0, _meminfo_total() - self.config.eviction_hard_memory)
        return {"cpu": Quantity(Fraction(os.cpu_count() or 1)),
                "memory": Quantity(Fraction(memory)),
                "ephemeral-storage": Quantity(Fraction(int(disk_total * keep)))}

    def _memory_size(self, pod: Obj, size_limit: Quantity | None) -> int:
        """calculateEmptyDirMemorySize: allocatable, else the pod limit, else sizeLimit,
        whichever is smallest and positive."""
        size = self._allocatable()["memory"].int_value()
        pod_limit = _pod_memory_limit(pod.get("spec") or {})
        if pod_limit and pod_limit <= size:
            size = pod_limit
        if size_limit is not None and 0 < size_limit.int_value() <= size:
            size = size_limit.int_value()
        return size

    def _mount_tmpfs(self, path: Path, size: int) -> None:
        mountutil.mount(self.config.prefix or "tmpfs", path, "tmpfs", 0,
                        f"size={size}" if size else "")

    def _ensure_shm(self, path: Path) -> None:
        path.mkdir(exist_ok=True)
        if not os.path.ismount(path):
            mountutil.mount(self.config.prefix or "shm", path, "tmpfs",
                            mountutil.MS_NOSUID | mountutil.MS_NODEV | mountutil.MS_NOEXEC,
                            f"mode=1777,size={SHM_SIZE}")

    # mounts

    def mounts(self, pod: Obj, container: Obj, volumes: dict[str, Path],
               pod_ip: str = "") -> list[Mount]:
        """Raises ContainerConfigError (the container's CreateContainerConfigError)."""
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid, cname = str(meta.get("uid") or ""), str(container.get("name"))
        pod_dir = self.pod_dir(uid)
        pod_dir.mkdir(parents=True, exist_ok=True)
        sources = {str(v.get("name")): v for v in spec.get("volumes") or []}
        out: list[Mount] = []
        seen: set[str] = set()
        for index, vm in enumerate(container.get("volumeMounts") or []):
            name, target = str(vm.get("name")), str(vm.get("mountPath"))
            if target.rstrip("/") in seen:
                raise ContainerConfigError(f'container "{cname}" mounts {go_quote(target)} '
                                           "more than once (volumeMounts[].mountPath must be "
                                           "unique)")
            seen.add(target.rstrip("/"))
            if name not in volumes:
                raise ContainerConfigError(f'cannot find volume "{name}" to mount into '
                                           f'container "{cname}"')
            kind = volume_kind(sources.get(name) or {})
            host = volumes[name]
            sub = str(vm.get("subPath") or "")
            if vm.get("subPathExpr"):
                sub = self._expand_subpath(pod, container, vm, pod_ip)
            if sub:
                host = self._bind_subpath(pod_dir, name, cname, index, host, sub)
            elif kind == "hostPath" and not os.path.lexists(host):
                host.mkdir(parents=True, mode=0o755)  # as containerd does for a missing source
            out.append(Mount(container_path=target, host_path=str(host),
                             readonly=bool(vm.get("readOnly")) or kind in READ_ONLY,
                             options=PROPAGATION.get(str(vm.get("mountPropagation")), ())))
        out += self._pod_files(pod, container, pod_dir, seen, pod_ip)
        return out

    def _pod_files(self, pod: Obj, container: Obj, pod_dir: Path, own: set[str],
                   pod_ip: str) -> list[Mount]:
        """/etc/hosts (kubelet), /etc/hostname, /etc/resolv.conf and /dev/shm (containerd),
        each unless the container mounts something there itself."""
        spec = pod.get("spec") or {}
        domain = self.config.cluster_domain
        ro_root = bool((container.get("securityContext") or {}).get("readOnlyRootFilesystem"))
        out = []
        ips = [pod_ip] if pod_ip else []
        ips += [str(p.get("ip")) for p in (pod.get("status") or {}).get("podIPs") or []
                if p.get("ip") and p.get("ip") not in ips]
        if "/etc/hosts" not in own and (ips or spec.get("hostNetwork")):
            path = pod_dir / "etc-hosts"
            etcfiles.write_if_changed(path, etcfiles.hosts_file(pod, ips, domain,
                                                                self.host_hosts))
            out.append(Mount("/etc/hosts", str(path)))
        if "/etc/hostname" not in own:
            path = pod_dir / "etc-hostname"
            etcfiles.write_if_changed(path, etcfiles.hostname_file(pod, domain))
            out.append(Mount("/etc/hostname", str(path), readonly=ro_root))
        if "/etc/resolv.conf" not in own:
            path = pod_dir / "resolv.conf"
            content, warnings = etcfiles.resolv_conf(pod, self.config.cluster_dns, domain,
                                                     self.host_resolv_conf)
            for warning in warnings:
                self._note(str((pod.get("metadata") or {}).get("uid")), warning)
            etcfiles.write_if_changed(path, content)
            out.append(Mount("/etc/resolv.conf", str(path), readonly=ro_root))
        if "/dev/shm" not in own:
            shm = pod_dir / "shm"
            if spec.get("hostIPC"):
                out.append(Mount("/dev/shm", "/dev/shm"))
            elif os.path.ismount(shm):
                out.append(Mount("/dev/shm", str(shm)))
            else:  # setup() was not run: a container-private one
                out.append(Mount("/dev/shm", kind="tmpfs", options=SHM_OPTIONS))
        return out

    def _expand_subpath(self, pod: Obj, container: Obj, vm: Obj, pod_ip: str) -> str:
        """subPathExpr with the container's env (literal values and fieldRefs)."""
        missing: set[str] = set()
        result = expand(str(vm.get("subPathExpr")), subpath_env(pod, container, pod_ip),
                         missing)
        if missing:
            log.warning("subPathExpr %s: missing value for %s", vm.get("subPathExpr"),
                        ", ".join(sorted(missing)))
            raise ContainerConfigError(f'failed to prepare subPath for volumeMount '
                                       f'"{vm.get("name")}" of container "{container.get("name")}"')
        return result

    def _bind_subpath(self, pod_dir: Path, volume: str, cname: str, index: int, base: Path,
                      sub: str) -> Path:
        """Bind the subPath's file or directory, opened without following any symlink, at
        `volume-subpaths/<volume>/<container>/<index>` (kubelet's PrepareSafeSubpath), so a
        container that swaps a directory for a symlink cannot make the bind escape."""
        if os.path.isabs(sub):
            raise ContainerConfigError(f"error SubPath `{sub}` must not be an absolute path")
        if ".." in sub.split("/"):
            raise ContainerConfigError(f"unable to provision SubPath `{sub}`: must not "
                                       "contain '..'")
        root = os.path.realpath(base)
        if not os.path.lexists(os.path.join(root, sub)):
            try:
                mountutil.safe_makedirs(root, sub)
            except OSError as exc:
                log.warning("subPath %s of volume %s: %s", sub, volume, exc)
                raise ContainerConfigError(f'failed to create subPath directory for volumeMount '
                                           f'"{volume}" of container "{cname}"') from None
        resolved = os.path.realpath(os.path.join(root, sub))
        if resolved != root and not resolved.startswith(root + "/"):
            raise ContainerConfigError(f'subpath "{resolved}" not within volume path "{root}"')
        fd = -1
        try:
            fd = mountutil.safe_open(root, os.path.relpath(resolved, root))
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            target = pod_dir / "volume-subpaths" / volume / cname / str(index)
            target.parent.mkdir(parents=True, exist_ok=True)
            unmount_all(target)  # an earlier attempt of this container
            if os.path.lexists(target) and target.is_dir() != is_dir:
                target.rmdir() if target.is_dir() else target.unlink()
            if is_dir:
                target.mkdir(exist_ok=True)
            else:
                target.touch(exist_ok=True)
            mountutil.mount(f"/proc/self/fd/{fd}", target, None, mountutil.MS_BIND)
        except OSError as exc:
            raise ContainerConfigError(f"cannot prepare subPath `{sub}` of volume "
                                       f'"{volume}": {exc}') from None
        finally:
            if fd >= 0:
                os.close(fd)
        return target

    # teardown

    async def teardown(self, pod_uid: str) -> None:
        """Unmount everything below the pod's directory (found in mountinfo, so mounts of an
        earlier agent too), then remove the directory; never removes through a mount."""
        pod_dir = self.pod_dir(pod_uid)
        async with self._locks.setdefault(pod_uid, asyncio.Lock()):
            unmount_all(pod_dir)
            if os.path.lexists(pod_dir):
                shutil.rmtree(pod_dir)
        self._locks.pop(pod_uid, None)
        self._noted = {n for n in self._noted if n[0] != pod_uid}


class _KeepOld(Exception):
    """The API could not be asked (not a NotFound): keep what the volume has, if anything."""

