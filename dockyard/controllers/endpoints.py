"""The Endpoints controller: one core/v1 Endpoints per Service with a selector.

Keys are services. `sync` lists the selected pods from the cache, turns each into an address
(ready, or not ready unless `publishNotReadyAddresses`) per resolved port, repacks them into
subsets grouped by identical port sets (as `RepackSubsets` does), and writes only on change.
Services without a selector are left alone; a deleted service's Endpoints is deleted.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer, by_namespace, object_key, split_key
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.client.workqueue import WorkQueue
from dockyard.controllers.podutil import (
    find_port,
    is_headless,
    is_pod_ready,
    object_ref,
    pod_ips,
    selector_matches,
    should_be_in_endpoints,
    should_set_hostname,
)

log = logging.getLogger("dockyard.controllers.endpoints")

SERVICES = by_kind("", "Service")
PODS = by_kind("", "Pod")
ENDPOINTS = by_kind("", "Endpoints")
Obj = dict[str, Any]

MAX_CAPACITY = 1000
OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
HEADLESS_LABEL = "service.kubernetes.io/headless"


# -- pure logic ----------------------------------------------------------------------------


def endpoint_relevant(pod: Obj) -> tuple[Any, ...]:
    """What of a pod the endpoints depend on (podEndpointsChanged); labels are separate."""
    spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
    return (tuple(pod_ips(pod)), is_pod_ready(pod), bool(meta.get("deletionTimestamp")),
            (pod.get("status") or {}).get("phase"), spec.get("nodeName"),
            spec.get("hostname"), spec.get("subdomain"), meta.get("uid"))


def _address(pod: Obj, service: Obj) -> Obj:
    address: Obj = {"ip": pod_ips(pod)[0], "targetRef": object_ref(pod)}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        address["nodeName"] = node
    if should_set_hostname(pod, service):
        address["hostname"] = pod["spec"]["hostname"]
    return address


def _port(service_port: Obj, number: int) -> Obj:
    port: Obj = {"port": number, "protocol": service_port.get("protocol") or "TCP"}
    if service_port.get("name"):
        port["name"] = service_port["name"]
    if service_port.get("appProtocol"):
        port["appProtocol"] = service_port["appProtocol"]
    return port


def _address_key(address: Obj) -> tuple[str, str]:
    return address["ip"], (address.get("targetRef") or {}).get("uid") or ""


def _port_key(port: Obj) -> tuple[str, int, str]:
    return port.get("name") or "", port["port"], port["protocol"]


def desired_subsets(service: Obj, pods: list[Obj]) -> tuple[list[Obj], bool]:
    """The service's subsets from its selected pods, and whether they were truncated."""
    spec = service.get("spec") or {}
    tolerate_unready = bool(spec.get("publishNotReadyAddresses"))
    # address key -> (address, ready, set of ports)
    entries: dict[tuple[str, str], tuple[Obj, bool, set[tuple[str, int, str]]]] = {}
    ports_by_key: dict[tuple[str, int, str], Obj] = {}
    for pod in pods:
        if not should_be_in_endpoints(pod, include_terminating=False):
            continue
        address = _address(pod, service)
        ready = tolerate_unready or is_pod_ready(pod)
        ports: set[tuple[str, int, str]] = set()
        if not spec.get("ports"):
            if not is_headless(service):
                continue  # only headless services publish port-less endpoints
        for service_port in spec.get("ports") or []:
            number = find_port(pod, service_port)
            if number is None:
                log.debug("pod %s has no port %r for service %s", object_key(pod),
                          service_port.get("targetPort"), object_key(service))
                continue
            port = _port(service_port, number)
            ports_by_key[_port_key(port)] = port
            ports.add(_port_key(port))
        if spec.get("ports") and not ports:
            continue
        entries[_address_key(address)] = (address, ready, ports)
    truncated = len(entries) > MAX_CAPACITY
    if truncated:  # keep the ready ones first, as the real controller does
        order = sorted(entries.items(), key=lambda kv: (not kv[1][1], kv[0]))
        entries = dict(order[:MAX_CAPACITY])
    groups: dict[frozenset[tuple[str, int, str]], Obj] = {}
    for key in sorted(entries):
        address, ready, ports = entries[key]
        subset = groups.setdefault(frozenset(ports), {})
        subset.setdefault("addresses" if ready else "notReadyAddresses", []).append(address)
    subsets = []
    for ports_key, subset in groups.items():
        ports = [ports_by_key[k] for k in sorted(ports_key)]
        if ports:
            subset["ports"] = ports
        subsets.append(subset)
    subsets.sort(key=lambda s: _address_key((s.get("addresses") or s["notReadyAddresses"])[0]))
    return subsets, truncated


