"""The EndpointSlice controller: discovery.k8s.io/v1 slices of at most 100 endpoints per Service.

Keys are services. `sync` computes the wanted endpoints per (address type, port set), keeps
each still-wanted endpoint in the slice that holds it, fills free room in slices it is already
changing before others, creates new slices only for the rest (`generateName: <svc>-`), and
deletes slices left empty, keeping one empty placeholder for a service with no endpoints.
A tracker of the resourceVersions it wrote makes a sync on a cache that has not yet seen
them retry instead of creating duplicates (the real controller's EndpointSliceTracker).
"""

from __future__ import annotations

import copy
import ipaddress
import logging
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import (
    Handlers,
    Informer,
    by_namespace,
    by_node,
    split_key,
)
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.controllers.endpoints import (
    HEADLESS_LABEL,
    ServicePodTriggers,
)
from dockyard.controllers.podutil import (
    find_port,
    is_headless,
    is_pod_ready,
    is_terminating,
    object_ref,
    pod_ips,
    selector_matches,
    should_be_in_endpoints,
    should_set_hostname,
)

log = logging.getLogger("dockyard.controllers.endpointslice")

SERVICES = by_kind("", "Service")
PODS = by_kind("", "Pod")
NODES = by_kind("", "Node")
SLICES = by_kind("discovery.k8s.io", "EndpointSlice")
Obj = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100

PortKey = tuple[tuple[str, int, str, str], ...]


class StaleCache(Exception):
    """The slice cache has not yet seen this controller's last writes: retry shortly."""


# -- pure logic ----------------------------------------------------------------------------


def slice_service(eps: Obj) -> str | None:
    """`ns/service` of a slice this controller manages, else None."""
    labels = eps["metadata"].get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != CONTROLLER_NAME or not labels.get(SERVICE_NAME_LABEL):
        return None
    return f"{eps['metadata'].get('namespace')}/{labels[SERVICE_NAME_LABEL]}"


def address_types(service: Obj) -> list[str]:
    return list((service.get("spec") or {}).get("ipFamilies") or ["IPv4"])


def _family(ip: str) -> str:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return ""


def pod_endpoint(pod: Obj, service: Obj, address_type: str, zone: str | None) -> Obj | None:
    """podToEndpoint: the pod as an endpoint of `address_type`, or None without such an IP."""
    addresses = [ip for ip in pod_ips(pod) if _family(ip) == address_type][:1]
    if not addresses:
        return None
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    serving = publish or is_pod_ready(pod)
    terminating = is_terminating(pod)
    endpoint: Obj = {"addresses": addresses,
                     "conditions": {"ready": publish or (serving and not terminating),
                                    "serving": serving, "terminating": terminating},
                     "targetRef": object_ref(pod)}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        endpoint["nodeName"] = node
    if zone:
        endpoint["zone"] = zone
    if should_set_hostname(pod, service):
        endpoint["hostname"] = pod["spec"]["hostname"]
    return endpoint


def endpoint_ports(pod: Obj, service: Obj) -> list[Obj]:
    """The service's ports resolved against this pod (unresolvable named ports left out)."""
    ports = []
    for service_port in (service.get("spec") or {}).get("ports") or []:
        number = find_port(pod, service_port)
        if number is None:
            continue
        port: Obj = {"name": service_port.get("name") or "", "port": number,
                     "protocol": service_port.get("protocol") or "TCP"}
        if service_port.get("appProtocol"):
            port["appProtocol"] = service_port["appProtocol"]
        ports.append(port)
    return ports


def port_key(ports: list[Obj]) -> PortKey:
    return tuple(sorted((p.get("name") or "", int(p.get("port") or 0), p.get("protocol") or "TCP",
                         p.get("appProtocol") or "") for p in ports))


def endpoint_key(endpoint: Obj) -> str:
    return (endpoint.get("targetRef") or {}).get("uid") or endpoint["addresses"][0]


def slice_labels(service: Obj) -> dict[str, str]:
    labels = {k: v for k, v in (service["metadata"].get("labels") or {}).items()
              if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL)}
    labels[SERVICE_NAME_LABEL] = service["metadata"]["name"]
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    if is_headless(service):
        labels[HEADLESS_LABEL] = ""
    return labels


def owner_reference(service: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "name": service["metadata"]["name"],
            "uid": service["metadata"].get("uid"), "controller": True,
            "blockOwnerDeletion": True}


