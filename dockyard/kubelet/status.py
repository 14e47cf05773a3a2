"""The API status of a pod, computed from its spec and what the node observed (pure functions).

This is the kubelet's generateAPIPodStatus with its helpers (convertToAPIContainerStatuses,
getPhase, the Generate*Condition functions): the same inputs give the same status, so the
status manager can compare it with what the API holds and write only real changes, and every
rule is tested by a table of cases. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dockyard.api.pod import compute_qos_class
from dockyard.runtime.cri import ContainerState, ContainerStatus

Obj = dict[str, Any]

# Waiting reasons the kubelet uses by default (kubelet_pods.go).
CONTAINER_CREATING = "ContainerCreating"
POD_INITIALIZING = "PodInitializing"
# Conditions the kubelet owns; any other condition on the pod is kept as the API has it.
KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                      "PodScheduled")
TERMINAL_PHASES = ("Succeeded", "Failed")


def rfc3339(epoch: float) -> str | None:
    """An epoch time as the API writes times (seconds, UTC); None for 'never' (0)."""
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Observed:
    """What the node knows about one pod at one moment."""

    containers: Sequence[ContainerStatus] = ()  # every attempt the runtime still holds
    sandbox_ready: bool = False  # the sandbox runs and (unless hostNetwork) has its IP
    pod_ips: Sequence[str] = ()
    host_ip: str = ""
    # container name -> (reason, message) of its last failed start (kubelet's reasonCache)
    waiting: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # container id -> (started, ready) from the probers; containers absent have no probes
    probes: Mapping[str, tuple[bool, bool]] = field(default_factory=dict)
    terminal: bool = False  # the pod is done: its containers will not be restarted
    failure: tuple[str, str] | None = None  # (reason, message) that failed the pod
    runtime_name: str = "runc"
    now: str = ""


def latest_by_name(containers: Sequence[ContainerStatus]) -> dict[str, ContainerStatus]:
    """The newest attempt of each container name."""
    out: dict[str, ContainerStatus] = {}
    for c in sorted(containers, key=_newest_first):
        out.setdefault(c.name, c)
    return out


def _newest_first(c: ContainerStatus) -> tuple[float, float]:
    return (-c.attempt, -c.created_at)


def should_restart(container: Obj, pod: Obj, latest: ContainerStatus | None) -> bool:
    """kubecontainer.ShouldContainerBeRestarted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if latest is None:
        return True
    if latest.state == ContainerState.RUNNING:
        return False
    if latest.state in (ContainerState.UNKNOWN, ContainerState.CREATED):
        return True
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    if policy == "Never":
        return False
    if policy == "OnFailure" and latest.exit_code == 0:
        return False
    return True


# -- container statuses ----------------------------------------------------------------------


def _convert(cs: ContainerStatus, old: Obj | None, runtime: str, spec_image: str) -> Obj:
    """convertContainerStatus: one runtime container as an API container status. `image` is
    what the container was created from (a container whose spec image just changed still
    runs, and reports, the old one until it is replaced)."""
    cid = f"{runtime}://{cs.id}"
    status: Obj = {"name": cs.name, "state": {}, "lastState": {}, "ready": False,
                   "restartCount": cs.attempt, "image": cs.image_ref or spec_image,
                   "imageID": cs.image_id, "containerID": cid, "started": False}
    if cs.state == ContainerState.RUNNING:
        status["state"] = {"running": {"startedAt": rfc3339(cs.started_at)}}
    elif cs.state == ContainerState.EXITED:
        term: Obj = {"exitCode": cs.exit_code, "reason": cs.reason or
                     ("Completed" if cs.exit_code == 0 else "Error")}
        if cs.message:
            term["message"] = cs.message
        term.update(startedAt=rfc3339(cs.started_at), finishedAt=rfc3339(cs.finished_at),
                    containerID=cid)
        status["state"] = {"terminated": term}
    elif cs.state == ContainerState.UNKNOWN and old is not None and \
            "running" in (old.get("state") or {}):
        status["state"] = {"terminated": {
            "exitCode": 137, "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated"}}
        status["restartCount"] = int(old.get("restartCount") or 0) + 1
    else:
        status["state"] = {"waiting": {}}
    return status


