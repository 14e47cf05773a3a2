"""Swarm services ↔ Kubernetes objects. Pure: objects in, objects out, no API calls.

- A service is a Deployment named after it (its pods are the tasks, labelled
  `swarm.dockyard.io/service=NAME`) plus a Service of the same name owned by it.
- `--publish P:T` → a NodePort Service: port T (the VIP answers on the target port, as Swarm's
  does), targetPort T, nodePort P. The service proxy serves NodePorts on every node's
  addresses, which is what Swarm's ingress does with published ports. A P outside the
  cluster's NodePort range is refused by the API server; the command then lets it choose one
  and says so. No published port → a headless Service: the name resolves to the tasks, as
  Swarm's VIP forwards every port.
- `--mode global` → the same Deployment with replicas = the number of eligible nodes and a
  required pod anti-affinity on kubernetes.io/hostname (at most one task per node); the CLI
  recomputes the count when services or nodes change (`global_nodes`). No DaemonSet kind
  exists in the API yet, and this needs none.
- `--update-parallelism/--update-order` → RollingUpdate maxSurge/maxUnavailable;
  `--update-delay` → minReadySeconds: a new pod counts as available only `delay` after it is
  Ready, and the controller starts the next batch only then: Swarm's pause after each batch.
- `--health-cmd` → readiness and liveness exec probes (not ready until healthy; restarted
  after `retries` failures, as Swarm replaces an unhealthy task).
- What Kubernetes has no field for is kept in annotations: the whole spec, the previous spec
  (for rollback) and the update status.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from dockyard.cli.swarm.options import Constraint, format_duration, parse_constraint
from dockyard.cli.swarm.spec import HealthCheck, Resources, ServiceSpec, UpdateConfig

Obj = dict[str, Any]

PREFIX = "swarm.dockyard.io/"
LABEL_SERVICE = PREFIX + "service"
ANN_SPEC = PREFIX + "spec"
ANN_PREVIOUS = PREFIX + "previous-spec"
ANN_UPDATE_STATUS = PREFIX + "update-status"
ANN_AVAILABILITY = PREFIX + "availability"  # on Nodes: pause or drain
ANN_SLOT = PREFIX + "slot"  # on pods: the task's slot, recorded when first seen
ANN_FORCE = PREFIX + "force-update"  # on the pod template: --force makes a new template
ANN_REQUESTED = PREFIX + "requested-node-ports"  # on the Service: port name -> published
HOSTNAME_LABEL = "kubernetes.io/hostname"
ROLE_LABEL = "node-role.kubernetes.io/control-plane"
CONTAINER = "task"
POD_TEMPLATE_HASH = "pod-template-hash"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def swarm_id(uid: str) -> str:
    """Docker-style 25-character ID of an object, from its uid."""
    return uid.replace("-", "")[:25]


def check_name(name: str) -> None:
    if len(name) > 63 or not _DNS1035.match(name):
        raise ValueError(f"invalid service name {name!r}: services are Kubernetes Services, "
                         "so a name is lower-case letters, digits and '-', starting with a "
                         "letter, at most 63 characters")


# -- placement -------------------------------------------------------------------------------


def node_requirement(c: Constraint) -> tuple[str, Obj]:
    """One constraint → ("matchExpressions" or "matchFields", requirement)."""
    positive = c.op == "=="
    if c.key == "node.role":
        manager = (c.value == "manager") == positive
        return "matchExpressions", {"key": ROLE_LABEL,
                                    "operator": "Exists" if manager else "DoesNotExist"}
    op = "In" if positive else "NotIn"
    if c.key == "node.id":  # resolved to the node's name by the caller
        return "matchFields", {"key": "metadata.name", "operator": op, "values": [c.value]}
    key = {"node.hostname": HOSTNAME_LABEL, "node.platform.os": "kubernetes.io/os",
           "node.platform.arch": "kubernetes.io/arch"}.get(c.key)
    value = _ARCH.get(c.value, c.value) if c.key == "node.platform.arch" else c.value
    if key is None:
        key = c.key.removeprefix("node.labels.")
    return "matchExpressions", {"key": key, "operator": op, "values": [value]}


def node_affinity(constraints: Iterable[str],
                  node_names: Mapping[str, str] | None = None) -> Obj | None:
    """`--constraint`s (ANDed, as Swarm's) → one required NodeSelectorTerm; node.id values
    are looked up in `node_names` (swarm ID → node name)."""
    term: Obj = {}
    for text in constraints:
        c = parse_constraint(text)
        if c.key == "node.id":
            name = _resolve_node_id(c.value, node_names or {})
            c = Constraint(c.key, c.op, name)
        where, requirement = node_requirement(c)
        term.setdefault(where, []).append(requirement)
    if not term:
        return None
    return {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}


def _resolve_node_id(value: str, node_names: Mapping[str, str]) -> str:
    found = {name for node_id, name in node_names.items() if node_id.startswith(value)}
    if len(found) != 1:
        raise ValueError(f"node.id=={value}: {'no' if not found else 'more than one'} node "
                         "has that ID")
    return found.pop()


def node_matches(constraints: Iterable[str], node: Obj,
                 node_names: Mapping[str, str] | None = None) -> bool:
    """Whether the scheduler's node affinity would accept `node` (same matcher)."""
    from dockyard.scheduler.labels import node_selector  # the package is heavy: when needed

    affinity = node_affinity(constraints, node_names)
    if affinity is None:
        return True
    meta = node.get("metadata") or {}
    selector = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    return node_selector(selector)(meta.get("labels") or {}, meta.get("name", ""))


# -- nodes -----------------------------------------------------------------------------------


def availability(node: Obj) -> str:
    """active, pause or drain: cordoned nodes are paused unless we drained them."""
    if not (node.get("spec") or {}).get("unschedulable"):
        return "active"
    marked = ((node.get("metadata") or {}).get("annotations") or {}).get(ANN_AVAILABILITY)
    return "drain" if marked == "drain" else "pause"


def availability_patch(value: str) -> Obj:
    """Merge patch of a Node for `node update --availability`."""
    if value not in ("active", "pause", "drain"):
        raise ValueError(f"invalid availability {value!r}: active, pause or drain")
    return {"spec": {"unschedulable": value != "active" or None},
            "metadata": {"annotations": {ANN_AVAILABILITY: None if value == "active"
                                         else value}}}


def node_ready(node: Obj) -> str:
    """The Ready condition's status: True, False or Unknown."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status") or "Unknown")
    return "Unknown"


def _blocking_taints(node: Obj) -> bool:
    return any(t.get("effect") in ("NoSchedule", "NoExecute")
               and t.get("key") != "node.kubernetes.io/unschedulable"
               for t in (node.get("spec") or {}).get("taints") or [])


def global_nodes(spec: ServiceSpec, nodes: list[Obj], pods: list[Obj],
                 node_names: Mapping[str, str] | None = None) -> list[str]:
    """The nodes a global service runs one task on: ready, matching its constraints and
    active; a paused node keeps the task it has (Swarm's pause), a drained one has none."""
    hosting = {(p.get("spec") or {}).get("nodeName") for p in pods
               if not (p.get("metadata") or {}).get("deletionTimestamp")}
    out = []
    for node in nodes:
        name = node["metadata"]["name"]
        if not node_matches(spec.constraints, node, node_names):
            continue
        state = availability(node)
        if state == "drain" or node_ready(node) != "True":
            continue
        if state == "pause" or _blocking_taints(node):
            if name in hosting:
                out.append(name)
            continue
        out.append(name)
    return sorted(out)


# -- the pod template ------------------------------------------------------------------------


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


def probes(health: HealthCheck | None) -> tuple[Obj | None, Obj | None]:
    """Docker's healthcheck → (readinessProbe, livenessProbe)."""
    if health is None or not health.test or health.test[0] == "NONE":
        return None, None
    kind, *rest = health.test
    command = ["/bin/sh", "-c", " ".join(rest)] if kind == "CMD-SHELL" else rest
    base: Obj = {"exec": {"command": command}, "periodSeconds": _seconds(health.interval),
                 "timeoutSeconds": _seconds(health.timeout),
                 "failureThreshold": max(1, health.retries), "successThreshold": 1}
    liveness = {**copy.deepcopy(base), "initialDelaySeconds": math.ceil(health.start_period)}
    return {**base, "initialDelaySeconds": 0}, liveness


def resources(r: Resources) -> Obj:
    """Limits and reservations. Without a reservation the request is set to 0 explicitly:
    Kubernetes would otherwise default requests to the limits, and Swarm reserves nothing
    unless asked to."""
    limits: Obj = {}
    requests: Obj = {}
    if r.limit_nano_cpus:
        limits["cpu"] = f"{math.ceil(r.limit_nano_cpus / 1e6)}m"
    if r.limit_memory:
        limits["memory"] = memory_quantity(r.limit_memory)
    if r.reserve_nano_cpus:
        requests["cpu"] = f"{math.ceil(r.reserve_nano_cpus / 1e6)}m"
    if r.reserve_memory:
        requests["memory"] = memory_quantity(r.reserve_memory)
    for key in limits:
        requests.setdefault(key, "0")
    out: Obj = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def memory_quantity(size: int) -> str:
    """Bytes as the API server prints them: 64Mi, 1536Ki, 1000."""
    for suffix, factor in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def container_ports(spec: ServiceSpec) -> list[Obj]:
    seen: set[tuple[int, str]] = set()
    out = []
    for p in spec.ports:
        if (p.target, p.protocol) not in seen:
            seen.add((p.target, p.protocol))
            out.append({"containerPort": p.target, "protocol": p.protocol.upper()})
    return out


def pod_template(spec: ServiceSpec, node_names: Mapping[str, str] | None = None) -> Obj:
    container: Obj = {"name": CONTAINER, "image": spec.image}
    if spec.entrypoint:
        container["command"] = list(spec.entrypoint)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.env:
        container["env"] = [{"name": k, "value": v}
                            for k, _, v in (item.partition("=") for item in spec.env)]
    if ports := container_ports(spec):
        container["ports"] = ports
    if res := resources(spec.resources):
        container["resources"] = res
    readiness, liveness = probes(spec.healthcheck)
    if readiness:
        container["readinessProbe"] = readiness
        container["livenessProbe"] = liveness
    pod_spec: Obj = {"containers": [container],
                     "terminationGracePeriodSeconds": math.ceil(spec.stop_grace_period)}
    affinity: Obj = {}
    if node := node_affinity(spec.constraints, node_names):
        affinity["nodeAffinity"] = node
    if spec.mode == "global":
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {LABEL_SERVICE: spec.name}},
             "topologyKey": HOSTNAME_LABEL}]}
    if affinity:
        pod_spec["affinity"] = affinity
    meta: Obj = {"labels": {LABEL_SERVICE: spec.name}}
    if spec.force_update:
        meta["annotations"] = {ANN_FORCE: str(spec.force_update)}
    return {"metadata": meta, "spec": pod_spec}


