"""The `default/kubernetes` Service and its endpoints (Kubernetes' control-plane controller).

At start the API server makes sure the Service exists with the first IP of the service CIDR
and port 443 → its own port, and that its Endpoints and EndpointSlice point at the address it
advertises, so pods reach the API at `kubernetes.default.svc` through the service proxy.
The objects are written through the registry, so they are validated and allocated like any
other. (With several API servers, each rewrites the endpoints with its own address; a lease-
based reconciler that lists them all is issue 6's.)
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.apiserver import errors
from dockyard.apiserver.ranges import ServiceRanges
from dockyard.apiserver.rest import Registry

log = logging.getLogger("dockyard.kubernetesservice")

Obj = dict[str, Any]
NAME, NAMESPACE = "kubernetes", "default"
SERVICES = by_kind("", "Service")
ENDPOINTS = by_kind("", "Endpoints")
SLICES = by_kind("discovery.k8s.io", "EndpointSlice")


def advertise_address(bind_address: str, explicit: str = "") -> str:
    """utilnet.ResolveBindAddress: the explicit address, else a specific non-loopback bind
    address, else the source address of the default route (found without sending anything)."""
    if explicit:
        return explicit
    try:
        bound = ipaddress.ip_address(bind_address)
        if not (bound.is_unspecified or bound.is_loopback):
            return bind_address
    except ValueError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: a UDP connect only picks a route
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def _service(ranges: ServiceRanges, port: int, *, with_ip: bool) -> Obj:
    spec: Obj = {"type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}
    if with_ip:
        spec["clusterIP"] = ranges.kubernetes_ip
    return {"metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": spec}


def _endpoints(address: str, port: int) -> Obj:
    return {"metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": address}],
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}


def _slice(address: str, port: int) -> Obj:
    family = "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4"
    return {"metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": NAME}},
            "addressType": family,
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


async def _create_or_update(registry: Registry, info: Any, desired: Obj,
                            fields: tuple[str, ...]) -> None:
    """Create `desired`, or set its `fields` (and labels) on the existing object."""
    try:
        await registry.create(info, NAMESPACE, desired)
        return
    except errors.APIError as exc:
        if exc.code != 409:
            raise

    def update(current: Obj) -> Obj:
        current["metadata"].setdefault("labels", {}).update(desired["metadata"]["labels"])
        for field in fields:
            current[field] = desired[field]
        return current

    await registry.guaranteed_update(info, NAMESPACE, NAME, update)


async def ensure_kubernetes_service(registry: Registry, ranges: ServiceRanges, *,
                                    address: str, port: int) -> None:
    assert SERVICES is not None and ENDPOINTS is not None and SLICES is not None
    try:
        await registry.create(SERVICES, NAMESPACE, _service(ranges, port, with_ip=True))
    except errors.APIError as exc:
        if exc.code == 422:  # the first IP is someone else's: take any, as a last resort
            log.error("cannot give the kubernetes service %s: %s", ranges.kubernetes_ip,
                      exc.message)
            await _create_or_update(registry, SERVICES, _service(ranges, port, with_ip=False),
                                    ())
        elif exc.code != 409:
            raise
    desired_ports = _service(ranges, port, with_ip=False)["spec"]["ports"]

    def set_ports(current: Obj) -> Obj:
        current.setdefault("spec", {})["ports"] = desired_ports
        return current

    await registry.guaranteed_update(SERVICES, NAMESPACE, NAME, set_ports)
    try:
        await _create_or_update(registry, ENDPOINTS, _endpoints(address, port), ("subsets",))
        await _create_or_update(registry, SLICES, _slice(address, port),
                                ("addressType", "endpoints", "ports"))
    except errors.APIError as exc:  # e.g. a loopback address, which endpoints may not hold
        log.warning("kubernetes service endpoints not written for %s: %s", address,
                    exc.message)
