"""The Pod row: a port of printers.go `printPod`, the STATUS logic kubectl users know by heart.

STATUS starts from the phase (or `status.reason`), is overridden by the first unfinished init
container, then by the last regular container with a waiting/terminated reason, and finally by
"Terminating" once a deletion is under way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dockyard.apiserver.printers.columns import AGE, NAME, Column, Printer, wide
from dockyard.apiserver.printers.format import NONE, get, parse_time, since

COLUMNS = (
    NAME,
    Column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", description="The aggregate status of the containers in this pod."),
    Column(
        "Restarts",
        description="The number of times the containers in this pod have been restarted and "
        "when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "podIP address allocated to the pod."),
    wide("Node", "NodeName indicates in which node this pod is scheduled."),
    wide(
        "Nominated Node",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it "
        "cannot be scheduled right away as preemption victims receive their graceful "
        "termination periods.",
    ),
    wide("Readiness Gates",
         "If specified, all readiness gates will be evaluated for pod readiness."),
)

_SUCCEEDED = [{"type": "Completed", "status": "True", "reason": "Succeeded",
               "message": "The pod has completed successfully."}]
_FAILED = [{"type": "Completed", "status": "True", "reason": "Failed",
            "message": "The pod failed."}]


def _restartable(container: dict[str, Any] | None) -> bool:
    """`podutil.IsRestartableInitContainer`: a sidecar (init container restartPolicy Always)."""
    return bool(container) and container.get("restartPolicy") == "Always"


def _condition_true(status: dict[str, Any], kind: str) -> bool:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status") == "True"
    return False


def _has_ready_condition(status: dict[str, Any]) -> bool:
    # hasPodReadyCondition scans every condition rather than stopping at the first Ready one.
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def _terminated_reason(term: dict[str, Any], prefix: str = "") -> str:
    if term.get("reason"):
        return prefix + term["reason"]
    if term.get("signal"):
        return f"{prefix}Signal:{term['signal']}"
    return f"{prefix}ExitCode:{term.get('exitCode') or 0}"


class _Restarts:
    """Restart count and the latest `lastState.terminated.finishedAt` seen."""

    def __init__(self) -> None:
        self.count = 0
        self.last: datetime | None = None

    def add(self, status: dict[str, Any]) -> None:
        self.count += int(status.get("restartCount") or 0)
        finished = parse_time(get(status, "lastState", "terminated", "finishedAt"))
        if finished is not None and (self.last is None or self.last < finished):
            self.last = finished


def _status(pod: dict[str, Any]) -> tuple[str, int, int, _Restarts]:
    """(reason, ready containers, total containers, restarts) exactly as printPod computes."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    init_specs = spec.get("initContainers") or []
    by_name = {c.get("name"): c for c in init_specs}
    total = len(spec.get("containers") or []) + sum(1 for c in init_specs if _restartable(c))
    ready = 0
    reason = status.get("reason") or status.get("phase") or ""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    all_restarts, sidecar_restarts = _Restarts(), _Restarts()
    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        all_restarts.add(cs)
        sidecar = _restartable(by_name.get(cs.get("name")))
        if sidecar:
            sidecar_restarts.add(cs)
        term = get(cs, "state", "terminated")
        waiting_reason = get(cs, "state", "waiting", "reason")
        if term is not None and not term.get("exitCode"):
            continue
        if sidecar and cs.get("started"):
            ready += 1 if cs.get("ready") else 0
            continue
        if term is not None:
            reason = _terminated_reason(term, "Init:")
        elif waiting_reason and waiting_reason != "PodInitializing":
            reason = "Init:" + waiting_reason
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    restarts = all_restarts
    if not initializing or _condition_true(status, "Initialized"):
        # Once initialized, only sidecars' restarts count alongside the regular containers'.
        restarts = sidecar_restarts
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts.add(cs)
            state = cs.get("state") or {}
            waiting, term = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif term is not None:
                reason = _terminated_reason(term)
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _has_ready_condition(status) else "NotReady"

    if get(pod, "metadata", "deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Failed", "Succeeded"):
            reason = "Terminating"
    return reason, ready, total, restarts


def _readiness_gates(pod: dict[str, Any]) -> str:
    gates = get(pod, "spec", "readinessGates") or []
    if not gates:
        return NONE
    conditions = get(pod, "status", "conditions") or []
    true = 0
    for gate in gates:
        for cond in conditions:
            if cond.get("type") == gate.get("conditionType"):
                true += cond.get("status") == "True"
                break
    return f"{true}/{len(gates)}"


def pod_cells(pod: dict[str, Any], now: datetime) -> list[Any]:
    reason, ready, total, restarts = _status(pod)
    restarts_cell = str(restarts.count)
    if restarts.count and restarts.last is not None:
        restarts_cell = f"{restarts.count} ({since(restarts.last, now)} ago)"
    status = pod.get("status") or {}
    pod_ips = status.get("podIPs") or []
    # v1 -> internal conversion fills podIPs from podIP when only the latter is set.
    pod_ip = (pod_ips[0].get("ip") if pod_ips else status.get("podIP")) or NONE
    return [
        get(pod, "metadata", "name", default=""),
        f"{ready}/{total}",
        reason,
        restarts_cell,
        since(get(pod, "metadata", "creationTimestamp"), now),
        pod_ip,
        get(pod, "spec", "nodeName") or NONE,
        status.get("nominatedNodeName") or NONE,
        _readiness_gates(pod),
    ]


def pod_conditions(pod: dict[str, Any]) -> list[dict[str, str]] | None:
    phase = get(pod, "status", "phase")
    if phase == "Succeeded":
        return _SUCCEEDED
    if phase == "Failed":
        return _FAILED
    return None


POD = Printer(COLUMNS, pod_cells, pod_conditions)