def desired_endpoints(service: Obj, pods: list[Obj], zones: dict[str, str]
                      ) -> dict[tuple[str, PortKey], tuple[list[Obj], dict[str, Obj]]]:
    """(address type, port key) -> (ports, endpoint key -> endpoint) for the selected pods."""
    wanted: dict[tuple[str, PortKey], tuple[list[Obj], dict[str, Obj]]] = {}
    for pod in pods:
        if not should_be_in_endpoints(pod, include_terminating=True):
            continue
        ports = endpoint_ports(pod, service)
        zone = zones.get((pod.get("spec") or {}).get("nodeName") or "")
        for address_type in address_types(service):
            endpoint = pod_endpoint(pod, service, address_type, zone)
            if endpoint is None:
                continue
            group = wanted.setdefault((address_type, port_key(ports)), (ports, {}))
            group[1][endpoint_key(endpoint)] = endpoint
    return wanted


def plan(service: Obj, existing: list[Obj], wanted: dict[tuple[str, PortKey],
         tuple[list[Obj], dict[str, Obj]]], *, max_per_slice: int = MAX_ENDPOINTS_PER_SLICE
         ) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """The slices to create, update and delete to turn `existing` into `wanted`.

    Endpoints stay in the slice that holds them; new ones go first into slices that change
    anyway, then into any slice with room, then into new slices. Empty slices are deleted,
    except that a service with no endpoints keeps (or gets) one empty placeholder slice.
    """
    labels, owner = slice_labels(service), owner_reference(service)
    create: list[Obj] = []
    update: list[Obj] = []
    delete: list[Obj] = []
    by_group: dict[tuple[str, PortKey], list[Obj]] = {}
    for eps in existing:
        by_group.setdefault((eps.get("addressType") or "", port_key(eps.get("ports") or [])),
                            []).append(eps)
    for group, slices in by_group.items():
        if group not in wanted:
            delete.extend(slices)
    for group, (ports, endpoints) in wanted.items():
        remaining = dict(endpoints)
        entries: list[tuple[Obj, bool]] = []  # (the slice as wanted, changed?)
        for eps in sorted(by_group.get(group, []), key=lambda e: e["metadata"]["name"]):
            kept = [new for e in eps.get("endpoints") or []
                    if (new := remaining.pop(endpoint_key(e), None)) is not None]
            new_slice = copy.deepcopy(eps)
            new_slice["endpoints"] = kept
            new_slice["metadata"]["labels"] = {**(eps["metadata"].get("labels") or {}),
                                               **labels}
            entries.append((new_slice, _differs(eps, new_slice, labels)))
        fresh = list(remaining.values())
        for i in sorted(range(len(entries)), key=lambda i: not entries[i][1]):
            new_slice, changed = entries[i]
            room = max_per_slice - len(new_slice["endpoints"])
            if fresh and room > 0:
                new_slice["endpoints"].extend(fresh[:room])
                fresh = fresh[room:]
                entries[i] = (new_slice, True)
        for new_slice, changed in entries:
            if not new_slice["endpoints"]:
                delete.append(new_slice)
            elif changed:
                update.append(new_slice)
        while fresh:
            chunk, fresh = fresh[:max_per_slice], fresh[max_per_slice:]
            create.append(_new_slice(service, labels, owner, group[0], ports, chunk))
    if not wanted:
        # The placeholder: one empty slice, reused if one exists.
        placeholder = next((e for e in existing if not e.get("endpoints")
                            and not e.get("ports")), None)
        if placeholder is not None:
            delete = [e for e in delete if e is not placeholder]
        else:
            address_type = address_types(service)[0]
            create.append(_new_slice(service, labels, owner, address_type, [], []))
    return create, update, delete


def _differs(old: Obj, new: Obj, labels: dict[str, str]) -> bool:
    return (old.get("endpoints") or []) != new["endpoints"] or \
        any((old["metadata"].get("labels") or {}).get(k) != v for k, v in labels.items())


def _new_slice(service: Obj, labels: dict[str, str], owner: Obj, address_type: str,
               ports: list[Obj], endpoints: list[Obj]) -> Obj:
    meta = service["metadata"]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"generateName": f"{meta['name']}-", "namespace": meta.get("namespace"),
                         "labels": dict(labels), "ownerReferences": [owner]},
            "addressType": address_type, "ports": ports, "endpoints": endpoints}


# -- the controller ------------------------------------------------------------------------


