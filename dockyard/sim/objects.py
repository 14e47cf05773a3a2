"""What a simulated node says about itself and its pods: pure builders of API objects.

Node i gets InternalIP 198.18.0.0/15 + i + 1 (RFC 2544 benchmarking space) and a pod range
carved from 240.0.0.0/4 (reserved, routed nowhere), so nothing a simulated node or pod claims
can collide with a real address on the machine or reach a real host.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

KUBELET_VERSION = "v1.32.0-dockyard-sim"
SIM_LABEL = ("type", "dockyard-sim")
NODE_NETWORK = ipaddress.ip_network("198.18.0.0/15")
POD_NETWORK = ipaddress.ip_network("240.0.0.0/4")
ZONE_LABEL = "topology.kubernetes.io/zone"
# (type, reason, message) of the conditions a healthy kubelet reports, in its order.
HEALTHY_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory",
     "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_ip(index: int) -> str:
    if not 0 <= index < NODE_NETWORK.num_addresses - 2:
        raise ValueError(f"node index {index} does not fit in {NODE_NETWORK}")
    return str(NODE_NETWORK.network_address + index + 1)


def pod_cidr(index: int, max_pods: int) -> ipaddress.IPv4Network:
    """Node `index`'s pod range: a /24, or larger when the node takes over 254 pods."""
    host_bits = max(8, (max_pods + 1).bit_length())
    prefix = POD_NETWORK.prefixlen
    count = 2 ** (32 - prefix - host_bits)
    if not 0 <= index < count:
        raise ValueError(f"node index {index} does not fit in {POD_NETWORK} with "
                         f"{max_pods} pods per node")
    base = int(POD_NETWORK.network_address) + (index << host_bits)
    return ipaddress.IPv4Network((base, 32 - host_bits))


def _uuid_for(name: str, salt: str) -> str:
    digest = hashlib.sha256(f"{salt}/{name}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def node_labels(name: str, index: int, zones: int, extra: dict[str, str] | None) -> dict[str, str]:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
              "beta.kubernetes.io/arch": "amd64", SIM_LABEL[0]: SIM_LABEL[1]}
    if zones > 1:
        labels[ZONE_LABEL] = f"zone-{index % zones}"
    labels.update(extra or {})
    labels[SIM_LABEL[0]] = SIM_LABEL[1]  # how the simulator finds its nodes again
    return labels


def conditions(previous: list[Obj] | None, now: str) -> list[Obj]:
    """The healthy conditions; lastTransitionTime kept for those whose status did not change."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    for type_, status, reason, message in HEALTHY_CONDITIONS:
        old = before.get(type_) or {}
        transition = old.get("lastTransitionTime") if old.get("status") == status else None
        out.append({"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": transition or now})
    return out


@functools.lru_cache(maxsize=100_000)
def _node_info(name: str) -> tuple[tuple[str, str], ...]:
    return (
        ("machineID", _uuid_for(name, "machine").replace("-", "")),
        ("systemUUID", _uuid_for(name, "system")),
        ("bootID", _uuid_for(name, "boot")),
        ("kernelVersion", "6.1.0-dockyard-sim"),
        ("osImage", "dockyard simulated node"),
        ("containerRuntimeVersion", "sim://1.0.0"),
        ("kubeletVersion", KUBELET_VERSION),
        ("kubeProxyVersion", KUBELET_VERSION),
        ("operatingSystem", "linux"),
        ("architecture", "amd64"),
    )


def node_status(name: str, ip: str, *, cpu: str, memory: str, pods: str,
                previous: list[Obj] | None = None) -> Obj:
    resources = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "100Gi"}
    return {
        "capacity": dict(resources),
        "allocatable": dict(resources),
        "conditions": conditions(previous, now_rfc3339()),
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": dict(_node_info(name)),
    }


def node_object(name: str, index: int, *, zones: int, cpu: str, memory: str, pods: str,
                labels: dict[str, str] | None) -> Obj:
    cidr = str(pod_cidr(index, int(pods)))
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": node_labels(name, index, zones, labels),
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "dockyard.io/simulated": "true"}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr],
                 "providerID": f"dockyard-sim://{name}"},
        "status": node_status(name, node_ip(index), cpu=cpu, memory=memory, pods=pods),
    }


def status_differs(current: Obj, wanted: Obj) -> bool:
    """Whether the stored node status says something other than the kubelet would post
    (heartbeat times aside): kubelet's `changed` check before a status patch."""
    def essentials(status: Obj) -> tuple[Any, ...]:
        conds = sorted((c.get("type"), c.get("status"), c.get("reason"))
                       for c in status.get("conditions") or [])
        return (conds, status.get("capacity"), status.get("allocatable"),
                status.get("addresses"), status.get("nodeInfo"))
    return essentials(current) != essentials(wanted)


# -- pods ----------------------------------------------------------------------------------


def _condition(type_: str, status: str, before: dict[str, Obj], now: str, **extra: str) -> Obj:
    old = before.get(type_) or {}
    transition = old.get("lastTransitionTime") if old.get("status") == status else None
    cond = {"type": type_, "status": status, "lastProbeTime": None,
            "lastTransitionTime": transition or now}
    cond.update(extra)
    return cond


