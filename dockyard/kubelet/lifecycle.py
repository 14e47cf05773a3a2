"""Container lifecycle hooks and graceful termination (kuberuntime's killContainer).

Stopping a container: the `Killing` event, its preStop hook (exec, httpGet or sleep) bounded
by the grace period, then SIGTERM with what is left of the grace period (at least 2 s, so a
slow hook never turns into an instant SIGKILL) and SIGKILL after it. The grace period is the
pod's deletionGracePeriodSeconds while it is being deleted, else the probe's or the pod's
terminationGracePeriodSeconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from dockyard.kubelet.context import AgentContext
from dockyard.kubelet.probes import HttpGetter
from dockyard.runtime.cri import RuntimeFailure

log = logging.getLogger("dockyard.kubelet.lifecycle")

Obj = dict[str, Any]
MINIMUM_GRACE_SECONDS = 2.0
DEFAULT_GRACE_SECONDS = 30.0
POST_START_TIMEOUT = 300.0  # an exec postStart that never returns must not wedge the pod


def format_pod(pod: Obj) -> str:
    """`name_namespace(uid)`, how the kubelet names a pod in messages."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name')}_{meta.get('namespace')}({meta.get('uid')})"


def pod_ref(pod: Obj) -> Obj:
    """What events are about (the informer's pods may lack kind/apiVersion)."""
    return {"kind": "Pod", "apiVersion": "v1", "metadata": pod.get("metadata") or {}}


def grace_period(pod: Obj, probe: Obj | None = None) -> float:
    """setTerminationGracePeriod: deletion's grace, else the probe's, else the pod's."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if meta.get("deletionGracePeriodSeconds") is not None:
        return float(meta["deletionGracePeriodSeconds"])
    if probe and probe.get("terminationGracePeriodSeconds") is not None:
        return float(probe["terminationGracePeriodSeconds"])
    value = spec.get("terminationGracePeriodSeconds")
    return float(value) if value is not None else DEFAULT_GRACE_SECONDS


async def run_hook(ctx: AgentContext, http: HttpGetter, pod: Obj, container: Obj,
                   container_id: str, handler: Obj, pod_ip: str, timeout: float) -> str | None:
    """Run one lifecycle handler; None on success, else the message of its failure."""
    name = container.get("name")
    if "exec" in handler:
        command = [str(a) for a in (handler["exec"] or {}).get("command") or []]
        try:
            result = await ctx.runtime.exec_sync(container_id, command, timeout)
        except RuntimeFailure as exc:
            error, output = str(exc), ""
        else:
            if result.exit_code == 0 and not result.timed_out:
                return None
            output = (result.stdout + result.stderr).decode(errors="replace")
            error = (f"command '{' '.join(command)}' timed out" if result.timed_out else
                     f"command '{' '.join(command)}' exited with {result.exit_code}: ")
        return (f"Exec lifecycle hook ({_go_slice(command)}) for Container \"{name}\" in Pod "
                f"\"{format_pod(pod)}\" failed - error: {error}, message: {_go_quote(output)}")
    if "httpGet" in handler:
        action = handler["httpGet"] or {}
        ok, output = await http.get(action, container, pod_ip, timeout)
        if ok:
            return None
        return (f"HTTP lifecycle hook ({action.get('path', '')}) for Container \"{name}\" in Pod "
                f"\"{format_pod(pod)}\" failed - error: {output}")
    if "sleep" in handler:
        await asyncio.sleep(min(float((handler["sleep"] or {}).get("seconds") or 0), timeout))
        return None
    return f"unsupported lifecycle handler for Container \"{name}\": {sorted(handler)}"


def _go_slice(items: list[str]) -> str:
    return "[" + " ".join(items) + "]"


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


async def post_start(ctx: AgentContext, http: HttpGetter, pod: Obj, container: Obj,
                     container_id: str, pod_ip: str) -> str | None:
    """The postStart hook of a just-started container; its failure message, if it failed."""
    handler = (container.get("lifecycle") or {}).get("postStart")
    if not handler:
        return None
    message = await run_hook(ctx, http, pod, container, container_id, handler, pod_ip,
                             POST_START_TIMEOUT)
    if message:
        ctx.recorder.event(pod_ref(pod), "Warning", "FailedPostStartHook", message)
    return message


async def kill_container(ctx: AgentContext, http: HttpGetter, pod: Obj, container: Obj | None,
                         container_id: str, *, grace: float, message: str = "",
                         pod_ip: str = "", graceful: bool = True) -> None:
    """Stop one container: Killing event, preStop, SIGTERM, SIGKILL after `grace` seconds.
    `graceful=False` (the pod object is gone): no hook and no minimum grace."""
    name = (container or {}).get("name", "")
    if name:
        ctx.recorder.event(pod_ref(pod), "Normal", "Killing",
                           message or f"Stopping container {name}")
    handler = ((container or {}).get("lifecycle") or {}).get("preStop")
    if graceful and handler and grace > 0 and container is not None:
        started = time.monotonic()
        try:
            failure = await asyncio.wait_for(
                run_hook(ctx, http, pod, container, container_id, handler, pod_ip, grace), grace)
        except TimeoutError:
            failure = (f"PreStopHook for Container \"{name}\" in Pod \"{format_pod(pod)}\" did "
                       f"not complete in {grace:g}s")
        if failure:
            ctx.recorder.event(pod_ref(pod), "Warning", "FailedPreStopHook", failure)
        grace -= time.monotonic() - started
    if graceful:
        grace = max(grace, MINIMUM_GRACE_SECONDS)
    try:
        await ctx.runtime.stop_container(container_id, max(0.0, grace))
    except RuntimeFailure as exc:
        log.warning("stopping container %s of %s: %s", name, format_pod(pod), exc)
        raise
