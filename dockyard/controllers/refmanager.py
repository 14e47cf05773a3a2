"""Claiming objects by selector (Kubernetes' ControllerRefManager).

An owner keeps what it controls and still selects, adopts orphans it selects (a strategic
merge patch adding its controller reference), and releases what it controls but no longer
selects. Adoption first re-reads the owner from the API, so a deleted owner adopts nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from dockyard.api.meta import selector_matches
from dockyard.api.resources import ResourceInfo
from dockyard.client.rest import ApiError, Client, is_not_found
from dockyard.controllers.controller_utils import Obj, controller_of, meta, new_controller_ref


class ClaimError(Exception):
    """Some adoptions or releases failed; the claimed list is still usable, sync retries."""


def recheck_deletion_timestamp(client: Client, info: ResourceInfo,
                               owner: Obj) -> Callable[[], Awaitable[None]]:
    """controller.RecheckDeletionTimestamp: a quorum read of the owner before adopting."""
    checked: list[BaseException | None] = []

    async def can_adopt() -> None:
        if not checked:
            err: BaseException | None = None
            m = meta(owner)
            try:
                fresh = await client.get(info, m.get("namespace"), m["name"])
                if meta(fresh).get("uid") != m["uid"]:
                    err = ClaimError(f"original {m.get('namespace')}/{m['name']} is gone: got "
                                     f"uid {meta(fresh).get('uid')}, wanted {m['uid']}")
                elif meta(fresh).get("deletionTimestamp"):
                    err = ClaimError(f"{m.get('namespace')}/{m['name']} has just been deleted "
                                     f"at {meta(fresh)['deletionTimestamp']}")
            except ApiError as exc:
                err = exc
            checked.append(err)
        if checked[0] is not None:
            raise checked[0]
    return can_adopt


class RefManager:
    """Claims objects of one kind (`info`) for `owner`, whose kind is `owner_kind`."""

    def __init__(self, client: Client, info: ResourceInfo, owner: Obj, *, owner_api_version: str,
                 owner_kind: str, selector: Obj | None,
                 can_adopt: Callable[[], Awaitable[None]]) -> None:
        self.client = client
        self.info = info
        self.owner = owner
        self.owner_api_version = owner_api_version
        self.owner_kind = owner_kind
        self.selector = selector  # None selects nothing, {} everything
        self.can_adopt = can_adopt

    async def claim(self, objects: Iterable[Obj],
                    filters: Iterable[Callable[[Obj], bool]] = ()) -> list[Obj]:
        """ClaimObject for each object; raises ClaimError after trying all if any failed,
        carrying what was claimed in `.args[1]`."""
        checks = list(filters)
        owner_meta = meta(self.owner)
        owner_uid = owner_meta["uid"]
        deleting = bool(owner_meta.get("deletionTimestamp"))
        claimed: list[Obj] = []
        errors: list[str] = []

        def match(obj: Obj) -> bool:
            labels = meta(obj).get("labels") or {}
            return selector_matches(self.selector, labels) and all(f(obj) for f in checks)

        for obj in objects:
            ref = controller_of(obj)
            try:
                if ref is not None:
                    if ref.get("uid") != owner_uid:
                        continue  # someone else's
                    if match(obj):
                        claimed.append(obj)
                    elif not deleting:
                        await self._release(obj)
                    continue
                if deleting or not match(obj) or meta(obj).get("deletionTimestamp"):
                    continue
                if meta(obj).get("namespace") != owner_meta.get("namespace"):
                    continue
                await self.can_adopt()
                await self._adopt(obj)
                claimed.append(obj)
            except ApiError as exc:
                if not is_not_found(exc):
                    errors.append(str(exc))
            except ClaimError as exc:
                errors.append(str(exc))
        if errors:
            raise ClaimError("; ".join(errors), claimed)
        return claimed

    async def _adopt(self, obj: Obj) -> None:
        ref = new_controller_ref(self.owner, self.owner_api_version, self.owner_kind)
        patch = {"metadata": {"ownerReferences": [ref], "uid": meta(obj)["uid"]}}
        await self.client.patch(self.info, meta(obj).get("namespace"), meta(obj)["name"], patch,
                                patch_type="strategic")

    async def _release(self, obj: Obj) -> None:
        owner_uid = meta(self.owner)["uid"]
        patch = {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
                              "uid": meta(obj)["uid"]}}
        await self.client.patch(self.info, meta(obj).get("namespace"), meta(obj)["name"], patch,
                                patch_type="strategic")
