"""Pod networks from the real CNI plugins: one namespace, one veth on the node bridge, one IP.

Per pod: a network namespace (netns.py), then two CNI networks run side by side (they touch
different interfaces): the `loopback` plugin for `lo`, and the cluster's chain — `bridge` with
`host-local` IPAM over the node's pod CIDR, plus `portmap` when the pod asks for hostPorts.

The bridge plugin runs with `isGateway: false`. With `isGateway: true` it also writes 1 to the
host's /proc/sys/net/ipv4/ip_forward (plugins 1.1.1, `enableIPForward`), and dockyard must never
turn the host into a router. Instead the agent gives the bridge the gateway address itself
(start()), and host-local hands each pod one route, the default route via that address. So:
pods on the node reach each other over the bridge (layer 2), the host reaches them through its
address on the bridge (the subnet's own route), and nothing is forwarded or NATed to the outside
(`ipMasq: false`).

Everything a DEL needs (the exact configuration, the runtime values, the ADD result) is written
to `state_dir/network/<uid>.json` *before* the ADD, so teardown works from the record alone,
after an agent restart or a crash half-way through a setup. host-local keeps its leases under
`state_dir/cni/ipam/<prefix>/` and serializes concurrent ADDs with its own file lock; this module
only serializes operations on the same pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import time
import weakref
from pathlib import Path
from typing import Any

from dockyard.kubelet.config import KubeletConfig
from dockyard.kubelet.context import PodNetworkStatus
from dockyard.network import netns
from dockyard.network.cni import (
    DEFAULT_PLUGIN_DIRS,
    SPEC_VERSION,
    CniError,
    CniPlugins,
    RuntimeConf,
    result_ips,
)
from dockyard.runtime import naming

log = logging.getLogger(__name__)

Obj = dict[str, Any]

IFNAME = "eth0"
REQUIRED_PLUGINS = ("bridge", "host-local", "loopback", "portmap")


class PodNetworkError(Exception):
    """The pod network cannot work on this node (missing plugins, a broken bridge)."""


def port_mappings(pod: Obj) -> list[Obj]:
    """The pod's hostPorts as CNI `portMappings` (what kubelet hands the portmap plugin)."""
    out = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                out.append({
                    "hostPort": int(port["hostPort"]),
                    "containerPort": int(port["containerPort"]),
                    "protocol": str(port.get("protocol") or "TCP").lower(),
                    "hostIP": port.get("hostIP") or "",
                })
    return out


