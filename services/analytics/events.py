"""Events between the wire (protobuf), the stored JSON document and the aggregation columns.

The stored document always has the full §1 shape, with `null` for what the edge did not know,
so queries and exports return the same keys for every event whatever the sender omitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.analytics import documents
from services.common.pb import analytics_pb2
from services.common.pricing import PriceTable

MAX_ID_CHARS = 128


class InvalidEvent(ValueError):
    """An event that can never be stored; the whole batch is refused, nothing is written."""


def _field_expr(field: FieldDescriptor, sub: str) -> str:
    """The Python expression of one field of `m` as it goes into the document; `sub` names the
    field's message descriptor in the generated function's namespace."""
    name = field.name
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return f"dict(m.{name})"
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.is_repeated:
            return f"[_convert({sub})(item) for item in m.{name}]"
        return f"_convert({sub})(m.{name}) if has({name!r}) else None"
    if field.is_repeated:
        return f"list(m.{name})"
    if field.has_presence:
        # A non-default value is set by definition: `has` runs only for default values.
        return f"v if (v := m.{name}) or has({name!r}) else None"
    return f"m.{name}"


@cache
def _convert(descriptor: Descriptor) -> Callable[[Message], dict[str, Any]]:
    """Per message type, once: a straight-line function from the message to its document.

    Generated (as `dataclasses` generates `__init__`) because this runs for every ingested
    event: one attribute read per field, no per-field dispatch or descriptor walk.
    Sub-message converters are looked up at call time, so recursive message types work too.
    """
    namespace: dict[str, Any] = {"_convert": _convert}
    items = []
    for i, field in enumerate(descriptor.fields):
        namespace[f"_sub{i}"] = field.message_type
        items.append(f"{field.name!r}: {_field_expr(field, f'_sub{i}')}")
    body = ",\n        ".join(items)
    source = f"def convert(m):\n    has = m.HasField\n    return {{\n        {body}\n    }}\n"
    exec(compile(source, f"<document of {descriptor.full_name}>", "exec"), namespace)
    return namespace["convert"]  # type: ignore[no-any-return]


def message_to_document(message: Message) -> dict[str, Any]:
    """Every field present: unset optional fields and sub-messages are `None`, repeated are `[]`,
    maps are objects (with scalar values, the only kind our protos use).

    Unlike `json_format.MessageToDict`, 64-bit integers stay numbers (Routiium's JSON).
    """
    return _convert(message.DESCRIPTOR)(message)


def fill_from_document(message: Message, document: dict[str, Any]) -> None:
    """The inverse of `message_to_document` for documents this service wrote.

    Stored documents only hold values of the field's own type, so plain assignment suffices and
    is an order of magnitude cheaper than `json_format.ParseDict` (Query returns up to 10000).
    """
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in document.items():
        field = fields.get(key)
        if field is None or value is None:
            continue
        if field.message_type is not None:
            sub = getattr(message, key)
            sub.SetInParent()
            fill_from_document(sub, value)
        elif field.is_repeated:
            getattr(message, key).extend(value)
        else:
            setattr(message, key, value)


def event_from_json(text: str | bytes) -> analytics_pb2.AnalyticsEvent:
    """A stored document back to the wire message (for Query).

    Rows written by other means (hand edits, older versions) fall back to the reference mapping.
    """
    document = orjson.loads(text)
    event = analytics_pb2.AnalyticsEvent()
    try:
        fill_from_document(event, document)
    except (TypeError, ValueError, AttributeError):
        event = json_format.ParseDict(
            document, analytics_pb2.AnalyticsEvent(), ignore_unknown_fields=True
        )
    return event


class StoredEvent(NamedTuple):
    """One row of `analytics_events` (a tuple, handed to COPY as is): the document plus the
    columns aggregation reads."""

    id: str
    timestamp: float
    document: str
    endpoint: str | None
    model_key: str | None
    backend: str | None
    strategy: str | None
    success: bool | None
    fallback_used: bool | None
    duration_ms: float | None
    tokens_per_second: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    total_cost: float | None


# Column order of a `StoredEvent`; the table's extracted columns (store.py) use these names.
COLUMNS = tuple("event" if name == "document" else name for name in StoredEvent._fields)
_NONE: dict[str, Any] = {}


def to_stored(event: analytics_pb2.AnalyticsEvent, prices: PriceTable) -> StoredEvent:
    """Validate, price if needed, and extract; raises `InvalidEvent` for unstorable input."""
    return _finish(message_to_document(event), prices)


def document_to_stored(raw: bytes, prices: PriceTable) -> StoredEvent:
    """The same row from a JSON document (`EventBatch.documents`), normalized to the shape
    `message_to_document` gives, so both wire forms store identical documents."""
    try:
        document = documents.normalize(orjson.loads(raw))
    except (orjson.JSONDecodeError, documents.NotPlain) as exc:
        raise InvalidEvent(f"event document refused: {exc}") from exc
    return _finish(document, prices)


def _finish(document: dict[str, Any], prices: PriceTable) -> StoredEvent:
    event_id, timestamp = document["id"], document["timestamp"]
    if not event_id or len(event_id) > MAX_ID_CHARS:
        raise InvalidEvent(f"event id must be 1..{MAX_ID_CHARS} characters, got {event_id!r}")
    if not math.isfinite(timestamp) or timestamp <= 0:
        raise InvalidEvent(f"event {event_id}: timestamp must be positive unix seconds")
    _price_missing_cost(document, prices)
    return _row(document)


_PRICED_COUNTS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")


def _price_missing_cost(document: dict[str, Any], prices: PriceTable) -> None:
    """Events with usage but no cost are priced here, so cost is computed in one place only."""
    usage = document["token_usage"]
    if document["cost"] is not None or usage is None:
        return
    counts = (max(usage[name] or 0, 0) for name in _PRICED_COUNTS)
    document["cost"] = documents.normalize_cost(prices.cost(_model_key(document) or "", *counts))


def _model_key(document: dict[str, Any]) -> str | None:
    """`resolved_model`, else `request.model` (the key of `models_used` and `cost_by_model`)."""
    routing = document["routing"] or _NONE
    request = document["request"] or _NONE
    return routing.get("resolved_model") or request.get("model") or None


def _row(document: dict[str, Any]) -> StoredEvent:
    """The columns are read from the document (dict lookups), not from the message again:
    every `HasField` on the message costs more than the lookup."""
    request = document["request"] or _NONE
    routing = document["routing"] or _NONE
    perf = document["performance"] or _NONE
    usage = document["token_usage"] or _NONE
    return StoredEvent(
        document["id"],
        document["timestamp"],
        orjson.dumps(document).decode(),
        request.get("endpoint"),
        _model_key(document),
        routing.get("backend"),
        routing.get("strategy"),
        (document["response"] or _NONE).get("success"),
        routing.get("fallback_used"),
        perf.get("duration_ms"),
        perf.get("tokens_per_second"),
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        usage.get("cached_tokens"),
        usage.get("reasoning_tokens"),
        (document["cost"] or _NONE).get("total_cost"),
    )