def strategy(config: UpdateConfig, mode: str) -> tuple[Obj, int]:
    """(Deployment strategy, minReadySeconds) for an update config."""
    batch: int | str = config.parallelism or "100%"  # 0: all at once, as Swarm
    if config.order == "start-first":
        if mode == "global":
            raise ValueError("--update-order start-first is not supported with --mode "
                             "global: a global service runs at most one task per node "
                             "(pod anti-affinity), so a new task cannot start beside the "
                             "old one; use stop-first")
        rolling: Obj = {"maxSurge": batch, "maxUnavailable": 0}
    else:
        rolling = {"maxSurge": 0, "maxUnavailable": batch}
    return {"type": "RollingUpdate", "rollingUpdate": rolling}, math.ceil(config.delay)


# -- the objects -----------------------------------------------------------------------------


def deployment(spec: ServiceSpec, namespace: str, replicas: int, *,
               previous: ServiceSpec | None = None,
               node_names: Mapping[str, str] | None = None,
               update_config: UpdateConfig | None = None) -> Obj:
    """The Deployment of a service; `update_config` is the one the next rollout uses (the
    rollback config when rolling back)."""
    check_name(spec.name)
    strat, min_ready = strategy(update_config or spec.update_config, spec.mode)
    annotations = {ANN_SPEC: spec.to_json()}
    if previous is not None:
        annotations[ANN_PREVIOUS] = previous.to_json()
    labels = {**spec.labels, LABEL_SERVICE: spec.name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": spec.name, "namespace": namespace, "labels": labels,
                     "annotations": annotations},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {LABEL_SERVICE: spec.name}},
                 "template": pod_template(spec, node_names), "strategy": strat,
                 "minReadySeconds": min_ready, "revisionHistoryLimit": 5},
    }


