"""Following a service until it converges, as Docker's CLI does, and acting on failures.

The Deployment controller carries out the rollout (batches from maxSurge/maxUnavailable, the
pause between batches from minReadySeconds); this loop watches the pods of the current
template, draws the progress, and applies `--update-failure-action` when a new task fails:
`pause` pauses the Deployment, `rollback` moves the service back to its previous spec and
follows that rollout, `continue` keeps waiting. Swarm's manager does this itself; here it is
the attached CLI, so with `--detach` a failed update is left to the Deployment's
progressDeadlineSeconds (see the package docs). Converged means: the controller saw the
spec, `replicas` tasks of the current template running, no live task of an older one, and
all that still true `monitor` seconds later ("verify").
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click

from dockyard.cli.swarm import apply, mapping
from dockyard.cli.swarm.cluster import Snapshot, Swarm
from dockyard.cli.swarm.progress import ProgressView
from dockyard.cli.swarm.spec import UpdateConfig
from dockyard.cli.swarm.tasks import (
    Task,
    failure,
    now,
    parse_time,
    progress_position,
    tasks_of,
    template_hash,
    terminating,
)

Obj = dict[str, Any]
POLL_SECONDS = 0.2


def stamp(when: datetime | None = None) -> str:
    return (when or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Phase:
    """What is being followed: create, scale, update or rollback."""

    kind: str
    config: UpdateConfig  # monitor, failure action and ratio of this rollout
    started: datetime = field(default_factory=now)

    @property
    def handles_failures(self) -> bool:
        return self.kind in ("update", "rollback")


class RolledBack(click.ClickException):
    """The update failed and the service went back to its previous spec."""


def status_patch(state: str, message: str, started: datetime, done: bool = False) -> Obj:
    return mapping.update_status_patch(state, message, started=stamp(started),
                                       completed=stamp() if done else "")


def _lines(view: ProgressView, snap: Snapshot, prefix: str,
           node_ids: dict[str, str]) -> tuple[int, int, bool]:
    """Draw the progress; (running, desired, converged) of the current template."""
    desired = int(snap.deployment["spec"].get("replicas") or 0)
    current_hash = snap.current_hash
    live = [p for p in snap.pods if not terminating(p)]
    current = [p for p in live if current_hash and template_hash(p) == current_hash]
    tasks = tasks_of(current, snap.spec.name, snap.spec.mode, node_ids)
    running = sum(1 for t in tasks if t.state == "running")
    view.set("overall progress", f"{prefix}{running} out of {desired} tasks")
    if snap.spec.mode == "global":
        for t in tasks:
            if t.node:
                _show(view, node_ids.get(t.node, t.node)[:12], t)
    else:
        for slot in range(1, desired + 1):
            mine = [t for t in tasks if t.slot == slot]
            best = max(mine, key=lambda t: progress_position(t.state), default=None)
            _show(view, f"{slot}/{desired}", best)
    old = [p for p in live if template_hash(p) != current_hash]
    converged = (current_hash is not None and running == desired and len(current) == desired
                 and not old)
    return running, desired, converged


def _show(view: ProgressView, key: str, task: Task | None) -> None:
    """A task's state, or its error instead (as Docker shows `no suitable node (...)`)."""
    if task is not None and task.error:
        view.set(key, task.error if len(task.error) <= 70 else task.error[:69] + "…")
    else:
        view.task(key, task.state if task is not None else "new")