class CniPodNetwork:
    """The `PodNetwork` of the node agent (kubelet/context.py) over the CNI plugins."""

    def __init__(self, config: KubeletConfig,
                 plugin_dirs: tuple[str, ...] = DEFAULT_PLUGIN_DIRS) -> None:
        self.config = config
        self.prefix = config.prefix
        self.bridge = naming.bridge_name(config.prefix)
        self.subnet = ipaddress.ip_network(config.pod_cidr, strict=False)
        self.gateway = str(next(self.subnet.hosts()))
        # A fixed (locally administered) MAC: a bridge without one takes the lowest MAC of its
        # ports, so the pods' gateway MAC would change as pods come and go, and their ARP
        # caches would point at a MAC nobody answers for.
        digest = hashlib.sha256(self.prefix.encode()).digest()
        self.bridge_mac = ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))
        self.records_dir = config.state_dir / "network"
        self.cni_dir = config.state_dir / "cni"
        self.ipam_dir = self.cni_dir / "ipam"
        self.conflist_path = self.cni_dir / f"10-{self.prefix}.conflist"
        # Present once a pod of this cluster had hostPorts: cleanup then looks at iptables.
        self._portmap_marker = self.cni_dir / "portmap-used"
        self.plugins = CniPlugins(plugin_dirs)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = \
            weakref.WeakValueDictionary()
        self._bridge_lock = asyncio.Lock()
        self._records: dict[str, Obj] = {}

    # -- configuration ----------------------------------------------------------------------

    def conflist(self, with_portmap: bool = False) -> Obj:
        """The cluster's chain. host-local adds the default route through the bridge's address;
        the pod subnet's own route comes with the pod's address."""
        bridge = {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": False,  # True would enable ip_forward on the host (see module doc)
            "isDefaultGateway": False,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "dataDir": str(self.ipam_dir),
                "ranges": [[{"subnet": str(self.subnet), "gateway": self.gateway}]],
                "routes": [{"dst": "0.0.0.0/0", "gw": self.gateway}],
            },
        }
        plugins: list[Obj] = [bridge]
        if with_portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True},
                            "snat": False})
        return {"cniVersion": SPEC_VERSION, "name": self.prefix, "plugins": plugins}

    def loopback_conf(self) -> Obj:
        return {"cniVersion": SPEC_VERSION, "name": f"{self.prefix}-lo", "type": "loopback"}

    # -- PodNetwork -------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the plugins run and speak CNI 1.0.0, write the conflist, make the bridge."""
        try:
            for plugin in REQUIRED_PLUGINS:
                self.plugins.find(plugin)
            answers = await asyncio.gather(*(self.plugins.version(p)
                                             for p in REQUIRED_PLUGINS))
        except CniError as exc:
            raise PodNetworkError(
                f"{exc}. Pod networking needs the CNI plugins {', '.join(REQUIRED_PLUGINS)} "
                f"in {':'.join(self.plugins.dirs)}: install the Debian package "
                "containernetworking-plugins") from exc
        for plugin, answer in zip(REQUIRED_PLUGINS, answers, strict=True):
            if SPEC_VERSION not in (answer.get("supportedVersions") or []):
                raise PodNetworkError(
                    f"CNI plugin {plugin} does not support CNI {SPEC_VERSION} (it supports "
                    f"{answer.get('supportedVersions')}): upgrade containernetworking-plugins")
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.ipam_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.conflist_path, self.conflist())
        await self._ensure_bridge()

    async def setup(self, pod: Obj) -> PodNetworkStatus:
        meta = pod.get("metadata") or {}
        uid = meta["uid"]
        async with self._lock(uid):
            record = self._load(uid)
            if record is not None:
                if record.get("state") == "ready" and netns.is_netns(record["netns"]):
                    return _status(record)
                await self._undo(uid, record)  # half-made (crash, failure): start over
            if not os.path.isdir(f"/sys/class/net/{self.bridge}"):
                await self._ensure_bridge()
            name = naming.netns_name(self.prefix, uid)
            mappings = port_mappings(pod)
            record = {
                "uid": uid,
                "namespace": meta.get("namespace", ""),
                "name": meta.get("name", ""),
                "state": "pending",
                "netns": netns.path_of(name),
                "containerID": name,
                "ifname": IFNAME,
                "conflist": self.conflist(with_portmap=bool(mappings)),
                "loopback": self.loopback_conf(),
                "capabilityArgs": {"portMappings": mappings} if mappings else {},
                "cniArgs": [["IgnoreUnknown", "1"],
                            ["K8S_POD_NAMESPACE", meta.get("namespace", "")],
                            ["K8S_POD_NAME", meta.get("name", "")],
                            ["K8S_POD_INFRA_CONTAINER_ID", name],
                            ["K8S_POD_UID", uid]],
            }
            if mappings:
                self._portmap_marker.parent.mkdir(parents=True, exist_ok=True)
                self._portmap_marker.touch()
            self._save(record)
            try:
                await netns.create(name)
                rt, rt_lo = _runtime_confs(record, record["netns"])
                # Both finish before any undo: never DEL while an ADD still runs.
                result, lo = await asyncio.gather(
                    self.plugins.add_network_list(record["conflist"], rt),
                    self.plugins.add_network(record["loopback"], rt_lo),
                    return_exceptions=True)
                for outcome in (result, lo):
                    if isinstance(outcome, BaseException):
                        raise outcome
                assert isinstance(result, dict)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._undo(uid, record))
                raise
            ips = result_ips(result)
            if not ips:
                await self._undo(uid, record)
                raise CniError("bridge", "ADD", 999, "the result has no IP address",
                               json.dumps(result))
            # IPv4 first: status.podIP is the first.
            ips.sort(key=lambda c: ipaddress.ip_interface(c.address).version)
            record.update(state="ready", result=result, ips=[c.ip for c in ips],
                          gateway=ips[0].gateway, created=time.time())
            self._save(record)
            return _status(record)

    async def teardown(self, pod_uid: str) -> None:
        async with self._lock(pod_uid):
            record = self._load(pod_uid)
            if record is None:
                name = naming.netns_name(self.prefix, pod_uid)
                if not netns.exists(name):
                    return
                # A namespace without a record (written by an older agent?): DEL with the
                # plain chain still releases the address host-local gave this container.
                record = {"uid": pod_uid, "netns": netns.path_of(name), "containerID": name,
                          "ifname": IFNAME, "conflist": self.conflist(),
                          "loopback": self.loopback_conf(), "capabilityArgs": {}}
            await self._undo(pod_uid, record)

    async def status(self, pod_uid: str) -> PodNetworkStatus | None:
        record = self._load(pod_uid)
        if record is None or record.get("state") != "ready":
            return None
        if not netns.is_netns(record["netns"]):
            return None  # the namespace is gone (a reboot): the pod needs a new one
        return _status(record)

    async def cleanup_all(self) -> None:
        """DEL every recorded pod (releases addresses, removes portmap rules), then remove
        whatever is left with the prefix: namespaces, the bridge's ports, the bridge, the
        IPAM data and the records."""
        uids = [p.stem for p in self._record_files()]
        sem = asyncio.Semaphore(8)

        async def one(uid: str) -> None:
            async with sem:
                try:
                    await self.teardown(uid)
                except Exception as exc:  # keep going: the rest is removed below anyway
                    log.warning("cleanup: CNI DEL of pod %s failed: %s", uid, exc)

        await asyncio.gather(*(one(uid) for uid in uids))
        for name in netns.list_names(self.prefix):
            netns.delete(name)
        brif = Path(f"/sys/class/net/{self.bridge}/brif")
        commands = []
        if brif.is_dir():
            commands += [f"link del dev {port}" for port in sorted(os.listdir(brif))]
        if Path(f"/sys/class/net/{self.bridge}").exists():
            commands.append(f"link del dev {self.bridge}")
        if commands:
            # -force: a port may vanish by itself meanwhile (its namespace just went away).
            await _ip_batch(commands, force=True)
        if self._portmap_marker.exists():
            await _remove_idle_hostport_chain()
        shutil.rmtree(self.ipam_dir, ignore_errors=True)
        shutil.rmtree(self.records_dir, ignore_errors=True)
        self.conflist_path.unlink(missing_ok=True)
        self._portmap_marker.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.cni_dir.rmdir()
        self._records.clear()

    # -- internals --------------------------------------------------------------------------

    def _lock(self, uid: str) -> asyncio.Lock:
        lock = self._locks.get(uid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[uid] = lock
        return lock

    async def _ensure_bridge(self) -> None:
        """The node bridge with the gateway address, up (idempotent). The bridge plugin would
        make the bridge too, but without an address unless isGateway (see module doc)."""
        async with self._bridge_lock:
            address = f"{self.gateway}/{self.subnet.prefixlen}"
            rest = [f"link set dev {self.bridge} address {self.bridge_mac}",
                    f"addr replace {address} dev {self.bridge}",
                    f"link set dev {self.bridge} up"]
            if not os.path.isdir(f"/sys/class/net/{self.bridge}"):
                try:
                    await _ip_batch([f"link add name {self.bridge} type bridge", *rest])
                    return
                except PodNetworkError:
                    if not os.path.isdir(f"/sys/class/net/{self.bridge}"):
                        raise
                    # made meanwhile by a bridge plugin: give it the address below
            await _ip_batch(rest)

    async def _undo(self, uid: str, record: Obj) -> None:
        """CNI DEL of both networks, then remove the namespace and the record. Raises (and
        keeps the record for a retry) when a plugin's DEL fails."""
        present = netns.is_netns(record["netns"])
        rt, rt_lo = _runtime_confs(record, record["netns"] if present else "")
        results = await asyncio.gather(
            self.plugins.del_network_list(record["conflist"], rt, record.get("result")),
            self.plugins.del_network(record["loopback"], rt_lo),
            return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise outcome
        netns.delete(naming.netns_name(self.prefix, uid))
        self._records.pop(uid, None)
        with contextlib.suppress(FileNotFoundError):
            (self.records_dir / f"{uid}.json").unlink()

    def _record_files(self) -> list[Path]:
        try:
            return sorted(self.records_dir.glob("*.json"))
        except FileNotFoundError:
            return []

    def _load(self, uid: str) -> Obj | None:
        record = self._records.get(uid)
        if record is not None:
            return record
        try:
            record = json.loads((self.records_dir / f"{uid}.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        self._records[uid] = record
        return record

    def _save(self, record: Obj) -> None:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.records_dir / f"{record['uid']}.json", record)
        self._records[record["uid"]] = record


def _runtime_confs(record: Obj, netns_path: str) -> tuple[RuntimeConf, RuntimeConf]:
    args = tuple((k, v) for k, v in record.get("cniArgs") or [])
    rt = RuntimeConf(container_id=record["containerID"], netns=netns_path,
                     ifname=record["ifname"], args=args,
                     capability_args=record.get("capabilityArgs") or {})
    rt_lo = RuntimeConf(container_id=record["containerID"], netns=netns_path, ifname="lo",
                        args=args)
    return rt, rt_lo


def _status(record: Obj) -> PodNetworkStatus:
    return PodNetworkStatus(netns_path=record["netns"], ips=tuple(record.get("ips") or ()),
                            gateway=record.get("gateway") or "")


def _write_json(path: Path, obj: Obj) -> None:
    """Write-then-rename: a reader (a restarted agent) sees the old or the new, never half.
    No fsync: the namespaces live in /run and do not survive a reboot either."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


async def _ip_batch(commands: list[str], force: bool = False) -> None:
    argv = ["ip", *(["-force"] if force else []), "-batch", "-"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate("\n".join(commands).encode() + b"\n")
    if proc.returncode != 0 and not force:
        raise PodNetworkError(f"ip {'; '.join(commands)}: {err.decode(errors='replace').strip()}")


HOSTPORT_CHAIN = "CNI-HOSTPORT-DNAT"


async def _remove_idle_hostport_chain() -> None:
    """Remove portmap's top-level chain (and its jumps from PREROUTING/OUTPUT) if no pod on
    the host uses it any more. portmap cannot give its chains a prefix, so the chain is shared
    by every CNI user of the host; its per-pod chains (CNI-DN-...) went with each pod's DEL.
    One iptables-restore transaction: if anyone added a rule to the chain since we looked,
    deleting the chain fails and nothing changes."""
    if shutil.which("iptables-save") is None:
        return
    proc = await asyncio.create_subprocess_exec(
        "iptables-save", "-t", "nat", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    lines = out.decode(errors="replace").splitlines()
    if any(line.startswith(f"-A {HOSTPORT_CHAIN} ") for line in lines):
        return  # still in use
    if not any(line.startswith(f":{HOSTPORT_CHAIN} ") for line in lines):
        return
    jumps = [line.replace("-A ", "-D ", 1) for line in lines
             if line.startswith("-A ") and line.endswith(f"-j {HOSTPORT_CHAIN}")]
    script = "\n".join(["*nat", *jumps, f"-X {HOSTPORT_CHAIN}", "COMMIT", ""])
    proc = await asyncio.create_subprocess_exec(
        "iptables-restore", "--noflush", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        log.info("cleanup: left %s in place: %s", HOSTPORT_CHAIN, err.decode().strip())

