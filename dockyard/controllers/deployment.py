"""The Deployment controller (Kubernetes' pkg/controller/deployment): the sync loop.

Deployment, ReplicaSet and pod events enqueue a Deployment; `sync` claims its ReplicaSets,
finds or creates the one for the current template (pod-template-hash, revision annotations),
then either only scales (paused, or a replicas change mid-rollout: proportional scaling) or
takes one rollout step (`deployment_rollout`: RollingUpdate or Recreate) and writes status.
"""

from __future__ import annotations

import copy
import logging

from dockyard.api.meta import selector_matches
from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer, by_namespace
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.controllers import deployment_util as du
from dockyard.controllers.controller_utils import (
    Obj,
    controller_of,
    error_message,
    key_of,
    meta,
    new_controller_ref,
    spec,
    status,
)
from dockyard.controllers.deployment_rollout import RolloutMixin
from dockyard.controllers.refmanager import RefManager, recheck_deletion_timestamp
from dockyard.controllers.replicaset import BY_CONTROLLER_UID, by_controller_uid

log = logging.getLogger("dockyard.controllers.deployment")

PODS = by_kind("", "Pod")
REPLICASETS = by_kind("apps", "ReplicaSet")
DEPLOYMENTS = by_kind("apps", "Deployment")
assert PODS is not None and REPLICASETS is not None and DEPLOYMENTS is not None


def _only_status_changed(old: Obj, cur: Obj) -> bool:
    """Whether an update changed nothing but status (and resourceVersion and the like)."""
    mo, mc = meta(old), meta(cur)
    return spec(old) == spec(cur) and all(
        mo.get(f) == mc.get(f) for f in ("uid", "labels", "annotations", "ownerReferences",
                                         "deletionTimestamp", "finalizers", "generation"))