async def follow(swarm: Swarm, name: str, view: ProgressView, phase: Phase) -> None:
    """Until converged (return) or failed (ClickException); rolls back when told to."""
    failed: dict[str, str] = {}  # uid -> why, of the current template's failed tasks
    converged_at: float | None = None
    rollback_message = ""
    node_ids = {v: k for k, v in (await swarm.node_names()).items()}
    while True:
        snap = await swarm.snapshot(name)
        await swarm.record_slots(snap.pods)
        prefix = "rolling back update: " if phase.kind == "rollback" else ""
        _, desired, converged = _lines(view, snap, prefix, node_ids)
        _check_deadline(snap, phase.started)
        if phase.handles_failures and _too_many_failures(snap, phase, failed, desired):
            task = mapping.swarm_id(next(iter(failed)))
            if phase.kind == "update" and phase.config.failure_action == "rollback":
                rollback_message = ("update rolled back due to failure or early "
                                    f"termination of task {task}")
                phase = await _auto_rollback(swarm, snap, rollback_message)
                view.set("rollback", rollback_message)
                failed.clear()
                converged_at = None
                continue
            if phase.config.failure_action != "continue":
                await _pause(swarm, name, phase, task)
        if not converged:
            converged_at = None
        else:
            converged_at = converged_at or time.monotonic()
            waited = time.monotonic() - converged_at
            if waited >= phase.config.monitor:
                view.set("verify", "Service converged")
                break
            # A terminal counts down; plain output says it once.
            left = max(1, math.ceil(phase.config.monitor - (waited if view.tty else 0)))
            view.set("verify", f"Waiting {left} seconds to verify that tasks are stable...")
        await asyncio.sleep(POLL_SECONDS)
    await _finish(swarm, name, phase, rollback_message)
    if rollback_message:
        raise RolledBack(rollback_message)


def _too_many_failures(snap: Snapshot, phase: Phase, failed: dict[str, str],
                       desired: int) -> bool:
    """Record the current template's failed tasks; over --*-max-failure-ratio?"""
    current_hash = snap.current_hash
    for pod in snap.pods:
        if current_hash and template_hash(pod) == current_hash:
            why = failure(pod, phase.started)
            if why:
                failed.setdefault(pod["metadata"]["uid"], why)
    return bool(failed) and len(failed) / max(desired, 1) > phase.config.max_failure_ratio


async def _pause(swarm: Swarm, name: str, phase: Phase, task: str) -> None:
    """Pause the rollout where it is (Swarm's `pause` failure action) and say why."""
    what = "update" if phase.kind == "update" else "rollback"
    message = f"{what} paused due to failure or early termination of task {task}"
    state = "paused" if what == "update" else "rollback_paused"
    await swarm.patch_deployment(name, {"spec": {"paused": True},
                                        **status_patch(state, message, phase.started)})
    raise click.ClickException(f"service {what} paused: {message}")


async def _finish(swarm: Swarm, name: str, phase: Phase, rollback_message: str) -> None:
    if phase.kind in ("update", "rollback"):
        state = "completed" if phase.kind == "update" else "rollback_completed"
        message = ("update completed" if phase.kind == "update" else
                   rollback_message or "rollback completed")
        await swarm.patch_deployment(name, status_patch(state, message, phase.started, True))


def _check_deadline(snap: Snapshot, since: datetime) -> None:
    """Stop when the Deployment says this rollout made no progress for its deadline."""
    since = since.replace(microsecond=0)
    for c in (snap.deployment.get("status") or {}).get("conditions") or []:
        updated = parse_time(c.get("lastUpdateTime"))
        if (c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
                and updated is not None and updated >= since):
            raise click.ClickException(
                f"service {snap.spec.name} made no progress for "
                f"{snap.deployment['spec'].get('progressDeadlineSeconds', 600)} seconds: "
                f"{c.get('message', '')}; see `dockyard service ps {snap.spec.name}`")


async def _auto_rollback(swarm: Swarm, snap: Snapshot, message: str) -> Phase:
    """Back to the previous spec, which is then forgotten (as Swarm's automatic rollback)."""
    previous = mapping.previous_of(snap.deployment)
    if previous is None:
        raise click.ClickException(f"{message}, but service {snap.spec.name} has no "
                                   "previous spec to roll back to")
    config = snap.spec.rollback_config
    phase = Phase("rollback", config)
    await apply.move(swarm, previous, previous=None, config=config,
                     status=status_patch("rollback_started", message, phase.started),
                     warn=lambda text: click.echo(f"warning: {text}", err=True))
    return phase
