"""§1 events as JSON documents on the wire (`EventBatch.documents`), checked and normalized.

Reading ~60 fields off a protobuf message costs the analytics service ~20 µs per event and
building the message costs the edge ~60 µs; a JSON object parsed by orjson and normalized here
costs a few µs on each side. `normalize` accepts exactly the plain JSON values that map 1:1 onto
the protobuf fields (str, bool, int64, finite numbers for doubles, lists of str, objects for
sub-messages; unknown keys ignored) and returns the document `message_to_document` would build
from the equivalent message: every field present, `null` for what is unset, numbers of double
fields as floats. Anything else raises `NotPlain`: the edge then sends that event as a message
(`json_format.ParseDict` semantics), and the service refuses the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.common.pb import analytics_pb2

INT64_MIN, INT64_END = -(2**63), 2**63
Document = dict[str, Any]


class NotPlain(ValueError):
    """A value that does not map 1:1 onto its protobuf field."""


def _refuse(name: str, value: Any) -> Any:
    raise NotPlain(f"{name}: {type(value).__name__} value does not fit the field")


def _number(name: str, value: Any) -> float:
    """The slow path of a double: an int is widened (as protobuf stores it), else refused."""
    return float(value) if type(value) is int else _refuse(name, value)


def _strings(name: str, value: Any) -> list[str]:
    if type(value) is list and all(type(item) is str for item in value):
        return list(value)
    return _refuse(name, value)


def _field_expr(field: FieldDescriptor, sub: str) -> str:
    """The expression of one field of the object `d` (dict.get bound as `g`) in the document;
    the fast path is a type check inline, everything else goes through a helper."""
    name = field.name
    value = f"(v := g({name!r}))"
    if field.message_type is not None:
        if field.is_repeated or field.message_type.GetOptions().map_entry:
            raise TypeError(f"{name}: repeated messages and maps are not used by the event")
        return f"None if {value} is None else {sub}(v)"
    if field.is_repeated:
        if field.type != FieldDescriptor.TYPE_STRING:
            raise TypeError(f"{name}: only repeated strings are used by the event")
        return f"[] if {value} is None else _strings({name!r}, v)"
    default = "None" if field.has_presence else repr(field.default_value)
    absent = f"{default} if v is None"
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        # NaN and infinities fail `v - v == 0` (orjson would write them as null).
        return f"v if type({value}) is float and v - v == 0 else {absent} else _number({name!r}, v)"
    if field.type == FieldDescriptor.TYPE_INT64:
        check = f"type({value}) is int and INT64_MIN <= v < INT64_END"
    elif field.type == FieldDescriptor.TYPE_STRING:
        check = f"type({value}) is str"
    elif field.type == FieldDescriptor.TYPE_BOOL:
        check = f"type({value}) is bool"
    else:
        raise TypeError(f"{name}: field type {field.type} is not used by the event")
    return f"v if {check} else {absent} else _refuse({name!r}, v)"


@cache
def _normalizer(descriptor: Descriptor) -> Callable[[Any], Document]:
    """Per message type, once: a straight-line function from a JSON object to its document
    (generated like `events._convert`, one dict lookup and one type check per field; the
    sub-message normalizers are bound at generation, the event's types are not recursive)."""
    namespace: dict[str, Any] = {
        "_normalizer": _normalizer,
        "_refuse": _refuse,
        "_number": _number,
        "_strings": _strings,
        "INT64_MIN": INT64_MIN,
        "INT64_END": INT64_END,
    }
    items = []
    for i, field in enumerate(descriptor.fields):
        if field.message_type is not None:  # the event's message types are not recursive
            namespace[f"_sub{i}"] = _normalizer(field.message_type)
        items.append(f"{field.name!r}: {_field_expr(field, f'_sub{i}')}")
    body = ",\n        ".join(items)
    source = (
        "def normalize(d):\n"
        f"    if type(d) is not dict:\n        _refuse({descriptor.name!r}, d)\n"
        f"    g = d.get\n    return {{\n        {body}\n    }}\n"
    )
    exec(compile(source, f"<normalizer of {descriptor.full_name}>", "exec"), namespace)
    return namespace["normalize"]  # type: ignore[no-any-return]


def normalize(event: Any) -> Document:
    """The full-shape §1 document of a plain JSON event; raises `NotPlain` otherwise."""
    return _normalizer(analytics_pb2.AnalyticsEvent.DESCRIPTOR)(event)


def normalize_cost(cost: dict[str, Any]) -> Document:
    """A `PriceTable.cost` result as the document's `cost` object."""
    return _normalizer(analytics_pb2.Cost.DESCRIPTOR)(cost)