def apply_deployment(existing: Obj, desired: Obj) -> Obj:
    """`existing` changed to `desired` (spec, our labels and annotations), keeping its
    identity, other annotations and the selector (immutable); resumes a paused rollout."""
    out = copy.deepcopy(existing)
    meta, want = out["metadata"], desired["metadata"]
    labels = {k: v for k, v in (meta.get("labels") or {}).items()
              if k == LABEL_SERVICE or k not in _old_user_labels(existing)}
    meta["labels"] = {**labels, **want["labels"]}
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(ANN_PREVIOUS, None)
    annotations.update(want["annotations"])
    meta["annotations"] = annotations
    spec = out["spec"]
    for key in ("replicas", "template", "strategy", "minReadySeconds"):
        spec[key] = copy.deepcopy(desired["spec"][key])
    spec.pop("paused", None)
    return out


def _old_user_labels(d: Obj) -> set[str]:
    old = spec_of(d)
    return set(old.labels) if old else set()


def service_ports(spec: ServiceSpec) -> list[Obj]:
    """Service ports: the VIP answers on the target port (a second publish of the same
    target gets its published port), the nodePort is the published port."""
    used: set[tuple[int, str]] = set()
    out = []
    for p in spec.ports:
        port = p.target if (p.target, p.protocol) not in used else (p.published or 0)
        if not port or (port, p.protocol) in used:
            raise ValueError(f"port {p.target}/{p.protocol} is published twice")
        used.add((port, p.protocol))
        entry: Obj = {"name": f"{p.protocol}-{port}", "protocol": p.protocol.upper(),
                      "port": port, "targetPort": p.target}
        if p.published:
            entry["nodePort"] = p.published
        out.append(entry)
    return out


