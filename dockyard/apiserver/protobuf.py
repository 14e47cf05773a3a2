"""Decode Kubernetes protobuf request bodies (what client-go's typed clients send) into JSON dicts.

A small proto2 wire reader opens the `k8s\\0` + runtime.Unknown envelope, then walks the typed
message guided by the field table in protobuf_types.py, producing exactly what a JSON client would
have sent. Anything the table does not name is refused with ProtobufError, never silently dropped.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from dockyard.apiserver.protobuf_types import (
    ANY_VERSION,
    MAPS,
    MESSAGES,
    TOP_LEVEL,
    Field,
    Message,
)

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GO_ZERO_TIME = -62135596800  # seconds of Go's time.Time{} (0001-01-01T00:00:00Z)
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    """The body uses something this decoder does not know; the client should send JSON (415)."""


class CorruptProtobuf(ProtobufError):
    """The bytes are not a well-formed protobuf message (400)."""


def _unsupported(what: str) -> ProtobufError:
    return ProtobufError(f"unsupported protobuf {what}; send JSON instead")


# --- wire format -------------------------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CorruptProtobuf("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise CorruptProtobuf("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value): ints for varint/fixed, bytes for length-delimited."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise CorruptProtobuf("field number 0")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise CorruptProtobuf(f"truncated fixed-width field {number}")
            value = int.from_bytes(buf[pos:pos + size], "little")
            pos += size
        elif wire == _BYTES:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise CorruptProtobuf(f"field {number} runs past the end of its message")
            value = buf[pos:pos + length]
            pos += length
        else:  # groups (3, 4) are long deprecated and never produced by Kubernetes
            raise CorruptProtobuf(f"field {number} has unsupported wire type {wire}")
        yield number, wire, value


def _signed(value: int) -> int:
    # int32 and int64 both travel as 64-bit two's complement varints.
    return value - (1 << 64) if value >= 1 << 63 else value


def _expect(wire: int, want: int, number: int, where: str) -> None:
    if wire != want:
        raise CorruptProtobuf(f"field {number} in {where} has wire type {wire}, expected {want}")


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise CorruptProtobuf(f"invalid UTF-8 in a string of {where}") from exc


# --- well-known Kubernetes value types ---------------------------------------------------------

def _quantity(raw: bytes) -> str:
    text = ""
    for number, wire, value in _fields(raw):
        if number != 1:
            raise _unsupported(f"field {number} in resource.Quantity")
        _expect(wire, _BYTES, number, "resource.Quantity")
        text = _text(value, "resource.Quantity")  # type: ignore[arg-type]
    return text or "0"  # an empty Quantity is zero, as Go renders it


def _int_or_string(raw: bytes) -> int | str:
    kind, int_val, str_val = 0, 0, ""
    for number, wire, value in _fields(raw):
        if number in (1, 2):
            _expect(wire, _VARINT, number, "intstr.IntOrString")
            if number == 1:
                kind = value  # type: ignore[assignment]
            else:
                int_val = _signed(value)  # type: ignore[arg-type]
        elif number == 3:
            _expect(wire, _BYTES, number, "intstr.IntOrString")
            str_val = _text(value, "intstr.IntOrString")  # type: ignore[arg-type]
        else:
            raise _unsupported(f"field {number} in intstr.IntOrString")
    if kind == 0:
        return int_val
    if kind == 1:
        return str_val
    raise CorruptProtobuf(f"IntOrString has unknown type {kind}")


def _time(raw: bytes, micro: bool) -> str | None:
    """RFC 3339 text, or None for Go's zero time (which JSON renders as null)."""
    if not raw:
        return None
    seconds = nanos = 0
    for number, wire, value in _fields(raw):
        if number not in (1, 2):
            raise _unsupported(f"field {number} in meta.v1.Time")
        _expect(wire, _VARINT, number, "meta.v1.Time")
        if number == 1:
            seconds = _signed(value)  # type: ignore[arg-type]
        else:
            nanos = _signed(value)  # type: ignore[arg-type]
    if seconds == _GO_ZERO_TIME and not nanos:
        return None
    if not 0 <= nanos < 1_000_000_000:
        raise CorruptProtobuf(f"timestamp nanos {nanos} is out of range")
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError as exc:
        raise CorruptProtobuf(f"timestamp {seconds} is out of range") from exc
    text = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
    if not micro:  # meta.v1.Time keeps whole seconds only, like Go's decoder
        return text + "Z"
    return f"{text}.{nanos // 1000:06d}Z"


def _fields_v1(raw: bytes) -> Any:
    data = b""
    for number, wire, value in _fields(raw):
        if number != 1:
            raise _unsupported(f"field {number} in meta.v1.FieldsV1")
        _expect(wire, _BYTES, number, "meta.v1.FieldsV1")
        data = value  # type: ignore[assignment]
    try:
        return orjson.loads(data or b"{}")
    except orjson.JSONDecodeError as exc:
        raise CorruptProtobuf(f"managedFields fieldsV1 is not JSON: {exc}") from exc


# --- typed messages ----------------------------------------------------------------------------

