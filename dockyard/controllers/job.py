"""The Job controller (Kubernetes' pkg/controller/job, as of 1.32).

Job and pod events enqueue the Job; `sync` claims its pods, counts successes and failures,
decides whether the Job failed (backoffLimit, activeDeadlineSeconds: FailureTarget, then
Failed once no pod terminates) or completed (SuccessCriteriaMet, then Complete), and
otherwise creates or deletes pods toward min(parallelism, remaining completions) —
NonIndexed or Indexed — with slow-start batches, expectations and a pod-failure back-off.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass, field

from dockyard.api.meta import selector_matches
from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer, by_namespace
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.controllers import job_util as ju
from dockyard.controllers.controller_utils import (
    Expectations,
    Obj,
    controller_of,
    error_message,
    filter_active_pods,
    is_pod_ready,
    key_of,
    meta,
    new_controller_ref,
    now,
    parse_time,
    pod_from_template,
    rfc3339,
    slow_start_batch,
    spec,
    status,
)
from dockyard.controllers.refmanager import RefManager, recheck_deletion_timestamp

log = logging.getLogger("dockyard.controllers.job")

PODS = by_kind("", "Pod")
JOBS = by_kind("batch", "Job")
assert PODS is not None and JOBS is not None

BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
DEADLINE_EXCEEDED = "DeadlineExceeded"
COMPLETIONS_REACHED = "CompletionsReached"


@dataclass
class _SyncState:
    """What one sync knows about a Job's pods (syncJobCtx)."""

    pods: list[Obj]
    active_pods: list[Obj]
    succeeded: int
    failed: int
    ready: int
    terminating: int
    succeeded_indexes: set[int] = field(default_factory=set)


