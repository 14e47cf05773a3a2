"""The `default/kubernetes` Service (Kubernetes' control-plane controller).

At start the API server makes sure the Service exists with the first IP of the service CIDR
and port 443 → its own port, so pods reach the API at `kubernetes.default.svc` through the
service proxy. Its Endpoints and EndpointSlices list every live API server; they are kept by
`endpointreconciler.py`. The objects are written through the registry, so they are validated
and allocated like any other.
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


async def create_or_update(registry: Registry, info: Any, desired: Obj,
                           fields: tuple[str, ...]) -> None:
    """Create `desired` in `default`, or set its `fields` (and labels) on the existing object
    (a no-op when they are equal: the registry then writes nothing)."""
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

    await registry.guaranteed_update(info, NAMESPACE, desired["metadata"]["name"], update)


async def ensure_kubernetes_service(registry: Registry, ranges: ServiceRanges, *,
                                    port: int) -> None:
    assert SERVICES is not None
    try:
        await registry.create(SERVICES, NAMESPACE, _service(ranges, port, with_ip=True))
    except errors.APIError as exc:
        if exc.code == 422:  # the first IP is someone else's: take any, as a last resort
            log.error("cannot give the kubernetes service %s: %s", ranges.kubernetes_ip,
                      exc.message)
            await create_or_update(registry, SERVICES, _service(ranges, port, with_ip=False),
                                   ())
        elif exc.code != 409:
            raise
    desired_ports = _service(ranges, port, with_ip=False)["spec"]["ports"]

    def set_ports(current: Obj) -> Obj:
        current.setdefault("spec", {})["ports"] = desired_ports
        return current

    await registry.guaranteed_update(SERVICES, NAMESPACE, NAME, set_ports)
