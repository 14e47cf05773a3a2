"""Objects in and out of the store: JSON bytes without `resourceVersion`, which is the revision.

Keeping the revision out of the stored bytes means a write never has to know its own revision
before it is assigned, and every read reports exactly the store's modification revision.
"""

from __future__ import annotations

from typing import Any

import orjson

from dockyard.store.interface import KeyValue


def encode(obj: dict[str, Any]) -> bytes:
    meta = obj.get("metadata") or {}
    if "resourceVersion" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
    return orjson.dumps(obj)


def decode(kv: KeyValue, revision: int | None = None) -> dict[str, Any]:
    """The stored object with `metadata.resourceVersion` set (to `revision` if given)."""
    obj = orjson.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision or kv.mod_revision)
    return obj
