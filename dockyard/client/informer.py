"""Informers: a list+watch cache of one resource, with indexes and change handlers.

`run()` lists, then watches from the list's resourceVersion, resuming from the last seen one
when a watch ends and relisting (with a diff delivered to the handlers) on 410 Gone or error.
Handlers must be cheap and synchronous: they only compute keys and enqueue them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dockyard.api.resources import ResourceInfo
from dockyard.client.rest import ApiError, Client

log = logging.getLogger("dockyard.informer")

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], list[str]]


def object_key(obj: Obj) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects (client-go's key format)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else meta["name"]


def split_key(key: str) -> tuple[str | None, str]:
    ns, _, name = key.rpartition("/")
    return (ns or None), name


def by_namespace(obj: Obj) -> list[str]:
    return [(obj.get("metadata") or {}).get("namespace") or ""]


def by_node(obj: Obj) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def by_owner_uid(obj: Obj) -> list[str]:
    return [ref["uid"] for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
            if ref.get("uid")]


@dataclass
class Handlers:
    on_add: Callable[[Obj], None] | None = None
    on_update: Callable[[Obj, Obj], None] | None = None
    on_delete: Callable[[Obj], None] | None = None


@dataclass
class Informer:
    client: Client
    info: ResourceInfo
    namespace: str | None = None
    label_selector: str = ""
    field_selector: str = ""
    indexers: dict[str, IndexFunc] = field(default_factory=dict)
    watch_timeout: int = 300

    def __post_init__(self) -> None:
        self._items: dict[str, Obj] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {n: {} for n in self.indexers}
        self._handlers: list[Handlers] = []
        self._synced = asyncio.Event()
        self.resource_version = ""

    # -- reading the cache -----------------------------------------------------------------

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def list(self) -> list[Obj]:
        return list(self._items.values())

    def keys(self) -> list[str]:
        return list(self._items)

    def by_index(self, index: str, value: str) -> list[Obj]:
        return [self._items[k] for k in self._indexes[index].get(value, ())]

    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def add_handlers(self, handlers: Handlers) -> None:
        self._handlers.append(handlers)
        for obj in self._items.values():  # late subscribers see the current state as adds
            if handlers.on_add:
                handlers.on_add(obj)

    # -- keeping it current ----------------------------------------------------------------

    async def run(self) -> None:
        """List and watch until cancelled."""
        delay = 0.1
        while True:
            try:
                await self._list()
                delay = 0.1
                while await self._watch():
                    pass
            except asyncio.CancelledError:
                raise
            except (ApiError, OSError, Exception) as exc:  # noqa: BLE001 - keep watching
                log.info("informer %s: %s; relisting in %.1fs", self.info.plural, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _list(self) -> None:
        items: dict[str, Obj] = {}
        token = ""
        while True:
            page = await self.client.list(self.info, self.namespace,
                                          label_selector=self.label_selector,
                                          field_selector=self.field_selector, limit=500,
                                          continue_token=token)
            for obj in page.get("items") or []:
                obj.setdefault("kind", self.info.kind)
                obj.setdefault("apiVersion", self.info.api_version)
                items[object_key(obj)] = obj
            token = (page.get("metadata") or {}).get("continue", "")
            if not token:
                break
        self.resource_version = page["metadata"]["resourceVersion"]
        old = self._items
        for key in list(old):
            if key not in items:
                self._remove(key)
        for key, obj in items.items():
            self._store(key, obj)
        self._synced.set()

    async def _watch(self) -> bool:
        """One watch request; True to resume from the last revision, False to relist."""
        async for kind, obj in self.client.watch(
            self.info, self.namespace, resource_version=self.resource_version,
            label_selector=self.label_selector, field_selector=self.field_selector,
            timeout_seconds=self.watch_timeout,
        ):
            if kind == "ERROR":
                return False  # 410 Gone (or another error): relist
            self.resource_version = obj["metadata"]["resourceVersion"]
            if kind == "BOOKMARK":
                continue
            key = object_key(obj)
            if kind == "DELETED":
                self._remove(key, obj)
            else:
                self._store(key, obj)
        return True

    def _store(self, key: str, obj: Obj) -> None:
        old = self._items.get(key)
        if old is not None and old["metadata"].get("resourceVersion") == \
                obj["metadata"].get("resourceVersion"):
            return
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name, func in self.indexers.items():
            for value in func(obj):
                self._indexes[name].setdefault(value, set()).add(key)
        for h in self._handlers:
            if old is None and h.on_add:
                h.on_add(obj)
            elif old is not None and h.on_update:
                h.on_update(old, obj)

    def _remove(self, key: str, final: Obj | None = None) -> None:
        old = self._items.pop(key, None)
        if old is None:
            return
        self._unindex(key, old)
        for h in self._handlers:
            if h.on_delete:
                h.on_delete(final or old)

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, func in self.indexers.items():
            for value in func(obj):
                bucket = self._indexes[name].get(value)
                if bucket:
                    bucket.discard(key)
                    if not bucket:
                        del self._indexes[name][value]