def _container_id(pod: Obj, container: str) -> str:
    uid = pod["metadata"].get("uid") or pod["metadata"]["name"]
    return "sim://" + hashlib.sha256(f"{uid}/{container}".encode()).hexdigest()


def running_status(pod: Obj, *, pod_ip: str, host_ip: str) -> Obj:
    """The status a kubelet posts once every container started and passed readiness."""
    now = now_rfc3339()
    spec = pod.get("spec") or {}
    status = dict(pod.get("status") or {})
    before = {c.get("type"): c for c in status.get("conditions") or []}
    managed = {"PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready",
               "PodScheduled"}
    gates = [g.get("conditionType") for g in spec.get("readinessGates") or []]
    gates_ready = all((before.get(g) or {}).get("status") == "True" for g in gates)
    conds = [_condition("PodReadyToStartContainers", "True", before, now),
             _condition("Initialized", "True", before, now),
             _condition("ContainersReady", "True", before, now)]
    if gates_ready:
        conds.append(_condition("Ready", "True", before, now))
    else:
        conds.append(_condition("Ready", "False", before, now, reason="ReadinessGatesNotReady",
                                message="corresponding condition of pod readiness gate is "
                                        "not True"))
    conds.append(_condition("PodScheduled", "True", before, now))
    conds += [c for t, c in before.items() if t not in managed]
    started = status.get("startTime") or now
    old_ctrs = {c.get("name"): c for c in status.get("containerStatuses") or []}
    containers = []
    for ctr in spec.get("containers") or []:
        previous = ((old_ctrs.get(ctr["name"]) or {}).get("state") or {}).get("running") or {}
        containers.append({
            "name": ctr["name"], "image": ctr.get("image", ""),
            "imageID": f"sim://{ctr.get('image', '')}", "containerID": _container_id(pod,
                                                                                 ctr["name"]),
            "ready": True, "started": True, "restartCount": 0,
            "state": {"running": {"startedAt": previous.get("startedAt") or now}},
        })
    inits = [{"name": ctr["name"], "image": ctr.get("image", ""),
              "imageID": f"sim://{ctr.get('image', '')}",
              "containerID": _container_id(pod, ctr["name"]), "ready": True, "started": False,
              "restartCount": 0,
              "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                       "startedAt": started, "finishedAt": started,
                                       "containerID": _container_id(pod, ctr["name"])}}}
             for ctr in spec.get("initContainers") or []]
    status.update(phase="Running", conditions=conds, hostIP=host_ip, hostIPs=[{"ip": host_ip}],
                  podIP=pod_ip, podIPs=[{"ip": pod_ip}], startTime=started,
                  containerStatuses=containers)
    if inits:
        status["initContainerStatuses"] = inits
    return status


def rejected_status(pod: Obj, reason: str, message: str) -> Obj:
    """A pod the kubelet's admission refused (e.g. `OutOfpods`): Failed at once."""
    status = dict(pod.get("status") or {})
    status.update(phase="Failed", reason=reason, message=message)
    return status


def is_running_as_posted(pod: Obj, host_ip: str) -> bool:
    """Whether the pod already shows what `running_status` would post (no write needed)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or status.get("hostIP") != host_ip or \
            not status.get("podIP"):
        return False
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    gates = [g.get("conditionType") for g in (pod.get("spec") or {}).get("readinessGates") or []]
    want_ready = "True" if all(conds.get(g) == "True" for g in gates) else "False"
    return conds.get("Ready") == want_ready and conds.get("ContainersReady") == "True"


class PodIPs:
    """Hands out the addresses of one node's pod range (network and broadcast excluded)."""

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        self.network = network
        self._base = int(network.network_address)
        self._size = network.num_addresses
        self._used: dict[str, int] = {}  # pod uid -> offset
        self._taken: set[int] = set()
        self._next = 1

    def __len__(self) -> int:
        return len(self._used)

    def get(self, uid: str) -> str | None:
        offset = self._used.get(uid)
        return None if offset is None else str(ipaddress.IPv4Address(self._base + offset))

    def claim(self, uid: str, ip: str) -> bool:
        """Record an address a pod already has (after a restart); False if not ours/free."""
        try:
            offset = int(ipaddress.IPv4Address(ip)) - self._base
        except ValueError:
            return False
        if not 0 < offset < self._size - 1 or offset in self._taken:
            return False
        self._used[uid] = offset
        self._taken.add(offset)
        return True

    def allocate(self, uid: str) -> str | None:
        if uid in self._used:
            return self.get(uid)
        for _ in range(self._size - 2):
            offset = self._next
            self._next = self._next + 1 if self._next < self._size - 2 else 1
            if offset not in self._taken:
                self._used[uid] = offset
                self._taken.add(offset)
                return self.get(uid)
        return None

    def release(self, uid: str) -> None:
        offset = self._used.pop(uid, None)
        if offset is not None:
            self._taken.discard(offset)
