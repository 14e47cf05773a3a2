"""Deployment rollout steps (Kubernetes' rolling.go, recreate.go and progress.go).

RollingUpdate scales the new ReplicaSet up within maxSurge, then old ones down within
maxUnavailable (unhealthy pods first); Recreate scales old ones to zero, waits until their
pods are gone, then scales the new one up. Each step ends by writing the rollout status with
the Progressing condition and arranging a re-check at the progress deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dockyard.controllers import deployment_util as du
from dockyard.controllers.controller_utils import Obj, key_of, meta, now, status

if TYPE_CHECKING:
    from dockyard.controllers.deployment import DeploymentController


class RolloutMixin:
    """The rollout half of `DeploymentController`."""

    # -- RollingUpdate ------------------------------------------------------------------------

    async def rollout_rolling(self: DeploymentController, d: Obj, rss: list[Obj]) -> None:
        new, olds = await self.get_all_rs_and_sync_revision(d, rss, create=True)
        if new is None:
            return
        all_rss: list[Obj | None] = [*olds, new]
        if await self._reconcile_new(all_rss, new, d, rss):
            await self.sync_rollout_status(self._current(all_rss, rss), new, d)
            return
        if await self._reconcile_olds(all_rss, du.filter_active(olds), new, d, rss):
            await self.sync_rollout_status(self._current(all_rss, rss), new, d)
            return
        if du.deployment_complete(d, status(d)):
            await self.cleanup(olds, d)
        await self.sync_rollout_status(all_rss, new, d)

    @staticmethod
    def _current(all_rss: list[Obj | None], rss: list[Obj]) -> list[Obj | None]:
        """The same ReplicaSets as last written (scale writes replace entries of `rss`)."""
        by_uid = {meta(rs)["uid"]: rs for rs in rss}
        return [by_uid.get(meta(rs)["uid"], rs) if rs is not None else None for rs in all_rss]

    async def _reconcile_new(self: DeploymentController, all_rss: list[Obj | None], new: Obj,
                             d: Obj, rss: list[Obj]) -> bool:
        if du.replicas(new) == du.replicas(d):
            return False
        if du.replicas(new) > du.replicas(d):
            scaled, _ = await self.scale_rs_and_record_event(new, du.replicas(d), d, rss)
            return scaled
        count = du.new_rs_new_replicas(d, all_rss, new)
        scaled, _ = await self.scale_rs_and_record_event(new, count, d, rss)
        return scaled

    async def _reconcile_olds(self: DeploymentController, all_rss: list[Obj | None],
                              olds: list[Obj], new: Obj, d: Obj, rss: list[Obj]) -> bool:
        """Scale old ReplicaSets down as far as maxUnavailable allows."""
        if du.spec_replicas_sum(olds) == 0:
            return False
        all_pods = du.spec_replicas_sum(all_rss)
        min_available = du.replicas(d) - du.max_unavailable(d)
        new_unavailable = du.replicas(new) - int(status(new).get("availableReplicas") or 0)
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        # Unhealthy old pods first: removing them costs no availability and keeps a broken
        # old version from blocking the rollout (kubernetes#16737).
        olds, cleaned = await self._cleanup_unhealthy(olds, d, max_scaled_down, rss)
        scaled = await self._scale_down_olds_for_rolling([*olds, new], olds, d, rss)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy(self: DeploymentController, olds: list[Obj], d: Obj,
                                 max_cleanup: int, rss: list[Obj]) -> tuple[list[Obj], int]:
        olds = du.by_creation(olds)
        total = 0
        for i, rs in enumerate(olds):
            if total >= max_cleanup:
                break
            available = int(status(rs).get("availableReplicas") or 0)
            if du.replicas(rs) == 0 or du.replicas(rs) == available:
                continue
            count = min(max_cleanup - total, du.replicas(rs) - available)
            _, olds[i] = await self.scale_rs_and_record_event(rs, du.replicas(rs) - count, d, rss)
            total += count
        return olds, total

    async def _scale_down_olds_for_rolling(self: DeploymentController, all_rss: list[Obj],
                                           olds: list[Obj], d: Obj, rss: list[Obj]) -> int:
        min_available = du.replicas(d) - du.max_unavailable(d)
        available = du.available_lower_bound(list(all_rss))
        if available <= min_available:
            return 0
        total, budget = 0, available - min_available
        for rs in du.by_creation(olds):
            if total >= budget:
                break
            if du.replicas(rs) == 0:
                continue
            count = min(du.replicas(rs), budget - total)
            await self.scale_rs_and_record_event(rs, du.replicas(rs) - count, d, rss)
            total += count
        return total

    # -- Recreate -----------------------------------------------------------------------------

    async def rollout_recreate(self: DeploymentController, d: Obj, rss: list[Obj],
                               pod_map: dict[str, list[Obj]]) -> None:
        # No new ReplicaSet yet: creating it now would scale up before scaling down.
        new, olds = await self.get_all_rs_and_sync_revision(d, rss, create=False)
        all_rss: list[Obj | None] = [*olds, new]
        scaled_down = False
        for rs in du.filter_active(olds):
            scaled, _ = await self.scale_rs_and_record_event(rs, 0, d, rss)
            scaled_down = scaled_down or scaled
        if scaled_down:
            await self.sync_rollout_status(self._current(all_rss, rss), new, d)
            return
        if _old_pods_running(new, olds, pod_map):
            await self.sync_rollout_status(all_rss, new, d)
            return
        if new is None:
            new, olds = await self.get_all_rs_and_sync_revision(d, rss, create=True)
            all_rss = [*olds, new]
        if new is not None:
            await self.scale_rs_and_record_event(new, du.replicas(d), d, rss)
        if du.deployment_complete(d, status(d)):
            await self.cleanup(olds, d)
        await self.sync_rollout_status(self._current(all_rss, rss), new, d)

    # -- progress -----------------------------------------------------------------------------

    async def sync_rollout_status(self: DeploymentController, all_rss: list[Obj | None],
                                  new: Obj | None, d: Obj) -> None:
        """Status plus the Progressing condition: NewReplicaSetAvailable when complete,
        ReplicaSetUpdated on any progress, ProgressDeadlineExceeded after the deadline."""
        new_status = du.calculate_status(all_rss, new, d)
        if not du.has_progress_deadline(d):
            du.remove_condition(new_status, "Progressing")
        current = du.get_condition(status(d), "Progressing")
        complete_before = (new_status.get("replicas") == new_status.get("updatedReplicas")
                           and current is not None
                           and current.get("reason") == du.NEW_RS_AVAILABLE)
        at = now()
        if du.has_progress_deadline(d) and not complete_before:
            name = meta(new)["name"] if new is not None else None
            subject = f'ReplicaSet "{name}"' if name else f'Deployment "{meta(d)["name"]}"'
            if du.deployment_complete(d, new_status):
                du.set_condition(new_status, du.new_condition(
                    "Progressing", "True", du.NEW_RS_AVAILABLE,
                    f"{subject} has successfully progressed.", at))
            elif du.deployment_progressing(d, new_status):
                cond = du.new_condition("Progressing", "True", du.REPLICASET_UPDATED,
                                        f"{subject} is progressing.", at)
                # Same reason, newer lastUpdateTime: the deadline counts from the last progress.
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get("lastTransitionTime")
                    du.remove_condition(new_status, "Progressing")
                du.set_condition(new_status, cond)
            elif du.deployment_timed_out(d, new_status, at):
                du.set_condition(new_status, du.new_condition(
                    "Progressing", "False", du.TIMED_OUT,
                    f"{subject} has timed out progressing.", at))
        failures = _replica_failures(all_rss, new)
        if failures:
            du.set_condition(new_status, failures[0])
        else:
            du.remove_condition(new_status, "ReplicaFailure")
        if new_status == status(d):
            self._requeue_stuck(d, new_status)
            return
        d["status"] = new_status
        await self.update_status(d)

    def _requeue_stuck(self: DeploymentController, d: Obj, new_status: Obj) -> None:
        """Look again when the progress deadline passes, or the rollout would only be
        re-checked by an unrelated event."""
        current = du.get_condition(status(d), "Progressing")
        if current is None or not du.has_progress_deadline(d):
            return
        if du.deployment_complete(d, new_status) or current.get("reason") == du.TIMED_OUT:
            return
        after = du.seconds_until_deadline(d, now())
        if after is None:
            return
        if after < 1:
            self.queue.add_rate_limited(key_of(d))
        else:
            self.queue.add_after(key_of(d), after + 1)


def _old_pods_running(new: Obj | None, olds: list[Obj],
                      pod_map: dict[str, list[Obj]]) -> bool:
    """Any old ReplicaSet reports pods, or any of their pods is not finished (terminating
    pods included: Recreate means the old version is gone before the new one starts)."""
    if du.actual_replicas(list(olds)) > 0:
        return True
    new_uid = meta(new).get("uid") if new is not None else None
    for uid, pods in pod_map.items():
        if uid == new_uid:
            continue
        for pod in pods:
            if status(pod).get("phase") not in ("Failed", "Succeeded"):
                return True
    return False


def _replica_failures(all_rss: list[Obj | None], new: Obj | None) -> list[Obj]:
    """ReplicaFailure conditions of the new ReplicaSet, else of any other."""
    def of(rs: Obj | None) -> list[Obj]:
        if rs is None:
            return []
        return [du.rs_condition_to_deployment(c) for c in status(rs).get("conditions") or []
                if c.get("type") == "ReplicaFailure"]
    found = of(new)
    if found:
        return found
    return [c for rs in all_rss for c in of(rs)]
