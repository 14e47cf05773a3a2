"""The garbage collector: deletes dependents whose owners are gone, and runs the `orphan` and
`foregroundDeletion` finalizers (Kubernetes' pkg/controller/garbagecollector).

The ownership graph is the informers of every resource, each indexed by owner uid. Keys are
`resource:ns/name`; `sync` of a dependent classifies its owners (solid, dangling, waiting for
foreground deletion; an owner missing from the cache is confirmed by a live GET) and deletes
or unlinks it; `sync` of an owner being deleted orphans or waits for its dependents, then
removes its finalizer with a compare-and-swap patch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from dockyard.api.resources import RESOURCES, ResourceInfo, by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer, by_owner_uid, object_key
from dockyard.client.rest import ApiError, Client, is_conflict, is_not_found

log = logging.getLogger("dockyard.garbagecollector")

Obj = dict[str, Any]

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
OWNER_INDEX = "by_owner_uid"
_CONFLICT_RETRIES = 5

# Events are never owners nor dependents; leader-election Leases churn but carry no owners,
# and the update filter below makes them cheap, so Leases stay (node Leases are owned by Nodes).
_SKIPPED_KINDS = {("", "Event")}


class OwnerState(Enum):
    """How one ownerReference resolves (the classes of k8s' classifyReferences)."""

    SOLID = "solid"  # the owner exists and is not waiting for its dependents
    DANGLING = "dangling"  # no object with that uid exists
    WAITING = "waiting"  # the owner is being deleted in the foreground
    INVALID = "invalid"  # a cluster-scoped dependent names a namespaced owner
    UNKNOWN = "unknown"  # the owner's kind is not served: nothing can be concluded


@dataclass(frozen=True)
class Action:
    """The one step `plan` decides for a dependent."""

    verb: str  # "none" | "unlink" | "delete"
    policy: str = ""  # for "delete": Background | Foreground | Orphan
    uids: tuple[str, ...] = ()  # for "unlink": the owner uids to drop
    unblock: bool = False  # for "delete": first clear blockOwnerDeletion (cycle breaking)


def resource_id(info: ResourceInfo) -> str:
    """`pods`, `deployments.apps`: the group-qualified resource, as kubectl spells it."""
    return f"{info.plural}.{info.group}" if info.group else info.plural


def owner_info(ref: Obj) -> ResourceInfo | None:
    """The served resource an ownerReference points at (by API group and kind)."""
    group = str(ref.get("apiVersion") or "").rpartition("/")[0]
    return by_kind(group, str(ref.get("kind") or ""))


def owner_refs(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def finalizers(obj: Obj) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or [])


def is_deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def is_deleting_dependents(obj: Obj) -> bool:
    return is_deleting(obj) and FOREGROUND in finalizers(obj)


def blocks(dependent: Obj, owner_uid: str) -> bool:
    """Whether `dependent` holds back the foreground deletion of the owner `owner_uid`."""
    return any(ref.get("uid") == owner_uid and ref.get("blockOwnerDeletion")
               for ref in owner_refs(dependent))


def plan(refs: list[Obj], states: dict[str, OwnerState], *, has_dependents: bool,
         dependent_deleting_dependents: bool, existing_finalizers: Iterable[str]) -> Action:
    """Decide what to do with a dependent whose owners resolved to `states` (by uid).

    Kubernetes' attemptToDeleteItem: with a solid owner, only drop dangling and waiting
    references; with an owner waiting in the foreground, delete in the foreground if the
    dependent has dependents of its own; otherwise delete, honouring a finalizer already set.
    """
    by_state: dict[OwnerState, list[str]] = {s: [] for s in OwnerState}
    for ref in refs:
        by_state[states.get(ref.get("uid", ""), OwnerState.UNKNOWN)].append(ref.get("uid", ""))
    if by_state[OwnerState.INVALID] or by_state[OwnerState.UNKNOWN]:
        return Action("none")  # never delete on a reference that cannot be resolved
    if by_state[OwnerState.SOLID]:
        drop = tuple(by_state[OwnerState.DANGLING] + by_state[OwnerState.WAITING])
        return Action("unlink", uids=drop) if drop else Action("none")
    if by_state[OwnerState.WAITING] and has_dependents:
        return Action("delete", "Foreground", unblock=dependent_deleting_dependents)
    present = set(existing_finalizers)
    if ORPHAN in present:
        return Action("delete", "Orphan")
    if FOREGROUND in present:
        return Action("delete", "Foreground")
    return Action("delete", "Background")


class GarbageCollector(Controller):
    """Cascading deletion for every served resource that can have owners or dependents."""

    name = "garbagecollector"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 resources: Iterable[ResourceInfo] | None = None, workers: int = 8,
                 absent_cache_size: int = 4096) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.workers = workers
        self._absent: OrderedDict[str, None] = OrderedDict()  # uids verified gone (LRU)
        self._absent_size = absent_cache_size
        chosen = list(resources) if resources is not None else [
            r for r in RESOURCES if (r.group, r.kind) not in _SKIPPED_KINDS]
        self._infos: dict[str, ResourceInfo] = {}
        self._informers: dict[str, Informer] = {}
        for info in chosen:
            rid = resource_id(info)
            informer = factory.informer(info, indexers={OWNER_INDEX: by_owner_uid})
            self._infos[rid] = info
            self._informers[rid] = informer
            informer.add_handlers(self._handlers(rid))

    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    # -- event handlers: they only enqueue -------------------------------------------------

    def _handlers(self, rid: str) -> Handlers:
        def on_add(obj: Obj) -> None:
            if owner_refs(obj) or is_deleting(obj):
                self.queue.add(f"{rid}:{object_key(obj)}")

        def on_update(old: Obj, new: Obj) -> None:
            if old["metadata"].get("uid") != new["metadata"].get("uid"):
                on_delete(old)  # deleted and recreated while the watch was down
                on_add(new)
                return
            refs_changed = owner_refs(old) != owner_refs(new)
            deletion_changed = (is_deleting(old), finalizers(old)) != \
                (is_deleting(new), finalizers(new))
            if refs_changed or deletion_changed:
                self.queue.add(f"{rid}:{object_key(new)}")
            if refs_changed:  # an owner waiting for this dependent may now be free
                self._enqueue_owners(rid, old, owner_refs(old) + owner_refs(new))

        def on_delete(obj: Obj) -> None:
            self._enqueue_dependents(obj["metadata"].get("uid", ""))
            self._enqueue_owners(rid, obj, owner_refs(obj))

        return Handlers(on_add, on_update, on_delete)

    def _enqueue_dependents(self, uid: str) -> None:
        for rid, dependent in self._dependents(uid):
            self.queue.add(f"{rid}:{object_key(dependent)}")

    def _enqueue_owners(self, rid: str, dependent: Obj, refs: list[Obj]) -> None:
        for ref in refs:
            found = self._cached_owner(self._infos[rid], dependent, ref)
            if found is not None and is_deleting(found[1]):
                self.queue.add(f"{found[0]}:{object_key(found[1])}")

    # -- the graph, read from the caches -----------------------------------------------------

    def _dependents(self, uid: str) -> list[tuple[str, Obj]]:
        if not uid:
            return []
        return [(rid, obj) for rid, informer in self._informers.items()
                for obj in informer.by_index(OWNER_INDEX, uid)]

    def _cached_owner(self, dep_info: ResourceInfo, dependent: Obj,
                      ref: Obj) -> tuple[str, Obj] | None:
        """The owner `ref` names, if the cache holds an object of that name and uid."""
        info = owner_info(ref)
        if info is None:
            return None
        rid = resource_id(info)
        informer = self._informers.get(rid)
        if informer is None or (info.namespaced and not dep_info.namespaced):
            return None
        ns = dependent["metadata"].get("namespace") if info.namespaced else None
        obj = informer.get(f"{ns}/{ref.get('name')}" if ns else str(ref.get("name")))
        if obj is None or obj["metadata"].get("uid") != ref.get("uid"):
            return None
        return rid, obj

    # -- sync --------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        rid, _, okey = key.partition(":")
        informer, info = self._informers.get(rid), self._infos.get(rid)
        if informer is None or info is None:
            return
        obj = informer.get(okey)
        if obj is None:
            return  # gone: its dependents were queued by the delete handler
        if is_deleting(obj):
            # "Being deleted" is a one-way trip: only the GC finalizers are our business.
            if ORPHAN in finalizers(obj):
                await self._orphan_dependents(obj)
                await self._remove_finalizer(info, obj, ORPHAN)
            elif FOREGROUND in finalizers(obj):
                await self._process_deleting_dependents(info, obj)
            return
        if owner_refs(obj):
            await self._attempt_to_delete(info, obj)

    async def _process_deleting_dependents(self, info: ResourceInfo, owner: Obj) -> None:
        """Foreground: delete every dependent; drop the finalizer once none blocks."""
        uid = owner["metadata"]["uid"]
        blocking = False
        for rid, dependent in self._dependents(uid):
            blocking = blocking or blocks(dependent, uid)
            if not is_deleting(dependent):
                self.queue.add(f"{rid}:{object_key(dependent)}")
        if not blocking:
            await self._remove_finalizer(info, owner, FOREGROUND)

    async def _attempt_to_delete(self, info: ResourceInfo, cached: Obj) -> None:
        # Fast path: every owner is in the cache and none waits for its dependents.
        if all((found := self._cached_owner(info, cached, ref)) is not None
               and not is_deleting_dependents(found[1]) for ref in owner_refs(cached)):
            return
        ns, name = cached["metadata"].get("namespace"), cached["metadata"]["name"]
        try:
            latest = await self.client.get(info, ns, name)
        except ApiError as exc:
            if is_not_found(exc):
                return
            raise
        meta = latest["metadata"]
        if meta.get("uid") != cached["metadata"].get("uid") or meta.get("deletionTimestamp"):
            return  # another object now, or already on its way out
        refs = owner_refs(latest)
        states = {ref.get("uid", ""): await self._owner_state(info, latest, ref) for ref in refs}
        own_dependents = self._dependents(meta["uid"])
        action = plan(
            refs, states, has_dependents=bool(own_dependents),
            dependent_deleting_dependents=any(is_deleting_dependents(d)
                                              for _, d in own_dependents),
            existing_finalizers=finalizers(latest),
        )
        for ref in refs:
            if states.get(ref.get("uid", "")) is OwnerState.INVALID:
                # As k8s: reported once per attempt, never retried (it cannot resolve).
                self.recorder.event(latest, "Warning", "OwnerRefInvalidNamespace",
                                    f"ownerRef {ref} does not exist in namespace \"\"")
        if action.verb == "unlink":
            log.debug("gc: %s %s/%s drops owners %s", info.kind, ns, name, action.uids)
            await self._remove_owner_refs(info, latest, set(action.uids))
        elif action.verb == "delete":
            if action.unblock:
                await self._unblock_owner_refs(info, latest)
            log.debug("gc: deleting %s %s/%s (%s)", info.kind, ns, name, action.policy)
            await self._delete(info, latest, action.policy)

    async def _owner_state(self, dep_info: ResourceInfo, dependent: Obj,
                           ref: Obj) -> OwnerState:
        """Resolve one ownerReference; absence is always confirmed by a live GET (by name,
        comparing uid), as k8s' isDangling does, so a lagging cache never deletes."""
        uid = str(ref.get("uid") or "")
        if uid in self._absent:
            self._absent.move_to_end(uid)
            return OwnerState.DANGLING
        info = owner_info(ref)
        if info is None:
            return OwnerState.UNKNOWN
        if info.namespaced and not dep_info.namespaced:
            return OwnerState.INVALID
        found = self._cached_owner(dep_info, dependent, ref)
        if found is not None:
            owner = found[1]
        else:
            ns = dependent["metadata"].get("namespace") if info.namespaced else None
            try:
                owner = await self.client.get(info, ns, str(ref.get("name")))
            except ApiError as exc:
                if not is_not_found(exc):
                    raise
                self._remember_absent(uid)
                return OwnerState.DANGLING
            if owner["metadata"].get("uid") != uid:
                self._remember_absent(uid)
                return OwnerState.DANGLING
        return OwnerState.WAITING if is_deleting_dependents(owner) else OwnerState.SOLID

    def _remember_absent(self, uid: str) -> None:
        self._absent[uid] = None
        while len(self._absent) > self._absent_size:
            self._absent.popitem(last=False)

    # -- writes ------------------------------------------------------------------------------

    async def _delete(self, info: ResourceInfo, obj: Obj, policy: str) -> None:
        meta = obj["metadata"]
        try:
            await self.client.delete(info, meta.get("namespace"), meta["name"],
                                     propagation_policy=policy,
                                     preconditions={"uid": meta["uid"]})
        except ApiError as exc:
            if not (is_not_found(exc) or is_conflict(exc)):  # gone, or another uid now
                raise

    async def _cas_metadata(self, info: ResourceInfo, obj: Obj, field: str,
                            change: Any) -> bool:
        """Rewrite one metadata list with a merge patch carrying the resourceVersion (a
        compare-and-swap, as k8s' removeFinalizer does); re-read and retry on conflict.
        `change(latest_list) -> new_list | None` (None: nothing to do). True if written."""
        meta = obj["metadata"]
        ns, name, uid = meta.get("namespace"), meta["name"], meta["uid"]
        for _ in range(_CONFLICT_RETRIES):
            try:
                latest = await self.client.get(info, ns, name)
            except ApiError as exc:
                if is_not_found(exc):
                    return False
                raise
            if latest["metadata"].get("uid") != uid:
                return False
            wanted = change(list(latest["metadata"].get(field) or []))
            if wanted is None:
                return False
            patch = {"metadata": {"resourceVersion": latest["metadata"]["resourceVersion"],
                                  field: wanted or None}}
            try:
                await self.client.patch(info, ns, name, patch)
                return True
            except ApiError as exc:
                if is_not_found(exc):
                    return False
                if not is_conflict(exc):
                    raise
        raise RuntimeError(f"{info.kind} {ns}/{name}: {field} kept changing; retrying later")

    async def _remove_finalizer(self, info: ResourceInfo, obj: Obj, finalizer: str) -> None:
        def change(current: list[str]) -> list[str] | None:
            return [f for f in current if f != finalizer] if finalizer in current else None

        if await self._cas_metadata(info, obj, "finalizers", change):
            log.debug("gc: removed %s from %s %s", finalizer, info.kind, object_key(obj))

    async def _remove_owner_refs(self, info: ResourceInfo, obj: Obj, uids: set[str]) -> None:
        def change(current: list[Obj]) -> list[Obj] | None:
            kept = [r for r in current if r.get("uid") not in uids]
            return kept if len(kept) != len(current) else None

        await self._cas_metadata(info, obj, "ownerReferences", change)

    async def _unblock_owner_refs(self, info: ResourceInfo, obj: Obj) -> None:
        def change(current: list[Obj]) -> list[Obj] | None:
            if not any(r.get("blockOwnerDeletion") for r in current):
                return None
            return [{**r, "blockOwnerDeletion": False} for r in current]

        await self._cas_metadata(info, obj, "ownerReferences", change)

    async def _orphan_dependents(self, owner: Obj) -> None:
        """Orphan: every dependent loses its reference to `owner` (k8s' orphanDependents)."""
        uid = owner["metadata"]["uid"]
        limit = asyncio.Semaphore(16)

        async def orphan(rid: str, dependent: Obj) -> None:
            async with limit:
                await self._remove_owner_refs(self._infos[rid], dependent, {uid})

        results = await asyncio.gather(*(orphan(rid, d) for rid, d in self._dependents(uid)),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise RuntimeError(f"orphaning dependents of {object_key(owner)}: {errors[0]}")

