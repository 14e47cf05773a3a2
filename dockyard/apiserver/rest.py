"""Generic REST storage: the Kubernetes semantics of create, update, delete and list on a store.

One `Registry` serves every kind (like the apiserver's generic registry): it stamps metadata,
defaults and validates through `dockyard.api.kinds`, keeps status and spec apart, runs every
read-modify-write as a compare-and-swap loop on the store, and implements graceful deletion
with finalizers. HTTP concerns (parsing, content types, tables) stay in `handlers`.
"""

from __future__ import annotations

import base64
import copy
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from dockyard.api import kinds
from dockyard.api.resources import ResourceInfo, by_kind
from dockyard.apiserver import admission, errors
from dockyard.apiserver.codec import decode, encode
from dockyard.apiserver.selectors import Matcher
from dockyard.apiserver.servicealloc import ServiceAllocator
from dockyard.apiserver.storagehooks import NOTHING, KindHooks, Transaction
from dockyard.store.interface import (
    Compacted,
    KeyExists,
    KeyNotFound,
    RevisionMismatch,
    Store,
    StoreError,
)

log = logging.getLogger("dockyard.registry")

Obj = dict[str, Any]
Transform = Callable[[Obj], Obj | Awaitable[Obj]]

NAMESPACES = by_kind("", "Namespace")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet
_MAX_RETRIES = 16
MAX_OBJECT_BYTES = 3 * 1024 * 1024
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")  # as the real apiserver


