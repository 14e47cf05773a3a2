"""The level-triggered sync of one pod (kuberuntime's computePodActions + SyncPod).

Each run reads what the runtime holds for the pod, decides the next steps with
`compute_actions` (a pure function), takes them, and hands the resulting status to the status
manager: sandbox (network, then the pause container) with the volumes, init containers one at
a time, then the app containers in order. A container is never restarted: attempt N+1 is
created, after the crash back-off. Failures become the waiting reasons and events users know
(ErrImagePull, ImagePullBackOff, CrashLoopBackOff, CreateContainerConfigError, ...). A run
returns how long until it must run again (a back-off ending), or None, and marks the pod
terminal once it reached Succeeded/Failed (the pod workers then release what it holds).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from dockyard.api.resources import by_kind
from dockyard.client.rest import ApiError, is_not_found
from dockyard.kubelet import containerconfig, lifecycle
from dockyard.kubelet.backoff import Backoff, go_duration
from dockyard.kubelet.context import (
    AgentContext,
    ImagePullError,
    PodNetworkStatus,
    VolumeSetupError,
)
from dockyard.kubelet.lifecycle import format_pod, grace_period, pod_ref
from dockyard.kubelet.probes import ProbeManager
from dockyard.kubelet.status import (
    Observed,
    is_terminal,
    latest_by_name,
    now_rfc3339,
    pod_status,
    should_restart,
)
from dockyard.kubelet.statusmanager import StatusManager
from dockyard.runtime.cri import (
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    ContainerState,
    ContainerStatus,
    ImageSpec,
    NotFound,
    RuntimeFailure,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
)

log = logging.getLogger("dockyard.kubelet.sync")

Obj = dict[str, Any]
LABEL_CONTAINER_HASH = "io.kubernetes.container.hash"
VOLUME_REFRESH_SECONDS = 60.0
# A new pod's first status (Pending, ContainerCreating) is written only if starting it takes
# longer than this: a quick start goes straight to Running with one write instead of two.
FIRST_STATUS_DELAY = 0.25  # configMap/secret/downward API contents (kubelet: ~1 min)
PULL_EVENT_AFTER = 0.1  # an image not ready by then is being pulled: say so at once
_LOG_NAME = re.compile(r"^(\d+)\.log")


@dataclass
class PodState:
    """What the agent keeps about one pod between syncs (all of it rebuilt on adoption)."""

    uid: str
    pod: Obj | None = None  # the latest API object; None: adopted, not seen in the API yet
    sandbox_id: str | None = None
    network: PodNetworkStatus | None = None
    volumes: dict[str, Path] | None = None
    volumes_at: float = 0.0
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)  # kubelet's reasonCache
    attempts: dict[str, int] = field(default_factory=dict)  # newest attempt per container
    container_ids: set[str] = field(default_factory=set)  # what the runtime holds for it
    start_failed_at: dict[str, float] = field(default_factory=dict)
    image_failure: dict[str, tuple[str, str]] = field(default_factory=dict)
    adopted: bool = False
    terminal: bool = False  # Succeeded/Failed: nothing restarts, the sandbox is stopped
    released: bool = False  # a terminal pod's sandbox, network and volumes were released
    deleted: bool = False  # the API object is gone (or never existed): remove everything
    failure: tuple[str, str] | None = None  # (reason, message) that failed the pod
    first_status: asyncio.TimerHandle | None = None  # a new pod's Pending status, delayed
    first_status_value: Obj | None = None


@dataclass
class Actions:
    """podActions: what one sync will do."""

    create_sandbox: bool = False
    kill_pod: bool = False
    next_init: Obj | None = None
    start: list[Obj] = field(default_factory=list)
    kill: dict[str, tuple[Obj, str, Obj | None]] = field(default_factory=dict)
    # container id -> (container spec, Killing message, probe whose grace applies)


def container_hash(container: Obj) -> str:
    """Changes when the container's spec changes (an image update restarts the container)."""
    return hashlib.sha256(orjson.dumps(container, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def restarts_on_failure(pod: Obj) -> bool:
    return ((pod.get("spec") or {}).get("restartPolicy") or "Always") != "Never"


def _init_failed(cs: ContainerStatus) -> bool:
    if cs.reason == "OOMKilled":
        return True
    return (cs.state == ContainerState.EXITED and cs.exit_code != 0) or \
        cs.state == ContainerState.UNKNOWN


def next_init_container(pod: Obj, latest: dict[str, ContainerStatus]
                        ) -> tuple[ContainerStatus | None, Obj | None, bool]:
    """findNextInitContainerToRun: (last failed status, next init container, all done)."""
    spec = pod.get("spec") or {}
    inits = spec.get("initContainers") or []
    if not inits:
        return None, None, True
    for ctr in spec.get("containers") or []:
        cs = latest.get(ctr["name"])
        if cs is not None and cs.state == ContainerState.RUNNING:
            return None, None, True
    for ctr in reversed(inits):
        cs = latest.get(ctr["name"])
        if cs is not None and _init_failed(cs):
            return cs, ctr, False
    for i in range(len(inits) - 1, -1, -1):
        cs = latest.get(inits[i]["name"])
        if cs is None:
            continue
        if cs.state == ContainerState.RUNNING:
            return None, None, False
        if cs.state == ContainerState.EXITED:
            if i == len(inits) - 1:
                return None, None, True
            return None, inits[i + 1], False
    return None, inits[0], False


def compute_actions(pod: Obj, containers: list[ContainerStatus], *, sandbox_changed: bool,
                    sandbox_existed: bool,
                    probe_failed: dict[str, tuple[str, Obj]] | None = None) -> Actions:
    """computePodActions: from the spec and the runtime's containers, the steps to take."""
    spec = pod.get("spec") or {}
    policy = spec.get("restartPolicy") or "Always"
    latest = latest_by_name(containers)
    probe_failed = probe_failed or {}
    actions = Actions(create_sandbox=sandbox_changed, kill_pod=sandbox_changed)
    if sandbox_changed:
        if not restarts_on_failure(pod) and sandbox_existed and containers:
            actions.create_sandbox = False  # done: no new sandbox for a pod that will not run
            return actions
        to_start = [c for c in spec.get("containers") or []
                    if not (policy == "OnFailure" and _succeeded(latest.get(c["name"])))]
        if not to_start and next_init_container(pod, latest)[2]:
            actions.create_sandbox = False
            return actions
        if spec.get("initContainers"):
            actions.next_init = spec["initContainers"][0]
            return actions
        actions.start = to_start
        return actions

    last_init, next_init, done = next_init_container(pod, latest)
    if not done:
        if next_init is not None:
            if last_init is not None and _init_failed(last_init) and \
                    not restarts_on_failure(pod):
                actions.kill_pod = True
            else:
                if last_init is not None and last_init.state == ContainerState.UNKNOWN:
                    actions.kill[last_init.id] = (next_init, "", None)
                actions.next_init = next_init
        return actions

    keep = 0
    for ctr in spec.get("containers") or []:
        cs = latest.get(ctr["name"])
        if cs is None or cs.state != ContainerState.RUNNING:
            if should_restart(ctr, pod, cs):
                actions.start.append(ctr)
                if cs is not None and cs.state == ContainerState.UNKNOWN:
                    actions.kill[cs.id] = (ctr, "", None)
            continue
        restart = restarts_on_failure(pod)
        probe: Obj | None = None
        stored_hash = cs.labels.get(LABEL_CONTAINER_HASH)
        if stored_hash and stored_hash != container_hash(ctr):
            message = f"Container {ctr['name']} definition changed"
            restart = True
        elif cs.id in probe_failed:
            kind, probe = probe_failed[cs.id]
            message = f"Container {ctr['name']} failed {kind} probe"
        else:
            keep += 1
            continue
        if restart:
            message += ", will be restarted"
            actions.start.append(ctr)
        actions.kill[cs.id] = (ctr, message, probe)
    if keep == 0 and not actions.start:
        actions.kill_pod = True
    return actions


def _succeeded(cs: ContainerStatus | None) -> bool:
    return cs is not None and cs.state == ContainerState.EXITED and cs.exit_code == 0


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _StartFailed(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class PodSyncer:
    """Runs the steps of a pod's life; the pod workers make sure one pod is never synced
    twice at once."""

    def __init__(self, ctx: AgentContext, status: StatusManager, probes: ProbeManager, *,
                 backoff: Backoff, image_backoff: Backoff, start_backoff: Backoff,
                 on_container: Callable[[str, str], None] | None = None) -> None:
        self.ctx = ctx
        self.status = status
        self.probes = probes
        self.backoff = backoff
        self.image_backoff = image_backoff
        self.start_backoff = start_backoff
        self.on_container = on_container or (lambda cid, uid: None)

    # -- observing -------------------------------------------------------------------------

    async def observe(self, st: PodState) -> tuple[SandboxStatus | None, list[ContainerStatus]]:
        sandbox: SandboxStatus | None = None
        if st.sandbox_id:
            try:
                sandbox = await self.ctx.runtime.sandbox_status(st.sandbox_id)
            except NotFound:
                sandbox = None
        containers: list[ContainerStatus] = []
        # One record per known container: cheaper than listing every container of the node.
        for cid in list(st.container_ids):
            try:
                containers.append(await self.ctx.runtime.container_status(cid))
            except NotFound:
                st.container_ids.discard(cid)
        for c in containers:
            if c.attempt > st.attempts.get(c.name, -1):
                st.attempts[c.name] = c.attempt
        return sandbox, containers

    def pod_ip(self, st: PodState, pod: Obj) -> str:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return self.ctx.node_ip
        return st.network.ips[0] if st.network and st.network.ips else ""

    def compute_status(self, st: PodState, pod: Obj, sandbox: SandboxStatus | None,
                       containers: list[ContainerStatus]) -> Obj:
        host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
        ips = () if host_network or st.network is None else st.network.ips
        sandbox_ready = sandbox is not None and sandbox.state == SandboxState.READY and \
            (host_network or bool(ips))
        probes: dict[str, tuple[bool, bool]] = {}
        for c in containers:
            result = self.probes.status(c.id) if c.state == ContainerState.RUNNING else None
            if result is not None:
                probes[c.id] = result
        obs = Observed(containers=containers, sandbox_ready=sandbox_ready, pod_ips=ips,
                       host_ip=self.ctx.node_ip, waiting=dict(st.waiting), probes=probes,
                       terminal=st.terminal, failure=st.failure,
                       runtime_name=self.ctx.runtime.name, now=now_rfc3339())
        return pod_status(pod, obs, self.status.get(st.uid))

    def publish(self, st: PodState, pod: Obj, sandbox: SandboxStatus | None,
                 containers: list[ContainerStatus], *, delay: float = 0.0) -> Obj:
        """Hand the pod's status to the status manager (after `delay` seconds, unless a
        newer status is published first)."""
        status = self.compute_status(st, pod, sandbox, containers)
        if delay > 0:
            st.first_status_value = status
            if st.first_status is None:
                st.first_status = asyncio.get_running_loop().call_later(
                    delay, self._publish_late, st, pod)
            return status
        if st.first_status is not None:
            st.first_status.cancel()
            st.first_status = st.first_status_value = None
        self.status.set(pod, status)
        return status

    def _publish_late(self, st: PodState, pod: Obj) -> None:
        status, st.first_status, st.first_status_value = st.first_status_value, None, None
        if status is not None:
            self.status.set(pod, status)

    # -- the sync of a live pod ------------------------------------------------------------

    async def sync(self, st: PodState) -> float | None:
        """One step toward the pod's spec; seconds until the next run is due, or None."""
        pod = st.pod
        assert pod is not None
        if st.terminal:
            return None
        sandbox, containers = await self.observe(st)
        if st.adopted and st.network is None and not _host_network(pod):
            st.network = await self.ctx.network.status(st.uid)
        self._track_probes(st, pod, containers)
        fresh = not st.container_ids and not (pod.get("status") or {}).get("startTime")
        status = self.publish(st, pod, sandbox, containers,
                              delay=FIRST_STATUS_DELAY if fresh else 0.0)
        if is_terminal(status) or is_terminal(pod.get("status")):
            st.terminal = True  # the pod workers release what it holds
            return None
        deadline = self._deadline(pod, status)
        if deadline is not None and deadline <= 0:
            st.failure = ("DeadlineExceeded",
                          "Pod was active on the node longer than the specified deadline")
            self.ctx.recorder.event(pod_ref(pod), "Normal", "DeadlineExceeded", st.failure[1])
            await self.kill_all(st, pod, containers)
            st.terminal = True
            return None

        sandbox_changed = sandbox is None or sandbox.state != SandboxState.READY or \
            (not _host_network(pod) and (st.network is None or not st.network.ips))
        failed = {c.id: f for c in containers if c.state == ContainerState.RUNNING
                  and (f := self.probes.failed(c.id)) is not None}
        actions = compute_actions(pod, containers, sandbox_changed=sandbox_changed,
                                  sandbox_existed=st.sandbox_id is not None,
                                  probe_failed=failed)
        waits: list[float] = [] if deadline is None else [deadline]
        acted = False
        if actions.kill_pod:
            acted = True
            await self.kill_all(st, pod, containers)
            if actions.create_sandbox and sandbox is not None:
                self.ctx.recorder.event(pod_ref(pod), "Normal", "SandboxChanged",
                                        "Pod sandbox changed, it will be killed and re-created.")
                await self.remove_sandbox(st)
            elif not actions.create_sandbox and st.sandbox_id:
                await self.stop_sandbox(st)
        if actions.create_sandbox:
            acted = True
            try:
                await self._create_sandbox(st, pod)
            except _StartFailed as exc:
                waits.append(exc.retry_after)
                return min(waits)
        elif st.volumes is None or time.monotonic() - st.volumes_at > VOLUME_REFRESH_SECONDS:
            try:
                await self._setup_volumes(st, pod)
            except _StartFailed as exc:
                waits.append(exc.retry_after)
                return min(waits)
        if actions.kill:
            acted = True
            await asyncio.gather(*(self._kill_one(st, pod, cid, ctr, message, probe)
                                   for cid, (ctr, message, probe) in actions.kill.items()))
            containers = (await self.observe(st))[1]
        latest = latest_by_name(containers)
        if actions.next_init is not None:
            acted = True
            wait = await self._start(st, pod, actions.next_init, latest)
            if wait is not None:
                waits.append(wait)
        for ctr in actions.start:
            acted = True
            wait = await self._start(st, pod, ctr, latest)
            if wait is not None:
                waits.append(wait)
        if acted:
            sandbox, containers = await self.observe(st)
            containers = await self._collect_garbage(st, containers)
            self._track_probes(st, pod, containers)
            status = self.publish(st, pod, sandbox, containers)
            st.terminal = is_terminal(status)
        return min(waits) if waits else None

    def _deadline(self, pod: Obj, status: Obj) -> float | None:
        """Seconds left of activeDeadlineSeconds (None: no deadline)."""
        seconds = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        started = _parse_time(status.get("startTime"))
        if seconds is None or started is None:
            return None
        return started + float(seconds) - time.time()

    # -- sandbox and volumes ---------------------------------------------------------------

    async def _create_sandbox(self, st: PodState, pod: Obj) -> None:
        """Network and pause container, with the volumes prepared at the same time."""
        results = await asyncio.gather(self._run_sandbox(st, pod), self._setup_volumes(st, pod),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _run_sandbox(self, st: PodState, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        try:
            netns = None
            if not spec.get("hostNetwork"):
                st.network = await self.ctx.network.setup(pod)
                netns = st.network.netns_path
            hostname = socket.gethostname() if spec.get("hostNetwork") else \
                (spec.get("hostname") or meta["name"][:63].rstrip("-."))
            config = SandboxConfig(
                pod_uid=st.uid, pod_name=meta["name"], namespace=meta.get("namespace") or "",
                hostname=hostname, netns_path=netns,
                labels={LABEL_POD_NAME: meta["name"],
                        LABEL_POD_NAMESPACE: meta.get("namespace") or "",
                        LABEL_POD_UID: st.uid},
                pids_limit=self.ctx.config.pod_pids_limit)
            st.sandbox_id = await self.ctx.runtime.run_sandbox(config)
        except Exception as exc:  # noqa: BLE001 - CNI and runtime failures alike
            key = f"{st.uid}/sandbox"
            self.ctx.recorder.event(pod_ref(pod), "Warning", "FailedCreatePodSandBox",
                                    f"Failed to create pod sandbox: {exc}")
            self.start_backoff.next(key, time.time())
            raise _StartFailed(self.start_backoff.get(key)) from exc

    async def _setup_volumes(self, st: PodState, pod: Obj) -> None:
        try:
            st.volumes = await self.ctx.volumes.setup(pod)
            st.volumes_at = time.monotonic()
        except VolumeSetupError as exc:
            key = f"{st.uid}/volumes"
            self.ctx.recorder.event(pod_ref(pod), "Warning", "FailedMount", str(exc))
            self.start_backoff.next(key, time.time())
            raise _StartFailed(self.start_backoff.get(key)) from exc

    async def stop_sandbox(self, st: PodState) -> None:
        if st.sandbox_id:
            try:
                await self.ctx.runtime.stop_sandbox(st.sandbox_id)
            except NotFound:
                pass

    async def remove_sandbox(self, st: PodState) -> None:
        """Stop and remove the sandbox and every container of the pod (a container cannot
        outlive its sandbox). Restart counts go on from `st.attempts`."""
        await self.stop_sandbox(st)
        for cid in list(st.container_ids):
            await self._remove_container(st, cid)
        if st.sandbox_id:
            try:
                await self.ctx.runtime.remove_sandbox(st.sandbox_id)
            except NotFound:
                pass
        st.sandbox_id = None

    async def _remove_container(self, st: PodState, container_id: str) -> None:
        self.probes.remove_container(container_id)
        st.container_ids.discard(container_id)
        self.on_container(container_id, "")
        try:
            await self.ctx.runtime.remove_container(container_id)
        except NotFound:
            pass

    # -- starting containers ---------------------------------------------------------------

    async def _start(self, st: PodState, pod: Obj, ctr: Obj,
                     latest: dict[str, ContainerStatus]) -> float | None:
        """startContainer with its back-offs; None once started, else seconds to wait."""
        try:
            await self._start_container(st, pod, ctr, latest.get(ctr["name"]))
        except _StartFailed as exc:
            return exc.retry_after
        return None

    def _fail(self, st: PodState, pod: Obj, name: str, reason: str, message: str,
              event: str | None = None) -> _StartFailed:
        """A start failed: waiting reason, `Failed` event, start back-off."""
        st.waiting[name] = (reason, message)
        self.ctx.recorder.event(pod_ref(pod), "Warning", "Failed", event or f"Error: {message}")
        now = time.time()
        key = f"{st.uid}/{name}/start"
        self.start_backoff.next(key, now)
        st.start_failed_at[name] = now
        return _StartFailed(self.start_backoff.get(key))

    async def _start_container(self, st: PodState, pod: Obj, ctr: Obj,
                               latest: ContainerStatus | None) -> None:
        name = ctr["name"]
        uid = st.uid
        # A failed start (config, create, run) is retried after its own back-off, keeping the
        # reason users need to see (e.g. CreateContainerConfigError).
        failed_at = st.start_failed_at.get(name)
        start_key = f"{uid}/{name}/start"
        if failed_at is not None and self.start_backoff.in_backoff_since(start_key, failed_at):
            raise _StartFailed(self.start_backoff.remaining(start_key, failed_at))
        # Crash back-off, counted from the exit of the newest attempt (doBackOff).
        key = f"{uid}/{name}/{container_hash(ctr)}"
        if latest is not None and latest.state == ContainerState.EXITED:
            exited = latest.finished_at or time.time()
            if self.backoff.in_backoff_since(key, exited):
                delay = self.backoff.get(key)
                self.ctx.recorder.event(
                    pod_ref(pod), "Warning", "BackOff",
                    f"Back-off restarting failed container {name} in pod {format_pod(pod)}")
                st.waiting[name] = ("CrashLoopBackOff",
                                    f"back-off {go_duration(delay)} restarting failed "
                                    f"container={name} pod={format_pod(pod)}")
                raise _StartFailed(self.backoff.remaining(key, exited))
            self.backoff.next(key, exited)

        image = await self._ensure_image(st, pod, ctr)
        attempt = self._next_attempt(st, name, latest)
        pod_ip = self.pod_ip(st, pod)
        log_path = self.ctx.config.pods_dir / uid / "logs" / name / f"{attempt}.log"
        try:
            mounts = self.ctx.volumes.mounts(pod, ctr, st.volumes or {}, pod_ip)
            config = await containerconfig.container_config(
                pod, ctr, image=image, image_config=self.ctx.images.image_config(image),
                mounts=mounts, attempt=attempt, log_path=log_path, pod_ip=pod_ip,
                host_ip=self.ctx.node_ip, node_name=self.ctx.config.node_name,
                get_object=self._get_object, pids_limit=self.ctx.config.pod_pids_limit)
        except containerconfig.ContainerConfigError as exc:
            raise self._fail(st, pod, name, "CreateContainerConfigError", str(exc)) from exc
        meta = pod["metadata"]
        labels = {LABEL_POD_NAME: meta["name"], LABEL_POD_NAMESPACE: meta.get("namespace") or "",
                  LABEL_POD_UID: uid, LABEL_CONTAINER_NAME: name, **config.labels,
                  LABEL_CONTAINER_HASH: container_hash(ctr)}
        config = replace(config, labels=labels)
        assert st.sandbox_id is not None
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            cid = await self.ctx.runtime.create_container(st.sandbox_id, config)
        except (RuntimeFailure, OSError) as exc:
            raise self._fail(st, pod, name, "CreateContainerError", str(exc)) from exc
        st.attempts[name] = attempt
        st.container_ids.add(cid)
        self.on_container(cid, uid)
        self.ctx.recorder.event(pod_ref(pod), "Normal", "Created", f"Created container {name}")
        try:
            await self.ctx.runtime.start_container(cid)
        except RuntimeFailure as exc:
            await self._discard_unstarted(st, cid)
            raise self._fail(st, pod, name, "RunContainerError", str(exc)) from exc
        self.ctx.recorder.event(pod_ref(pod), "Normal", "Started", f"Started container {name}")
        st.waiting.pop(name, None)
        st.start_failed_at.pop(name, None)
        failure = await lifecycle.post_start(self.ctx, self.probes.http, pod, ctr, cid, pod_ip)
        if failure:
            await self._kill_one(st, pod, cid, ctr, "FailedPostStartHook", None)
            st.waiting[name] = ("PostStartHookError", failure)
            raise _StartFailed(0.0)

    async def _discard_unstarted(self, st: PodState, cid: str) -> None:
        """A container that failed to start: keep it if it exited (it counts as a crash),
        remove it if it is stuck in `created`."""
        try:
            cs = await self.ctx.runtime.container_status(cid)
        except NotFound:
            return
        if cs.state != ContainerState.EXITED:
            try:
                await self.ctx.runtime.stop_container(cid, 0)
            except RuntimeFailure:
                pass
            await self._remove_container(st, cid)

    async def _collect_garbage(self, st: PodState, containers: list[ContainerStatus]
                               ) -> list[ContainerStatus]:
        """Remove dead attempts older than the newest two of each container (the newest
        holds the state, the one before it `lastState` and `kubectl logs --previous`)."""
        keep: list[ContainerStatus] = []
        count: dict[str, int] = {}
        for c in sorted(containers, key=lambda c: (-c.attempt, -c.created_at)):
            count[c.name] = count.get(c.name, 0) + 1
            if count[c.name] > 2 and c.state in (ContainerState.EXITED, ContainerState.CREATED):
                await self._remove_container(st, c.id)
            else:
                keep.append(c)
        return keep

    def _next_attempt(self, st: PodState, name: str, latest: ContainerStatus | None) -> int:
        """restartCount of the new attempt: one past the newest the runtime or we know of,
        else past the newest log file (the runtime may have lost its records)."""
        known = max(latest.attempt if latest else -1, st.attempts.get(name, -1))
        if known >= 0:
            return known + 1
        logs = self.ctx.config.pods_dir / st.uid / "logs" / name
        try:
            numbers = [int(m.group(1)) for entry in os.listdir(logs)
                       if (m := _LOG_NAME.match(entry))]
        except OSError:
            return 0
        return max(numbers) + 1 if numbers else 0

    async def _ensure_image(self, st: PodState, pod: Obj, ctr: Obj) -> ImageSpec:
        """EnsureImageExists with its events and the image pull back-off."""
        ref = str(ctr.get("image") or "")
        name = ctr["name"]
        policy = str(ctr.get("imagePullPolicy") or "IfNotPresent")
        key = f"{st.uid}_{ref}"
        now = time.time()
        if self.image_backoff.in_backoff_since_update(key, now):
            reason, message = st.image_failure.get(ref, ("ErrImagePull", ""))
            if reason == "ErrImagePull":
                reason, message = "ImagePullBackOff", f'Back-off pulling image "{ref}"'
                self.ctx.recorder.event(pod_ref(pod), "Normal", "BackOff", message)
            st.waiting[name] = (reason, message)
            self.ctx.recorder.event(pod_ref(pod), "Warning", "Failed", f"Error: {reason}")
            raise _StartFailed(self.image_backoff.until_update_expires(key))
        started = time.monotonic()
        task = asyncio.ensure_future(self.ctx.images.ensure(ref, policy))
        announced = False
        done, _ = await asyncio.wait([task], timeout=PULL_EVENT_AFTER)
        if not done:
            announced = True
            self.ctx.recorder.event(pod_ref(pod), "Normal", "Pulling", f'Pulling image "{ref}"')
        try:
            spec, present = await task
        except ImagePullError as exc:
            self.image_backoff.next(key, time.time())
            st.image_failure[ref] = (exc.reason, exc.message)
            st.waiting[name] = (exc.reason, exc.message)
            if exc.reason == "ErrImageNeverPull":
                self.ctx.recorder.event(pod_ref(pod), "Warning", "ErrImageNeverPull", exc.message)
            elif exc.reason == "InvalidImageName":
                self.ctx.recorder.event(pod_ref(pod), "Warning", "InspectFailed", exc.message)
            else:
                message = exc.message if exc.message.startswith("Failed to pull image") else \
                    f'Failed to pull image "{ref}": {exc.message}'
                self.ctx.recorder.event(pod_ref(pod), "Warning", "Failed", message)
            self.ctx.recorder.event(pod_ref(pod), "Warning", "Failed", f"Error: {exc.reason}")
            # Half the wait shows the error, the other half ImagePullBackOff (a sync in the
            # middle), as users see it on a kubelet.
            raise _StartFailed(self.image_backoff.get(key) / 2) from exc
        st.image_failure.pop(ref, None)
        if present:
            self.ctx.recorder.event(pod_ref(pod), "Normal", "Pulled",
                                    f'Container image "{ref}" already present on machine')
        else:
            took = go_duration(round(time.monotonic() - started, 3))
            if not announced:
                self.ctx.recorder.event(pod_ref(pod), "Normal", "Pulling",
                                        f'Pulling image "{ref}"')
            self.ctx.recorder.event(pod_ref(pod), "Normal", "Pulled",
                                    f'Successfully pulled image "{ref}" in {took} ({took} '
                                    "including waiting)")
        return spec

    async def _get_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        info = by_kind("", kind)
        if info is None:
            return None
        try:
            return await self.ctx.client.get(info, namespace, name)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise

    # -- probes ----------------------------------------------------------------------------

    def _track_probes(self, st: PodState, pod: Obj, containers: list[ContainerStatus]) -> None:
        """Probe workers for the running app containers, none for anything else."""
        specs = {c["name"]: c for c in (pod.get("spec") or {}).get("containers") or []}
        latest = latest_by_name(containers)
        live: set[str] = set()
        api = {s.get("containerID"): s for s in (pod.get("status") or {}).get(
            "containerStatuses") or []}
        for name, cs in latest.items():
            if name not in specs or cs.state != ContainerState.RUNNING or \
                    (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            live.add(cs.id)
            seen = api.get(f"{self.ctx.runtime.name}://{cs.id}") if st.adopted else None
            self.probes.ensure(pod, specs[name], cs.id, cs.started_at, self.pod_ip(st, pod),
                               seed_started=bool(seen and seen.get("started")),
                               seed_ready=bool(seen and seen.get("ready")))
        self.probes.remove_pod(st.uid, keep=live)

    # -- stopping --------------------------------------------------------------------------

    async def _kill_one(self, st: PodState, pod: Obj, cid: str, ctr: Obj | None, message: str,
                        probe: Obj | None, *, graceful: bool = True) -> None:
        self.probes.remove_container(cid)
        grace = grace_period(pod, probe) if graceful else 0.0
        try:
            await lifecycle.kill_container(self.ctx, self.probes.http, pod, ctr, cid,
                                           grace=grace, message=message,
                                           pod_ip=self.pod_ip(st, pod), graceful=graceful)
        except NotFound:
            pass

    async def kill_all(self, st: PodState, pod: Obj, containers: list[ContainerStatus], *,
                        graceful: bool = True) -> None:
        """killPodWithSyncResult: every container that may run, in parallel."""
        spec = pod.get("spec") or {}
        specs = {c["name"]: c for c in [*(spec.get("initContainers") or []),
                                        *(spec.get("containers") or [])]}
        alive = [c for c in containers if c.state in (ContainerState.RUNNING,
                                                      ContainerState.UNKNOWN)]
        results = await asyncio.gather(
            *(self._kill_one(st, pod, c.id, specs.get(c.name), "", None, graceful=graceful)
              for c in alive), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]


def _host_network(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))
