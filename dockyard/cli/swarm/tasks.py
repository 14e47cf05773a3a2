"""Pods seen as Swarm tasks: slots and names (`web.1`), Docker's task states, failures.

A replicated task's slot is recorded on its pod (`mapping.ANN_SLOT`) by the first dockyard
command that sees it, so `web.2` stays `web.2` for the pod's life. Slots are unique among the
live pods of one pod template; a pod of a new template takes the slot of a pod that is
shutting down (stop-first: the replacement of `web.2` is `web.2`), else the lowest free one.
A global task is named after its node, as Swarm names it. Pure functions of pod objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dockyard.cli.swarm.mapping import ANN_SLOT, POD_TEMPLATE_HASH, swarm_id

Obj = dict[str, Any]

# Docker's task states up to running, numbered as its progress bars count them.
PROGRESS_STATES = ("new", "allocated", "pending", "assigned", "accepted", "preparing",
                   "ready", "starting", "running")
IMAGE_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull",
                            "InvalidImageName"})
START_FAILURES = frozenset({"CreateContainerError", "CreateContainerConfigError",
                            "RunContainerError", "PreStartHookError", "PostStartHookError"})


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def meta(pod: Obj) -> Obj:
    return pod.get("metadata") or {}


def terminating(pod: Obj) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def template_hash(pod: Obj) -> str:
    return (meta(pod).get("labels") or {}).get(POD_TEMPLATE_HASH, "")


def _created(pod: Obj) -> tuple[str, str]:
    return meta(pod).get("creationTimestamp") or "", meta(pod).get("name", "")


def recorded_slot(pod: Obj) -> int | None:
    value = (meta(pod).get("annotations") or {}).get(ANN_SLOT, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def assign_slots(pods: Iterable[Obj]) -> tuple[dict[str, int], dict[str, int]]:
    """(slot of every pod by uid, the slots newly chosen: to be recorded on the pods)."""
    pods = sorted(pods, key=_created)
    slots: dict[str, int] = {}
    used: dict[str, set[int]] = {}  # template hash -> slots of its live pods
    shutting_down: set[int] = set()
    new: list[Obj] = []
    for pod in pods:
        slot = recorded_slot(pod)
        if slot is None:
            new.append(pod)
            continue
        slots[meta(pod)["uid"]] = slot
        if terminating(pod):
            shutting_down.add(slot)
        else:
            used.setdefault(template_hash(pod), set()).add(slot)
    chosen: dict[str, int] = {}
    for pod in new:
        taken = used.setdefault(template_hash(pod), set())
        free = sorted(shutting_down - taken)
        slot = free[0] if free and not terminating(pod) else _lowest_free(taken)
        if not terminating(pod):
            taken.add(slot)
        slots[meta(pod)["uid"]] = chosen[meta(pod)["uid"]] = slot
    return slots, chosen


def _lowest_free(taken: set[int]) -> int:
    n = 1
    while n in taken:
        n += 1
    return n


@dataclass
class Task:
    """One pod as `docker service ps` shows a task."""

    id: str
    pod: str
    uid: str
    name: str  # web.1, or web.<node id> in global mode
    slot: int | None
    image: str
    node: str  # node name ("" until scheduled)
    desired: str  # Running or Shutdown
    state: str  # Docker's lower-case state: pending ... running, failed, shutdown, ...
    since: datetime | None
    error: str = ""
    ready: bool = False
    restarts: int = 0
    created: str = ""
    template: str = ""
    history: list[Task] = field(default_factory=list)  # earlier attempts (a restart)


def _container_status(pod: Obj) -> Obj:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def _condition(pod: Obj, kind: str) -> Obj:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return {}


def exit_error(terminated: Obj) -> str:
    code = terminated.get("exitCode", 0)
    reason = terminated.get("reason") or ""
    text = f"task: non-zero exit ({code})"
    if reason == "OOMKilled":
        text += ": OOM killed"
    elif reason and reason not in ("Error", "Completed"):
        text += f": {reason}"
    return text


def pod_state(pod: Obj) -> tuple[str, datetime | None, str]:
    """(Docker state, since when, error) of a pod's current attempt."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    cs = _container_status(pod)
    state = cs.get("state") or {}
    created = parse_time(meta(pod).get("creationTimestamp"))
    if "terminated" in state:
        t = state["terminated"]
        when = parse_time(t.get("finishedAt"))
        if t.get("exitCode", 0) == 0:
            return ("shutdown" if terminating(pod) else "complete"), when, ""
        return ("shutdown" if terminating(pod) else "failed"), when, exit_error(t)
    if phase == "Failed":
        return "failed", created, status.get("message") or status.get("reason") or ""
    if phase == "Succeeded":
        return "complete", created, ""
    if "running" in state:
        when = parse_time(state["running"].get("startedAt"))
        return ("running" if cs.get("ready") else "starting"), when, ""
    if "waiting" in state:
        waiting = state["waiting"]
        reason = waiting.get("reason") or ""
        since = parse_time(_condition(pod, "PodScheduled").get("lastTransitionTime")) or created
        if reason in IMAGE_FAILURES:
            return "rejected", since, waiting.get("message") or f"No such image: {cs.get('image')}"
        if reason in START_FAILURES:
            return "rejected", since, waiting.get("message") or reason
        if reason == "CrashLoopBackOff":
            last = (cs.get("lastState") or {}).get("terminated") or {}
            return "failed", parse_time(last.get("finishedAt")) or since, exit_error(last)
        return "preparing", since, ""
    scheduled = _condition(pod, "PodScheduled")
    if (pod.get("spec") or {}).get("nodeName"):
        return "assigned", parse_time(scheduled.get("lastTransitionTime")) or created, ""
    error = ""
    if scheduled.get("status") == "False":
        error = f"no suitable node ({scheduled.get('message') or scheduled.get('reason', '')})"
    return "pending", created, error