class JobController(Controller):
    """Runs Jobs' pods to completion.

    Options: `workers` (concurrent syncs, 5 as --concurrent-job-syncs),
    `pod_failure_backoff` (seconds before replacing the first failed pod, doubling per
    further failure: 10), `max_pod_failure_backoff` (600), `max_pods_per_sync` (500).
    """

    name = "job-controller"
    api_version = "batch/v1"
    kind = "Job"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 5, pod_failure_backoff: float = 10.0,
                 max_pod_failure_backoff: float = 600.0, max_pods_per_sync: int = 500) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.workers = workers
        self.pod_failure_backoff = pod_failure_backoff
        self.max_pod_failure_backoff = max_pod_failure_backoff
        self.max_pods_per_sync = max_pods_per_sync
        self.expectations = Expectations()
        self.job_informer = factory.informer(JOBS, indexers={"by_namespace": by_namespace})
        self.pod_informer = factory.informer(PODS, indexers={"by_namespace": by_namespace})
        self.job_informer.add_handlers(Handlers(self._add_job, self._update_job,
                                                self._delete_job))
        self.pod_informer.add_handlers(Handlers(self._add_pod, self._update_pod,
                                                self._delete_pod))

    def informers(self) -> list[Informer]:
        return [self.job_informer, self.pod_informer]

    # -- handlers -----------------------------------------------------------------------------

    def _add_job(self, job: Obj) -> None:
        self.queue.add(key_of(job))

    def _update_job(self, old: Obj, cur: Obj) -> None:
        key = key_of(cur)
        self.queue.add(key)
        deadline = spec(cur).get("activeDeadlineSeconds")
        started = parse_time(status(cur).get("startTime"))
        if deadline is not None and deadline != spec(old).get("activeDeadlineSeconds") \
                and started is not None:
            remaining = started.timestamp() + deadline - now().timestamp()
            self.queue.add_after(key, max(remaining, 0))

    def _delete_job(self, job: Obj) -> None:
        key = key_of(job)
        self.expectations.forget(key)
        self.queue.add(key)

    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        if ref is None or ref.get("kind") != self.kind:
            return None
        job = self.job_informer.get(f"{namespace}/{ref.get('name')}")
        return job if job is not None and meta(job).get("uid") == ref.get("uid") else None

    def _selecting(self, pod: Obj) -> list[Obj]:
        labels = meta(pod).get("labels") or {}
        if not labels:
            return []
        return [j for j in self.job_informer.by_index("by_namespace", meta(pod)["namespace"])
                if selector_matches(spec(j).get("selector"), labels)]

    def _add_pod(self, pod: Obj) -> None:
        if meta(pod).get("deletionTimestamp"):
            self._delete_pod(pod)
            return
        ref = controller_of(pod)
        if ref is not None:
            job = self._resolve(meta(pod)["namespace"], ref)
            if job is not None:
                self.expectations.creation_observed(key_of(job))
                self.queue.add(key_of(job))
            return
        for job in self._selecting(pod):
            self.queue.add(key_of(job))

    def _update_pod(self, old: Obj, cur: Obj) -> None:
        if meta(cur).get("deletionTimestamp"):
            self._delete_pod(cur)
            return
        namespace = meta(cur)["namespace"]
        cur_ref, old_ref = controller_of(cur), controller_of(old)
        if cur_ref != old_ref and old_ref is not None:
            job = self._resolve(namespace, old_ref)
            if job is not None:
                self.queue.add(key_of(job))
        if cur_ref is not None:
            job = self._resolve(namespace, cur_ref)
            if job is not None:
                self.queue.add(key_of(job))
            return
        if cur_ref != old_ref or meta(cur).get("labels") != meta(old).get("labels"):
            for job in self._selecting(cur):
                self.queue.add(key_of(job))

    def _delete_pod(self, pod: Obj) -> None:
        job = self._resolve(meta(pod)["namespace"], controller_of(pod))
        if job is None:
            return
        key = key_of(job)
        self.expectations.deletion_observed(key, key_of(pod))
        self.queue.add(key)

    # -- sync ---------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.job_informer.get(key)
        if cached is None:
            self.expectations.forget(key)
            return
        if ju.is_finished(cached):
            return
        job = copy.deepcopy(cached)
        mode = spec(job).get("completionMode") or "NonIndexed"
        if mode not in ("NonIndexed", "Indexed"):
            self.recorder.event(job, "Warning", "UnknownCompletionMode",
                                "Skipped Job sync because completion mode is unknown")
            return
        # Expectations before the pods: a pod arriving after this check waits for the next.
        satisfied = self.expectations.satisfied(key)
        state = await self._observe(job)
        st = job.setdefault("status", {})
        at = now()
        suspended = bool(spec(job).get("suspend"))
        if st.get("startTime") is None and not suspended:
            st["startTime"] = rfc3339(at)

        finished = self._previous_verdict(job)
        if finished is None:
            if state.failed > int(spec(job).get("backoffLimit") or 0) or \
                    ju.past_backoff_limit_on_failure(job, state.pods):
                finished = ju.new_condition("FailureTarget", "True", BACKOFF_LIMIT_EXCEEDED,
                                            "Job has reached the specified backoff limit", at)
            elif self._past_active_deadline(job):
                finished = ju.new_condition("FailureTarget", "True", DEADLINE_EXCEEDED,
                                            "Job was active longer than specified deadline", at)
            elif spec(job).get("activeDeadlineSeconds") is not None and not suspended:
                started = parse_time(st.get("startTime"))
                if started is not None:
                    left = (started.timestamp() + spec(job)["activeDeadlineSeconds"]
                            - at.timestamp())
                    self.queue.add_after(key, max(left, 0))

        active = len(state.active_pods)
        manage_error: BaseException | None = None
        if finished is not None:
            deleted_ready, deleted, manage_error = await self._delete_pods(
                job, key, state.active_pods)
            if deleted != active or not satisfied:
                finished = None  # pods may still be on their way: decide next time
            active -= deleted
            state.ready -= deleted_ready
            state.terminating += deleted
            # Deleted unfinished pods count as failed (Kubernetes sees them through the
            # job-tracking finalizer as they terminate).
            state.failed += deleted
        else:
            manage_called = False
            if satisfied and not meta(job).get("deletionTimestamp"):
                active, manage_error = await self._manage(job, key, state)
                manage_called = True
            completions = spec(job).get("completions")
            if completions is None:
                complete = state.succeeded > 0 and active == 0
            else:
                complete = state.succeeded >= int(completions) and active == 0
            if complete:
                finished = ju.new_condition("SuccessCriteriaMet", "True", COMPLETIONS_REACHED,
                                            "Reached expected number of succeeded pods", at)
            elif manage_called:
                self._sync_suspended_condition(job, st, suspended)

        st.update(active=active, ready=state.ready, terminating=state.terminating,
                  succeeded=state.succeeded, failed=state.failed)
        st.setdefault("uncountedTerminatedPods", {})
        if ju.is_indexed(job):
            st["completedIndexes"] = ju.format_indexes(state.succeeded_indexes)
        self._enact_finished(job, st, finished, state.terminating)
        if st != status(cached):
            await self.client.update_status(JOBS, job)
        if manage_error is not None:
            raise manage_error

    async def _observe(self, job: Obj) -> _SyncState:
        namespace = meta(job)["namespace"]
        manager = RefManager(self.client, PODS, job, owner_api_version=self.api_version,
                             owner_kind=self.kind, selector=spec(job).get("selector"),
                             can_adopt=recheck_deletion_timestamp(self.client, JOBS, job))
        pods = await manager.claim(self.pod_informer.by_index("by_namespace", namespace))
        active = filter_active_pods(pods)
        st = status(job)
        # Without the job-tracking finalizer a finished pod is counted while it exists, and
        # a count never goes down when such a pod is later removed.
        succeeded = max(int(st.get("succeeded") or 0), ju.count_succeeded(pods))
        failed = max(int(st.get("failed") or 0), ju.count_failed(pods))
        state = _SyncState(pods=pods, active_pods=active, succeeded=succeeded, failed=failed,
                           ready=sum(1 for p in active if is_pod_ready(p)),
                           terminating=ju.count_terminating(pods))
        if ju.is_indexed(job):
            state.succeeded_indexes = ju.succeeded_indexes(job, pods)
            state.succeeded = len(state.succeeded_indexes)
        return state

    @staticmethod
    def _previous_verdict(job: Obj) -> Obj | None:
        """An interim condition from an earlier sync decides the outcome."""
        met = ju.find_condition(job, "SuccessCriteriaMet")
        if met is not None and met.get("status") == "True":
            return met
        target = ju.find_condition(job, "FailureTarget")
        if target is not None and target.get("status") == "True":
            return target
        return None

    def _past_active_deadline(self, job: Obj) -> bool:
        deadline = spec(job).get("activeDeadlineSeconds")
        started = parse_time(status(job).get("startTime"))
        if deadline is None or started is None or spec(job).get("suspend"):
            return False
        return now().timestamp() - started.timestamp() >= int(deadline)

    def _sync_suspended_condition(self, job: Obj, st: Obj, suspended: bool) -> None:
        if suspended:
            if ju.ensure_condition(st, "Suspended", "True", "JobSuspended", "Job suspended"):
                self.recorder.event(job, "Normal", "Suspended", "Job suspended")
        elif ju.ensure_condition(st, "Suspended", "False", "JobResumed", "Job resumed"):
            self.recorder.event(job, "Normal", "Resumed", "Job resumed")
            # activeDeadlineSeconds counts continuous activity: a resumed Job starts again.
            st["startTime"] = rfc3339()

    def _enact_finished(self, job: Obj, st: Obj, finished: Obj | None,
                        terminating: int) -> None:
        """Record the interim condition (FailureTarget, SuccessCriteriaMet), then the terminal
        one (Failed, Complete) once no pod of the Job is still terminating."""
        if finished is None:
            return
        final_type = {"FailureTarget": "Failed", "SuccessCriteriaMet": "Complete"}.get(
            finished["type"], finished["type"])
        interim = {"Failed": "FailureTarget", "Complete": "SuccessCriteriaMet"}[final_type]
        conditions: list[Obj] = st.setdefault("conditions", [])
        if not any(c.get("type") == interim for c in conditions):
            conditions.append({**finished, "type": interim})
        if terminating > 0:
            return
        reason, message = finished.get("reason", ""), finished.get("message", "")
        ju.ensure_condition(st, final_type, "True", reason, message)
        final = next(c for c in conditions if c.get("type") == final_type)
        if final_type == "Complete":
            st["completionTime"] = final["lastTransitionTime"]
            completions = spec(job).get("completions")
            if completions is not None and st.get("succeeded", 0) > completions:
                self.recorder.event(job, "Warning", "TooManySucceededPods", "Too many succeeded "
                                    "pods running after completion count reached")
            self.recorder.event(job, "Normal", "Completed", "Job completed")
        else:
            self.recorder.event(job, "Warning", reason, message)

    # -- managing pods ------------------------------------------------------------------------

    async def _manage(self, job: Obj, key: str, state: _SyncState
                      ) -> tuple[int, BaseException | None]:
        """Create or delete pods toward the wanted number of active ones (never both)."""
        active = len(state.active_pods)
        parallelism = int(spec(job).get("parallelism") or 0)
        if spec(job).get("suspend"):
            victims = ju.pods_for_removal(job, state.active_pods, active)
            ready, removed, err = await self._delete_pods(job, key, victims)
            state.ready -= ready
            state.terminating += removed
            return active - removed, err
        completions = spec(job).get("completions")
        if completions is None:
            want = active if state.succeeded > 0 else parallelism
        else:
            want = min(max(int(completions) - state.succeeded, 0), parallelism)
        victims = ju.pods_for_removal(job, state.active_pods, max(active - want, 0))
        victims = victims[:self.max_pods_per_sync]
        if victims:
            ready, removed, err = await self._delete_pods(job, key, victims)
            state.ready -= ready
            state.terminating += removed
            return active - removed, err
        only_failed = (spec(job).get("podReplacementPolicy") == "Failed"
                       or spec(job).get("podFailurePolicy") is not None)
        diff = want - (state.terminating if only_failed else 0) - active
        if diff <= 0:
            return active, None
        remaining = ju.backoff_remaining(state.pods, now(), self.pod_failure_backoff,
                                         self.max_pod_failure_backoff)
        if remaining > 0:
            self.queue.add_after(key, remaining)
            return active, None
        diff = min(diff, self.max_pods_per_sync)
        indexes: list[int] = []
        if ju.is_indexed(job):
            indexes = ju.first_pending_indexes(state.active_pods, state.succeeded_indexes, diff,
                                               int(completions or 0))
            diff = len(indexes)
        if diff == 0:
            return active, None
        created = await self._create_pods(job, key, diff, indexes)
        return active + created[0], created[1]

    async def _create_pods(self, job: Obj, key: str, count: int,
                           indexes: list[int]) -> tuple[int, BaseException | None]:
        self.expectations.expect_creations(key, count)
        template = copy.deepcopy(spec(job).get("template") or {})
        if ju.is_indexed(job):
            ju.add_completion_index_env(template)
        ref = new_controller_ref(job, self.api_version, self.kind)
        pending = list(indexes)

        async def create() -> None:
            body_template, generate_name = template, ""
            if pending:
                index = pending.pop(0)
                body_template = copy.deepcopy(template)
                tmeta = body_template.setdefault("metadata", {})
                tmeta["annotations"] = {**(tmeta.get("annotations") or {}),
                                        ju.COMPLETION_INDEX: str(index)}
                tmeta["labels"] = {**(tmeta.get("labels") or {}),
                                   ju.COMPLETION_INDEX: str(index)}
                body_template["spec"]["hostname"] = f"{meta(job)['name']}-{index}"
                generate_name = ju.index_generate_name(meta(job)["name"], index)
            body = pod_from_template(body_template, job, ref, generate_name=generate_name)
            try:
                created = await self.client.create(PODS, body, meta(job)["namespace"])
            except ApiError as exc:
                if exc.code == 403 and "being terminated" in str(exc):
                    return
                self.recorder.event(job, "Warning", "FailedCreate",
                                    f"Error creating: {error_message(exc)}")
                raise
            self.recorder.event(job, "Normal", "SuccessfulCreate",
                                f"Created pod: {meta(created)['name']}")

        successes, error = await slow_start_batch(count, create)
        for _ in range(count - successes):
            self.expectations.creation_observed(key)  # never to be seen by the informer
        return successes, error

    async def _delete_pods(self, job: Obj, key: str, pods: list[Obj]
                           ) -> tuple[int, int, BaseException | None]:
        """Delete pods in parallel: (ready ones deleted, deleted, first error)."""
        if not pods:
            return 0, 0, None
        self.expectations.expect_deletions(key, [key_of(p) for p in pods])

        async def delete(pod: Obj) -> bool:
            try:
                await self.client.delete(PODS, meta(pod)["namespace"], meta(pod)["name"])
            except ApiError as exc:
                self.expectations.deletion_observed(key, key_of(pod))
                if is_not_found(exc):
                    return False
                self.recorder.event(job, "Warning", "FailedDelete",
                                    f"Error deleting: {error_message(exc)}")
                raise
            self.recorder.event(job, "Normal", "SuccessfulDelete",
                                f"Deleted pod: {meta(pod)['name']}")
            return True

        results = await asyncio.gather(*(delete(p) for p in pods), return_exceptions=True)
        deleted = ready = 0
        error: BaseException | None = None
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, BaseException):
                error = error or result
            elif result:
                deleted += 1
                ready += 1 if is_pod_ready(pod) else 0
        return ready, deleted, error