def container_statuses(pod: Obj, containers: Sequence[Obj], obs: Observed,
                       old_statuses: Sequence[Obj] | None, *, init: bool) -> list[Obj]:
    """convertToAPIContainerStatuses for the regular or the init containers of `pod`."""
    spec = pod.get("spec") or {}
    has_init = bool(spec.get("initContainers"))
    default_reason = POD_INITIALIZING if has_init else CONTAINER_CREATING
    old_by_name = {s.get("name"): s for s in old_statuses or []}
    statuses: dict[str, Obj] = {}
    for ctr in containers:
        status: Obj = {"name": ctr["name"], "state": {"waiting": {"reason": default_reason}},
                       "lastState": {}, "ready": False, "restartCount": 0,
                       "image": ctr.get("image", ""), "imageID": "", "started": False}
        old = old_by_name.get(ctr["name"])
        if old is not None:
            if "terminated" in (old.get("state") or {}):
                status = _copy(old)
            else:
                status["restartCount"] = old.get("restartCount", 0)
                status["lastState"] = _copy(old.get("lastState") or {})
        statuses[ctr["name"]] = status

    seen: dict[str, int] = {}
    for cs in sorted(obs.containers, key=_newest_first):
        if cs.name not in statuses or seen.get(cs.name, 0) >= 2:
            continue
        spec_image = next((c.get("image", "") for c in containers if c["name"] == cs.name), "")
        converted = _convert(cs, old_by_name.get(cs.name), obs.runtime_name, spec_image)
        if not seen.get(cs.name):
            statuses[cs.name] = converted
        else:
            statuses[cs.name]["lastState"] = converted["state"]
        seen[cs.name] = seen.get(cs.name, 0) + 1

    present = {cs.name for cs in obs.containers}
    for ctr in containers:
        name = ctr["name"]
        old = old_by_name.get(name)
        if name in present or old is None or "running" not in (old.get("state") or {}):
            continue
        status = statuses[name]
        waiting = (status["state"].get("waiting") or {})
        if waiting.get("reason") != default_reason or "terminated" in status["lastState"]:
            continue
        # It ran and vanished (removed behind our back): stopped, not "never started".
        status["lastState"] = {"terminated": {
            "exitCode": 137, "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was deleted.  The "
                       "container used to be Running"}}
        if not (pod.get("metadata") or {}).get("deletionTimestamp"):
            status["restartCount"] = int(status.get("restartCount") or 0) + 1

    latest = latest_by_name(obs.containers)
    for ctr in containers:
        name = ctr["name"]
        cs = latest.get(name)
        if init:
            if cs is not None and cs.state == ContainerState.EXITED and cs.exit_code == 0:
                continue
        elif obs.terminal or not should_restart(ctr, pod, cs):
            continue
        reason = obs.waiting.get(name)
        if reason is None:
            continue
        status = statuses[name]
        if "terminated" in status["state"]:
            status["lastState"] = status["state"]
        status["state"] = {"waiting": {"reason": reason[0], **({"message": reason[1]}
                                                               if reason[1] else {})}}

    _apply_probes(statuses, obs, init=init)
    if init:
        return [statuses[c["name"]] for c in containers]
    return [statuses[name] for name in sorted(statuses)]


def _apply_probes(statuses: dict[str, Obj], obs: Observed, *, init: bool) -> None:
    """The prober manager's UpdatePodStatus: `started` and `ready` of each container."""
    for status in statuses.values():
        state = status.get("state") or {}
        if init:
            term = state.get("terminated")
            status["ready"] = bool(term and term.get("exitCode") == 0)
            status["started"] = "running" in state
            continue
        if "running" not in state:
            status["started"] = False
            status["ready"] = False
            continue
        cid = str(status.get("containerID") or "").partition("://")[2]
        started, ready = obs.probes.get(cid, (True, True))
        status["started"] = started
        status["ready"] = started and ready


def _copy(obj: Obj) -> Obj:
    return {k: (_copy(v) if isinstance(v, dict) else v) for k, v in obj.items()}


# -- phase -----------------------------------------------------------------------------------


