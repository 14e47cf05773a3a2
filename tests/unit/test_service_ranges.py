"""Service IP / node-port ranges and their repair, on a real SQLite store in a temp dir."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.api.resources import by_kind
from dockyard.apiserver import errors
from dockyard.apiserver.ranges import (
    IP_PREFIX,
    NODE_PORT_PREFIX,
    Allocated,
    Full,
    NotInRange,
    Owner,
    ServiceRanges,
    ip_pool,
    node_port_pool,
)
from dockyard.apiserver.rest import Registry
from dockyard.apiserver.servicealloc import ServiceAllocator
from dockyard.apiserver.servicerepair import repair_once
from dockyard.store.sqlite import SQLiteStore

SERVICES = by_kind("", "Service")
NAMESPACES = by_kind("", "Namespace")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "state.db")
    await s.start()
    yield s
    await s.close()


def test_parse_ranges_and_static_bands() -> None:
    pool = ip_pool("10.43.0.0/16")
    assert pool.show(pool.first) == "10.43.0.1" and pool.show(pool.last) == "10.43.255.254"
    assert pool.static_band == 256 and pool.describe == "10.43.0.0/16"
    assert ip_pool("10.96.0.0/28").static_band == 0
    ports = node_port_pool("30000-32767")
    assert (ports.first, ports.last, ports.static_band) == (30000, 32767, 86)
    assert (node_port_pool("20000+10").first, node_port_pool("20000+10").last) == (20000, 20010)
    assert ServiceRanges.parse("10.0.0.0/24", "30000").kubernetes_ip == "10.0.0.1"
    for bad, why in (("10.0.0.0/8", "too large"), ("fd00::/112", "only IPv4"),
                     ("10.0.0.0/31", "too small"), ("nope", "invalid service CIDR")):
        with pytest.raises(ValueError, match=why):
            ip_pool(bad)
    for bad in ("x-y", "40000-30000", "0-10", "65000-70000"):
        with pytest.raises(ValueError, match="service-node-port-range"):
            node_port_pool(bad)


async def test_concurrent_takes_are_distinct_and_a_full_range_says_so(
        store: SQLiteStore) -> None:
    pool = ip_pool("10.1.0.0/26")  # 62 usable addresses
    owner = Owner("default", "x", "u1")
    taken = await asyncio.gather(*(pool.take_next(store, owner) for _ in range(62)))
    values = [v for v, _ in taken]
    assert len(set(values)) == 62 and all(v in pool for v in values)
    with pytest.raises(Full):
        await pool.take_next(store, owner)
    with pytest.raises(Allocated):
        await pool.take(store, values[0], owner)
    with pytest.raises(NotInRange):
        await pool.take(store, pool.last + 1, owner)
    assert await pool.give_back(store, values[0], "someone-else") is False
    assert await pool.give_back(store, values[0], "u1") is True
    assert (await pool.take_next(store, owner))[0] == values[0]


async def test_dynamic_allocations_avoid_the_static_band(store: SQLiteStore) -> None:
    pool = ip_pool("10.43.0.0/16")
    owner = Owner("default", "x", "u")
    for _ in range(50):
        value, _kv = await pool.take_next(store, owner)
        assert value >= pool.first + pool.static_band


async def _registry(store: SQLiteStore, ranges: ServiceRanges) -> Registry:
    registry = Registry(store, hooks={("", "Service"): ServiceAllocator(store, ranges)})
    assert NAMESPACES is not None
    await registry.create(NAMESPACES, None, {"metadata": {"name": "default"}})
    return registry


def _svc(name: str, **spec: object) -> dict:
    return {"metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}


async def test_registry_allocates_and_releases(store: SQLiteStore) -> None:
    ranges = ServiceRanges.parse("10.43.0.0/16", "30000-30009")
    registry = await _registry(store, ranges)
    assert SERVICES is not None
    lb = await registry.create(SERVICES, "default", _svc(
        "lb", type="LoadBalancer", externalTrafficPolicy="Local"))
    spec = lb["spec"]
    assert spec["ports"][0]["nodePort"] != spec["healthCheckNodePort"]
    held = {int(kv.key.rsplit("/", 1)[1]) for kv in (await store.list(NODE_PORT_PREFIX)).items}
    assert held == {spec["ports"][0]["nodePort"], spec["healthCheckNodePort"]}
    with pytest.raises(errors.APIError) as exc:
        await registry.create(SERVICES, "default", _svc(
            "hc", type="LoadBalancer", externalTrafficPolicy="Local",
            healthCheckNodePort=spec["healthCheckNodePort"]))
    assert exc.value.code == 500 and "failed to allocate requested HealthCheck NodePort" in \
        exc.value.message
    assert len((await store.list(NODE_PORT_PREFIX)).items) == 2  # the failed create took none
    # externalTrafficPolicy Local -> Cluster frees the health-check port after the write.
    updated = await registry.guaranteed_update(SERVICES, "default", "lb", lambda cur: {
        **cur, "spec": {**cur["spec"], "externalTrafficPolicy": "Cluster"}})
    assert "healthCheckNodePort" not in updated["spec"]
    assert len((await store.list(NODE_PORT_PREFIX)).items) == 1
    from dockyard.apiserver.rest import DeleteOptions

    await registry.delete(SERVICES, "default", "lb", DeleteOptions())
    assert (await store.list(NODE_PORT_PREFIX)).items == []
    assert (await store.list(IP_PREFIX)).items == []


async def test_dual_stack_and_ipv6_are_refused(store: SQLiteStore) -> None:
    registry = await _registry(store, ServiceRanges.parse())
    assert SERVICES is not None
    with pytest.raises(errors.APIError) as exc:
        await registry.create(SERVICES, "default", _svc("d", ipFamilyPolicy="RequireDualStack"))
    assert exc.value.message == (
        'Service "d" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this '
        "cluster is not configured for dual-stack services")
    with pytest.raises(errors.APIError) as exc:
        await registry.create(SERVICES, "default", _svc("v6", ipFamilies=["IPv6"]))
    assert 'spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster' in \
        exc.value.message
    assert (await store.list(IP_PREFIX)).items == []


async def test_repair_frees_old_leaks_keeps_young_ones_and_restores_missing(
        store: SQLiteStore) -> None:
    ranges = ServiceRanges.parse()
    registry = await _registry(store, ranges)
    assert SERVICES is not None
    kept = await registry.create(SERVICES, "default", _svc("kept", type="NodePort"))
    ip, port = kept["spec"]["clusterIP"], kept["spec"]["ports"][0]["nodePort"]
    old = Owner("default", "ghost", "gone", time.time() - 3600)
    young = Owner("default", "coming", "soon", time.time())
    await store.create(f"{IP_PREFIX}10.43.200.1", old.encode())
    await store.create(f"{IP_PREFIX}10.43.200.2", young.encode())
    await store.create(f"{NODE_PORT_PREFIX}31999", old.encode())
    # A record lost (say, from data written before allocation existed) is restored.
    lost = await store.get(f"{IP_PREFIX}{ip}")
    assert lost is not None
    await store.delete(lost.key)
    report = await repair_once(store, ranges, grace=60)
    assert (report.freed, report.restored, report.duplicates) == (2, 1, 0)
    ips = {kv.key.rsplit("/", 1)[1] for kv in (await store.list(IP_PREFIX)).items}
    assert ips == {ip, "10.43.200.2"}
    ports = {kv.key.rsplit("/", 1)[1] for kv in (await store.list(NODE_PORT_PREFIX)).items}
    assert ports == {str(port)}
    restored = await store.get(f"{IP_PREFIX}{ip}")
    assert restored is not None and Owner.decode(restored.value).uid == kept["metadata"]["uid"]
