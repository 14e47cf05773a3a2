"""The controller pattern: informers feed keys into a work queue; workers run `sync(key)`.

Subclasses register informer handlers that only enqueue keys, and implement one idempotent
`sync(key)` that reads caches, compares desired with actual, and takes one bounded step. An
exception means "retry with back-off"; a clean return forgets the key's failures.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod

from dockyard.client.informer import Informer
from dockyard.client.workqueue import WorkQueue

log = logging.getLogger("dockyard.controller")


class Controller(ABC):
    name: str = "controller"
    workers: int = 1

    def __init__(self) -> None:
        self.queue = WorkQueue()

    @abstractmethod
    def informers(self) -> list[Informer]:
        """The caches this controller waits for before its first sync."""

    @abstractmethod
    async def sync(self, key: str) -> None:
        """Reconcile one key; raise to retry it later with back-off."""

    async def run(self) -> None:
        """Wait for the caches, then run the workers until cancelled."""
        await asyncio.gather(*(i.wait_synced() for i in self.informers()))
        workers = [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{n}")
                   for n in range(self.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            await self.queue.shut_down()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while (key := await self.queue.get()) is not None:
            try:
                await self.sync(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is retried
                retries = self.queue.retries(key)
                level = logging.WARNING if retries >= 5 else logging.DEBUG
                log.log(level, "%s: sync %s failed (retry %d): %s", self.name, key, retries,
                        exc, exc_info=retries >= 5)
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)