def get_phase(pod: Obj, init_statuses: Sequence[Obj], statuses: Sequence[Obj],
              terminal: bool) -> str:
    """kubelet's getPhase."""
    spec = pod.get("spec") or {}
    policy = spec.get("restartPolicy") or "Always"
    inits = {s.get("name"): s for s in init_statuses}
    pending_init = failed_init = 0
    for ctr in spec.get("initContainers") or []:
        status = inits.get(ctr["name"])
        state = (status or {}).get("state") or {}
        if status is None or "running" in state:
            pending_init += 1
        elif "terminated" in state:
            if state["terminated"].get("exitCode") != 0:
                failed_init += 1
        elif "waiting" in state:
            last = (status.get("lastState") or {}).get("terminated")
            if last is not None:
                if last.get("exitCode") != 0:
                    failed_init += 1
            else:
                pending_init += 1
        else:
            pending_init += 1
    by_name = {s.get("name"): s for s in statuses}
    unknown = running = waiting = stopped = succeeded = 0
    for ctr in spec.get("containers") or []:
        status = by_name.get(ctr["name"])
        state = (status or {}).get("state") or {}
        if status is None:
            unknown += 1
        elif "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif "waiting" in state:
            if "terminated" in (status.get("lastState") or {}):
                stopped += 1
            else:
                waiting += 1
        else:
            unknown += 1
    if failed_init > 0 and policy == "Never":
        return "Failed"
    if (pending_init > 0 and not any_regular_started(spec, statuses)) or waiting > 0:
        return "Pending"
    if running > 0 and unknown == 0:
        return "Running"
    if running == 0 and stopped > 0 and unknown == 0:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def any_regular_started(spec: Obj, statuses: Sequence[Obj]) -> bool:
    names = {c["name"] for c in spec.get("containers") or []}
    return any(s.get("name") in names and ("running" in (s.get("state") or {}) or
                                           "terminated" in (s.get("state") or {}))
               for s in statuses)


# -- conditions ------------------------------------------------------------------------------


def _go_list(names: Sequence[str]) -> str:
    return "[" + " ".join(names) + "]"


def initialized_condition(spec: Obj, statuses: Sequence[Obj], phase: str) -> Obj:
    by_name = {s.get("name"): s for s in statuses}
    unknown, incomplete = [], []
    for ctr in spec.get("initContainers") or []:
        status = by_name.get(ctr["name"])
        if status is None:
            unknown.append(ctr["name"])
            continue
        term = (status.get("state") or {}).get("terminated")
        if term is None or term.get("exitCode") != 0:
            incomplete.append(ctr["name"])
    if phase == "Succeeded" and not unknown:
        return {"type": "Initialized", "status": "True", "reason": "PodCompleted"}
    if any_regular_started(spec, statuses):
        return {"type": "Initialized", "status": "True"}
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_go_list(unknown)}")
    if incomplete:
        messages.append(f"containers with incomplete status: {_go_list(incomplete)}")
    if messages:
        return {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized",
                "message": ", ".join(messages)}
    return {"type": "Initialized", "status": "True"}


def containers_ready_condition(spec: Obj, statuses: Sequence[Obj], phase: str) -> Obj:
    by_name = {s.get("name"): s for s in statuses}
    unknown, unready = [], []
    for ctr in spec.get("containers") or []:
        status = by_name.get(ctr["name"])
        if status is None:
            unknown.append(ctr["name"])
        elif not status.get("ready"):
            unready.append(ctr["name"])
    if phase == "Succeeded" and not unknown:
        return {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"}
    if phase == "Failed":
        return {"type": "ContainersReady", "status": "False", "reason": "PodFailed"}
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_go_list(unknown)}")
    if unready:
        messages.append(f"containers with unready status: {_go_list(unready)}")
    if messages:
        return {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
                "message": ", ".join(messages)}
    return {"type": "ContainersReady", "status": "True"}


