"""Protobuf ↔ Schema 1.1 JSON (router-schema §12).

The canonical protobuf JSON mapping writes 64-bit integers as strings and drops scalars that
equal their default. Schema 1.1 (and Routiium) wants numbers, and required scalars such as
`cache.ttl_ms: 0` present, so messages are walked here instead: fields with presence appear
only when set, implicit-presence scalars always, empty repeated fields and maps never.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

_WELL_KNOWN_JSON = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)
_MAX_EXACT_FLOAT_INT = 2**53


class JsonShapeError(ValueError):
    """A JSON document does not fit the protobuf message it should decode into."""


def _tidy_number(value: Any) -> Any:
    """Struct numbers are doubles; integral ones read better (and diff cleaner) as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _MAX_EXACT_FLOAT_INT:
        return int(value)
    if isinstance(value, dict):
        return {k: _tidy_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tidy_number(v) for v in value]
    return value


def _field_value(field: FieldDescriptor, value: Any) -> Any:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return value
    if field.message_type.full_name in _WELL_KNOWN_JSON:
        return _tidy_number(json_format.MessageToDict(value))
    return to_json(value)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def to_json(message: Message) -> dict[str, Any]:
    """A message as Schema 1.1 JSON: proto field names, int64 as numbers, unset omitted."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            if not value:
                continue
            if _is_map(field):
                value_field = field.message_type.fields_by_name["value"]
                out[field.name] = {k: _field_value(value_field, v) for k, v in value.items()}
            else:
                out[field.name] = [_field_value(field, v) for v in value]
        elif field.has_presence:
            if message.HasField(field.name):
                out[field.name] = _field_value(field, value)
        else:
            out[field.name] = _field_value(field, value)
    return out


def from_json(data: Any, message_type: type[M]) -> M:
    """Decode Schema 1.1 JSON, ignoring unknown fields (spec §1); shape errors are typed."""
    if not isinstance(data, dict):
        raise JsonShapeError(f"{message_type.DESCRIPTOR.name} must be a JSON object")
    message = message_type()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise JsonShapeError(str(exc)) from exc
    return message