def now_rfc3339(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None  # Background | Foreground | Orphan
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


@dataclass
class ListPage:
    items: list[Obj]
    revision: int
    continue_token: str
    remaining: int | None


class Registry:
    """Object semantics over a `Store`; stateless apart from the store it wraps.

    `hooks` (by group and kind) reserve what lives beside an object, such as a Service's IPs
    and node ports; by default Services allocate from the default ranges.
    """

    def __init__(self, store: Store,
                 hooks: Mapping[tuple[str, str], KindHooks] | None = None) -> None:
        self.store = store
        self.hooks: Mapping[tuple[str, str], KindHooks] = (
            hooks if hooks is not None else {("", "Service"): ServiceAllocator(store)})

    # -- reads -----------------------------------------------------------------------------

    async def get(self, info: ResourceInfo, namespace: str | None, name: str) -> Obj:
        kv = await self.store.get(info.key(namespace, name))
        if kv is None:
            raise errors.not_found(info, name)
        return decode(kv)

    async def list(
        self,
        info: ResourceInfo,
        namespace: str | None,
        *,
        match: Matcher | None = None,
        limit: int = 0,
        continue_token: str = "",
    ) -> ListPage:
        """A page of matching objects; `limit` counts matches, as the real apiserver does."""
        prefix = info.key_prefix(namespace)
        start_after, revision = _parse_continue(continue_token, prefix)
        items: list[Obj] = []
        more = False
        while True:
            want = (limit - len(items)) if limit else 0
            # With a selector, read ahead: most keys may not match.
            chunk = max(want, 64) if (limit and match) else want
            try:
                result = await self.store.list(
                    prefix, limit=chunk, start_after=start_after, revision=revision
                )
            except Compacted as exc:
                raise errors.gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                ) from exc
            revision = result.revision
            unread = False
            for index, kv in enumerate(result.items):
                start_after = kv.key
                obj = decode(kv)
                if match is None or match(obj):
                    items.append(obj)
                    if limit and len(items) == limit:
                        unread = index < len(result.items) - 1
                        break
            if limit and len(items) == limit:
                more = unread or result.more
                break
            if not result.more:
                break
        token = _make_continue(start_after, revision) if more else ""
        return ListPage(items, revision, token, None)

    # -- create ----------------------------------------------------------------------------

    async def create(
        self, info: ResourceInfo, namespace: str | None, obj: Obj, *, dry_run: bool = False
    ) -> Obj:
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if info.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace or body_ns
            await self._require_active_namespace(meta["namespace"])
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            # Like Kubernetes: the prefix is cut so the name stays a valid 63-char label.
            meta["name"] = meta["generateName"][:58] + "".join(
                secrets.choice(_NAME_CHARS) for _ in range(5)
            )
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        for managed in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(managed, None)
        if info.has_status:
            meta["generation"] = 1
            if info.kind != "Node":  # status is the system's to write (nodes report their own)
                obj.pop("status", None)
        obj["apiVersion"], obj["kind"] = info.api_version, info.kind
        await admission.admit(self, info, obj)  # before defaulting: it sets spec.priority
        kinds.apply_defaults(info, obj)
        self._check(info, obj, kinds.validate(info, obj, None))
        key = info.key(meta.get("namespace"), meta["name"])
        hooks = self.hooks.get((info.group, info.kind))
        if hooks is not None and await self.store.get(key) is not None:
            raise errors.already_exists(info, meta["name"])  # before reserving anything
        txn = await hooks.begin_create(obj, dry_run=dry_run) if hooks else NOTHING
        if dry_run:
            await txn.revert()
            obj["metadata"]["resourceVersion"] = ""
            return obj
        try:
            kv = await self.store.create(key, self._encode(obj))
        except KeyExists as exc:
            await txn.revert()
            raise errors.already_exists(info, meta["name"]) from exc
        except errors.APIError:  # too large: nothing was written
            await txn.revert()
            raise
        await txn.commit()
        return decode(kv)

    async def _require_active_namespace(self, namespace: str | None) -> None:
        if not namespace:
            raise errors.bad_request("a namespace is required for this resource")
        assert NAMESPACES is not None
        kv = await self.store.get(NAMESPACES.key(None, namespace))
        if kv is None:
            raise errors.not_found(NAMESPACES, namespace)
        if orjson.loads(kv.value).get("metadata", {}).get("deletionTimestamp"):
            raise errors.forbidden(
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated"
            )

    # -- update and patch ------------------------------------------------------------------

    async def update(
        self,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        new: Obj,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        """PUT: replace the object (or only its status) guarded by its resourceVersion."""
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})"
            )
        if info.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        wanted_rv = str(meta.get("resourceVersion") or "")
        return await self.guaranteed_update(
            info, namespace, name, lambda old: new, precondition_rv=wanted_rv,
            subresource=subresource, dry_run=dry_run,
        )

    async def guaranteed_update(
        self,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        transform: Transform,
        *,
        precondition_rv: str = "",
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        """Read, transform, validate, compare-and-swap; retry on a race unless a precondition
        resourceVersion was given (then the race is the caller's 409)."""
        key = info.key(namespace, name)
        for _ in range(_MAX_RETRIES):
            kv = await self.store.get(key)
            if kv is None:
                raise errors.not_found(info, name)
            if precondition_rv and precondition_rv != str(kv.mod_revision):
                raise errors.conflict(info, name)
            old = decode(kv)
            result = transform(copy.deepcopy(old))
            if isinstance(result, Awaitable):
                result = await result
            merged = self._merge_update(info, old, result, subresource)
            if subresource == "status":
                self._check(info, merged, kinds.validate_status(info, merged, old))
            elif subresource != "bind":
                self._check(info, merged, kinds.validate(info, merged, old))
            hooks = self.hooks.get((info.group, info.kind)) if not subresource else None
            txn: Transaction = NOTHING
            if hooks is not None:
                txn = await hooks.begin_update(merged, old, dry_run=dry_run)
            if merged == old or dry_run:
                await txn.revert()
                return old if merged == old else merged  # a no-op writes nothing
            try:
                if self._ready_to_vanish(info, merged):
                    gone = decode(await self.store.delete(key,
                                                          expected_revision=kv.mod_revision))
                    await txn.revert()
                    await self._after_delete(info, gone)
                    return gone
                saved = await self.store.update(
                    key, self._encode(merged), expected_revision=kv.mod_revision
                )
            except RevisionMismatch:
                await txn.revert()
                if precondition_rv:
                    raise errors.conflict(info, name) from None
                continue
            except (KeyNotFound, errors.APIError) as exc:
                await txn.revert()
                if isinstance(exc, errors.APIError):
                    raise
                raise errors.not_found(info, name) from None
            await txn.commit()
            return decode(saved)
        raise errors.conflict(info, name)

    async def _after_delete(self, info: ResourceInfo, gone: Obj) -> None:
        """The object is gone: a failure here only leaks what it held, which repair frees."""
        hooks = self.hooks.get((info.group, info.kind))
        if hooks is not None:
            try:
                await hooks.after_delete(gone)
            except StoreError as exc:
                log.warning("releasing what %s %s held failed: %s", info.kind,
                            gone.get("metadata", {}).get("name"), exc)

    def _merge_update(self, info: ResourceInfo, old: Obj, new: Obj, subresource: str) -> Obj:
        """Apply Kubernetes' update rules: system metadata is kept; status and spec each
        change only through their own endpoint; generation counts spec changes."""
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise errors.bad_request("the object must have metadata")
        if subresource == "bind":  # pods/binding: the transform set spec.nodeName itself
            return new
        if subresource == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            return merged
        if subresource == "finalize":  # namespaces: only spec.finalizers changes
            merged = copy.deepcopy(old)
            merged.setdefault("spec", {})["finalizers"] = (new.get("spec") or {}).get(
                "finalizers", [])
            return merged
        merged = dict(new)
        merged["apiVersion"], merged["kind"] = info.api_version, info.kind
        meta = dict(new["metadata"])
        old_meta = old["metadata"]
        for system in ("uid", "creationTimestamp", "deletionTimestamp",
                       "deletionGracePeriodSeconds", "generation", "namespace", "name"):
            if system in old_meta:
                meta[system] = old_meta[system]
            else:
                meta.pop(system, None)
        meta.pop("resourceVersion", None)
        meta.pop("managedFields", None)
        if old_meta.get("deletionTimestamp"):
            # Finalizers may only be removed once deletion started.
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise errors.forbidden(
                    f"no new finalizers can be added if the object is being deleted, found new"
                    f" finalizers {sorted(added)!r}"
                )
        merged["metadata"] = {k: v for k, v in meta.items() if v not in (None, [], {})}
        if info.has_status:
            if "status" in old:
                merged["status"] = old["status"]
            else:
                merged.pop("status", None)
        kinds.apply_defaults(info, merged)
        if info.has_status and _spec_of(merged) != _spec_of(old):
            merged["metadata"]["generation"] = int(old_meta.get("generation") or 1) + 1
        return merged

    def _ready_to_vanish(self, info: ResourceInfo, obj: Obj) -> bool:
        """An object being deleted goes away once its last finalizer is removed."""
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        if info.kind == "Namespace" and (obj.get("spec") or {}).get("finalizers"):
            return False
        return not (info.kind == "Pod" and meta.get("deletionGracePeriodSeconds"))

    # -- delete ----------------------------------------------------------------------------

    async def delete(
        self, info: ResourceInfo, namespace: str | None, name: str, opts: DeleteOptions
    ) -> tuple[Obj, bool]:
        """Delete now, or start a graceful/finalized deletion. Returns (object, deleted now)."""
        if info.kind == "Namespace" and name in PROTECTED_NAMESPACES:
            raise errors.APIError(403, "Forbidden", f'namespaces "{name}" is forbidden: this '
                                  "namespace may not be deleted",
                                  {"name": name, "kind": "namespaces"})
        key = info.key(namespace, name)
        for _ in range(_MAX_RETRIES):
            kv = await self.store.get(key)
            if kv is None:
                raise errors.not_found(info, name)
            obj = decode(kv)
            meta = obj["metadata"]
            if opts.precondition_uid and opts.precondition_uid != meta.get("uid"):
                raise errors.APIError(409, "Conflict", (
                    f"Precondition failed: UID in precondition: {opts.precondition_uid}, "
                    f"UID in object meta: {meta.get('uid')}"))
            if opts.precondition_rv and opts.precondition_rv != meta["resourceVersion"]:
                raise errors.APIError(409, "Conflict", (
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{opts.precondition_rv}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}"))
            pending = self._start_deletion(info, obj, opts)
            if opts.dry_run:
                return obj, pending is None
            try:
                if pending is None:
                    gone = decode(await self.store.delete(key,
                                                          expected_revision=kv.mod_revision))
                    await self._after_delete(info, gone)
                    return gone, True
                if pending == obj:
                    return obj, False
                saved = await self.store.update(
                    key, self._encode(pending), expected_revision=kv.mod_revision
                )
                return decode(saved), False
            except RevisionMismatch:
                continue
            except KeyNotFound:
                raise errors.not_found(info, name) from None
        raise errors.conflict(info, name)

    def _start_deletion(self, info: ResourceInfo, obj: Obj, opts: DeleteOptions) -> Obj | None:
        """The object as it looks while its deletion is pending, or None to delete it now."""
        pending = copy.deepcopy(obj)
        meta = pending["metadata"]
        finalizers: list[str] = list(meta.get("finalizers") or [])
        policy = opts.propagation_policy or _default_policy(info)
        for name, wanted in (("orphan", "Orphan"), ("foregroundDeletion", "Foreground")):
            if policy == wanted and name not in finalizers and not meta.get("deletionTimestamp"):
                finalizers.append(name)
        grace = self._grace_period(info, obj, opts)
        spec_finalizers = info.kind == "Namespace" and (obj.get("spec") or {}).get("finalizers")
        if not finalizers and not grace and not spec_finalizers:
            return None
        if finalizers:
            meta["finalizers"] = finalizers
        now = datetime.now(UTC)
        current = meta.get("deletionGracePeriodSeconds")
        if not meta.get("deletionTimestamp") or (current is not None and grace < current):
            meta["deletionTimestamp"] = now_rfc3339(now + timedelta(seconds=grace))
            meta["deletionGracePeriodSeconds"] = grace
        if info.kind == "Namespace":
            pending.setdefault("status", {})["phase"] = "Terminating"
        if self._ready_to_vanish(info, pending) and not finalizers:
            return None
        return pending

    @staticmethod
    def _grace_period(info: ResourceInfo, obj: Obj, opts: DeleteOptions) -> int:
        """Only pods that may still run on a node are deleted gracefully."""
        if info.kind != "Pod":
            return 0
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if opts.grace_period_seconds is not None:
            return max(0, opts.grace_period_seconds)
        current = obj["metadata"].get("deletionGracePeriodSeconds")
        if current is not None:
            return int(current)
        return int(spec.get("terminationGracePeriodSeconds", 30))

    # -- helpers ---------------------------------------------------------------------------

    def _encode(self, obj: Obj) -> bytes:
        data = encode(obj)
        if len(data) > MAX_OBJECT_BYTES:
            raise errors.too_large()
        return data

    @staticmethod
    def _check(info: ResourceInfo, obj: Obj, problems: list) -> None:
        if problems:
            raise errors.invalid(info, obj.get("metadata", {}).get("name", ""), problems)


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _default_policy(info: ResourceInfo) -> str:
    # batch/v1 Jobs orphan their pods when a client does not say otherwise (as in Kubernetes).
    return "Orphan" if info.kind == "Job" else "Background"


def _make_continue(after_key: str, revision: int) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": after_key})
    return base64.urlsafe_b64encode(raw).decode()


def _parse_continue(token: str, prefix: str) -> tuple[str, int]:
    if not token:
        return "", 0
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        start, revision = str(data["start"]), int(data["rv"])
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from exc
    if not start.startswith(prefix):
        raise errors.bad_request("continue key is not valid: it belongs to another list")
    return start, revision
