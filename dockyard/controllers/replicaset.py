"""The ReplicaSet controller (Kubernetes' pkg/controller/replicaset).

Pod and ReplicaSet events enqueue the owning ReplicaSet (those that only move status counts,
in batches); `sync` claims the pods its selector picks (adopting orphans, releasing strays),
creates missing pods in slow-start batches or deletes the least valuable surplus ones, guarded
by expectations so it never acts twice on a stale cache, and writes status (replicas, ready,
available, ReplicaFailure) when it changed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dockyard.api.meta import selector_matches
from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer, by_namespace, by_owner_uid, split_key
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.controllers.controller_utils import (
    Expectations,
    Obj,
    controller_of,
    error_message,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    key_of,
    label_matcher,
    meta,
    new_controller_ref,
    now,
    pod_from_template,
    rank_pods_for_deletion,
    ready_condition,
    rfc3339,
    slow_start_batch,
    spec,
    status,
)
from dockyard.controllers.refmanager import RefManager, recheck_deletion_timestamp

log = logging.getLogger("dockyard.controllers.replicaset")

PODS = by_kind("", "Pod")
REPLICASETS = by_kind("apps", "ReplicaSet")
assert PODS is not None and REPLICASETS is not None

BY_CONTROLLER_UID = "by_controller_uid"
BY_ORPHAN_NAMESPACE = "by_orphan_namespace"


def by_controller_uid(obj: Obj) -> list[str]:
    ref = controller_of(obj)
    return [ref["uid"]] if ref and ref.get("uid") else []


def by_orphan_namespace(obj: Obj) -> list[str]:
    """Objects without a controller, by namespace: what a ReplicaSet may adopt."""
    return [] if controller_of(obj) else [meta(obj).get("namespace") or ""]


def _is_not_found_ns_terminating(exc: BaseException) -> bool:
    """A create refused because the namespace is going away: nothing to retry."""
    return isinstance(exc, ApiError) and exc.code == 403 and "being terminated" in str(exc)


class ReplicaSetController(Controller):
    """Keeps `spec.replicas` pods running for every ReplicaSet.

    Options: `workers` (concurrent syncs, 5 as kube-controller-manager's
    --concurrent-replicaset-syncs), `burst_replicas` (most pods created or deleted in one
    sync, 500), `status_update_retries` (1), `max_in_flight` (pod creates and deletes
    awaiting an answer at once, 8: a slow-start batch is issued whole, but flows over a
    few kept-alive connections, as client-go's over one HTTP/2 connection, instead of a
    connection and TLS handshake per pod and a flood that starves the watches the next
    step waits on), `status_batch_seconds` (a pod event that only moves the status counts
    syncs at most this often per ReplicaSet, 0.05: 1,000 pods turning ready cost a few
    dozen syncs and status writes, not 1,000; events that may call for creating or
    deleting pods are handled at once).
    """

    name = "replicaset-controller"
    api_version = "apps/v1"
    kind = "ReplicaSet"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 5, burst_replicas: int = 500,
                 status_update_retries: int = 1, max_in_flight: int = 8,
                 status_batch_seconds: float = 0.05) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.workers = workers
        self.burst_replicas = burst_replicas
        self.status_update_retries = status_update_retries
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.status_batch_seconds = status_batch_seconds
        self.expectations = Expectations()
        self.rs_informer = factory.informer(REPLICASETS, indexers={
            "by_namespace": by_namespace, BY_CONTROLLER_UID: by_controller_uid})
        self.pod_informer = factory.informer(PODS, indexers={
            "by_namespace": by_namespace, "by_owner_uid": by_owner_uid,
            BY_ORPHAN_NAMESPACE: by_orphan_namespace})
        self.rs_informer.add_handlers(Handlers(self._add_rs, self._update_rs, self._delete_rs))
        self.pod_informer.add_handlers(Handlers(self._add_pod, self._update_pod,
                                                self._delete_pod))

    def informers(self) -> list[Informer]:
        return [self.rs_informer, self.pod_informer]

    # -- handlers: they only compute keys -----------------------------------------------------

    def _add_rs(self, rs: Obj) -> None:
        self.queue.add(key_of(rs))

    def _update_rs(self, old: Obj, cur: Obj) -> None:
        if meta(old).get("uid") != meta(cur).get("uid"):
            self._delete_rs(old)
        if spec(old) == spec(cur) and \
                meta(old).get("deletionTimestamp") == meta(cur).get("deletionTimestamp"):
            self._enqueue(key_of(cur), counts_only=True)  # a status write, most likely ours
        else:
            self.queue.add(key_of(cur))

    def _delete_rs(self, rs: Obj) -> None:
        key = key_of(rs)
        self.expectations.forget(key)
        self.queue.add(key)

    def _enqueue(self, key: str, *, counts_only: bool = False) -> None:
        """Sync at once when the change may call for creating or deleting pods; join a
        batch when it only moves the status counts (readiness), or while the expectations
        are unmet (the sync may then only count: the informer is catching up with a burst
        of our own creates or deletes, and the last of them comes back here at once)."""
        if counts_only or not self.expectations.satisfied(key):
            self.queue.add_batched(key, self.status_batch_seconds)
        else:
            self.queue.add(key)

    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        if ref is None or ref.get("kind") != self.kind:
            return None
        rs = self.rs_informer.get(f"{namespace}/{ref.get('name')}")
        if rs is None or meta(rs).get("uid") != ref.get("uid"):
            return None
        return rs

    def _matching_rs(self, pod: Obj) -> list[Obj]:
        labels = meta(pod).get("labels") or {}
        if not labels:
            return []
        return [rs for rs in self.rs_informer.by_index("by_namespace", meta(pod)["namespace"])
                if selector_matches(spec(rs).get("selector"), labels)]

    def _add_pod(self, pod: Obj) -> None:
        if meta(pod).get("deletionTimestamp"):
            self._delete_pod(pod)  # a restart can show a pod already being deleted
            return
        rs = self._resolve(meta(pod)["namespace"], controller_of(pod))
        if rs is not None:
            self.expectations.creation_observed(key_of(rs))
            self._enqueue(key_of(rs))
            return
        if controller_of(pod) is None:  # an orphan: whoever selects it may adopt it
            for rs in self._matching_rs(pod):
                self.queue.add(key_of(rs))

    def _update_pod(self, old: Obj, cur: Obj) -> None:
        labels_changed = meta(old).get("labels") != meta(cur).get("labels")
        if meta(cur).get("deletionTimestamp"):
            # A graceful deletion: replace the pod now, not once the node has stopped it.
            self._delete_pod(cur)
            if labels_changed:
                self._delete_pod(old)
            return
        cur_ref, old_ref = controller_of(cur), controller_of(old)
        ref_changed = cur_ref != old_ref
        namespace = meta(cur)["namespace"]
        if ref_changed and old_ref is not None:
            previous = self._resolve(namespace, old_ref)
            if previous is not None:
                self.queue.add(key_of(previous))
        if cur_ref is not None:
            rs = self._resolve(namespace, cur_ref)
            if rs is None:
                return
            if labels_changed or ref_changed or is_pod_active(old) != is_pod_active(cur):
                self._enqueue(key_of(rs))
            elif ready_condition(old) != ready_condition(cur):
                self._enqueue(key_of(rs), counts_only=True)
            else:
                return  # e.g. a binding: nothing a sync reads changed, so it would do nothing
            min_ready = int(spec(rs).get("minReadySeconds") or 0)
            if min_ready and not is_pod_ready(old) and is_pod_ready(cur):
                # Availability is a matter of time: look again once the pod has been ready
                # for minReadySeconds (plus a second against clock skew).
                self.queue.add_after(key_of(rs), min_ready + 1)
            return
        if labels_changed or ref_changed:
            for rs in self._matching_rs(cur):
                self.queue.add(key_of(rs))

    def _delete_pod(self, pod: Obj) -> None:
        rs = self._resolve(meta(pod)["namespace"], controller_of(pod))
        if rs is None:
            return
        key = key_of(rs)
        self.expectations.deletion_observed(key, key_of(pod))
        self._enqueue(key)

    # -- sync ---------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        rs = self.rs_informer.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        needs_sync = self.expectations.satisfied(key)
        selector = spec(rs).get("selector")
        if selector is None:
            log.warning("replicaset %s has no selector", key)
            return
        pods = await self._claim_pods(rs, namespace or "", selector)
        manage_error: BaseException | None = None
        if needs_sync and not meta(rs).get("deletionTimestamp"):
            try:
                await self._manage_replicas(pods, rs)
            except (ApiError, OSError) as exc:
                manage_error = exc
        new_status = calculate_status(rs, pods, manage_error)
        updated = await self._update_status(rs, new_status)
        min_ready = int(spec(updated).get("minReadySeconds") or 0)
        replicas = int(spec(updated).get("replicas") or 0)
        st = status(updated)
        if (manage_error is None and min_ready > 0 and st.get("readyReplicas", 0) == replicas
                and st.get("availableReplicas", 0) != replicas):
            self.queue.add_after(key, min_ready)
        if manage_error is not None:
            raise manage_error

    async def _claim_pods(self, rs: Obj, namespace: str, selector: Obj) -> list[Obj]:
        """The active pods of the namespace this ReplicaSet controls, after adopting the
        orphans it selects and releasing the pods it controls but no longer selects.

        Read from two indexes (its own pods, the namespace's orphans) rather than every pod
        of the namespace; the pods it controls and still selects, nearly all of them, are
        kept without going through the RefManager."""
        uid = meta(rs)["uid"]
        matches = label_matcher(selector)
        kept: list[Obj] = []
        others: list[Obj] = []
        for pod in self.pod_informer.by_index("by_owner_uid", uid):
            m = pod["metadata"]
            if m.get("namespace") != namespace or not is_pod_active(pod):
                continue
            ref = controller_of(pod)
            if ref is None or ref.get("uid") != uid:
                continue  # an orphan (listed below) or someone else's
            if matches(m.get("labels")):
                kept.append(pod)
            else:
                others.append(pod)  # to release
        others += [pod for pod in self.pod_informer.by_index(BY_ORPHAN_NAMESPACE, namespace)
                   if is_pod_active(pod)]
        if not others:
            return kept
        manager = RefManager(self.client, PODS, rs, owner_api_version=self.api_version,
                             owner_kind=self.kind, selector=selector,
                             can_adopt=recheck_deletion_timestamp(self.client, REPLICASETS, rs))
        return kept + await manager.claim(others)

    async def _manage_replicas(self, pods: list[Obj], rs: Obj) -> None:
        key = key_of(rs)
        diff = len(pods) - int(spec(rs).get("replicas") or 0)
        if diff < 0:
            count = min(-diff, self.burst_replicas)
            self.expectations.expect_creations(key, count)
            ref = new_controller_ref(rs, self.api_version, self.kind)
            # One body for the whole burst: each create only serializes it (generateName
            # names the pods), so it need not be copied from the template per pod.
            body = pod_from_template(spec(rs).get("template") or {}, rs, ref)

            async def create() -> None:
                try:
                    async with self._in_flight:
                        created = await self.client.create(PODS, body, meta(rs)["namespace"])
                except ApiError as exc:
                    if _is_not_found_ns_terminating(exc):
                        return  # every later create would fail the same way
                    self.recorder.event(rs, "Warning", "FailedCreate",
                                        f"Error creating: {error_message(exc)}")
                    raise
                self.recorder.event(rs, "Normal", "SuccessfulCreate",
                                    f"Created pod: {meta(created)['name']}")

            successes, error = await slow_start_batch(count, create)
            for _ in range(count - successes):
                # Creates never attempted (or failed) will not be observed by the informer.
                self.expectations.creation_observed(key)
            if error is not None:
                raise error
        elif diff > 0:
            count = min(diff, self.burst_replicas)
            victims = self._pods_to_delete(pods, self._related_pods(rs), count)
            self.expectations.expect_deletions(key, [key_of(p) for p in victims])
            results = await asyncio.gather(*(self._delete(rs, key, p) for p in victims),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

    async def _delete(self, rs: Obj, key: str, pod: Obj) -> None:
        try:
            async with self._in_flight:
                await self.client.delete(PODS, meta(pod)["namespace"], meta(pod)["name"])
        except ApiError as exc:
            # The informer will not see this deletion: stop waiting for it.
            self.expectations.deletion_observed(key, key_of(pod))
            if is_not_found(exc):
                return
            self.recorder.event(rs, "Warning", "FailedDelete",
                                f"Error deleting: {error_message(exc)}")
            raise
        self.recorder.event(rs, "Normal", "SuccessfulDelete",
                            f"Deleted pod: {meta(pod)['name']}")

    @staticmethod
    def _pods_to_delete(pods: list[Obj], related: list[Obj], count: int) -> list[Obj]:
        if count < len(pods):
            pods = rank_pods_for_deletion(pods, related)
        return pods[:count]

    def _related_pods(self, rs: Obj) -> list[Obj]:
        """Pods of every ReplicaSet with the same controller (a Deployment's old and new
        ReplicaSets), so a scale-down spreads over nodes across all of them."""
        ref = controller_of(rs)
        if ref is None:
            return []
        seen: set[str] = set()
        related: list[Obj] = []
        namespace = meta(rs)["namespace"]
        for sibling in self.rs_informer.by_index(BY_CONTROLLER_UID, ref["uid"]):
            selector = spec(sibling).get("selector")
            for pod in self.pod_informer.by_index("by_namespace", namespace):
                uid = meta(pod).get("uid", "")
                if uid not in seen and selector_matches(selector, meta(pod).get("labels")):
                    seen.add(uid)
                    related.append(pod)
        return related

    async def _update_status(self, rs: Obj, new_status: Obj) -> Obj:
        """updateReplicaSetStatus: write only on change, retrying once from a fresh read."""
        current = status(rs)
        generation = meta(rs).get("generation", 0)
        if all(current.get(f, 0) == new_status.get(f, 0) for f in
               ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")) \
                and current.get("observedGeneration", 0) == generation \
                and (current.get("conditions") or []) == (new_status.get("conditions") or []):
            return rs
        # The generation acted on, even if a retry reads a newer one.
        new_status["observedGeneration"] = generation
        attempt = 0
        while True:
            body = {**rs, "status": new_status}
            try:
                return await self.client.update_status(REPLICASETS, body)
            except ApiError:
                if attempt >= self.status_update_retries:
                    raise
            attempt += 1
            rs = await self.client.get(REPLICASETS, meta(rs)["namespace"], meta(rs)["name"])


def calculate_status(rs: Obj, pods: list[Obj], manage_error: BaseException | None) -> Obj:
    """The ReplicaSet's status from its active pods and the last manage error."""
    new_status: dict[str, Any] = dict(status(rs))
    template_labels = ((spec(rs).get("template") or {}).get("metadata") or {}).get("labels") or {}
    fully_labeled_by = label_matcher({"matchLabels": template_labels})
    min_ready = int(spec(rs).get("minReadySeconds") or 0)
    at = now()
    fully_labeled = ready = available = 0
    for pod in pods:
        if fully_labeled_by(meta(pod).get("labels")):
            fully_labeled += 1
        if is_pod_ready(pod):
            ready += 1
            if is_pod_available(pod, min_ready, at):
                available += 1
    conditions = [dict(c) for c in new_status.get("conditions") or []]
    failure = next((c for c in conditions if c.get("type") == "ReplicaFailure"), None)
    if manage_error is not None and failure is None:
        diff = len(pods) - int(spec(rs).get("replicas") or 0)
        reason = "FailedCreate" if diff < 0 else "FailedDelete" if diff > 0 else ""
        conditions.append({"type": "ReplicaFailure", "status": "True",
                           "lastTransitionTime": rfc3339(), "reason": reason,
                           "message": error_message(manage_error)})
    elif manage_error is None and failure is not None:
        conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
    if conditions:
        new_status["conditions"] = conditions
    else:
        new_status.pop("conditions", None)
    new_status.update(replicas=len(pods), fullyLabeledReplicas=fully_labeled,
                      readyReplicas=ready, availableReplicas=available)
    return new_status