class EndpointSliceController(ServicePodTriggers, Controller):
    name = "endpointslice-controller"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE,
                 workers: int = 4) -> None:
        super().__init__()
        assert SERVICES is not None and PODS is not None and NODES is not None
        assert SLICES is not None
        self.client = client
        self.recorder = recorder
        self.max_per_slice = max_endpoints_per_slice
        self.workers = workers
        self.services = factory.informer(SERVICES, indexers={"by_namespace": by_namespace})
        self.pods = factory.informer(PODS, indexers={"by_namespace": by_namespace,
                                                     "by_node": by_node})
        self.nodes = factory.informer(NODES)
        self.slices = factory.informer(SLICES, indexers={"by_service": _slice_index})
        # service key -> {slice name: resourceVersion we wrote, or "" for deleted}
        self._written: dict[str, dict[str, str]] = {}
        self.services.add_handlers(Handlers(
            on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new),
            on_delete=self._enqueue))
        self.pods.add_handlers(Handlers(on_add=self._pod_added, on_update=self._pod_updated,
                                        on_delete=self._pod_added))
        self.slices.add_handlers(Handlers(
            on_add=self._slice_changed, on_update=lambda _old, new: self._slice_changed(new),
            on_delete=self._slice_changed))
        self.nodes.add_handlers(Handlers(on_update=self._node_updated))

    def informers(self) -> list[Informer]:
        return [self.services, self.pods, self.nodes, self.slices]

    # -- handlers: only enqueue ------------------------------------------------------------

    def _slice_changed(self, eps: Obj) -> None:
        service = slice_service(eps)
        if service is not None:
            self.queue.add(service)

    def _node_updated(self, old: Obj, new: Obj) -> None:
        """A node's zone changed: the endpoints of its pods carry the old zone."""
        if (old["metadata"].get("labels") or {}).get(ZONE_LABEL) == \
                (new["metadata"].get("labels") or {}).get(ZONE_LABEL):
            return
        for pod in self.pods.by_index("by_node", new["metadata"]["name"]):
            self._pod_added(pod)

    # -- reconcile -------------------------------------------------------------------------

    def _check_cache(self, key: str) -> None:
        written = self._written.get(key)
        if not written:
            return
        namespace, _ = split_key(key)
        for name, rv in list(written.items()):
            cached = self.slices.get(f"{namespace}/{name}")
            if rv == "":
                caught_up = cached is None
            else:  # seen as written or newer, or the informer is past it (deleted since)
                caught_up = _rv_at_least(self.slices.resource_version, rv) or (
                    cached is not None
                    and _rv_at_least(cached["metadata"].get("resourceVersion", ""), rv))
            if not caught_up:
                raise StaleCache(f"slice {namespace}/{name} not yet seen at {rv or 'deleted'}")
            del written[name]
        self._written.pop(key, None)

    async def sync(self, key: str) -> None:
        assert SLICES is not None
        self._check_cache(key)
        namespace, _ = split_key(key)
        service = self.services.get(key)
        existing = self.slices.by_index("by_service", key)
        if service is None:
            # The garbage collector would remove them through the ownerReference too.
            for eps in existing:
                await self._delete(key, eps)
            return
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            return  # slices of selector-less services are written by others
        owned = [e for e in existing if _owned_by(e, service)]
        stale = [e for e in existing if not _owned_by(e, service)]  # an earlier same-named svc
        pods = [p for p in self.pods.by_index("by_namespace", namespace or "")
                if selector_matches(selector, p["metadata"].get("labels"))]
        zones = {}
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            node = self.nodes.get(node_name) if node_name else None
            zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(ZONE_LABEL)
            if node_name and zone:
                zones[node_name] = zone
        wanted = desired_endpoints(service, pods, zones)
        create, update, delete = plan(service, owned, wanted, max_per_slice=self.max_per_slice)
        for eps in delete + stale:
            await self._delete(key, eps)
        written = self._written.setdefault(key, {})
        for eps in update:
            saved = await self.client.update(SLICES, eps)  # 409: retried after the cache
            written[saved["metadata"]["name"]] = saved["metadata"]["resourceVersion"]
        for eps in create:
            saved = await self.client.create(SLICES, eps)
            written[saved["metadata"]["name"]] = saved["metadata"]["resourceVersion"]

    async def _delete(self, key: str, eps: Obj) -> None:
        assert SLICES is not None
        meta = eps["metadata"]
        try:
            await self.client.delete(SLICES, meta.get("namespace"), meta["name"])
        except ApiError as exc:
            if not is_not_found(exc):
                raise
        self._written.setdefault(key, {})[meta["name"]] = ""


def _slice_index(eps: Obj) -> list[str]:
    service = slice_service(eps)
    return [service] if service else []


def _owned_by(eps: Obj, service: Obj) -> bool:
    uid = service["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in eps["metadata"].get("ownerReferences") or [])


def _rv_at_least(have: str, want: str) -> bool:
    if have == want:
        return True
    try:
        return int(have) >= int(want)
    except ValueError:
        return False
