"""Server-side field validation: fields the kind's schema does not know.

kubectl sends `fieldValidation=Strict` (a typo is a 400 naming the field); other clients get
the API's default, `Warn` (the object is stored and a `Warning` header names the field).
The schemas are the committed OpenAPI definitions, so this never guesses.
"""

from __future__ import annotations

from typing import Any

from dockyard.api.resources import ResourceInfo
from dockyard.apiserver import errors, openapi

_REF = "#/definitions/"


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    defs = openapi.definitions()
    while True:
        if "$ref" in node:
            node = defs.get(node["$ref"].removeprefix(_REF), {})
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node


def unknown_fields(info: ResourceInfo, obj: Any, schema_kind: str = "") -> list[str]:
    """Paths (`spec.template.spec.containers[0].imagee`) of fields absent from the schema."""
    name = openapi.definition_for(info.group, info.version, schema_kind or info.kind)
    found: list[str] = []
    _walk(openapi.definitions().get(name, {}), obj, "", found)
    return found


def _walk(schema: dict[str, Any], value: Any, path: str, found: list[str]) -> None:
    schema = _resolve(schema)
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key, item in value.items():
                    _walk(extra, item, f"{path}[{key}]", found)
            return  # a free-form object (or a map of scalars)
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if key not in props:
                found.append(sub)
            else:
                _walk(props[key], item, sub, found)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{index}]", found)


def check(info: ResourceInfo, obj: Any, directive: str | None) -> list[str]:
    """Apply the request's directive; returns warnings to send (Warn), raises (Strict)."""
    directive = directive or "Warn"
    if directive not in ("Strict", "Warn", "Ignore"):
        raise errors.bad_request(
            f'fieldValidation: Unsupported value: "{directive}": supported values: "Ignore", '
            '"Strict", "Warn"')
    if directive == "Ignore" or not isinstance(obj, dict):
        return []
    unknown = unknown_fields(info, obj)
    if not unknown:
        return []
    if directive == "Strict":
        listed = ", ".join(f'unknown field "{f}"' for f in unknown)
        raise errors.bad_request(f"strict decoding error: {listed}")
    return [f'unknown field "{f}"' for f in unknown]