def endpoints_labels(service: Obj) -> dict[str, str]:
    labels = dict(service["metadata"].get("labels") or {})
    if is_headless(service):
        labels[HEADLESS_LABEL] = ""
    else:
        labels.pop(HEADLESS_LABEL, None)
    return labels


# -- the controller ------------------------------------------------------------------------


class ServicePodTriggers:
    """Pod handlers shared by the Endpoints and EndpointSlice controllers: a pod change
    enqueues the Services whose selector matches it (before and after a label change)."""

    services: Informer
    queue: WorkQueue

    def _enqueue(self, obj: Obj) -> None:
        self.queue.add(object_key(obj))

    def _services_for(self, pod: Obj) -> list[Obj]:
        namespace = pod["metadata"].get("namespace") or ""
        labels = pod["metadata"].get("labels")
        return [svc for svc in self.services.by_index("by_namespace", namespace)
                if selector_matches((svc.get("spec") or {}).get("selector"), labels)]

    def _pod_added(self, pod: Obj) -> None:
        for svc in self._services_for(pod):
            self._enqueue(svc)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        labels_changed = old["metadata"].get("labels") != new["metadata"].get("labels")
        if not labels_changed and endpoint_relevant(old) == endpoint_relevant(new):
            return
        for svc in self._services_for(new):
            self._enqueue(svc)
        if labels_changed:
            for svc in self._services_for(old):
                self._enqueue(svc)


class EndpointsController(ServicePodTriggers, Controller):
    name = "endpoints-controller"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 4) -> None:
        super().__init__()
        assert SERVICES is not None and PODS is not None and ENDPOINTS is not None
        self.client = client
        self.recorder = recorder
        self.workers = workers
        self.services = factory.informer(SERVICES, indexers={"by_namespace": by_namespace})
        self.pods = factory.informer(PODS, indexers={"by_namespace": by_namespace})
        self.endpoints = factory.informer(ENDPOINTS)
        self.services.add_handlers(Handlers(
            on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new),
            on_delete=self._enqueue))
        self.pods.add_handlers(Handlers(on_add=self._pod_added, on_update=self._pod_updated,
                                        on_delete=self._pod_added))
        # Endpoints removed behind our back come back (the service key is the same).
        self.endpoints.add_handlers(Handlers(on_delete=self._enqueue))

    def informers(self) -> list[Informer]:
        return [self.services, self.pods, self.endpoints]

    async def run(self) -> None:
        await asyncio.gather(*(i.wait_synced() for i in self.informers()))
        for key in self.endpoints.keys():  # checkLeftoverEndpoints: services deleted while down
            if self.services.get(key) is None:
                self.queue.add(key)
        await super().run()

    # -- handlers: only enqueue ------------------------------------------------------------

    # -- reconcile -------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        assert ENDPOINTS is not None
        namespace, name = split_key(key)
        service = self.services.get(key)
        if service is None:
            if self.endpoints.get(key) is not None:
                try:
                    await self.client.delete(ENDPOINTS, namespace, name)
                except ApiError as exc:
                    if not is_not_found(exc):
                        raise
            return
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            return  # endpoints of selector-less services are the user's
        pods = [p for p in self.pods.by_index("by_namespace", namespace or "")
                if selector_matches(selector, p["metadata"].get("labels"))]
        subsets, truncated = desired_subsets(service, pods)
        labels = endpoints_labels(service)
        current = self.endpoints.get(key)
        if current is None:
            body: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                         "metadata": {"name": name, "namespace": namespace, "labels": labels}}
            if truncated:
                body["metadata"]["annotations"] = {OVER_CAPACITY: "truncated"}
            if subsets:
                body["subsets"] = subsets
            await self.client.create(ENDPOINTS, body)  # 409 (cache behind): retried
            return
        annotations = dict(current["metadata"].get("annotations") or {})
        if truncated:
            annotations[OVER_CAPACITY] = "truncated"
        else:
            annotations.pop(OVER_CAPACITY, None)
        if (current.get("subsets") or []) == subsets and \
                (current["metadata"].get("labels") or {}) == labels and \
                (current["metadata"].get("annotations") or {}) == annotations:
            return
        updated = copy.deepcopy(current)
        updated["metadata"]["labels"] = labels
        updated["metadata"]["annotations"] = annotations
        updated["subsets"] = subsets
        await self.client.update(ENDPOINTS, updated)  # 409: retried with the newer object
