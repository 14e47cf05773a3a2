"""Shared informers: one list+watch per resource however many controllers read it."""

from __future__ import annotations

import asyncio

from dockyard.api.resources import ResourceInfo
from dockyard.client.informer import IndexFunc, Informer
from dockyard.client.rest import Client


class InformerFactory:
    """Hands out one `Informer` per resource; `start` runs the ones not yet running."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._informers: dict[tuple[str, str], Informer] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def informer(self, info: ResourceInfo, *,
                 indexers: dict[str, IndexFunc] | None = None) -> Informer:
        key = (info.group, info.plural)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(self.client, info)
            self._informers[key] = informer
        for name, func in (indexers or {}).items():
            if name not in informer.indexers:
                if key in self._tasks:
                    raise RuntimeError(f"index {name} added to running informer {info.plural}")
                informer.indexers[name] = func
                informer._indexes[name] = {}
        return informer

    def start(self) -> None:
        for key, informer in self._informers.items():
            if key not in self._tasks:
                self._tasks[key] = asyncio.create_task(informer.run(),
                                                       name=f"informer-{key[1]}")

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.wait_synced() for i in self._informers.values()))

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
