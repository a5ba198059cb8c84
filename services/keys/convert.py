"""Translation between `signalbox.keys.v1` messages and the key model; no I/O."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from services.common.pb import keys_pb2
from services.keys.model import (
    Budget,
    KeyAttributes,
    KeyRecord,
    RateLimit,
    validate_attributes,
    validate_budget,
    validate_rate_limit,
)

GenerateLike = keys_pb2.GenerateRequest | keys_pb2.GenerateBatchRequest


def optional(message: Message, field: str) -> Any:
    """A proto3 `optional` field's value, or None when the caller did not set it."""
    return getattr(message, field) if message.HasField(field) else None


def attributes_from(request: GenerateLike) -> KeyAttributes:
    """Scopes, limits, budget, tenant and project of a Generate or GenerateBatch request."""
    rate_limit = None
    if request.HasField("rate_limit"):
        rl = request.rate_limit
        rate_limit = validate_rate_limit(optional(rl, "rpm"), optional(rl, "tpm"))
    budget = None
    if request.HasField("budget"):
        budget = validate_budget(request.budget.limit_micro, request.budget.period)
    return validate_attributes(
        scopes=list(request.scopes),
        rate_limit=rate_limit,
        budget=budget,
        tenant=optional(request, "tenant"),
        project=optional(request, "project"),
    )


def _rate_limit(value: RateLimit | None) -> keys_pb2.RateLimit | None:
    return None if value is None else keys_pb2.RateLimit(rpm=value.rpm, tpm=value.tpm)


def _budget(value: Budget | None) -> keys_pb2.KeyBudget | None:
    if value is None:
        return None
    return keys_pb2.KeyBudget(limit_micro=value.limit_micro, period=value.period)


def _fields(record: KeyRecord) -> dict[str, Any]:
    a = record.attributes
    return {
        "id": record.id,
        "label": record.label,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "scopes": list(a.scopes or ()),
        "rate_limit": _rate_limit(a.rate_limit),
        "budget": _budget(a.budget),
        "tenant": a.tenant,
        "project": a.project,
    }


def key_info(record: KeyRecord) -> keys_pb2.KeyInfo:
    return keys_pb2.KeyInfo(**_fields(record), revoked_at=record.revoked_at)


def generated_key(record: KeyRecord, token: str) -> keys_pb2.GeneratedKey:
    return keys_pb2.GeneratedKey(**_fields(record), token=token)
