"""Field errors as Kubernetes reports them: `spec.containers[0].image: Required value`.

Validation returns a list of these; the API server turns a non-empty list into a 422 `Status`
whose `details.causes` name each field, exactly as kubectl expects to print them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# Kubernetes' field.ErrorType values: the reason string and the message prefix it prints.
REQUIRED = ("FieldValueRequired", "Required value")
INVALID = ("FieldValueInvalid", "Invalid value")
NOT_SUPPORTED = ("FieldValueNotSupported", "Unsupported value")
DUPLICATE = ("FieldValueDuplicate", "Duplicate value")
FORBIDDEN = ("FieldValueForbidden", "Forbidden")
TOO_LONG = ("FieldValueTooLong", "Too long")
TOO_MANY = ("FieldValueTooMany", "Too many")
NOT_FOUND = ("FieldValueNotFound", "Not found")

_UNSET = object()


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its path, the kind of error, the bad value and a detail."""

    field: str
    type: tuple[str, str]
    value: Any = _UNSET
    detail: str = ""

    @property
    def reason(self) -> str:
        return self.type[0]

    def message(self) -> str:
        """`<field>: <type>[: <value>][: <detail>]` as `field.Error.Error()` prints it."""
        parts = [self.type[1]]
        if self.value is not _UNSET and self.type not in (REQUIRED, FORBIDDEN, TOO_LONG):
            parts[0] = f"{self.type[1]}: {_render(self.value)}"
        if self.type is NOT_SUPPORTED and self.detail:
            return f"{self.field}: {parts[0]}: {self.detail}"
        if self.detail:
            parts.append(self.detail)
        return f"{self.field}: " + ": ".join(parts)


@dataclass(frozen=True)
class GoValue:
    """A bad value already rendered the way Go's `%#v` prints it (maps, structs, slices).

    Kubernetes prints non-scalar bad values with `%#v`, e.g. `map[string]string{"app":"x"}`;
    wrapping the text keeps `_render` from JSON-encoding it.
    """

    text: str


def _render(value: Any) -> str:
    if isinstance(value, GoValue):
        return value.text
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    return orjson.dumps(value).decode()


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(field, REQUIRED, detail=detail)


def invalid(field: str, value: Any, detail: str = "") -> FieldError:
    return FieldError(field, INVALID, value, detail)


def not_supported(field: str, value: Any, valid: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(f'"{v}"' for v in valid)
    return FieldError(field, NOT_SUPPORTED, value, detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError(field, DUPLICATE, value)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError(field, FORBIDDEN, detail=detail)


def too_long(field: str, max_len: int) -> FieldError:
    return FieldError(field, TOO_LONG, detail=f"must have at most {max_len} bytes")


def not_found(field: str, value: Any) -> FieldError:
    return FieldError(field, NOT_FOUND, value)


def too_many(field: str, actual: int, max_items: int) -> FieldError:
    return FieldError(field, TOO_MANY, actual, f"must have at most {max_items} items")


# Go `%#v` renderings of the values Kubernetes puts in its most common messages.


def go_quote(s: str) -> str:
    """Go's `%q` for a string (close enough: JSON escaping, no HTML escaping)."""
    return orjson.dumps(s).decode()


def go_map(m: dict[str, Any] | None) -> GoValue:
    """`map[string]string{"a":"b", "c":"d"}`; Go prints map keys sorted."""
    if m is None:
        return GoValue("map[string]string(nil)")
    body = ", ".join(f"{go_quote(k)}:{_render(m[k])}" for k in sorted(m))
    return GoValue("map[string]string{" + body + "}")


def go_strings(values: list[Any] | None) -> GoValue:
    """`[]string{"a", "b"}`."""
    if values is None:
        return GoValue("[]string(nil)")
    return GoValue("[]string{" + ", ".join(go_quote(str(v)) for v in values) + "}")


def go_int_or_string(value: Any) -> GoValue:
    """`intstr.IntOrString{Type:1, IntVal:0, StrVal:"25%"}`."""
    if isinstance(value, str):
        return GoValue(f"intstr.IntOrString{{Type:1, IntVal:0, StrVal:{go_quote(value)}}}")
    n = value if isinstance(value, int) else 0
    return GoValue(f'intstr.IntOrString{{Type:0, IntVal:{n}, StrVal:""}}')


def go_label_selector(sel: Any) -> GoValue:
    """`v1.LabelSelector{MatchLabels:map[string]string{...}, MatchExpressions:...}`."""
    if sel is None:
        return GoValue("null")
    if not isinstance(sel, dict):
        sel = {}
    labels = sel.get("matchLabels")
    exprs = sel.get("matchExpressions")
    if exprs is None:
        expr_text = "[]v1.LabelSelectorRequirement(nil)"
    else:
        items = []
        for e in exprs if isinstance(exprs, list) else []:
            e = e if isinstance(e, dict) else {}
            values = e.get("values")
            items.append(
                f"v1.LabelSelectorRequirement{{Key:{go_quote(str(e.get('key', '')))}, "
                f"Operator:{go_quote(str(e.get('operator', '')))}, "
                f"Values:{go_strings(values).text}}}"
            )
        expr_text = "[]v1.LabelSelectorRequirement{" + ", ".join(items) + "}"
    labels_text = go_map(labels if isinstance(labels, dict) else None).text
    return GoValue(f"v1.LabelSelector{{MatchLabels:{labels_text}, MatchExpressions:{expr_text}}}")
