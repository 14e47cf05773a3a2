"""Per-kind hooks around the registry's writes (the generic store's BeginCreate/BeginUpdate/
AfterDelete in Kubernetes).

A hook may reserve things outside the object (a Service's IPs and node ports) before the object
is written; it returns a `Transaction` that the registry commits once the write is known to
have happened, or reverts when it is known not to have happened. When the outcome is unknown
(the request was cancelled mid-write) neither is called: a repair loop settles it.
"""

from __future__ import annotations

from typing import Any, Protocol

Obj = dict[str, Any]


class Transaction(Protocol):
    async def commit(self) -> None: ...

    async def revert(self) -> None: ...


class KindHooks(Protocol):
    async def begin_create(self, obj: Obj, *, dry_run: bool) -> Transaction:
        """Called after defaulting and validation; may fill in fields of `obj`."""
        ...

    async def begin_update(self, new: Obj, old: Obj, *, dry_run: bool) -> Transaction:
        """Called after validation of `new` against the stored `old`; may fill in `new`."""
        ...

    async def after_delete(self, obj: Obj) -> None:
        """Called once `obj` is gone from the store."""
        ...


class _Nothing:
    async def commit(self) -> None:
        return None

    async def revert(self) -> None:
        return None


NOTHING: Transaction = _Nothing()
