"""Server-side printing: list or get results as a `meta.k8s.io/v1` Table for kubectl.

Columns and cells come from `printers` (ports of Kubernetes' printers.go, always printed wide
as the apiserver does); this module wraps them in the Table envelope and attaches each row's
object as PartialObjectMetadata, the full object or nothing, per `includeObject`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dockyard.api.resources import ResourceInfo
from dockyard.apiserver.printers import Printer, printer_for

INCLUDE_OBJECT = ("None", "Metadata", "Object")
# ListMeta fields a Table carries over from the list it renders.
_LIST_META_KEYS = ("resourceVersion", "continue", "remainingItemCount")


def to_table(
    info: ResourceInfo,
    objects: list[dict],
    *,
    now: datetime,
    include_object: str = "Metadata",
    list_meta: dict | None = None,
) -> dict:
    """The Table for `objects` of kind `info`.

    Pass `list_meta` (the list's metadata) when rendering a list; without it a single object's
    resourceVersion is used, as for a GET. `include_object` "" means Metadata, like the
    apiserver; any value outside None/Metadata/Object raises ValueError (a 400 BadRequest).
    """
    include = include_object or "Metadata"
    if include not in INCLUDE_OBJECT:
        raise ValueError(f'unrecognized includeObject value: "{include_object}"')
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    printer = printer_for(info.group, info.kind)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": _table_meta(objects, list_meta),
        "columnDefinitions": [c.definition() for c in printer.columns],
        "rows": [_row(info, printer, obj, now, include) for obj in objects],
    }


def _table_meta(objects: list[dict], list_meta: dict | None) -> dict:
    if list_meta is not None:
        return {k: list_meta[k] for k in _LIST_META_KEYS if list_meta.get(k) not in (None, "")}
    if len(objects) == 1:
        rv = (objects[0].get("metadata") or {}).get("resourceVersion")
        if rv:
            return {"resourceVersion": rv}
    return {}


def _row(info: ResourceInfo, printer: Printer, obj: dict, now: datetime, include: str) -> dict:
    row: dict[str, Any] = {"cells": printer.cells(obj, now)}
    conditions = printer.conditions(obj) if printer.conditions else None
    if conditions:
        row["conditions"] = conditions
    row["object"] = _row_object(info, obj, include)
    return row


def _row_object(info: ResourceInfo, obj: dict, include: str) -> dict | None:
    if include == "None":
        return None
    if include == "Object":
        if obj.get("apiVersion") and obj.get("kind"):
            return obj
        return {"apiVersion": info.api_version, "kind": info.kind, **obj}
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }
