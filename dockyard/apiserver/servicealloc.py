"""ClusterIPs and node ports of Services: the registry's hooks (Kubernetes' service alloc.go).

Create: an unset clusterIP gets a free IP of the service CIDR; a requested one must be in the
range and free; headless (`None`) and ExternalName services get none. NodePort and LoadBalancer
services get one node port per port (ports with the same number share one) and, with
`externalTrafficPolicy: Local`, a health-check port. Update: what the new object holds and the
old did not is taken before the write; what the old held and the new does not is released after
it. Delete: everything is released once the Service is gone. Values live in the store
(`ranges.Pool`), so this object keeps no state. Errors carry Kubernetes' messages.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from dockyard.api import service as svcapi
from dockyard.api.fielderrors import FieldError, go_strings, invalid
from dockyard.api.meta import as_dict, as_int, as_list, as_str, parse_ip
from dockyard.api.resources import by_kind
from dockyard.apiserver import errors
from dockyard.apiserver.ranges import Allocated, Full, NotInRange, Owner, Pool, ServiceRanges
from dockyard.apiserver.storagehooks import Transaction
from dockyard.store.interface import KeyValue, Store

Obj = dict[str, Any]

SERVICES = by_kind("", "Service")
_NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


def _spec(svc: Obj | None) -> Obj:
    return as_dict((svc or {}).get("spec"))


def ip_value(text: str) -> int | None:
    parsed = parse_ip(text)
    return int(parsed) if parsed is not None and parsed.version == 4 else None


def needs_health_check(spec: Obj) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def held_ips(svc: Obj | None) -> list[str]:
    """The cluster IPs a stored Service holds."""
    spec = _spec(svc)
    if spec.get("type") == "ExternalName":
        return []
    return [as_str(ip) for ip in as_list(spec.get("clusterIPs")) if ip and ip != "None"]


def held_node_ports(svc: Obj | None) -> set[int]:
    """The node ports (and health-check port) a stored Service holds."""
    spec = _spec(svc)
    out: set[int] = set()
    if spec.get("type") in _NODE_PORT_TYPES:
        out = {as_int(as_dict(p).get("nodePort")) or 0 for p in as_list(spec.get("ports"))}
    if needs_health_check(spec):
        out.add(as_int(spec.get("healthCheckNodePort")) or 0)
    out.discard(0)
    return out


def _internal(message: str) -> errors.APIError:
    return errors.APIError(500, "InternalError", f"Internal error occurred: {message}",
                           {"causes": [{"message": message}]})


def _invalid(svc: Obj, problems: list[FieldError]) -> errors.APIError:
    assert SERVICES is not None
    return errors.invalid(SERVICES, as_str(as_dict(svc.get("metadata")).get("name")), problems)


class _Allocation:
    """The values one request took (undone by `revert`) and those to free on `commit`."""

    def __init__(self, store: Store, owner: Owner, dry_run: bool) -> None:
        self.store, self.owner, self.dry_run = store, owner, dry_run
        self.taken: list[KeyValue] = []
        self.to_release: list[tuple[Pool, int]] = []

    async def take(self, pool: Pool, value: int) -> None:
        if self.dry_run:
            await pool.check(self.store, value)
        else:
            self.taken.append(await pool.take(self.store, value, self.owner))

    async def take_next(self, pool: Pool) -> int:
        if self.dry_run:
            return await pool.peek_next(self.store)
        value, kv = await pool.take_next(self.store, self.owner)
        self.taken.append(kv)
        return value

    async def commit(self) -> None:
        if not self.dry_run:
            for pool, value in self.to_release:
                await pool.give_back(self.store, value, self.owner.uid)
        self.to_release.clear()

    async def revert(self) -> None:
        if not self.dry_run:
            for kv in self.taken:
                await Pool.drop(self.store, kv)
        self.taken.clear()


class ServiceAllocator:
    """`KindHooks` for core/v1 Services."""

    def __init__(self, store: Store, ranges: ServiceRanges | None = None) -> None:
        self.store = store
        self.ranges = ranges or ServiceRanges.parse()

    async def begin_create(self, obj: Obj, *, dry_run: bool) -> Transaction:
        return await self._allocate(obj, None, dry_run)

    async def begin_update(self, new: Obj, old: Obj, *, dry_run: bool) -> Transaction:
        svcapi.prepare_update(new, old)  # keep what the client left out, as the registry does
        return await self._allocate(new, old, dry_run)

    async def after_delete(self, obj: Obj) -> None:
        uid = as_str(as_dict(obj.get("metadata")).get("uid"))
        for ip in held_ips(obj):
            value = ip_value(ip)
            if value is not None:
                await self.ranges.ips.give_back(self.store, value, uid)
        for port in held_node_ports(obj):
            await self.ranges.node_ports.give_back(self.store, port, uid)

    # -- the steps -------------------------------------------------------------------------

    async def _allocate(self, new: Obj, old: Obj | None, dry_run: bool) -> _Allocation:
        meta = as_dict(new.get("metadata"))
        uid = as_str(as_dict((old or new).get("metadata")).get("uid"))
        owner = Owner(as_str(meta.get("namespace")), as_str(meta.get("name")), uid)
        txn = _Allocation(self.store, owner, dry_run)
        problems = self._family_errors(_spec(new))
        if problems:
            raise _invalid(new, problems)
        try:
            await self._cluster_ips(new, old, txn)
            await self._node_ports(new, old, txn)
        except BaseException:
            await txn.revert()
            raise
        return txn

    def _family_errors(self, spec: Obj) -> list[FieldError]:
        """initIPFamilyFields' refusals on a single-stack IPv4 cluster."""
        if spec.get("type") == "ExternalName":
            return []
        if svcapi.is_headless(spec) and not spec.get("selector"):
            return []  # selector-less headless services may name any family
        problems = []
        if spec.get("ipFamilyPolicy") == "RequireDualStack":
            problems.append(invalid("spec.ipFamilyPolicy", "RequireDualStack",
                                    "this cluster is not configured for dual-stack services"))
        for i, family in enumerate(as_list(spec.get("ipFamilies"))):
            if family != "IPv4":
                problems.append(invalid(f"spec.ipFamilies[{i}]", family,
                                        "not configured on this cluster"))
        return problems

    async def _cluster_ips(self, new: Obj, old: Obj | None, txn: _Allocation) -> None:
        spec, pool = _spec(new), self.ranges.ips
        old_values = {ip_value(ip) for ip in held_ips(old)}
        if spec.get("type") != "ExternalName" and not svcapi.is_headless(spec):
            ips = [as_str(ip) for ip in as_list(spec.get("clusterIPs"))]
            if not ips:
                try:
                    ip = pool.show(await txn.take_next(pool))
                except Full as exc:
                    raise _internal(f"failed to allocate a serviceIP: {exc}") from None
                spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
            for ip in ips:
                value = ip_value(ip)
                if value in old_values:
                    continue
                try:
                    if value is None:
                        raise NotInRange(ip)
                    await txn.take(pool, value)
                except NotInRange:
                    reason = (f"the provided IP ({ip}) is not in the valid range. The range of "
                              f"valid IPs is {pool.describe}")
                except Allocated:
                    reason = "provided IP is already allocated"
                else:
                    continue
                raise _invalid(new, [invalid("spec.clusterIPs", go_strings(ips),
                                             f"failed to allocate IP {ip}: {reason}")])
        kept = {ip_value(ip) for ip in held_ips(new)}
        txn.to_release += [(pool, v) for v in old_values - kept if v is not None]

    async def _node_ports(self, new: Obj, old: Obj | None, txn: _Allocation) -> None:
        spec, pool = _spec(new), self.ranges.node_ports
        old_held = held_node_ports(old)
        taken: set[int] = set()
        if spec.get("type") in _NODE_PORT_TYPES:
            ports = [as_dict(p) for p in as_list(spec.get("ports"))]
            by_port: dict[int, int] = {}  # service port -> node port (TCP and UDP 53 share one)
            for i, port in enumerate(ports):
                wanted = as_int(port.get("nodePort")) or 0
                if not wanted:
                    continue
                if wanted not in old_held and wanted not in taken:
                    await self._take_port(new, txn, wanted, f"spec.ports[{i}].nodePort")
                    taken.add(wanted)
                by_port.setdefault(as_int(port.get("port")) or 0, wanted)
            allocate = not (spec.get("type") == "LoadBalancer"
                            and spec.get("allocateLoadBalancerNodePorts") is False)
            for port in ports:
                if as_int(port.get("nodePort")) or not allocate:
                    continue
                number = as_int(port.get("port")) or 0
                if number not in by_port:
                    try:
                        by_port[number] = await txn.take_next(pool)
                    except Full as exc:
                        raise _internal(f"failed to allocate a nodePort: {exc}") from None
                    taken.add(by_port[number])
                port["nodePort"] = by_port[number]
        if needs_health_check(spec):
            await self._health_check_port(spec, old_held, taken, txn)
        txn.to_release += [(pool, v) for v in old_held - held_node_ports(new)]

    async def _take_port(self, svc: Obj, txn: _Allocation, value: int, path: str) -> None:
        reason = await _take_requested_port(txn, self.ranges.node_ports, value)
        if reason:
            raise _invalid(svc, [invalid(path, value, reason)])

    async def _health_check_port(self, spec: Obj, old_held: set[int], taken: set[int],
                                 txn: _Allocation) -> None:
        pool = self.ranges.node_ports
        wanted = as_int(spec.get("healthCheckNodePort")) or 0
        if not wanted:
            try:
                spec["healthCheckNodePort"] = await txn.take_next(pool)
            except Full as exc:
                raise _internal(f"failed to allocate a HealthCheck NodePort 0: {exc}") from None
            return
        if wanted in old_held:
            return
        reason = await _take_requested_port(txn, pool, wanted, taken)
        if reason:
            raise _internal(
                f"failed to allocate requested HealthCheck NodePort {wanted}: {reason}")


async def _take_requested_port(txn: _Allocation, pool: Pool, value: int,
                               taken: Collection[int] = ()) -> str:
    """Take a node port a user asked for; "" when taken, else Kubernetes' reason why not."""
    try:
        if value in taken:
            raise Allocated(value)
        await txn.take(pool, value)
    except NotInRange:
        return ("provided port is not in the valid range. The range of valid ports is "
                f"{pool.describe}")
    except Allocated:
        return "provided port is already allocated"
    return ""
