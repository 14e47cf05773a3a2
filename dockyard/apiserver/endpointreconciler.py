"""The `kubernetes` Service's endpoints with several API servers (Kubernetes' lease reconciler).

Every API server holds a Lease `kube-system/apiserver-<id>` (labelled as Kubernetes labels its
API server identity leases), renewed every `renew_every` seconds, that carries the address
and port the server advertises. After each renewal the server lists those Leases and writes
the `default/kubernetes` Endpoints and EndpointSlices to hold exactly the servers whose Lease
is live, so a crashed server drops out once its Lease expires and a new one appears at its
first renewal; every server computes the same answer, and an unchanged answer writes nothing.
A server that stops cleanly deletes its Lease and removes itself at once.

`<id>` is random, kept in `DATA_DIR/apiserver-id`: stable across restarts (a server that comes
back on another port replaces its own entry) and distinct for servers sharing a host.
Addresses that endpoints may not hold (loopback, link-local) keep their Lease but are left
out. Servers on different ports get one Endpoints subset and one EndpointSlice per port
(`kubernetes`, then `kubernetes-<port>`). Liveness compares a Lease's renewTime with this
server's clock, as leader election does, so the servers' clocks must agree (NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dockyard.api.meta import non_special_ip_errors
from dockyard.api.resources import by_kind
from dockyard.apiserver import errors
from dockyard.apiserver.kubernetesservice import create_or_update
from dockyard.apiserver.rest import DeleteOptions, Registry
from dockyard.client.leaderelection import micro_time, parse_micro_time

log = logging.getLogger("dockyard.endpointreconciler")

Obj = dict[str, Any]
LEASES = by_kind("coordination.k8s.io", "Lease")
ENDPOINTS = by_kind("", "Endpoints")
SLICES = by_kind("discovery.k8s.io", "EndpointSlice")
LEASE_NAMESPACE = "kube-system"
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
IDENTITY_VALUE = "kube-apiserver"
ADDRESS_ANNOTATION = "dockyard.io/advertise-address"
PORT_ANNOTATION = "dockyard.io/advertise-port"
SERVICE, SERVICE_NAMESPACE = "kubernetes", "default"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def server_identity(data_dir: Path) -> str:
    """This server's stable id (made on first start)."""
    path = data_dir / "apiserver-id"
    if not path.exists():
        path.write_text(secrets.token_hex(5))
    return path.read_text().strip()


@dataclass(frozen=True, order=True)
class ApiEndpoint:
    address: str
    port: int

    @property
    def family(self) -> str:
        return "IPv6" if ipaddress.ip_address(self.address).version == 6 else "IPv4"


def live_endpoints(leases: list[Obj], now: datetime) -> list[ApiEndpoint]:
    """The endpoints of the servers whose Lease has not expired at `now`, sorted."""
    out = set()
    for lease in leases:
        spec = lease.get("spec") or {}
        renewed = parse_micro_time(spec.get("renewTime"))
        duration = timedelta(seconds=spec.get("leaseDurationSeconds") or 0)
        if renewed is None or renewed + duration <= now:
            continue
        notes = lease["metadata"].get("annotations") or {}
        try:
            endpoint = ApiEndpoint(notes[ADDRESS_ANNOTATION], int(notes[PORT_ANNOTATION]))
        except (KeyError, ValueError):
            continue
        if not non_special_ip_errors(endpoint.address, "ip"):
            out.add(endpoint)
    return sorted(out)


def _ports(port: int) -> list[Obj]:
    return [{"name": "https", "port": port, "protocol": "TCP"}]


def desired_subsets(endpoints: list[ApiEndpoint]) -> list[Obj]:
    """One subset per port (Kubernetes' repacked form), addresses sorted."""
    by_port: dict[int, list[str]] = {}
    for endpoint in endpoints:
        by_port.setdefault(endpoint.port, []).append(endpoint.address)
    return [{"addresses": [{"ip": ip} for ip in sorted(addresses)], "ports": _ports(port)}
            for port, addresses in sorted(by_port.items())]


def desired_slices(endpoints: list[ApiEndpoint], own_port: int) -> dict[str, Obj]:
    """Slice name → body: one per (family, port); the first is `kubernetes`. With no live
    endpoint, an empty `kubernetes` slice (the Service has no backends)."""
    groups: dict[tuple[str, int], list[str]] = {}
    for endpoint in endpoints:
        groups.setdefault((endpoint.family, endpoint.port), []).append(endpoint.address)
    if not groups:
        groups[("IPv4", own_port)] = []
    out: dict[str, Obj] = {}
    for index, ((family, port), addresses) in enumerate(sorted(groups.items())):
        name = SERVICE if index == 0 else (
            f"{SERVICE}-{port}" if family == "IPv4" else f"{SERVICE}-ipv6-{port}")
        out[name] = {
            "metadata": {"name": name, "namespace": SERVICE_NAMESPACE,
                         "labels": {SERVICE_NAME_LABEL: SERVICE}},
            "addressType": family,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}
                          for ip in sorted(addresses)],
            "ports": _ports(port),
        }
    return out


