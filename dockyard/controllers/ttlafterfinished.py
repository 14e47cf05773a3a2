"""The TTL-after-finished controller (Kubernetes' pkg/controller/ttlafterfinished).

Finished Jobs with `spec.ttlSecondsAfterFinished` are enqueued; `sync` waits (a delayed
re-queue) until the finish time plus the TTL, re-reads the Job from the API so a TTL changed
meanwhile counts, and deletes it with a uid precondition and cascading propagation.
"""

from __future__ import annotations

import logging

from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer, by_namespace, split_key
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.controllers.controller_utils import Obj, key_of, meta, now, parse_time, spec, status
from dockyard.controllers.job_util import is_finished

log = logging.getLogger("dockyard.controllers.ttlafterfinished")

JOBS = by_kind("batch", "Job")
assert JOBS is not None


def needs_cleanup(job: Obj) -> bool:
    return spec(job).get("ttlSecondsAfterFinished") is not None and is_finished(job)


def finish_time(job: Obj) -> float | None:
    """The lastTransitionTime of the Complete or Failed condition, as a Unix time."""
    for cond in status(job).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            at = parse_time(cond.get("lastTransitionTime"))
            return at.timestamp() if at else None
    return None


class TTLAfterFinishedController(Controller):
    """Deletes finished Jobs once their ttlSecondsAfterFinished has passed.

    Options: `workers` (5, as --concurrent-ttl-after-finished-syncs), `propagation_policy`
    ("Foreground" as Kubernetes: the Job goes once its pods are gone; "Background" deletes
    the Job at once and leaves its pods to the garbage collector).
    """

    name = "ttl-after-finished-controller"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 5, propagation_policy: str = "Foreground") -> None:
        super().__init__()
        if propagation_policy not in ("Foreground", "Background"):
            raise ValueError(f"propagation_policy must be Foreground or Background, not "
                             f"{propagation_policy!r}")
        self.client = client
        self.recorder = recorder
        self.workers = workers
        self.propagation_policy = propagation_policy
        self.job_informer = factory.informer(JOBS, indexers={"by_namespace": by_namespace})
        self.job_informer.add_handlers(Handlers(
            self._enqueue, lambda _old, cur: self._enqueue(cur)))

    def informers(self) -> list[Informer]:
        return [self.job_informer]

    def _enqueue(self, job: Obj) -> None:
        if not meta(job).get("deletionTimestamp") and needs_cleanup(job):
            self.queue.add(key_of(job))

    async def sync(self, key: str) -> None:
        job = self.job_informer.get(key)
        if job is None or not self._expired(key, job):
            return
        namespace, name = split_key(key)
        # The cache may hold an old TTL: decide on a fresh read before deleting.
        try:
            fresh = await self.client.get(JOBS, namespace, name)
        except ApiError as exc:
            if is_not_found(exc):
                return
            raise
        if not self._expired(key, fresh):
            return
        try:
            await self.client.delete(JOBS, namespace, name,
                                     propagation_policy=self.propagation_policy,
                                     preconditions={"uid": meta(fresh)["uid"]})
        except ApiError as exc:
            if not is_not_found(exc):
                raise

    def _expired(self, key: str, job: Obj) -> bool:
        """processTTL: True once expired; otherwise re-queue for when it will be."""
        if meta(job).get("deletionTimestamp") or not needs_cleanup(job):
            return False
        finished = finish_time(job)
        if finished is None:
            log.warning("job %s is finished but has no finish time", key)
            return False
        left = finished + int(spec(job)["ttlSecondsAfterFinished"]) - now().timestamp()
        if left <= 0:
            return True
        self.queue.add_after(key, left)
        return False