class DeploymentController(RolloutMixin, Controller):
    """Rolls Deployments out through ReplicaSets.

    Options: `workers` (concurrent syncs, 5 as kube-controller-manager's
    --concurrent-deployment-syncs), `status_batch_seconds` (an update that only changes a
    ReplicaSet's or the Deployment's status, as their controllers write them while pods
    turn ready, syncs at most this often per Deployment, 0.05; any other change at once).
    """

    name = "deployment-controller"
    api_version = "apps/v1"
    kind = "Deployment"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 5, status_batch_seconds: float = 0.05) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.workers = workers
        self.status_batch_seconds = status_batch_seconds
        self.d_informer = factory.informer(DEPLOYMENTS, indexers={"by_namespace": by_namespace})
        self.rs_informer = factory.informer(REPLICASETS, indexers={
            "by_namespace": by_namespace, BY_CONTROLLER_UID: by_controller_uid})
        self.pod_informer = factory.informer(PODS, indexers={"by_namespace": by_namespace})
        self.d_informer.add_handlers(Handlers(self._enqueue, self._update_d, self._enqueue))
        self.rs_informer.add_handlers(Handlers(self._add_rs, self._update_rs, self._delete_rs))
        self.pod_informer.add_handlers(Handlers(on_delete=self._delete_pod))

    def informers(self) -> list[Informer]:
        return [self.d_informer, self.rs_informer, self.pod_informer]

    # -- handlers -----------------------------------------------------------------------------

    def _enqueue(self, d: Obj, *, status_only: bool = False) -> None:
        if status_only:
            self.queue.add_batched(key_of(d), self.status_batch_seconds)
        else:
            self.queue.add(key_of(d))

    def _update_d(self, old: Obj, cur: Obj) -> None:
        self._enqueue(cur, status_only=_only_status_changed(old, cur))

    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        if ref is None or ref.get("kind") != self.kind:
            return None
        d = self.d_informer.get(f"{namespace}/{ref.get('name')}")
        return d if d is not None and meta(d).get("uid") == ref.get("uid") else None

    def _selecting(self, rs: Obj) -> list[Obj]:
        """Deployments whose selector picks this orphan ReplicaSet."""
        labels = meta(rs).get("labels") or {}
        if not labels:
            return []
        return [d for d in self.d_informer.by_index("by_namespace", meta(rs)["namespace"])
                if spec(d).get("selector") and selector_matches(spec(d)["selector"], labels)]

    def _add_rs(self, rs: Obj) -> None:
        if meta(rs).get("deletionTimestamp"):
            self._delete_rs(rs)
            return
        ref = controller_of(rs)
        if ref is not None:
            d = self._resolve(meta(rs)["namespace"], ref)
            if d is not None:
                self._enqueue(d)
            return
        for d in self._selecting(rs):
            self._enqueue(d)

    def _update_rs(self, old: Obj, cur: Obj) -> None:
        cur_ref, old_ref = controller_of(cur), controller_of(old)
        namespace = meta(cur)["namespace"]
        if cur_ref != old_ref and old_ref is not None:
            d = self._resolve(namespace, old_ref)
            if d is not None:
                self._enqueue(d)
        if cur_ref is not None:
            d = self._resolve(namespace, cur_ref)
            if d is not None:
                self._enqueue(d, status_only=_only_status_changed(old, cur))
            return
        if meta(cur).get("labels") != meta(old).get("labels") or cur_ref != old_ref:
            for d in self._selecting(cur):
                self._enqueue(d)

    def _delete_rs(self, rs: Obj) -> None:
        d = self._resolve(meta(rs)["namespace"], controller_of(rs))
        if d is not None:
            self._enqueue(d)

    def _delete_pod(self, pod: Obj) -> None:
        """Recreate waits for old pods to be gone: look again when one goes."""
        namespace = meta(pod)["namespace"]
        rs = None
        ref = controller_of(pod)
        if ref is not None and ref.get("kind") == "ReplicaSet":
            rs = self.rs_informer.get(f"{namespace}/{ref.get('name')}")
        if rs is None or meta(rs).get("uid") != (ref or {}).get("uid"):
            return
        d = self._resolve(namespace, controller_of(rs))
        if d is not None and (spec(d).get("strategy") or {}).get("type") == "Recreate":
            self._enqueue(d)

    # -- sync ---------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.d_informer.get(key)
        if cached is None:
            return
        d = copy.deepcopy(cached)
        if spec(d).get("selector") == {}:
            self.recorder.event(d, "Warning", "SelectingAll", "This deployment is selecting all "
                                "pods. A non-empty selector is required.")
            if status(d).get("observedGeneration", 0) < meta(d).get("generation", 0):
                d.setdefault("status", {})["observedGeneration"] = meta(d)["generation"]
                await self.update_status(d)
            return
        rss = await self._replicasets_for(d)
        if meta(d).get("deletionTimestamp"):
            new, olds = await self.get_all_rs_and_sync_revision(d, rss, create=False)
            await self.sync_deployment_status([*olds, new], new, d)
            return
        await self._check_paused_conditions(d)
        if spec(d).get("paused"):
            await self.sync_scale(d, rss)
            return
        if await self._is_scaling_event(d, rss):
            await self.sync_scale(d, rss)
            return
        if (spec(d).get("strategy") or {}).get("type") == "Recreate":
            # Only Recreate reads pods (Kubernetes lists them on every sync): a rolling
            # Deployment's sync stays O(ReplicaSets), not O(pods), as its pods become ready.
            await self.rollout_recreate(d, rss, self._pod_map(d, rss))
        else:
            await self.rollout_rolling(d, rss)

    async def _replicasets_for(self, d: Obj) -> list[Obj]:
        """All ReplicaSets of the namespace, claimed: owned and selected, or adopted."""
        candidates = self.rs_informer.by_index("by_namespace", meta(d)["namespace"])
        manager = RefManager(self.client, REPLICASETS, d, owner_api_version=self.api_version,
                             owner_kind=self.kind, selector=spec(d)["selector"],
                             can_adopt=recheck_deletion_timestamp(self.client, DEPLOYMENTS, d))
        return [copy.deepcopy(rs) for rs in await manager.claim(candidates)]

    def _pod_map(self, d: Obj, rss: list[Obj]) -> dict[str, list[Obj]]:
        """Selected pods grouped by owning ReplicaSet uid, finished or not: Recreate must
        know that no old pod runs before it starts new ones."""
        pod_map: dict[str, list[Obj]] = {meta(rs)["uid"]: [] for rs in rss}
        for pod in self.pod_informer.by_index("by_namespace", meta(d)["namespace"]):
            if not selector_matches(spec(d)["selector"], meta(pod).get("labels") or {}):
                continue
            ref = controller_of(pod)
            if ref is not None and ref.get("uid") in pod_map:
                pod_map[ref["uid"]].append(pod)
        return pod_map

    # -- the new ReplicaSet and revisions -----------------------------------------------------

    async def get_all_rs_and_sync_revision(self, d: Obj, rss: list[Obj], *, create: bool
                                           ) -> tuple[Obj | None, list[Obj]]:
        _, all_olds = du.find_old_replicasets(d, rss)
        new = await self._new_replicaset(d, rss, all_olds, create)
        return new, all_olds

    async def _new_replicaset(self, d: Obj, rss: list[Obj], olds: list[Obj],
                              create: bool) -> Obj | None:
        """getNewReplicaSet: the ReplicaSet of the current template with its revision set to
        max(old revisions) + 1 (a rollback's old ReplicaSet gets the next number), created
        when `create` and missing."""
        existing = du.find_new_replicaset(d, rss)
        new_revision = du.max_revision(olds) + 1
        if existing is not None:
            rs = copy.deepcopy(existing)
            changed = du.set_new_replicaset_annotations(d, rs, new_revision, exists=True)
            min_ready = int(spec(d).get("minReadySeconds") or 0)
            if changed or int(spec(rs).get("minReadySeconds") or 0) != min_ready:
                rs["spec"]["minReadySeconds"] = min_ready
                return self._replace(rss, await self.client.update(REPLICASETS, rs))
            revision = (meta(rs).get("annotations") or {}).get(du.REVISION, "")
            await self._set_deployment_revision(d, revision)
            if du.has_progress_deadline(d) and \
                    du.get_condition(status(d), "Progressing") is None:
                st = d.setdefault("status", {})
                du.set_condition(st, du.new_condition(
                    "Progressing", "True", du.FOUND_NEW_RS,
                    f'Found new replica set "{meta(rs)["name"]}"'))
                await self.update_status(d)
            return rs
        if not create:
            return None
        return await self._create_new_replicaset(d, rss, olds, new_revision)

    async def _create_new_replicaset(self, d: Obj, rss: list[Obj], olds: list[Obj],
                                     new_revision: int) -> Obj | None:
        template = copy.deepcopy(spec(d).get("template") or {})
        pod_hash = du.compute_hash(template, status(d).get("collisionCount"))
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), du.POD_TEMPLATE_HASH: pod_hash}
        selector = copy.deepcopy(spec(d)["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}),
                                   du.POD_TEMPLATE_HASH: pod_hash}
        name = f"{meta(d)['name']}-{pod_hash}"
        new: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": meta(d)["namespace"],
                         "labels": dict(tmeta["labels"]),
                         "ownerReferences": [new_controller_ref(d, self.api_version,
                                                                self.kind)]},
            "spec": {"replicas": 0, "minReadySeconds": int(spec(d).get("minReadySeconds") or 0),
                     "selector": selector, "template": template},
        }
        count = du.new_rs_new_replicas(d, [*olds, new], new)
        new["spec"]["replicas"] = count
        du.set_new_replicaset_annotations(d, new, new_revision, exists=False)
        already_exists = False
        try:
            created = await self.client.create(REPLICASETS, new)
        except ApiError as exc:
            if exc.code == 409 and exc.reason == "AlreadyExists":
                already_exists = True
                found = self.rs_informer.get(f"{meta(d)['namespace']}/{name}")
                if found is None:  # ours from a sync the cache has not caught up with?
                    found = await self.client.get(REPLICASETS, meta(d)["namespace"], name)
                ref = controller_of(found)
                if ref is not None and ref.get("uid") == meta(d)["uid"] and \
                        du.equal_ignore_hash(spec(d).get("template") or {},
                                             spec(found).get("template") or {}):
                    created = copy.deepcopy(found)
                else:
                    # A hash collision: a different template already has this name.
                    st = d.setdefault("status", {})
                    st["collisionCount"] = int(st.get("collisionCount") or 0) + 1
                    await self.update_status(d)
                    raise
            elif exc.code == 403 and "being terminated" in str(exc):
                raise
            else:
                message = f'Failed to create new replica set "{name}": {error_message(exc)}'
                if du.has_progress_deadline(d):
                    du.set_condition(d.setdefault("status", {}), du.new_condition(
                        "Progressing", "False", du.FAILED_RS_CREATE, message))
                    try:
                        await self.update_status(d)
                    except ApiError:
                        pass  # the bigger problem is the one being reported
                self.recorder.event(d, "Warning", du.FAILED_RS_CREATE, message)
                raise
        if not already_exists and count > 0:
            self.recorder.event(d, "Normal", "ScalingReplicaSet",
                                f"Scaled up replica set {name} from 0 to {count}")
        rss.append(created)
        await self._set_deployment_revision(d, str(new_revision))
        if not already_exists and du.has_progress_deadline(d):
            du.set_condition(d.setdefault("status", {}), du.new_condition(
                "Progressing", "True", du.NEW_RS_CREATED,
                f'Created new replica set "{name}"'))
            await self.update_status(d)
        return created

    async def _set_deployment_revision(self, d: Obj, revision: str) -> None:
        """SetDeploymentRevision. Kubernetes writes it with the status (its status strategy
        keeps metadata); ours keeps only status, so it is a metadata patch of its own."""
        if not revision or (meta(d).get("annotations") or {}).get(du.REVISION) == revision:
            return
        patched = await self.client.patch(
            DEPLOYMENTS, meta(d)["namespace"], meta(d)["name"],
            {"metadata": {"annotations": {du.REVISION: revision}}})
        d["metadata"] = {**meta(d), "annotations": meta(patched).get("annotations") or {},
                         "resourceVersion": meta(patched)["resourceVersion"]}

    @staticmethod
    def _replace(rss: list[Obj], updated: Obj) -> Obj:
        for i, rs in enumerate(rss):
            if meta(rs).get("uid") == meta(updated).get("uid"):
                rss[i] = updated
        return updated

    # -- scaling ------------------------------------------------------------------------------

    async def _is_scaling_event(self, d: Obj, rss: list[Obj]) -> bool:
        """Some active ReplicaSet was sized for another replica count than the spec's."""
        new, olds = await self.get_all_rs_and_sync_revision(d, rss, create=False)
        for rs in du.filter_active([*olds, new]):
            desired = du.desired_replicas_annotation(rs)
            if desired is not None and desired != du.replicas(d):
                return True
        return False

    async def sync_scale(self, d: Obj, rss: list[Obj]) -> None:
        """`sync`: reconcile sizes only (paused, or scaled mid-rollout), then status."""
        new, olds = await self.get_all_rs_and_sync_revision(d, rss, create=False)
        await self.scale(d, new, olds, rss)
        if spec(d).get("paused"):
            await self.cleanup(olds, d)
        await self.sync_deployment_status([*olds, new], new, d)

    async def scale(self, d: Obj, new: Obj | None, olds: list[Obj], rss: list[Obj]) -> None:
        """Scale the one active ReplicaSet to the spec, or all of them in proportion to
        their size (leftovers to the largest) during a rolling update."""
        target = du.find_active_or_latest(new, olds)
        if target is not None:
            if du.replicas(target) != du.replicas(d):
                await self.scale_rs_and_record_event(target, du.replicas(d), d, rss)
            return
        if du.is_saturated(d, new):
            for old in du.filter_active(olds):
                await self.scale_rs_and_record_event(old, 0, d, rss)
            return
        if not du.is_rolling_update(d):
            return
        active = du.filter_active([*olds, new])
        allowed = du.replicas(d) + du.max_surge(d) if du.replicas(d) > 0 else 0
        to_add = allowed - du.spec_replicas_sum(active)
        operation = ""
        if to_add > 0:
            active, operation = du.by_size_newer(active), "up"
        elif to_add < 0:
            active, operation = du.by_size_older(active), "down"
        added = 0
        sizes: dict[str, int] = {}
        for rs in active:
            if to_add != 0:
                share = du.proportion(rs, d, to_add, added)
                sizes[meta(rs)["name"]] = du.replicas(rs) + share
                added += share
            else:
                sizes[meta(rs)["name"]] = du.replicas(rs)
        for i, rs in enumerate(active):
            name = meta(rs)["name"]
            if i == 0 and to_add != 0:
                sizes[name] = max(sizes[name] + to_add - added, 0)
            await self.scale_rs(rs, sizes[name], d, operation, rss)

    async def scale_rs_and_record_event(self, rs: Obj, new_scale: int, d: Obj,
                                        rss: list[Obj]) -> tuple[bool, Obj]:
        if du.replicas(rs) == new_scale:
            return False, rs
        operation = "up" if du.replicas(rs) < new_scale else "down"
        return await self.scale_rs(rs, new_scale, d, operation, rss)

    async def scale_rs(self, rs: Obj, new_scale: int, d: Obj, operation: str,
                       rss: list[Obj]) -> tuple[bool, Obj]:
        desired, maximum = du.replicas(d), du.replicas(d) + du.max_surge(d)
        size_changed = du.replicas(rs) != new_scale
        if not size_changed and not du.replicas_annotations_need_update(rs, desired, maximum):
            return False, rs
        old_scale = du.replicas(rs)
        body = copy.deepcopy(rs)
        body["spec"]["replicas"] = new_scale
        du.set_replicas_annotations(body, desired, maximum)
        updated = self._replace(rss, await self.client.update(REPLICASETS, body))
        if size_changed:
            self.recorder.event(d, "Normal", "ScalingReplicaSet",
                                f"Scaled {operation} replica set {meta(rs)['name']} from "
                                f"{old_scale} to {new_scale}")
        return size_changed, updated

    async def cleanup(self, olds: list[Obj], d: Obj) -> None:
        """Delete the oldest ReplicaSets with no pods beyond revisionHistoryLimit."""
        if not du.has_revision_history_limit(d):
            return
        alive = [rs for rs in olds if not meta(rs).get("deletionTimestamp")]
        diff = len(alive) - int(spec(d)["revisionHistoryLimit"])
        if diff <= 0:
            return
        for rs in du.by_revision(alive)[:diff]:
            if (status(rs).get("replicas") or 0) != 0 or du.replicas(rs) != 0 or \
                    meta(rs).get("generation", 0) > status(rs).get("observedGeneration", 0):
                continue
            try:
                await self.client.delete(REPLICASETS, meta(rs)["namespace"], meta(rs)["name"])
            except ApiError as exc:
                if not is_not_found(exc):
                    raise

    # -- status -------------------------------------------------------------------------------

    async def _check_paused_conditions(self, d: Obj) -> None:
        """Progressing=Unknown DeploymentPaused/DeploymentResumed, so time spent paused does
        not count against the progress deadline."""
        if not du.has_progress_deadline(d):
            return
        cond = du.get_condition(status(d), "Progressing")
        if cond is not None and cond.get("reason") == du.TIMED_OUT:
            return
        paused_cond = cond is not None and cond.get("reason") == du.PAUSED
        st = d.setdefault("status", {})
        if spec(d).get("paused") and not paused_cond:
            du.set_condition(st, du.new_condition("Progressing", "Unknown", du.PAUSED,
                                                  "Deployment is paused"))
        elif not spec(d).get("paused") and paused_cond:
            du.set_condition(st, du.new_condition("Progressing", "Unknown", du.RESUMED,
                                                  "Deployment is resumed"))
        else:
            return
        await self.update_status(d)

    async def sync_deployment_status(self, all_rss: list[Obj | None], new: Obj | None,
                                     d: Obj) -> None:
        new_status = du.calculate_status(all_rss, new, d)
        if new_status == status(d):
            return
        d["status"] = new_status
        await self.update_status(d)

    async def update_status(self, d: Obj) -> None:
        """Write d's status; d then carries the new resourceVersion for later writes."""
        updated = await self.client.update_status(DEPLOYMENTS, d)
        d["metadata"]["resourceVersion"] = meta(updated)["resourceVersion"]
        d["status"] = updated.get("status") or {}