class LeaseEndpointReconciler:
    """This server's Lease, and the `kubernetes` endpoints from every server's Lease."""

    def __init__(self, registry: Registry, *, identity: str, address: str, port: int,
                 lease_seconds: int = 15, renew_every: float = 5.0) -> None:
        assert LEASES is not None and ENDPOINTS is not None and SLICES is not None
        self.registry = registry
        self.name = f"apiserver-{identity}"
        self.endpoint = ApiEndpoint(address, port)
        self.lease_seconds = lease_seconds
        self.renew_every = renew_every
        self._task: asyncio.Task[None] | None = None
        if non_special_ip_errors(address, "ip"):
            log.warning("the kubernetes service will not list this server: %s cannot be an "
                        "endpoint (pass --advertise-address)", address)

    async def start(self) -> None:
        """The first renewal and reconcile (before serving), then keep going in the
        background."""
        await self.sync_once()
        self._task = asyncio.create_task(self._run(), name="kubernetes-endpoints")

    async def stop(self, timeout: float = 3.0) -> None:
        """Leave: delete this server's Lease and write the endpoints without it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.wait_for(self._leave(), timeout)
        except Exception as exc:  # noqa: BLE001 - the Lease expires by itself anyway
            log.warning("could not remove this server from the kubernetes endpoints: %s", exc)

    async def _leave(self) -> None:
        assert LEASES is not None
        with contextlib.suppress(errors.APIError):
            await self.registry.delete(LEASES, LEASE_NAMESPACE, self.name, DeleteOptions())
        await self.reconcile()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store may be failing over
                log.warning("kubernetes endpoints: %s", exc)

    async def sync_once(self) -> None:
        await self.renew()
        await self.reconcile()

    async def renew(self) -> None:
        assert LEASES is not None
        now = micro_time(datetime.now(UTC))
        notes = {ADDRESS_ANNOTATION: self.endpoint.address,
                 PORT_ANNOTATION: str(self.endpoint.port)}
        holder = (f"[{self.endpoint.address}]" if ":" in self.endpoint.address
                  else self.endpoint.address) + f":{self.endpoint.port}"
        spec = {"holderIdentity": holder, "leaseDurationSeconds": self.lease_seconds,
                "renewTime": now}
        try:
            await self.registry.create(LEASES, LEASE_NAMESPACE, {
                "metadata": {"name": self.name, "labels": {IDENTITY_LABEL: IDENTITY_VALUE},
                             "annotations": notes},
                "spec": {**spec, "acquireTime": now}})
            return
        except errors.APIError as exc:
            if exc.code != 409:
                raise

        def update(lease: Obj) -> Obj:
            meta = lease["metadata"]
            meta.setdefault("labels", {})[IDENTITY_LABEL] = IDENTITY_VALUE
            meta.setdefault("annotations", {}).update(notes)
            lease.setdefault("spec", {}).update(spec)
            return lease

        await self.registry.guaranteed_update(LEASES, LEASE_NAMESPACE, self.name, update)

    async def reconcile(self) -> None:
        assert LEASES is not None and ENDPOINTS is not None and SLICES is not None
        now = datetime.now(UTC)
        leases = [lease for lease in (await self.registry.list(LEASES, LEASE_NAMESPACE)).items
                  if (lease["metadata"].get("labels") or {}).get(IDENTITY_LABEL)
                  == IDENTITY_VALUE]
        live = live_endpoints(leases, now)
        await create_or_update(self.registry, ENDPOINTS, {
            "metadata": {"name": SERVICE, "namespace": SERVICE_NAMESPACE,
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": desired_subsets(live)}, ("subsets",))
        slices = desired_slices(live, self.endpoint.port)
        for body in slices.values():
            await create_or_update(self.registry, SLICES, body,
                                   ("addressType", "endpoints", "ports"))
        existing = (await self.registry.list(SLICES, SERVICE_NAMESPACE)).items
        for eps in existing:
            meta = eps["metadata"]
            if ((meta.get("labels") or {}).get(SERVICE_NAME_LABEL) == SERVICE
                    and meta["name"].startswith(f"{SERVICE}-") and meta["name"] not in slices):
                await self._delete(SLICES, SERVICE_NAMESPACE, meta)
        for lease in leases:  # Kubernetes' identity lease GC: long-expired servers go
            spec = lease.get("spec") or {}
            renewed = parse_micro_time(spec.get("renewTime"))
            duration = timedelta(seconds=2 * (spec.get("leaseDurationSeconds") or 0))
            if renewed is not None and renewed + duration <= now:
                await self._delete(LEASES, LEASE_NAMESPACE, lease["metadata"])

    async def _delete(self, info: Any, namespace: str, meta: Obj) -> None:
        """Delete unless it changed since it was read (a renewal wins)."""
        with contextlib.suppress(errors.APIError):
            await self.registry.delete(info, namespace, meta["name"],
                                       DeleteOptions(precondition_rv=meta["resourceVersion"]))
