"""Repair of the service IP and node-port records (Kubernetes' allocator repair controllers).

Records are taken before a Service is written and freed after it is gone, so a crash in
between can only leak a value, never hand it out twice. This pass settles both directions:
a record whose Service is gone, or no longer holds the value, is freed once it is older than
`grace` (a create in flight holds its record for milliseconds before the Service exists); a
value a Service holds without a record (a lost record, data from before allocation) gets one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import orjson

from dockyard.api.resources import by_kind
from dockyard.apiserver.ranges import Owner, Pool, ServiceRanges
from dockyard.apiserver.servicealloc import held_ips, held_node_ports, ip_value
from dockyard.store.interface import KeyExists, Store

log = logging.getLogger("dockyard.servicerepair")

SERVICES = by_kind("", "Service")
REPAIR_EVERY_SECONDS = 60.0
LEAK_GRACE_SECONDS = 180.0  # Kubernetes frees a leak after 3 repair intervals


@dataclass
class RepairReport:
    freed: int = 0  # leaked records removed
    restored: int = 0  # records written for values Services held without one
    duplicates: int = 0  # values held by more than one Service (cannot be fixed here)


async def _all_services(store: Store) -> list[dict]:
    assert SERVICES is not None
    out: list[dict] = []
    after = ""
    while True:
        page = await store.list(SERVICES.key_prefix(), limit=1000, start_after=after)
        out += [orjson.loads(kv.value) for kv in page.items]
        if not page.more or not page.items:
            return out
        after = page.items[-1].key


async def _repair_pool(store: Store, pool: Pool, wanted: dict[int, list[Owner]], *,
                       grace: float, now: float, report: RepairReport) -> None:
    records = await pool.held_values(store)
    for value, kv in records.items():
        owner = Owner.decode(kv.value)
        if any(holder.uid == owner.uid for holder in wanted.get(value, [])):
            continue
        if now - owner.taken_at >= grace and await Pool.drop(store, kv):
            log.info("freed leaked %s (was %s/%s)", kv.key, owner.namespace, owner.name)
            report.freed += 1
    for value, holders in wanted.items():
        if len(holders) > 1:
            names = ", ".join(f"{h.namespace}/{h.name}" for h in holders)
            log.error("%s is held by several services: %s", pool.key(value), names)
            report.duplicates += 1
        if value in records or value not in pool:
            continue
        try:
            await store.create(pool.key(value), holders[0].encode())
        except KeyExists:
            continue
        report.restored += 1


async def repair_once(store: Store, ranges: ServiceRanges, *, grace: float = LEAK_GRACE_SECONDS,
                      now: float | None = None) -> RepairReport:
    """One pass over every Service and every record."""
    report = RepairReport()
    ips: dict[int, list[Owner]] = defaultdict(list)
    ports: dict[int, list[Owner]] = defaultdict(list)
    for svc in await _all_services(store):
        meta = svc.get("metadata") or {}
        owner = Owner(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""))
        for ip in held_ips(svc):
            value = ip_value(ip)
            if value is not None:
                ips[value].append(owner)
        for port in held_node_ports(svc):
            ports[port].append(owner)
    at = time.time() if now is None else now
    await _repair_pool(store, ranges.ips, ips, grace=grace, now=at, report=report)
    await _repair_pool(store, ranges.node_ports, ports, grace=grace, now=at, report=report)
    return report


async def repair_forever(store: Store, ranges: ServiceRanges, *,
                         interval: float = REPAIR_EVERY_SECONDS,
                         grace: float = LEAK_GRACE_SECONDS) -> None:
    """Repair at start and then every `interval` seconds, until cancelled."""
    while True:
        try:
            report = await repair_once(store, ranges, grace=grace)
            if report.freed or report.restored or report.duplicates:
                log.info("service range repair: %s", report)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed pass is retried at the next interval
            log.exception("service range repair failed")
        await asyncio.sleep(interval)
