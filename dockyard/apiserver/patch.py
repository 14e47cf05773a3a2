"""The three PATCH bodies Kubernetes accepts, as pure functions on JSON-like dicts.

JSON patch (RFC 6902) is delegated to `jsonpatch`; JSON merge patch (RFC 7386) and strategic
merge patch (a port of the apply half of k8s.io/apimachinery's strategicpatch, with per-field
metadata from `dockyard.api.patchmeta`) are written here. Each works on private deep copies, so
its inputs are never mutated and its result shares nothing with them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import jsonpatch
import jsonpointer

from dockyard.api.patchmeta import SUPPORTED_KINDS, patch_meta

_T = TypeVar("_T")

# Strategic merge patch directives (strategicpatch/patch.go).
_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList"
_SET_ELEMENT_ORDER = "$setElementOrder"


class PatchError(ValueError):
    """The patch is malformed or does not apply to the object."""


# --------------------------------------------------------------------------------------------
# Public entry points


def apply_json_patch(doc: dict[str, Any], patch: list[Any]) -> dict[str, Any]:
    """Apply an RFC 6902 JSON patch; a failed `test` or a bad operation raises PatchError."""
    if not isinstance(patch, list):
        raise PatchError("a JSON patch must be a list of operations")
    result = _guarded(lambda: _json_patch(doc, patch))
    if not isinstance(result, dict):
        raise PatchError("the JSON patch must leave an object")
    return result


def apply_merge_patch(doc: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 7386 JSON merge patch: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        # RFC 7386 would replace the whole document; an API object must stay an object.
        raise PatchError("a merge patch must be a JSON object")
    return _guarded(lambda: _merge_patch(_clone(doc), patch))


def apply_strategic_merge_patch(
    doc: dict[str, Any], patch: dict[str, Any], kind: str
) -> dict[str, Any]:
    """Apply a Kubernetes strategic merge patch to an object of `kind`.

    Follows strategicpatch.StrategicMergeMapPatch (server side: parallel lists merged, nulls
    for absent keys ignored): maps merge recursively and null deletes a key; lists with a merge
    strategy merge element-wise by merge key (or as a set, for primitives); other lists are
    replaced. Directives: $patch (replace/delete, plus merge in maps), $retainKeys,
    $deleteFromPrimitiveList/<field> and $setElementOrder/<field>.
    """
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    if kind not in SUPPORTED_KINDS:
        # Like Kubernetes for types it has no Go struct for (custom resources).
        raise PatchError(f"strategic merge patch is not supported for kind {kind!r}")
    merged = _guarded(lambda: _merge_map(_clone(doc), _clone(patch), _Loc(kind, ())))
    return {} if merged is None else merged


# --------------------------------------------------------------------------------------------
# Helpers shared by the formats


def _clone(value: _T) -> _T:
    """Deep copy of a JSON-like value (much cheaper than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [_clone(v) for v in value]  # type: ignore[return-value]
    return value


def _guarded(apply: Callable[[], _T]) -> _T:
    # The merges recurse once per nesting level; a hostile body must not become a 500.
    try:
        return apply()
    except RecursionError as exc:
        raise PatchError("the patch or the object is nested too deeply") from exc


def _json_patch(doc: dict[str, Any], patch: list[Any]) -> Any:
    try:
        # Both are cloned so the result shares nothing with either input (jsonpatch inserts
        # operation values by reference).
        return jsonpatch.apply_patch(_clone(doc), _clone(patch), in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(str(exc)) from exc
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        # Defensive: jsonpatch validates operations well, but a library bug on an odd body
        # must still be the client's 4xx rather than our 500.
        raise PatchError(f"invalid JSON patch: {exc}") from exc


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch(target, patch); writes into `target`, which is a private copy."""
    if not isinstance(patch, dict):
        return _clone(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------------------------
# Strategic merge patch. Everything below mutates `original` and `patch` freely: both are the
# private copies made by apply_strategic_merge_patch.


@dataclass(frozen=True)
class _Loc:
    """Where a value sits: the kind and the field path from its root (lists are transparent)."""

    kind: str
    path: tuple[str, ...]

    def child(self, name: str) -> _Loc:
        return _Loc(self.kind, (*self.path, name))

    def strategy(self) -> tuple[str, str | None]:
        """("merge" | "replace" | "", merge key) for this field.

        retainKeys is dropped: when applying, only the patch's $retainKeys directive counts
        (extractRetainKeysPatchStrategy does the same).
        """
        meta = patch_meta(self.kind, self.path)
        if meta is None:
            return "", None
        rest = [s for s in meta[0].split(",") if s != "retainKeys"]
        return (rest[0] if rest else ""), meta[1]

    def __str__(self) -> str:
        return ".".join(self.path) or "<root>"


def _merge_map(original: dict[str, Any], patch: dict[str, Any], loc: _Loc) -> dict[str, Any] | None:
    """mergeMap: merge `patch` into `original` and return it; None if `$patch: delete`."""
    if _DIRECTIVE in patch:
        directive = patch.pop(_DIRECTIVE)
        if directive == "delete":
            return None
        if directive == "replace":
            # The map becomes the patch's content; directives inside it apply to nothing.
            return _merge_map({}, patch, loc)
        if directive != "merge":  # "merge" just states the default
            raise PatchError(f"unknown patch type {directive!r} in map at {loc}")
    _apply_retain_keys(original, patch, loc)
    _apply_set_element_order(original, patch, loc)
    for key, value in patch.items():
        _merge_field(original, key, value, loc)
    return original


def _merge_field(original: dict[str, Any], key: str, value: Any, loc: _Loc) -> None:
    """Merge one patch entry into `original` (the body of mergeMap's loop)."""
    delete_list = key.startswith(_DELETE_FROM_PRIMITIVE_LIST)
    if delete_list:
        key = _directive_target(key, _DELETE_FROM_PRIMITIVE_LIST)
    if value is None:
        # Null deletes; a null for a key the object lacks is simply dropped.
        original.pop(key, None)
        return
    child = loc.child(key)
    current = original.get(key)
    if _shape(current) != _shape(value):
        # Nothing to merge into (absent, null or another JSON type): the patch value wins,
        # with its own directives applied to nothing. A delete list can only remove.
        if not delete_list:
            _store(original, key, _materialize(value, child))
        return
    if isinstance(value, dict):
        if child.strategy()[0] == "replace":
            _store(original, key, _materialize(value, child))
        else:
            _store(original, key, _merge_map(current, value, child))
    elif isinstance(value, list):
        original[key] = _merge_list_field(current, value, child, delete_list)
    else:
        original[key] = value


def _store(target: dict[str, Any], key: str, value: Any) -> None:
    # None here means a map said `$patch: delete`: the field goes away.
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    return "null" if value is None else "scalar"


def _materialize(value: Any, loc: _Loc) -> Any:
    """The value a patch fragment yields on its own: its directives applied to nothing.

    Kubernetes strips them instead (removeDirectives) and, unlike here, drops a whole new map
    that carries `$patch: replace`; honouring the directive is the least surprising reading.
    """
    if isinstance(value, dict):
        return _merge_map({}, value, loc)
    if isinstance(value, list):
        return _merge_list_field([], value, loc, False)
    return value


# ---- lists


def _merge_list_field(current: list[Any], patch: list[Any], loc: _Loc, delete_list: bool
                      ) -> list[Any]:
    """mergeSliceHandler: merge by the field's strategy, else replace with the patch list."""
    strategy, merge_key = loc.strategy()
    # A $deleteFromPrimitiveList list deletes whatever the field's strategy (k8s #110472).
    if strategy == "merge" or delete_list:
        return _merge_list(current, patch, merge_key, loc, delete_list)
    # Atomic list. Elements carrying a $patch directive mean nothing here: drop them.
    return [_materialize(item, loc) for item in patch
            if not (isinstance(item, dict) and _DIRECTIVE in item)]


def _merge_list(original: list[Any], patch: list[Any], merge_key: str | None, loc: _Loc,
                delete_list: bool) -> list[Any]:
    """mergeSlice: merge two lists under the merge strategy, then fix the element order."""
    if not original and not patch:
        return original
    if _element_kind(original, patch, loc) != "map":
        if delete_list:
            doomed = {_scalar_key(v) for v in patch}
            return [v for v in original if _scalar_key(v) not in doomed]
        merged = _dedupe([*original, *patch])
        return _order(merged, patch, original, None)
    if not merge_key:
        raise PatchError(f"cannot merge lists without merge key for {loc}")
    original, patch = _special_elements(original, patch, merge_key, loc)
    merged = _merge_elements(original, patch, merge_key, loc)
    return _order(merged, patch, original, merge_key)


def _special_elements(original: list[Any], patch: list[Any], merge_key: str, loc: _Loc
                      ) -> tuple[list[Any], list[Any]]:
    """mergeSliceWithSpecialElements: apply `$patch` list elements.

    Returns the original list less deleted elements, and the patch less directive elements;
    with `{"$patch": "replace"}` the patch's other elements become the whole list.
    """
    rest: list[Any] = []
    replace = False
    for item in patch:
        if _DIRECTIVE not in item:
            rest.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == "delete":
            key = _scalar_key(_require_merge_key(item, merge_key, loc))
            original = [o for o in original
                        if not (merge_key in o and _scalar_key(o[merge_key]) == key)]
        elif directive == "replace":
            replace = True  # keep scanning: other directive elements are pruned too
        elif directive == "merge":
            raise PatchError(f"merging lists cannot yet be specified in the patch ({loc})")
        else:
            raise PatchError(f"unknown patch type {directive!r} in list at {loc}")
    if replace:
        return [_materialize(item, loc) for item in rest], []
    return original, rest


def _merge_elements(original: list[Any], patch: list[Any], merge_key: str, loc: _Loc
                    ) -> list[Any]:
    """mergeSliceWithoutSpecialElements: merge matching elements in place, append the rest."""
    merged = list(original)
    index: dict[Hashable, int] = {}
    for i, item in enumerate(merged):
        if merge_key in item:
            index.setdefault(_scalar_key(item[merge_key]), i)
    for item in patch:
        key = _scalar_key(_require_merge_key(item, merge_key, loc))
        if key in index:
            merged[index[key]] = _merge_map(merged[index[key]], item, loc)
        else:
            index[key] = len(merged)
            merged.append(_materialize(item, loc))
    return merged


def _element_kind(original: list[Any], patch: list[Any], loc: _Loc) -> str:
    """sliceElementType: every element of both lists must have the same JSON type."""
    kinds = {_json_type(v) for v in (*original, *patch)}
    if "list" in kinds:
        raise PatchError(f"lists of lists are not supported ({loc})")
    if len(kinds) > 1:
        raise PatchError(f"list element types are not identical ({loc})")
    return kinds.pop()


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def _scalar_key(value: Any) -> Hashable:
    """A key comparing scalars like Go's interface ==: True is not 1, but 1 is 1.0."""
    kind = _json_type(value)
    if kind in ("map", "list"):
        raise PatchError(f"cannot use {kind} {value!r} as a list key")
    return kind, value


def _require_merge_key(item: Any, merge_key: str, loc: _Loc) -> Any:
    if not isinstance(item, dict) or merge_key not in item:
        raise PatchError(f"{item!r} does not contain declared merge key {merge_key!r} at {loc}")
    return item[merge_key]


def _dedupe(items: Iterable[Any]) -> list[Any]:
    seen: set[Hashable] = set()
    out = []
    for item in items:
        key = _scalar_key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


# ---- element order (preserve-order-in-strategic-merge-patch design)


def _order(merged: list[Any], patch_order: list[Any], server_order: list[Any],
           merge_key: str | None) -> list[Any]:
    """Split `merged` into elements named by `patch_order` and server-only ones, then weave.

    The result keeps the patch's relative order for its elements and the live list's for the
    others; where the two cannot be compared (new elements) patch elements go first, which is
    why Kubernetes prepends a container added without $setElementOrder.
    """
    if merge_key is not None:
        for item in (*merged, *patch_order, *server_order):
            if not isinstance(item, dict) or merge_key not in item:
                raise PatchError(f"{item!r} does not contain declared merge key {merge_key!r}")
    named = _positions(patch_order, merge_key)
    in_patch = [v for v in merged if _ident(v, merge_key) in named]
    server_only = [v for v in merged if _ident(v, merge_key) not in named]
    in_patch = _sort_by(in_patch, patch_order, merge_key)
    server_only = _sort_by(server_only, server_order, merge_key)
    return _weave(server_only, in_patch, server_order, merge_key)


def _ident(item: Any, merge_key: str | None) -> Hashable:
    return _scalar_key(item[merge_key] if merge_key is not None else item)


def _positions(order: list[Any], merge_key: str | None) -> dict[Hashable, int]:
    positions: dict[Hashable, int] = {}
    for i, item in enumerate(order):
        positions.setdefault(_ident(item, merge_key), i)
    return positions


def _sort_by(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """normalizeSliceOrder: stable sort by position in `order` (absent ones last)."""
    positions = _positions(order, merge_key)
    return sorted(items, key=lambda v: positions.get(_ident(v, merge_key), len(order)))


def _weave(left: list[Any], right: list[Any], server_order: list[Any],
           merge_key: str | None) -> list[Any]:
    """mergeSortedSlice: merge server-only (left) and patch (right) elements.

    A left element goes first only when both are in the live list and it came earlier there.
    """
    positions = _positions(server_order, merge_key)
    out: list[Any] = []
    i = j = 0
    while i < len(left) and j < len(right):
        li = positions.get(_ident(left[i], merge_key))
        ri = positions.get(_ident(right[j], merge_key))
        if li is not None and ri is not None and li < ri:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return [*out, *left[i:], *right[j:]]


def _apply_set_element_order(original: dict[str, Any], patch: dict[str, Any], loc: _Loc
                             ) -> None:
    """mergePatchIntoOriginal: merge and reorder each list named by a $setElementOrder."""
    for key in [k for k in patch if k.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(key)
        field = _directive_target(key, _SET_ELEMENT_ORDER)
        if not isinstance(order, list):
            raise PatchError(f"{key} must be a list")
        _reorder_field(original, patch, field, order, loc.child(field))


def _reorder_field(original: dict[str, Any], patch: dict[str, Any], field: str,
                   order: list[Any], loc: _Loc) -> None:
    live = original.get(field)
    if live is not None and not isinstance(live, list):
        raise PatchError(f"{loc} is not a list, but the patch sets its element order")
    merge_key = loc.strategy()[1]
    merged = live
    if field in patch:
        # Merged here, so the main loop of _merge_map must not see it again.
        incoming = patch.pop(field)
        if not isinstance(incoming, list):
            raise PatchError(f"{loc} must be a list when {_SET_ELEMENT_ORDER} names it")
        _check_order(incoming, order, merge_key, loc)
        merged = _merge_list_field(live or [], incoming, loc, False)
    if not merged:
        if merged is not None:
            original[field] = merged
        return
    if merge_key is None and any(isinstance(v, dict) for v in merged):
        raise PatchError(f"cannot order {loc}: its elements have no merge key")
    original[field] = _order(merged, order, live or [], merge_key)


def _check_order(patch_list: list[Any], order: list[Any], merge_key: str | None, loc: _Loc
                 ) -> None:
    """validatePatchWithSetOrderList: the patch's elements must appear in `order`, in order."""
    if not patch_list or not order:
        return
    items = patch_list
    if merge_key is not None:
        # Deletions may be listed anywhere; they are not part of the order.
        items = [v for v in patch_list if not (isinstance(v, dict)
                                               and v.get(_DIRECTIVE) == "delete")]
    p = s = 0
    while p < len(items) and s < len(order):
        if isinstance(items[p], dict) and _DIRECTIVE in items[p]:
            p += 1
            continue
        if _same_element(items[p], order[s], merge_key, loc):
            p += 1
        s += 1
    if p < len(items) and s >= len(order):
        raise PatchError(f"the order in patch list {patch_list!r} doesn't match "
                         f"{_SET_ELEMENT_ORDER} list {order!r} at {loc}")


def _same_element(left: Any, right: Any, merge_key: str | None, loc: _Loc) -> bool:
    if merge_key is None:
        return bool(_scalar_key(left) == _scalar_key(right))
    left_key = _require_merge_key(left, merge_key, loc)
    right_key = _require_merge_key(right, merge_key, loc)
    return bool(_scalar_key(left_key) == _scalar_key(right_key))


# ---- map directives


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any], loc: _Loc) -> None:
    """applyRetainKeysDirective: drop every key of `original` not named by $retainKeys."""
    if _RETAIN_KEYS not in patch:
        return
    keep = patch.pop(_RETAIN_KEYS)
    if not isinstance(keep, list):
        raise PatchError(f"{_RETAIN_KEYS} must be a list of field names ({loc})")
    allowed = {k for k in keep if isinstance(k, str)}
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
            continue
        if key not in allowed:
            raise PatchError(f"{_RETAIN_KEYS} at {loc} does not list {key!r}, which the "
                             "patch sets")
    for key in [k for k in original if k not in allowed]:
        del original[key]


def _directive_target(key: str, prefix: str) -> str:
    """The field a `<prefix>/<field>` directive key refers to."""
    head, slash, field = key.partition("/")
    if not slash or head != prefix:
        raise PatchError(f"invalid directive key {key!r}: expected {prefix}/<field>")
    return field
