"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

A candidate takes the Lease when it is free or its holder stopped renewing for
`lease_duration`; the leader renews every `retry_period` and gives up (cancelling its work)
when it could not renew within `renew_deadline`. All writes are compare-and-swap on the
Lease's resourceVersion, so two candidates can never both succeed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.rest import ApiError, Client, is_conflict, is_not_found

log = logging.getLogger("dockyard.leaderelection")
LEASES = by_kind("coordination.k8s.io", "Lease")


def micro_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


class LeaderElector:
    def __init__(self, client: Client, *, name: str, identity: str,
                 namespace: str = "kube-system", lease_duration: float = 15.0,
                 renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = False

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Campaign forever; while leading, run `lead()` and cancel it on losing the Lease."""
        while True:
            await self._acquire()
            log.info("%s: %s is now the leader", self.name, self.identity)
            work = asyncio.create_task(lead(), name=f"{self.name}-leader")
            renew = asyncio.create_task(self._keep_renewing(), name=f"{self.name}-renew")
            try:
                done, _ = await asyncio.wait({work, renew}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.is_leader = False
                for task in (work, renew):
                    task.cancel()
                await asyncio.gather(work, renew, return_exceptions=True)
            if work in done and work.exception() is None:
                await self.release()
                return
            log.warning("%s: %s lost the lease", self.name, self.identity)

    async def _acquire(self) -> None:
        while not await self._try_acquire_or_renew():
            await asyncio.sleep(self.retry_period)
        self.is_leader = True

    async def _keep_renewing(self) -> None:
        last_renewal = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                ok = await asyncio.wait_for(self._try_acquire_or_renew(), self.retry_period)
            except (TimeoutError, OSError, ApiError) as exc:
                log.info("%s: renew failed: %s", self.name, exc)
                ok = False
            now = asyncio.get_running_loop().time()
            if ok:
                last_renewal = now
            elif now - last_renewal > self.renew_deadline:
                return  # could not renew in time: stop leading

    async def _try_acquire_or_renew(self) -> bool:
        assert LEASES is not None
        now = datetime.now(UTC)
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "renewTime": micro_time(now),
        }
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
        except ApiError as exc:
            if not is_not_found(exc):
                raise
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = 0
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec}
            try:
                await self.client.create(LEASES, body)
            except ApiError as create_exc:
                if create_exc.code == 409:
                    return False
                raise
            return True
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        renewed = parse_micro_time(current.get("renewTime"))
        duration = timedelta(seconds=current.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and renewed and renewed + duration > now:
            return False  # someone else holds a live lease
        if holder == self.identity:
            spec["acquireTime"] = current.get("acquireTime") or micro_time(now)
            spec["leaseTransitions"] = current.get("leaseTransitions", 0)
        else:
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        lease["spec"] = spec
        try:
            await self.client.update(LEASES, lease)
        except ApiError as exc:
            if is_conflict(exc):
                return False
            raise
        return True

    async def release(self) -> None:
        """Give the lease up at once so a standby need not wait for it to expire."""
        assert LEASES is not None
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = None
            lease["spec"]["leaseDurationSeconds"] = 1
            await self.client.update(LEASES, lease)
        except (ApiError, OSError):
            pass
