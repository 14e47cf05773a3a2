"""The pod workers: every pod bound to this node driven toward its spec, concurrently.

The agent feeds pods in (`update`, `deleted`, `reconcile`); each change queues the pod's uid
on one work queue, which never hands a pod to two syncs at once while different pods sync in
parallel. What wakes a pod besides API changes: container exits (one task waiting on the
runtime's `wait_any_exit`, the PLEG), probe results, and timers for back-offs ending. Nothing
polls per pod, so an idle node with hundreds of pods costs (almost) nothing.

A pod's life: sync (sync.py) while it should run; once Succeeded/Failed its sandbox is
stopped and its status kept; with a deletionTimestamp it is terminated gracefully and its
API object deleted; when the object is gone, everything on the node is removed at once.

`start` adopts what the runtime holds (a restarted agent keeps running containers and their
restart counts); `reconcile` removes the pods the API no longer has.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import Any

from dockyard.client.workqueue import WorkQueue
from dockyard.kubelet.backoff import Backoff
from dockyard.kubelet.context import AgentContext
from dockyard.kubelet.probes import ProbeManager
from dockyard.kubelet.status import KUBELET_CONDITIONS
from dockyard.kubelet.statusmanager import StatusManager
from dockyard.kubelet.sync import PodState, PodSyncer
from dockyard.runtime.cri import LABEL_POD_UID

log = logging.getLogger("dockyard.kubelet.pods")

Obj = dict[str, Any]
EXIT_WAIT_SECONDS = 60.0
GC_EVERY_SECONDS = 300.0
STOP_GRACE_SECONDS = 2.0
MAX_TOMBSTONES = 10_000  # in-flight syncs get this long to finish when the agent stops


def _sync_relevant(pod: Obj) -> tuple[Any, ...]:
    """What a sync depends on besides the runtime: spec, metadata (labels and annotations
    feed the downward API; deletion), and the conditions of others (readiness gates).
    Changes to anything else (our own status writes coming back) need no sync."""
    meta = dict(pod.get("metadata") or {})
    for key in ("resourceVersion", "managedFields"):
        meta.pop(key, None)
    others = [c for c in (pod.get("status") or {}).get("conditions") or []
              if c.get("type") not in KUBELET_CONDITIONS]
    return meta, pod.get("spec"), others


class PodWorkers:
    def __init__(self, ctx: AgentContext, *, max_concurrent_syncs: int = 64) -> None:
        cfg = ctx.config
        self.ctx = ctx
        self.status = StatusManager(ctx.client)
        self.probes = ProbeManager(ctx, self._wake)
        self.syncer = PodSyncer(
            ctx, self.status, self.probes,
            backoff=Backoff(cfg.backoff_initial, cfg.backoff_max),
            image_backoff=Backoff(cfg.backoff_initial, cfg.backoff_max),
            start_backoff=Backoff(cfg.backoff_initial, cfg.backoff_max),
            on_container=self._index)
        self._pods: dict[str, PodState] = {}
        # Pods we deleted through the API whose DELETED event has not come yet: late updates
        # of them are ignored (insertion-ordered, bounded).
        self._finished: dict[str, None] = {}
        self._containers: dict[str, str] = {}  # container id -> pod uid
        self._queue = WorkQueue(base_delay=0.2, max_delay=max(cfg.backoff_max, 1.0))
        self._slots = asyncio.Semaphore(max_concurrent_syncs)
        self._tasks: list[asyncio.Task[None]] = []
        self._syncs: set[asyncio.Task[None]] = set()
        self._live: dict[str, asyncio.Task[Any]] = {}  # uid -> its running sync of a live pod
        self._preempted: set[str] = set()  # syncs cancelled because the pod is going away
        self._started = False
        self._last_gc = time.monotonic()

    # -- the agent's interface -------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what the runtime runs, then start working (pods queued before run now)."""
        await self._adopt()
        self.status.start()
        self._started = True
        self._tasks = [asyncio.create_task(self._dispatch(), name="pod-workers"),
                       asyncio.create_task(self._watch_exits(), name="pod-exits")]
        for uid, st in self._pods.items():
            if st.pod is not None or st.deleted:
                self._queue.add(uid)

    def update(self, pod: Obj) -> None:
        """A pod bound to this node was added or changed, or a periodic resync."""
        uid = str(pod["metadata"]["uid"])
        if uid in self._finished:
            return
        st = self._pods.get(uid)
        if st is None:
            st = self._pods[uid] = PodState(uid)
        if st.deleted:
            return
        previous, st.pod = st.pod, pod
        self.status.observe(pod)
        if pod["metadata"].get("deletionTimestamp"):
            self._preempt(uid)  # e.g. stop waiting for a slow image: terminate now
        same_version = previous is not None and (previous.get("metadata") or {}).get(
            "resourceVersion") == pod["metadata"].get("resourceVersion")
        if previous is not None and not same_version and \
                _sync_relevant(previous) == _sync_relevant(pod):
            return  # only the status moved (our own write coming back)
        if self._started:
            self._queue.add(uid)

    def deleted(self, pod: Obj) -> None:
        """The pod object is gone from the API: kill everything at once and clean up."""
        uid = str(pod["metadata"]["uid"])
        self._finished.pop(uid, None)
        st = self._pods.get(uid)
        if st is None:
            return
        st.deleted = True
        self._preempt(uid)
        if self._started:
            self._queue.add(uid)

    def _preempt(self, uid: str) -> None:
        """Cancel the running sync of a pod that is going away."""
        task = self._live.get(uid)
        if task is not None and not task.done():
            self._preempted.add(uid)
            task.cancel()

    async def reconcile(self, uids_in_api: set[str]) -> None:
        """After the first full list: pods (adopted or known) the API lacks are removed."""
        self._finished = {uid: None for uid in self._finished if uid in uids_in_api}
        for uid, st in self._pods.items():
            if uid not in uids_in_api:
                st.deleted = True
                self._preempt(uid)
                self._queue.add(uid)

    def known_uids(self) -> set[str]:
        return set(self._pods)

    async def stop(self) -> None:
        """Stop working; containers keep running (the next agent adopts them)."""
        self._started = False
        await self._queue.shut_down()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._syncs:
            await asyncio.wait(set(self._syncs), timeout=STOP_GRACE_SECONDS)
        for task in list(self._syncs):
            task.cancel()
        await asyncio.gather(*self._syncs, return_exceptions=True)
        await self.probes.stop()
        await self.status.stop()

    # -- adoption --------------------------------------------------------------------------

    def _state(self, uid: str) -> PodState:
        st = self._pods.get(uid)
        if st is None:
            st = self._pods[uid] = PodState(uid)
        return st

    async def _adopt(self) -> None:
        """Attach every sandbox and container the runtime holds to its pod, by uid label."""
        runtime = self.ctx.runtime
        sandboxes = await runtime.list_sandboxes()
        containers = await runtime.list_containers()
        sandbox_pod = {sb.id: sb.pod_uid for sb in sandboxes}
        for sb in sandboxes:
            st = self._state(sb.pod_uid)
            st.sandbox_id, st.adopted = sb.id, True
        for c in containers:
            uid = c.labels.get(LABEL_POD_UID) or sandbox_pod.get(c.sandbox_id)
            if not uid:
                continue
            st = self._state(uid)
            st.adopted = True
            st.sandbox_id = st.sandbox_id or c.sandbox_id
            st.container_ids.add(c.id)
            st.attempts[c.name] = max(st.attempts.get(c.name, -1), c.attempt)
            self._containers[c.id] = uid
        adopted = [st for st in self._pods.values() if st.adopted]
        networks = await asyncio.gather(*(self.ctx.network.status(st.uid) for st in adopted),
                                        return_exceptions=True)
        for st, network in zip(adopted, networks, strict=True):
            if not isinstance(network, BaseException):
                st.network = network
        if adopted:
            log.info("adopted %d pods (%d containers) from the runtime", len(adopted),
                     len(containers))

    # -- running ---------------------------------------------------------------------------

    def _index(self, container_id: str, uid: str) -> None:
        """Which pod a container belongs to (uid "": the container was removed)."""
        if uid:
            self._containers[container_id] = uid
        else:
            self._containers.pop(container_id, None)

    def _wake(self, uid: str) -> None:
        if self._started and uid in self._pods:
            self._queue.add(uid)

    async def _dispatch(self) -> None:
        while (uid := await self._queue.get()) is not None:
            task = asyncio.create_task(self._process(uid), name=f"pod-sync-{uid}")
            self._syncs.add(task)
            task.add_done_callback(self._syncs.discard)

    async def _process(self, uid: str) -> None:
        try:
            delay = await self._run(uid)
        except asyncio.CancelledError:
            if uid not in self._preempted:
                raise
            self._preempted.discard(uid)  # the pod is queued again: terminate or remove it
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:  # noqa: BLE001 - one pod must not stop the others
            log.exception("sync of pod %s failed", self._describe(uid))
            self._queue.add_rate_limited(uid)
        else:
            self._queue.forget(uid)
            if delay is not None and uid in self._pods:
                self._queue.add_after(uid, delay)
        finally:
            self._queue.done(uid)

    async def _run(self, uid: str) -> float | None:
        st = self._pods.get(uid)
        if st is None:
            return None
        if st.deleted:
            await self._remove(st)
            self._forget(uid)
            return None
        pod = st.pod
        if pod is None:
            return None  # adopted, not seen in the API yet: reconcile decides
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            await self._terminate(st)
            self._forget(uid)
            if not st.deleted:  # the DELETED event is still on its way
                self._finished[uid] = None
                if len(self._finished) > MAX_TOMBSTONES:
                    del self._finished[next(iter(self._finished))]
            return None
        delay = None
        if not st.terminal:
            task = asyncio.current_task()
            if task is not None:
                self._live[uid] = task
            try:
                async with self._slots:
                    delay = await self.syncer.sync(st)
            finally:
                self._live.pop(uid, None)
        if st.terminal:
            await self._finish(st)
            return None
        return delay

    # -- the end of a pod ------------------------------------------------------------------

    async def _finish(self, st: PodState) -> None:
        """A pod that reached Succeeded/Failed: nothing restarts; stop the sandbox and
        release its network and volumes, keep the containers (their logs) and the status."""
        pod = st.pod
        assert pod is not None
        syncer = self.syncer
        self.probes.remove_pod(st.uid)
        sandbox, containers = await syncer.observe(st)
        if not st.released:
            await syncer.kill_all(st, pod, containers)
            await syncer.stop_sandbox(st)
            await self.ctx.network.teardown(st.uid)
            await self.ctx.volumes.teardown(st.uid)
            st.released = True
            sandbox, containers = await syncer.observe(st)
        syncer.publish(st, pod, sandbox, containers)

    async def _terminate(self, st: PodState) -> None:
        """Graceful deletion: preStop hooks, SIGTERM, SIGKILL after the grace period, remove
        everything, then the final status and the delete of the API object."""
        pod = st.pod
        assert pod is not None
        self.probes.remove_pod(st.uid)
        _, containers = await self.syncer.observe(st)
        await self.syncer.kill_all(st, pod, containers)
        sandbox, containers = await self.syncer.observe(st)
        st.terminal = True
        final = self.syncer.compute_status(st, pod, sandbox, containers)
        await self._teardown(st)
        await self.status.finish(pod, final)

    async def _remove(self, st: PodState) -> None:
        """The pod object is gone: kill at once (no hooks, no grace), remove everything."""
        self.probes.remove_pod(st.uid)
        await self._teardown(st)
        self.status.forget(st.uid)

    async def _teardown(self, st: PodState) -> None:
        """Sandbox, containers, network, volumes and the pod's directory: nothing is kept."""
        await self.syncer.remove_sandbox(st)
        await self.ctx.network.teardown(st.uid)
        await self.ctx.volumes.teardown(st.uid)
        await asyncio.to_thread(shutil.rmtree, self.ctx.config.pods_dir / st.uid, True)
        for prefix in (f"{st.uid}/", f"{st.uid}_"):
            for backoff in self._backoffs():
                backoff.forget_prefix(prefix)

    def _backoffs(self) -> tuple[Backoff, ...]:
        return self.syncer.backoff, self.syncer.image_backoff, self.syncer.start_backoff

    def _forget(self, uid: str) -> None:
        st = self._pods.pop(uid, None)
        if st is not None:
            if st.first_status is not None:
                st.first_status.cancel()
            for cid in [c for c, u in self._containers.items() if u == uid]:
                del self._containers[cid]
        self.probes.remove_pod(uid)

    async def _watch_exits(self) -> None:
        """The PLEG: a container exit syncs its pod at once."""
        while True:
            try:
                exited = await self.ctx.runtime.wait_any_exit(EXIT_WAIT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep watching
                log.exception("waiting for container exits failed")
                await asyncio.sleep(1.0)
                continue
            for cid in exited:
                uid = self._containers.get(cid)
                if uid is not None:
                    self._queue.add(uid)
            if time.monotonic() - self._last_gc > GC_EVERY_SECONDS:
                self._last_gc = time.monotonic()
                for backoff in self._backoffs():
                    backoff.gc()

    def _describe(self, uid: str) -> str:
        st = self._pods.get(uid)
        meta = (st.pod or {}).get("metadata") or {} if st else {}
        return f"{meta.get('namespace')}/{meta.get('name')} ({uid})" if meta else uid
