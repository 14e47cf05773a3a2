"""Request bodies in, response bodies out: JSON, YAML or protobuf in; JSON, Table or metadata out.

kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` to print, controllers may ask
for `as=PartialObjectMetadata`; everything else gets plain JSON (protobuf is not offered, and
clients fall back to JSON when they see the content type). Typed client-go clients still send
protobuf request bodies, which protobuf.py turns into the same dict a JSON body would give.
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml

from dockyard.apiserver import errors, protobuf
from dockyard.apiserver.rest import MAX_OBJECT_BYTES

JSON = "application/json"
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


def media_type(content_type: str | None) -> str:
    return (content_type or JSON).split(";", 1)[0].strip().lower()


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """Decode a JSON, YAML or protobuf body; malformed input is a 400 naming the problem."""
    if len(raw) > MAX_OBJECT_BYTES:
        raise errors.too_large()
    kind = media_type(content_type)
    if kind == protobuf.MEDIA_TYPE:
        try:
            return protobuf.decode_k8s_protobuf(raw)
        except protobuf.CorruptProtobuf as exc:
            raise errors.bad_request(
                f"the object provided is unrecognized or malformed: {exc}") from exc
        except protobuf.ProtobufError as exc:  # well-formed, but outside our tables: ask for JSON
            raise errors.APIError(415, "UnsupportedMediaType", str(exc)) from exc
    if kind in ("application/yaml", "application/apply-patch+yaml"):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"error converting YAML to JSON: {exc}") from exc
    if kind != JSON and kind not in PATCH_TYPES:
        raise errors.unsupported_media_type(kind)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(
            f"the object provided is unrecognized or malformed: {exc}") from exc


def wanted_shape(accept: str | None) -> str:
    """"Table", "PartialObjectMetadata" or "" (the object itself) from the Accept header."""
    if not accept:
        return ""
    for option in accept.split(","):
        params = dict(
            p.strip().split("=", 1) for p in option.split(";")[1:] if "=" in p
        )
        as_ = params.get("as")
        if as_ == "Table" and params.get("g") == "meta.k8s.io":
            return "Table"
        if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList") and \
                params.get("g") == "meta.k8s.io":
            return "PartialObjectMetadata"
        if media_type(option) in (JSON, "*/*", "application/*"):
            return ""
    return ""


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {})}
