"""The store interface: an etcd-shaped, revisioned key-value store behind the API server.

Every write gets the next global revision (the object's resourceVersion); updates and deletes
are compare-and-swap on the key's modification revision; watches replay from a revision while
it is retained and fail with `Compacted` (HTTP 410) once it is not. SQLite and etcd implement it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """A change at `kv.mod_revision`. For a DELETE, `kv.value` is the last value before it."""

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int  # the revision the list was read at
    more: bool  # True when `limit` cut the list short


class StoreError(Exception):
    """Base of the store's errors; each maps to one Kubernetes status code."""


class KeyExists(StoreError):
    """create() of a key that is present (409 AlreadyExists)."""


class KeyNotFound(StoreError):
    """update()/delete() of a key that is absent (404 NotFound)."""


class RevisionMismatch(StoreError):
    """The key changed since the caller read it (409 Conflict). Carries the current value."""

    def __init__(self, current: KeyValue) -> None:
        super().__init__(current.key)
        self.current = current


class Compacted(StoreError):
    """The requested revision is no longer retained (410 Gone)."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"required revision {requested} has been compacted (oldest {oldest})")
        self.requested = requested
        self.oldest = oldest


class Store(Protocol):
    """What the API server needs from a store. All methods are safe to call concurrently."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def current_revision(self) -> int: ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(
        self, prefix: str, *, limit: int = 0, start_after: str = "", revision: int = 0
    ) -> ListResult:
        """Keys under `prefix` in key order, after `start_after`, at `revision` (0: latest)."""
        ...

    async def create(self, key: str, value: bytes) -> KeyValue: ...

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        """Replace the value if the key's mod revision is still `expected_revision` (0: any)."""
        ...

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        """Delete the key (guarded like update); returns the deleted value at its tombstone."""
        ...

    def watch(
        self, prefix: str, start_revision: int, idle: float | None = None
    ) -> AsyncIterator[Event | None]:
        """Events under `prefix` after `start_revision`, then live ones, in revision order.

        With `idle`, a None is yielded after that many quiet seconds, meaning "caught up to
        current_revision()" (used for bookmarks).
        """
        ...

    async def compact(self, revision: int) -> None: ...