def service(spec: ServiceSpec, namespace: str, owner: Obj | None = None) -> Obj:
    """The Service: NodePort with published ports, else headless."""
    meta: Obj = {"name": spec.name, "namespace": namespace,
                 "labels": {LABEL_SERVICE: spec.name}}
    if spec.ports:
        requested = {p["name"]: p["nodePort"] for p in service_ports(spec) if "nodePort" in p}
        meta["annotations"] = {ANN_REQUESTED: json.dumps(requested, sort_keys=True)}
    if owner is not None:
        meta["ownerReferences"] = [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": False,
            "blockOwnerDeletion": False}]
    body: Obj = {"selector": {LABEL_SERVICE: spec.name}}
    if spec.ports:
        body.update(type="NodePort", ports=service_ports(spec))
    else:
        body.update(type="ClusterIP", clusterIP="None", ports=[])
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": body}


def is_headless(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def apply_service(existing: Obj, desired: Obj) -> Obj | None:
    """`existing` changed to `desired`, keeping its addresses and the node ports it holds
    for ports not pinned by the spec, or pinned to the same port as before (a port the
    cluster chose when the published one was out of its range stays); None when it must be
    recreated (headless <-> virtual IP)."""
    if is_headless(existing) != is_headless(desired):
        return None
    out = copy.deepcopy(existing)
    held = {p.get("name"): p.get("nodePort") for p in existing["spec"].get("ports") or []}
    before = json.loads(_annotations(existing).get(ANN_REQUESTED) or "{}")
    ports = copy.deepcopy(desired["spec"]["ports"])
    for p in ports:
        name = p["name"]
        if held.get(name) and ("nodePort" not in p or before.get(name) == p["nodePort"]):
            p["nodePort"] = held[name]
    out["spec"]["ports"] = ports
    out["spec"]["type"] = desired["spec"]["type"]
    out["spec"]["selector"] = desired["spec"]["selector"]
    annotations = {k: v for k, v in _annotations(existing).items() if k != ANN_REQUESTED}
    annotations.update(_annotations(desired))
    out["metadata"]["annotations"] = annotations
    return out


def _annotations(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def without_node_ports(svc: Obj, ports: Iterable[int]) -> Obj:
    """The Service with the given requested nodePorts left to the cluster to choose."""
    drop = set(ports)
    out = copy.deepcopy(svc)
    for p in out["spec"].get("ports") or []:
        if p.get("nodePort") in drop:
            p.pop("nodePort")
    return out


# -- reading back ----------------------------------------------------------------------------


def is_service(d: Obj) -> bool:
    return ANN_SPEC in ((d.get("metadata") or {}).get("annotations") or {})


def spec_of(d: Obj) -> ServiceSpec | None:
    text = ((d.get("metadata") or {}).get("annotations") or {}).get(ANN_SPEC)
    return ServiceSpec.from_json(text) if text else None


def previous_of(d: Obj) -> ServiceSpec | None:
    text = ((d.get("metadata") or {}).get("annotations") or {}).get(ANN_PREVIOUS)
    return ServiceSpec.from_json(text) if text else None


def update_status_of(d: Obj) -> Obj | None:
    text = ((d.get("metadata") or {}).get("annotations") or {}).get(ANN_UPDATE_STATUS)
    return json.loads(text) if text else None


def update_status_patch(state: str, message: str, *, started: str, completed: str = "") -> Obj:
    status: Obj = {"State": state, "StartedAt": started, "Message": message}
    if completed:
        status["CompletedAt"] = completed
    return {"metadata": {"annotations": {ANN_UPDATE_STATUS: json.dumps(status)}}}


def describe_update(config: UpdateConfig) -> str:
    return (f"parallelism {config.parallelism}, delay {format_duration(config.delay)}, "
            f"order {config.order}, on failure {config.failure_action}, "
            f"monitor {format_duration(config.monitor)}")
