"""The scheduler: pops pending pods, picks a node through the framework, binds through the API.

One loop runs synchronous scheduling cycles (filter over a rotating window of nodes that stops
once enough feasible nodes are found, then score and pick); the chosen node is assumed in the
cache at once and the binding runs as a task (a bounded number in flight), so API latency never
stalls the next cycle. Pods that fit nowhere get a FailedScheduling event, a PodScheduled=False
condition, maybe a preemption, and wait in the queue for a cluster event that may help.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers
from dockyard.client.rest import ApiError, Client
from dockyard.scheduler.cache import Cache, is_terminal, pod_key
from dockyard.scheduler.framework import (
    NO_NODES_MESSAGE,
    CycleState,
    NodeInfo,
    Obj,
    PodInfo,
    Status,
    fit_error_message,
)
from dockyard.scheduler.preemption import DefaultPreemption
from dockyard.scheduler.queue import (
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    UNSCHEDULABLE_TIMEOUT,
    QueuedPodInfo,
    SchedulingQueue,
)
from dockyard.scheduler.runtime import Framework

log = logging.getLogger("dockyard.scheduler")

PODS = by_kind("", "Pod")
NODES = by_kind("", "Node")
NAMESPACES = by_kind("", "Namespace")
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
NOTE_LENGTH_LIMIT = 1024


def num_feasible_nodes_to_find(percentage: int, num_nodes: int) -> int:
    """numFeasibleNodesToFind: all of a small cluster, else a share that shrinks with size
    (50% minus 1% per 125 nodes, at least 5%), never fewer than 100 nodes."""
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_nodes
    if percentage <= 0:
        percentage = max(50 - num_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return min(num_nodes, max(num_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND))


def truncate_message(message: str) -> str:
    if len(message) <= NOTE_LENGTH_LIMIT:
        return message
    return message[:NOTE_LENGTH_LIMIT - 4] + " ..."


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_changed(old: Obj, new: Obj) -> bool:
    """Whether a node update can make a pod fit (not a heartbeat or condition change)."""
    return ((old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels")
            or old.get("spec") != new.get("spec")
            or (old.get("status") or {}).get("allocatable")
            != (new.get("status") or {}).get("allocatable"))


class Scheduler:
    """kube-scheduler's default profile for the pods whose `spec.schedulerName` is ours.

    Options: `percentage_of_nodes_to_score` (0: adaptive as Kubernetes, 50% minus 1% per 125
    nodes, at least 5% and 100 nodes), `max_in_flight_bindings` (bindings awaiting the API
    before the loop waits), the queue's back-off (1 s doubling to 10 s) and
    `unschedulable_timeout` (the periodic flush of pods no event moved).
    """

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 scheduler_name: str = "default-scheduler",
                 percentage_of_nodes_to_score: int = 0,
                 max_in_flight_bindings: int = 32,
                 initial_backoff: float = INITIAL_BACKOFF, max_backoff: float = MAX_BACKOFF,
                 unschedulable_timeout: float = UNSCHEDULABLE_TIMEOUT) -> None:
        assert PODS is not None and NODES is not None and NAMESPACES is not None
        self.client = client
        self.factory = factory
        self.recorder = recorder
        self.scheduler_name = scheduler_name
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        self.pods = factory.informer(PODS)
        self.nodes = factory.informer(NODES)
        self.namespaces = factory.informer(NAMESPACES)
        self.cache = Cache(self._namespace_labels)
        self.queue = SchedulingQueue(initial_backoff=initial_backoff, max_backoff=max_backoff,
                                     unschedulable_timeout=unschedulable_timeout)
        self.preemption = DefaultPreemption(self.cache, self._evict, self.queue.nominated_node)
        self.framework = Framework(self.cache, post_filters=[self.preemption])
        self.preemption.framework = self.framework
        self._interested = self.framework.events
        self._bind_slots = asyncio.Semaphore(max_in_flight_bindings)
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_start = 0
        self._rng = random.Random()
        self.scheduled = 0  # pods bound so far (for benchmarks and logs)
        self.pods.add_handlers(Handlers(self._on_pod_add, self._on_pod_update,
                                        self._on_pod_delete))
        self.nodes.add_handlers(Handlers(self._on_node_add, self._on_node_update,
                                         self._on_node_delete))

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Schedule until cancelled; in-flight bindings get a moment to finish."""
        self.factory.start()
        await asyncio.gather(self.pods.wait_synced(), self.nodes.wait_synced(),
                             self.namespaces.wait_synced())
        flusher = asyncio.create_task(self.queue.run_flusher(), name="scheduler-queue-flush")
        try:
            while (qpi := await self.queue.pop()) is not None:
                try:
                    await self._schedule_one(qpi)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - one bad pod must not stop scheduling
                    log.exception("scheduling %s failed", qpi.pod.key)
                    self.queue.add_backoff(qpi)
                await asyncio.sleep(0)  # let informers and bindings run between cycles
        finally:
            self.queue.close()
            flusher.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2.0)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(flusher, *self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- informer handlers: they only update the cache and the queue -----------------------

    def _responsible(self, pod: Obj) -> bool:
        spec = pod.get("spec") or {}
        return (spec.get("schedulerName") or "default-scheduler") == self.scheduler_name \
            and not spec.get("nodeName") and not spec.get("schedulingGates") \
            and not (pod.get("metadata") or {}).get("deletionTimestamp") \
            and not is_terminal(pod)

    def _move(self, event: str) -> None:
        self.queue.move(event, self._interested)

    def _on_pod_add(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName"):
            self.cache.add_pod(pod)
            self._move("AssignedPodAdd")
        elif self._responsible(pod):
            self.queue.add(PodInfo(pod))

    def _on_pod_update(self, old: Obj, new: Obj) -> None:
        key = pod_key(new)
        if (new.get("spec") or {}).get("nodeName"):
            was_bound = bool((old.get("spec") or {}).get("nodeName"))
            if not was_bound:
                self.queue.delete(key)
            self.cache.update_pod(new)
            if is_terminal(new) and not is_terminal(old):
                self._move("AssignedPodDelete")  # a finished pod frees its requests
            elif not was_bound:
                self._move("AssignedPodAdd")
            elif (old.get("metadata") or {}).get("labels") != \
                    (new.get("metadata") or {}).get("labels"):
                self._move("AssignedPodUpdate")
        elif self._responsible(new):
            if not self.cache.is_assumed(key):
                self.queue.update(PodInfo(new))
        else:
            self.queue.delete(key)

    def _on_pod_delete(self, pod: Obj) -> None:
        key = pod_key(pod)
        self.queue.delete(key)
        if (pod.get("spec") or {}).get("nodeName") or self.cache.is_assumed(key):
            self.cache.remove_pod(key)
            self._move("AssignedPodDelete")

    def _on_node_add(self, node: Obj) -> None:
        self.cache.add_node(node)
        self._move("NodeAdd")

    def _on_node_update(self, old: Obj, new: Obj) -> None:
        self.cache.add_node(new)
        if _node_changed(old, new):
            self._move("NodeUpdate")

    def _on_node_delete(self, node: Obj) -> None:
        self.cache.remove_node(node["metadata"]["name"])
        self._move("NodeDelete")

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = self.namespaces.get(namespace)
        return ((ns or {}).get("metadata") or {}).get("labels") or {}

    # -- one scheduling cycle --------------------------------------------------------------

    async def _schedule_one(self, qpi: QueuedPodInfo) -> None:
        current = self.pods.get(qpi.pod.key)
        if current is None or not self._responsible(current):
            self.queue.done(qpi.pod.key)
            return
        if current is not qpi.pod.pod:
            qpi.pod = PodInfo(current)
        pod = qpi.pod
        state = CycleState()
        nodes = self.cache.node_infos()
        if not nodes:
            self._fail(qpi, NO_NODES_MESSAGE, set(), None)
            return
        rejected = self.framework.run_pre_filter(state, pod)
        if rejected is not None:
            statuses = {n.name: rejected for n in nodes}
            feasible: list[NodeInfo] = []
            pre_filter_msg = rejected.message
        else:
            feasible, statuses = self._find_feasible(state, pod, nodes)
            pre_filter_msg = ""
        if not feasible:
            result, post = self.framework.run_post_filter(state, pod, statuses, len(nodes))
            post_msg = post.message if post is not None and not post.is_success() else ""
            message = fit_error_message(len(nodes), statuses, pre_filter_msg=pre_filter_msg,
                                        post_filter_msg=post_msg)
            nominated = result.nominated_node if result is not None else None
            self._fail(qpi, message, {s.plugin for s in statuses.values() if s.plugin},
                       nominated)
            return
        node = feasible[0] if len(feasible) == 1 else self._select(state, pod, feasible)
        self.cache.assume(pod, node.name)
        self.queue.remove_nomination(pod.key)
        await self._bind_slots.acquire()
        self._spawn(self._bind(qpi, node.name), f"bind-{pod.key}")

    def _find_feasible(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                       ) -> tuple[list[NodeInfo], dict[str, Status]]:
        filters = self.framework.active_filters(state)
        statuses: dict[str, Status] = {}
        nominated = self._with_nominated
        check_nominated = self.queue.has_nominations()
        # A preemptor tries the node it nominated first (its victims made room there).
        wanted = self.queue.nominated_node(pod.key) or \
            (pod.pod.get("status") or {}).get("nominatedNodeName")
        if wanted and (info := self.cache.node_info(wanted)) is not None:
            target = nominated(pod, info) if check_nominated else info
            if Framework.run_filters(filters, state, pod, target) is None:
                return [info], statuses
        total = len(nodes)
        to_find = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score, total)
        feasible: list[NodeInfo] = []
        start = self._next_start % total
        i = start
        checked = 0
        while checked < total and len(feasible) < to_find:
            # Walk the window in slices, so the hot loop has no wrap-around test; each slice
            # is exactly what a node-by-node walk would check before stopping.
            window = nodes[i:min(total, i + to_find - len(feasible), i + total - checked)]
            checked += len(window)
            i = (i + len(window)) % total
            if not check_nominated:
                feasible += self.framework.filter_nodes(filters, state, pod, window, statuses)
                continue
            for info in window:
                status = Framework.run_filters(filters, state, pod, nominated(pod, info))
                if status is None:
                    feasible.append(info)
                else:
                    statuses[info.name] = status
        self._next_start = (start + checked) % total
        return feasible, statuses

    def _with_nominated(self, pod: PodInfo, info: NodeInfo) -> NodeInfo:
        """The node as if the pods nominated to it (no less important than `pod`) ran there,
        so the room a preemption made is kept for its preemptor."""
        others = [p for p in self.queue.nominated_pods(info.name)
                  if p.priority >= pod.priority and p.key != pod.key and p.key not in info.pods]
        if not others:
            return info
        clone = info.clone()
        for p in others:
            clone.add_pod(p)
        return clone

    def _select(self, state: CycleState, pod: PodInfo, feasible: list[NodeInfo]) -> NodeInfo:
        """The highest total score; ties broken uniformly at random (selectHost)."""
        totals = self.framework.run_scores(state, pod, feasible)
        best = max(totals)
        if totals.count(best) == 1:
            return feasible[totals.index(best)]
        ties = [i for i, total in enumerate(totals) if total == best]
        return feasible[self._rng.choice(ties)]

    # -- outcomes --------------------------------------------------------------------------

    async def _bind(self, qpi: QueuedPodInfo, node: str) -> None:
        pod = qpi.pod
        try:
            await self.client.bind(pod.namespace, pod.name, node, uid=pod.uid)
        except asyncio.CancelledError:
            self.cache.forget(pod.key)
            raise
        except Exception as exc:  # noqa: BLE001 - any failure un-assumes the pod
            self.cache.forget(pod.key)
            self._move("AssignedPodDelete")  # the room it took is free again
            if isinstance(exc, ApiError) and exc.code in (404, 409):
                log.info("binding %s to %s refused: %s", pod.key, node, exc)
                self.queue.done(pod.key)  # gone, deleting or bound elsewhere: informers tell
            else:
                log.warning("binding %s to %s failed: %s", pod.key, node, exc)
                self.recorder.event(pod.pod, "Warning", "FailedScheduling",
                                    truncate_message(f"Binding rejected: {exc}"))
                self.queue.add_backoff(qpi)
        else:
            self.scheduled += 1
            self.queue.done(pod.key)
            self.recorder.event(pod.pod, "Normal", "Scheduled",
                                f"Successfully assigned {pod.namespace}/{pod.name} to {node}")
        finally:
            self._bind_slots.release()

    def _fail(self, qpi: QueuedPodInfo, message: str, plugins: set[str],
              nominated: str | None) -> None:
        pod = qpi.pod
        message = truncate_message(message)
        log.debug("unable to schedule %s: %s", pod.key, message)
        self.recorder.event(pod.pod, "Warning", "FailedScheduling", message)
        if nominated:
            self.queue.nominate(pod, nominated)
        elif nominated == "":
            self.queue.remove_nomination(pod.key)
        self.queue.add_unschedulable(qpi, plugins)
        self._spawn(self._set_unschedulable(pod, message, nominated), f"status-{pod.key}")

    async def _set_unschedulable(self, pod: PodInfo, message: str,
                                 nominated: str | None) -> None:
        """PodScheduled=False/Unschedulable (and the nomination) on the pod's status, written
        only when it changes, as updatePod does."""
        assert PODS is not None
        current = self.pods.get(pod.key) or pod.pod
        status = current.get("status") or {}
        old = next((c for c in status.get("conditions") or []
                    if c.get("type") == "PodScheduled"), None)
        have = status.get("nominatedNodeName") or ""
        want = have if nominated is None else nominated
        if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == \
                ("False", "Unschedulable", message) and want == have:
            return
        changed = old is None or old.get("status") != "False"
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": message, "lastProbeTime": None,
                     "lastTransitionTime": _now() if changed else old.get("lastTransitionTime")}
        patch: Obj = {"status": {"conditions": [condition]}}
        if want != have:
            patch["status"]["nominatedNodeName"] = want or None
        try:
            await self.client.patch(PODS, pod.namespace, pod.name, patch,
                                    patch_type="strategic", sub="status")
        except Exception as exc:  # noqa: BLE001 - the next failure writes it again
            log.debug("status of %s not updated: %s", pod.key, exc)

    def _evict(self, preemptor: PodInfo, node: str, victims: list[PodInfo]) -> None:
        """prepareCandidate: evict the victims and take over the node's nomination."""
        for other in self.queue.nominated_pods(node):
            if other.priority < preemptor.priority:
                self.queue.remove_nomination(other.key)
                self._spawn(self._clear_nomination(other), f"unnominate-{other.key}")
        self.queue.nominate(preemptor, node)
        for victim in victims:
            self._spawn(self._evict_one(preemptor, node, victim), f"evict-{victim.key}")

    async def _clear_nomination(self, pod: PodInfo) -> None:
        assert PODS is not None
        try:
            await self.client.patch(PODS, pod.namespace, pod.name,
                                    {"status": {"nominatedNodeName": None}}, sub="status")
        except Exception as exc:  # noqa: BLE001
            log.debug("nomination of %s not cleared: %s", pod.key, exc)

    async def _evict_one(self, preemptor: PodInfo, node: str, victim: PodInfo) -> None:
        assert PODS is not None
        condition = {"type": "DisruptionTarget", "status": "True",
                     "reason": "PreemptionByScheduler",
                     "message": f"{self.scheduler_name}: preempting to accommodate a higher "
                                "priority pod",
                     "lastTransitionTime": _now()}
        try:
            await self.client.patch(PODS, victim.namespace, victim.name,
                                    {"status": {"conditions": [condition]}},
                                    patch_type="strategic", sub="status")
            await self.client.delete(PODS, victim.namespace, victim.name)
        except ApiError as exc:
            if exc.code != 404:
                log.warning("evicting %s failed: %s", victim.key, exc)
            return
        except Exception as exc:  # noqa: BLE001
            log.warning("evicting %s failed: %s", victim.key, exc)
            return
        self.recorder.event(victim.pod, "Normal", "Preempted",
                            f"Preempted by pod {preemptor.uid} on node {node}")