_ABSENT = object()  # a value that JSON would write as null: leave the key out


def _scalar(kind: str, wire: int, value: int | bytes, number: int, where: str) -> Any:
    if kind in ("i", "b"):
        _expect(wire, _VARINT, number, where)
        return _signed(value) if kind == "i" else bool(value)  # type: ignore[arg-type]
    _expect(wire, _BYTES, number, where)
    raw: bytes = value  # type: ignore[assignment]
    if kind == "s":
        return _text(raw, where)
    if kind == "y":
        return base64.b64encode(raw).decode()
    if kind == "q":
        return _quantity(raw)
    if kind == "n":
        return _int_or_string(raw)
    if kind in ("t", "mt"):
        text = _time(raw, micro=kind == "mt")
        return _ABSENT if text is None else text
    if kind == "fv":
        return _fields_v1(raw)
    return _message(raw, MESSAGES[kind])


def _map_entry(raw: bytes, value_kind: str, where: str) -> tuple[str, Any]:
    key, item = "", _scalar(value_kind, _BYTES, b"", 2, where)  # proto defaults for absent parts
    for number, wire, value in _fields(raw):
        if number == 1:
            _expect(wire, _BYTES, number, where)
            key = _text(value, where)  # type: ignore[arg-type]
        elif number == 2:
            item = _scalar(value_kind, wire, value, number, where)
        else:
            raise _unsupported(f"field {number} in a map entry of {where}")
    return key, item


def _add(out: dict[str, Any], field: Field, wire: int, value: int | bytes, where: str) -> None:
    if field.kind in MAPS:
        _expect(wire, _BYTES, field.number, where)
        key, item = _map_entry(value, MAPS[field.kind], f"{where}.{field.name}")  # type: ignore[arg-type]
        out.setdefault(field.name, {})[key] = item
        return
    if field.repeated:
        items = out.setdefault(field.name, [])
        if field.kind == "i" and wire == _BYTES:  # packed encoding
            raw: bytes = value  # type: ignore[assignment]
            pos = 0
            while pos < len(raw):
                number, pos = _varint(raw, pos)
                items.append(_signed(number))
        else:
            items.append(_scalar(field.kind, wire, value, field.number, where))
        return
    item = _scalar(field.kind, wire, value, field.number, where)
    if item is _ABSENT:
        out.pop(field.name, None)
    elif field.name == "-":  # Go embedded struct: its fields are the parent's in JSON
        out.update(item)
    elif isinstance(item, dict) and isinstance(out.get(field.name), dict):
        out[field.name].update(item)  # a repeated occurrence of a message merges into it
    else:
        out[field.name] = item


def _message(raw: bytes, message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, value in _fields(raw):
        field = message.fields.get(number)
        if field is None:
            raise _unsupported(f"field {number} in {message.full_name}")
        _add(out, field, wire, value, message.full_name)
    # Go's marshaller writes zero values of non-pointer fields; JSON's omitempty drops them.
    for field in message.fields.values():
        if field.omit_zero and out.get(field.name, None) in ("", 0, False):
            del out[field.name]
    return out


def decode_k8s_protobuf(raw: bytes) -> dict[str, Any]:
    """The JSON-shaped object of a `application/vnd.kubernetes.protobuf` request body."""
    if not raw.startswith(MAGIC):
        raise CorruptProtobuf("the body does not start with the Kubernetes protobuf magic")
    api_version = kind = encoding = content_type = ""
    inner = b""
    for number, wire, value in _fields(raw[len(MAGIC):]):
        if number == 1:
            _expect(wire, _BYTES, number, "runtime.Unknown")
            for sub, sub_wire, sub_value in _fields(value):  # type: ignore[arg-type]
                _expect(sub_wire, _BYTES, sub, "runtime.TypeMeta")
                if sub == 1:
                    api_version = _text(sub_value, "runtime.TypeMeta")  # type: ignore[arg-type]
                elif sub == 2:
                    kind = _text(sub_value, "runtime.TypeMeta")  # type: ignore[arg-type]
                else:
                    raise _unsupported(f"field {sub} in runtime.TypeMeta")
        elif number in (2, 3, 4):
            _expect(wire, _BYTES, number, "runtime.Unknown")
            if number == 2:
                inner = value  # type: ignore[assignment]
            elif number == 3:
                encoding = _text(value, "runtime.Unknown")  # type: ignore[arg-type]
            else:
                content_type = _text(value, "runtime.Unknown")  # type: ignore[arg-type]
        else:
            raise _unsupported(f"field {number} in runtime.Unknown")
    if encoding:
        raise _unsupported(f"content encoding {encoding!r}")
    if content_type not in ("", MEDIA_TYPE):
        raise _unsupported(f"inner content type {content_type!r}")
    if not kind:
        raise CorruptProtobuf("the protobuf envelope names no kind")
    name = TOP_LEVEL.get((api_version, kind)) or ANY_VERSION.get(kind)
    if name is None:
        raise _unsupported(f"kind {kind!r} of {api_version!r}")
    return {"apiVersion": api_version, "kind": kind, **_message(inner, MESSAGES[name])}
