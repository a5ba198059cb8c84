"""Events between the wire (protobuf), the stored JSON document and the aggregation columns.

The stored document always has the full §1 shape, with `null` for what the edge did not know,
so queries and exports return the same keys for every event whatever the sender omitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.common.pb import analytics_pb2
from services.common.pricing import PriceTable

MAX_ID_CHARS = 128


class InvalidEvent(ValueError):
    """An event that can never be stored; the whole batch is refused, nothing is written."""


# How `message_to_document` reads each field kind.
_PLAIN, _OPTIONAL, _MESSAGE, _MESSAGES, _REPEATED, _MAP = range(6)


def _kind(field: FieldDescriptor) -> int:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return _MAP
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _MESSAGES if field.is_repeated else _MESSAGE
    if field.is_repeated:
        return _REPEATED
    return _OPTIONAL if field.has_presence else _PLAIN


@cache
def _plan(descriptor: Descriptor) -> tuple[tuple[str, int], ...]:
    """Per message type, once: each field's name and kind, in declaration order."""
    return tuple((field.name, _kind(field)) for field in descriptor.fields)


def message_to_document(message: Message) -> dict[str, Any]:
    """Every field present: unset optional fields and sub-messages are `None`, repeated are `[]`,
    maps are objects (with scalar values, the only kind our protos use).

    Unlike `json_format.MessageToDict`, 64-bit integers stay numbers (Routiium's JSON). This
    runs for every ingested event, so it walks a cached per-type plan with one C call per field.
    """
    has = message.HasField
    document: dict[str, Any] = {}
    for name, kind in _plan(message.DESCRIPTOR):
        if kind == _OPTIONAL:
            document[name] = getattr(message, name) if has(name) else None
        elif kind == _PLAIN:
            document[name] = getattr(message, name)
        elif kind == _MESSAGE:
            document[name] = message_to_document(getattr(message, name)) if has(name) else None
        elif kind == _REPEATED:
            document[name] = list(getattr(message, name))
        elif kind == _MAP:
            document[name] = dict(getattr(message, name))
        else:
            document[name] = [message_to_document(item) for item in getattr(message, name)]
    return document


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


def validate(event: analytics_pb2.AnalyticsEvent) -> None:
    if not event.id or len(event.id) > MAX_ID_CHARS:
        raise InvalidEvent(f"event id must be 1..{MAX_ID_CHARS} characters, got {event.id!r}")
    if not math.isfinite(event.timestamp) or event.timestamp <= 0:
        raise InvalidEvent(f"event {event.id}: timestamp must be positive unix seconds")


def model_key(event: analytics_pb2.AnalyticsEvent) -> str | None:
    """`resolved_model`, else `request.model` (the key of `models_used` and `cost_by_model`)."""
    if event.routing.HasField("resolved_model") and event.routing.resolved_model:
        return event.routing.resolved_model
    if event.request.HasField("model") and event.request.model:
        return event.request.model
    return None


def _count(usage: analytics_pb2.TokenUsage, name: str) -> int:
    return max(getattr(usage, name), 0) if usage.HasField(name) else 0


def price_missing_cost(event: analytics_pb2.AnalyticsEvent, prices: PriceTable) -> None:
    """Events with usage but no cost are priced here, so cost is computed in one place only."""
    if event.HasField("cost") or not event.HasField("token_usage"):
        return
    usage = event.token_usage
    cost = prices.cost(
        model_key(event) or "",
        _count(usage, "prompt_tokens"),
        _count(usage, "completion_tokens"),
        _count(usage, "cached_tokens"),
        _count(usage, "reasoning_tokens"),
    )
    event.cost.CopyFrom(analytics_pb2.Cost(**cost))


def _opt(message: Message, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


# Column order of `StoredEvent.row()`; the table's extracted columns (store.py) use these names.
COLUMNS = (
    "id",
    "timestamp",
    "event",
    "endpoint",
    "model_key",
    "backend",
    "strategy",
    "success",
    "fallback_used",
    "duration_ms",
    "tokens_per_second",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_cost",
)


@dataclass(frozen=True)
class StoredEvent:
    """One row of `analytics_events`: the document plus the columns aggregation reads."""

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

    def row(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.timestamp,
            self.document,
            self.endpoint,
            self.model_key,
            self.backend,
            self.strategy,
            self.success,
            self.fallback_used,
            self.duration_ms,
            self.tokens_per_second,
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.reasoning_tokens,
            self.total_cost,
        )


def to_stored(event: analytics_pb2.AnalyticsEvent, prices: PriceTable) -> StoredEvent:
    """Validate, price if needed, and extract; raises `InvalidEvent` for unstorable input."""
    validate(event)
    price_missing_cost(event, prices)
    request, routing, perf = event.request, event.routing, event.performance
    usage, cost = event.token_usage, event.cost
    return StoredEvent(
        id=event.id,
        timestamp=event.timestamp,
        document=orjson.dumps(message_to_document(event)).decode(),
        endpoint=_opt(request, "endpoint"),
        model_key=model_key(event),
        backend=_opt(routing, "backend"),
        strategy=_opt(routing, "strategy"),
        success=_opt(event.response, "success"),
        fallback_used=_opt(routing, "fallback_used"),
        duration_ms=_opt(perf, "duration_ms"),
        tokens_per_second=_opt(perf, "tokens_per_second"),
        prompt_tokens=_opt(usage, "prompt_tokens"),
        completion_tokens=_opt(usage, "completion_tokens"),
        cached_tokens=_opt(usage, "cached_tokens"),
        reasoning_tokens=_opt(usage, "reasoning_tokens"),
        total_cost=_opt(cost, "total_cost"),
    )