def task_of(pod: Obj, service: str, *, slot: int | None, mode: str,
            node_ids: dict[str, str]) -> Task:
    node = (pod.get("spec") or {}).get("nodeName") or ""
    uid = meta(pod).get("uid", "")
    if mode == "global":
        name = f"{service}.{node_ids.get(node) or swarm_id(uid)}"
    else:
        name = f"{service}.{slot}"
    state, since, error = pod_state(pod)
    cs = _container_status(pod)
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    task = Task(id=swarm_id(uid), pod=meta(pod).get("name", ""), uid=uid, name=name, slot=slot,
                image=containers[0].get("image", ""), node=node,
                desired="Shutdown" if terminating(pod) else "Running", state=state,
                since=since, error=error, ready=bool(cs.get("ready")),
                restarts=int(cs.get("restartCount") or 0),
                created=meta(pod).get("creationTimestamp") or "", template=template_hash(pod))
    last = (cs.get("lastState") or {}).get("terminated")
    if last and state != "failed":
        code = last.get("exitCode", 0)
        task.history.append(Task(
            id=swarm_id((last.get("containerID") or "").rpartition("//")[2] or uid),
            pod=task.pod, uid=uid, name=name, slot=slot, image=task.image, node=node,
            desired="Shutdown", state="failed" if code else "complete",
            since=parse_time(last.get("finishedAt")), error=exit_error(last) if code else ""))
    return task


def tasks_of(pods: list[Obj], service: str, mode: str, node_ids: dict[str, str]) -> list[Task]:
    """Every pod as a task, current ones before those shutting down, by slot (or node)."""
    slots, _ = assign_slots(pods)
    out = [task_of(p, service, slot=slots.get(meta(p).get("uid", "")), mode=mode,
                   node_ids=node_ids) for p in pods]
    out.sort(key=lambda t: (t.slot or 0, t.name, t.desired != "Running", _neg(t.created)))
    return out


def _neg(stamp: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in stamp)


def progress_position(state: str) -> int:
    """Where a state is on Docker's progress bar (1..9; 0 for states beyond running)."""
    return PROGRESS_STATES.index(state) + 1 if state in PROGRESS_STATES else 0


def failure(pod: Obj, since: datetime) -> str | None:
    """Why a pod counts as a failed task of an update that started at `since`, if it does:
    its image or container could not start, or its container exited (a crash, or a kill
    after failing its health check) after the update started."""
    since = since.replace(microsecond=0)  # the agent writes whole seconds
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return status.get("message") or "task failed"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_FAILURES | START_FAILURES:
            return waiting.get("message") or waiting.get("reason")
        for terminated in ((cs.get("state") or {}).get("terminated"),
                           (cs.get("lastState") or {}).get("terminated")):
            if not terminated or terminating(pod):
                continue
            finished = parse_time(terminated.get("finishedAt"))
            if finished is not None and finished >= since:
                return exit_error(terminated)
    return None


def now() -> datetime:
    return datetime.now(UTC)


def ready_count(pods: Iterable[Obj], keep: Callable[[Obj], bool] = lambda _p: True) -> int:
    """Running tasks as `service ls` counts them: live pods whose container is ready."""
    return sum(1 for p in pods if keep(p) and not terminating(p)
               and pod_state(p)[0] == "running")
