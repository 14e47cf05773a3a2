"""Allocation ranges kept in the store: one key per allocated value, taken with create-if-absent.

Kubernetes keeps service IPs and node ports in bitmaps (RangeAllocation) or, lately, one
IPAddress object per IP. We do the latter for both: `/registry/ranges/serviceips/<ip>` and
`/registry/ranges/servicenodeports/<port>` hold the owner of each value. The store's
create-if-absent is the compare-and-swap, so two concurrent requests (in one API server or in
several) can never take the same value, and a restart loses nothing. Random choice prefers the
upper part of a range and keeps a small lower band (the "static" band) for values users ask for,
as Kubernetes does since 1.24; `kubernetes` takes the first IP.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from dockyard.store.interface import KeyExists, KeyNotFound, KeyValue, RevisionMismatch, Store

IP_PREFIX = "/registry/ranges/serviceips/"
NODE_PORT_PREFIX = "/registry/ranges/servicenodeports/"
DEFAULT_SERVICE_CIDR = "10.43.0.0/16"
DEFAULT_NODE_PORT_RANGE = "30000-32767"
_RANDOM_TRIES = 8  # before listing the range to find what is free


class NotInRange(Exception):
    """A requested value outside the range (Kubernetes' ErrNotInRange)."""


class Allocated(Exception):
    """A requested value someone else holds (ErrAllocated)."""


class Full(Exception):
    """Nothing left to hand out (ErrFull)."""

    def __init__(self) -> None:
        super().__init__("range is full")


@dataclass(frozen=True)
class Owner:
    """Who holds a value: the Service's identity, and when it was taken (for leak repair)."""

    namespace: str
    name: str
    uid: str
    taken_at: float = 0.0

    def encode(self) -> bytes:
        return orjson.dumps({"kind": "Service", "namespace": self.namespace, "name": self.name,
                             "uid": self.uid, "takenAt": self.taken_at or time.time()})

    @classmethod
    def decode(cls, raw: bytes) -> Owner:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(str(data.get("namespace", "")), str(data.get("name", "")),
                   str(data.get("uid", "")), float(data.get("takenAt") or 0.0))


def _band(size: int, lo: int, step: int, hi: int) -> int:
    """calculateRangeOffset: min(max(lo, size/step), hi), 0 for tiny ranges."""
    if size <= lo:
        return 0
    return max(lo, min(hi, size // step))


@dataclass(frozen=True)
class Pool:
    """One range of integer values (IPs as integers, or ports) and its key space."""

    prefix: str
    first: int  # inclusive
    last: int  # inclusive
    static_band: int  # the first values are handed out only when the rest is full
    describe: str  # how Kubernetes names the range in messages: "10.43.0.0/16", "30000-32767"
    show: Callable[[int], str]
    parse: Callable[[str], int | None]

    def __contains__(self, value: int) -> bool:
        return self.first <= value <= self.last

    def key(self, value: int) -> str:
        return self.prefix + self.show(value)

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def random_candidate(self) -> int:
        start = self.first + self.static_band
        if start > self.last:
            start = self.first
        return random.randint(start, self.last)

    def free_in_order(self, taken: set[int]) -> list[int]:
        """Free values: the dynamic band shuffled, then the static band shuffled."""
        split = min(self.first + self.static_band, self.last + 1)
        upper = [v for v in range(split, self.last + 1) if v not in taken]
        lower = [v for v in range(self.first, split) if v not in taken]
        random.shuffle(upper)
        random.shuffle(lower)
        return upper + lower

    # -- the store operations -------------------------------------------------------------

    async def take(self, store: Store, value: int, owner: Owner) -> KeyValue:
        if value not in self:
            raise NotInRange(value)
        try:
            return await store.create(self.key(value), owner.encode())
        except KeyExists:
            raise Allocated(value) from None

    async def take_next(self, store: Store, owner: Owner) -> tuple[int, KeyValue]:
        for _ in range(min(_RANDOM_TRIES, self.size)):
            value = self.random_candidate()
            try:
                return value, await self.take(store, value, owner)
            except Allocated:
                continue
        taken = await self.held_values(store)
        for value in self.free_in_order(set(taken)):
            try:
                return value, await self.take(store, value, owner)
            except Allocated:
                continue
        raise Full()

    async def check(self, store: Store, value: int) -> None:
        """What `take` would say, without taking (dry run)."""
        if value not in self:
            raise NotInRange(value)
        if await store.get(self.key(value)) is not None:
            raise Allocated(value)

    async def peek_next(self, store: Store) -> int:
        free = self.free_in_order(set(await self.held_values(store)))
        if not free:
            raise Full()
        return free[0]

    async def held_values(self, store: Store) -> dict[int, KeyValue]:
        """Every value with a record (inside the range or not: a range may have shrunk)."""
        out: dict[int, KeyValue] = {}
        after = ""
        while True:
            page = await store.list(self.prefix, limit=4096, start_after=after)
            for kv in page.items:
                value = self.parse(kv.key[len(self.prefix):])
                if value is not None:
                    out[value] = kv
            if not page.more or not page.items:
                return out
            after = page.items[-1].key

    async def give_back(self, store: Store, value: int, uid: str) -> bool:
        """Free `value` if `uid` still holds it; False when someone else does (or nobody)."""
        kv = await store.get(self.key(value))
        if kv is None or Owner.decode(kv.value).uid != uid:
            return False
        return await self.drop(store, kv)

    @staticmethod
    async def drop(store: Store, kv: KeyValue) -> bool:
        """Delete this exact record (not one taken again since it was read)."""
        try:
            await store.delete(kv.key, expected_revision=kv.mod_revision)
        except (KeyNotFound, RevisionMismatch):
            return False
        return True


def _parse_ip(text: str) -> int | None:
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _parse_port(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def ip_pool(cidr: str) -> Pool:
    """The service IPs of `cidr`: every address but the network and broadcast ones."""
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"invalid service CIDR {cidr!r}: {exc}") from None
    if net.version != 4:
        raise ValueError(f"service CIDR {cidr}: only IPv4 service CIDRs are supported")
    host_bits = 32 - net.prefixlen
    if host_bits > 20:  # kube-apiserver's limit
        raise ValueError(f"specified --service-cidr {net} is too large; for 32-bit addresses, "
                         "the mask must be >= 12")
    if host_bits < 2:
        raise ValueError(f"specified --service-cidr {net} is too small: it must hold at least "
                         "2 usable addresses")
    first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
    return Pool(IP_PREFIX, first, last, _band(net.num_addresses, 16, 16, 256), str(net),
                lambda v: str(ipaddress.IPv4Address(v)), _parse_ip)


def node_port_pool(text: str) -> Pool:
    """`30000-32767`, `30000+2767` or a single port, as utilnet.ParsePortRange reads them."""
    raw = text.strip()
    try:
        if "-" in raw:
            lo_s, hi_s = raw.split("-", 1)
            lo, hi = int(lo_s), int(hi_s)
        elif "+" in raw:
            lo_s, n_s = raw.split("+", 1)
            lo = int(lo_s)
            hi = lo + int(n_s)
        else:
            lo = hi = int(raw)
    except ValueError:
        raise ValueError(f"invalid --service-node-port-range {text!r}: use LOW-HIGH, e.g. "
                         f"{DEFAULT_NODE_PORT_RANGE}") from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"invalid --service-node-port-range {text!r}: ports must be in "
                         "1-65535 and LOW <= HIGH")
    size = hi - lo + 1
    return Pool(NODE_PORT_PREFIX, lo, hi, _band(size, 16, 32, 128), f"{lo}-{hi}", str,
                _parse_port)


@dataclass(frozen=True)
class ServiceRanges:
    """The cluster's service CIDR and node-port range (`--service-cidr`,
    `--service-node-port-range`)."""

    ips: Pool
    node_ports: Pool

    @classmethod
    def parse(cls, cidr: str = DEFAULT_SERVICE_CIDR,
              node_ports: str = DEFAULT_NODE_PORT_RANGE) -> ServiceRanges:
        return cls(ip_pool(cidr), node_port_pool(node_ports))

    @property
    def kubernetes_ip(self) -> str:
        """The first address: the `kubernetes` Service's, as in Kubernetes."""
        return self.ips.show(self.ips.first)
