"""Keeps a `ClusterZone` current from informers of Services, EndpointSlices and Pods.

Each event recomputes the records of the one Service (with its slices) or Pod it concerns;
the zone then answers from memory, so the node's DNS goes on answering with the last known
records while the API server is unreachable (the informers relist when it is back).
"""

from __future__ import annotations

import asyncio
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.informer import Handlers, Informer, object_key
from dockyard.client.rest import Client
from dockyard.network.dns.records import ClusterZone

Obj = dict[str, Any]

SERVICES = by_kind("", "Service")
SLICES = by_kind("discovery.k8s.io", "EndpointSlice")
PODS = by_kind("", "Pod")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def slice_service(eps: Obj) -> list[str]:
    """`ns/service` of a slice (any manager's: the label is what ties it to the service)."""
    meta = eps.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{meta.get('namespace')}/{name}"] if name else []


class ZoneWatcher:
    """Three informers feeding one zone; `run()` until cancelled."""

    def __init__(self, client: Client, zone: ClusterZone) -> None:
        assert SERVICES is not None and SLICES is not None and PODS is not None
        self.zone = zone
        self.services = Informer(client, SERVICES)
        self.slices = Informer(client, SLICES, indexers={"service": slice_service})
        self.pods = Informer(client, PODS)
        self.services.add_handlers(Handlers(
            on_add=self._service, on_update=lambda _old, new: self._service(new),
            on_delete=lambda svc: zone.remove_service(object_key(svc))))
        self.slices.add_handlers(Handlers(
            on_add=self._slice, on_update=self._slice_update, on_delete=self._slice))
        self.pods.add_handlers(Handlers(
            on_add=zone.set_pod, on_update=lambda _old, new: zone.set_pod(new),
            on_delete=lambda pod: zone.remove_pod(object_key(pod))))

    def _service(self, service: Obj) -> None:
        key = object_key(service)
        self.zone.set_service(service, self.slices.by_index("service", key))

    def _refresh(self, key: str) -> None:
        service = self.services.get(key)
        if service is not None:
            self._service(service)

    def _slice(self, eps: Obj) -> None:
        for key in slice_service(eps):
            self._refresh(key)

    def _slice_update(self, old: Obj, new: Obj) -> None:
        for key in {*slice_service(old), *slice_service(new)}:
            self._refresh(key)

    async def run(self) -> None:
        informers = (self.services, self.slices, self.pods)
        tasks = [asyncio.create_task(i.run(), name=f"dns-{i.info.plural}") for i in informers]
        try:
            await asyncio.gather(*(i.wait_synced() for i in informers))
            self.zone.ready = True
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