def ready_condition(spec: Obj, containers_ready: Obj, conditions: Sequence[Obj]) -> Obj:
    if containers_ready["status"] != "True":
        return {**containers_ready, "type": "Ready"}
    by_type = {c.get("type"): c for c in conditions}
    messages = []
    for gate in spec.get("readinessGates") or []:
        kind = gate.get("conditionType")
        cond = by_type.get(kind)
        if cond is None:
            messages.append(f'corresponding condition of pod readiness gate "{kind}" does not '
                            "exist.")
        elif cond.get("status") != "True":
            messages.append(f'the status of pod readiness gate "{kind}" is not "True", but '
                            f"{cond.get('status')}")
    if messages:
        return {"type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady",
                "message": ", ".join(messages)}
    return {"type": "Ready", "status": "True"}


def _stamp(cond: Obj, old: Mapping[str, Obj], now: str) -> Obj:
    """lastTransitionTime kept while the status stays the same (the status manager's rule)."""
    before = old.get(cond["type"]) or {}
    transition = before.get("lastTransitionTime") if before.get("status") == cond["status"] \
        else None
    out = {"type": cond["type"], "status": cond["status"], "lastProbeTime": None,
           "lastTransitionTime": transition or now}
    for key in ("reason", "message"):
        if cond.get(key):
            out[key] = cond[key]
    return out


# -- the pod status --------------------------------------------------------------------------


def pod_status(pod: Obj, obs: Observed, old: Obj | None = None) -> Obj:
    """The status the node reports for `pod`. `old` is the last status known (what the
    status manager wrote, else the API's); its times and terminal states are kept."""
    spec = pod.get("spec") or {}
    old = old if old is not None else (pod.get("status") or {})
    now = obs.now or now_rfc3339()
    inits = container_statuses(pod, spec.get("initContainers") or [], obs,
                               old.get("initContainerStatuses"), init=True)
    regular = container_statuses(pod, spec.get("containers") or [], obs,
                                 old.get("containerStatuses"), init=False)
    phase = get_phase(pod, inits, regular, obs.terminal)
    reason = message = None
    if obs.failure is not None:
        phase, (reason, message) = "Failed", obs.failure
    api_phase = (pod.get("status") or {}).get("phase")
    if phase not in TERMINAL_PHASES:  # a terminal phase is never left
        if old.get("phase") in TERMINAL_PHASES:
            phase = old["phase"]
        elif api_phase in TERMINAL_PHASES:
            phase = api_phase
    if phase == old.get("phase") and obs.failure is None:
        reason, message = old.get("reason"), old.get("message")

    everything = [*inits, *regular]
    old_conditions = {c.get("type"): c for c in old.get("conditions") or []}
    api_conditions = (pod.get("status") or {}).get("conditions") or []
    others = [c for c in api_conditions if c.get("type") not in KUBELET_CONDITIONS]
    to_start = {"type": "PodReadyToStartContainers",
                "status": "True" if obs.sandbox_ready else "False"}
    initialized = initialized_condition(spec, everything, phase)
    containers_ready = containers_ready_condition(spec, everything, phase)
    ready = ready_condition(spec, containers_ready, others)
    scheduled = {"type": "PodScheduled", "status": "True"}
    conditions = [*others, *(_stamp(c, old_conditions, now) for c in
                             (to_start, initialized, ready, containers_ready, scheduled))]

    status: Obj = {"phase": phase, "conditions": conditions}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    host_ip = obs.host_ip or old.get("hostIP")
    if host_ip:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    pod_ips = list(obs.pod_ips)
    if spec.get("hostNetwork") and host_ip and not pod_ips:
        pod_ips = [host_ip]
    if not pod_ips and old.get("podIP"):
        pod_ips = [p.get("ip") for p in old.get("podIPs") or [] if p.get("ip")] or \
            [old["podIP"]]
    if pod_ips:
        status["podIP"] = pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in pod_ips]
    status["startTime"] = old.get("startTime") or (pod.get("status") or {}).get("startTime") \
        or now
    if inits:
        status["initContainerStatuses"] = inits
    status["containerStatuses"] = regular
    status["qosClass"] = (pod.get("status") or {}).get("qosClass") or compute_qos_class(spec)
    return status


def is_terminal(status: Obj | None) -> bool:
    return bool(status) and (status or {}).get("phase") in TERMINAL_PHASES
