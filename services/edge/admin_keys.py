"""Admin key routes (keys.md §6): `/keys`, `/keys/generate`, `/keys/generate_batch`,
`/keys/revoke`, `/keys/set_expiration`, each one call to the keys gRPC service.

Bodies are validated here (pydantic) and again by the keys service, whose INVALID_ARGUMENT
carries the edge error code in metadata `error-code`. Generated tokens are returned once and
never logged; revoking or re-dating a key evicts this edge's cached verification at once.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import grpc
from fastapi import Query, Request
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from services.common.pb import keys_pb2, keys_pb2_grpc
from services.edge.admin import admin_router
from services.edge.errors import ApiError, json_response
from services.keys.service import ERROR_CODE_METADATA

log = logging.getLogger(__name__)

RPC_TIMEOUT_S = 5.0
MAX_BATCH = 1000

router = admin_router("/keys")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimitBody(_Body):
    rpm: int | None = None
    tpm: int | None = None


class BudgetBody(_Body):
    limit_micro: int
    period: Literal["day", "month"]


class GenerateBody(_Body):
    label: str | None = None
    ttl_seconds: int | None = None
    expires_at: int | None = None
    scopes: list[str] | None = None
    rate_limit: RateLimitBody | None = None
    budget: BudgetBody | None = None
    tenant: str | None = None
    project: str | None = None


class GenerateBatchBody(GenerateBody):
    label: None = None  # batch labels come from `labels`
    labels: list[str] = Field(min_length=1, max_length=MAX_BATCH)
    label_prefix: str | None = None


class RevokeBody(_Body):
    id: str


class SetExpirationBody(_Body):
    id: str
    expires_at: int | None = None
    ttl_seconds: int | None = None


def _optional(message: Message, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _limits_json(message: keys_pb2.KeyInfo | keys_pb2.GeneratedKey) -> dict[str, Any]:
    rate_limit = None
    if message.HasField("rate_limit"):
        rl = message.rate_limit
        rate_limit = {"rpm": _optional(rl, "rpm"), "tpm": _optional(rl, "tpm")}
    budget = None
    if message.HasField("budget"):
        budget = {"limit_micro": message.budget.limit_micro, "period": message.budget.period}
    return {
        "scopes": list(message.scopes) or None,
        "rate_limit": rate_limit,
        "budget": budget,
        "tenant": _optional(message, "tenant"),
        "project": _optional(message, "project"),
    }


def key_info_json(key: keys_pb2.KeyInfo) -> dict[str, Any]:
    """`KeyInfo` with unset values as null (keys.md §6)."""
    return {
        "id": key.id,
        "label": _optional(key, "label"),
        "created_at": key.created_at,
        "expires_at": _optional(key, "expires_at"),
        "revoked_at": _optional(key, "revoked_at"),
        **_limits_json(key),
    }


def generated_key_json(key: keys_pb2.GeneratedKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "token": key.token,
        "created_at": key.created_at,
        "expires_at": _optional(key, "expires_at"),
        "label": _optional(key, "label"),
        **_limits_json(key),
    }


def issue_fields(body: GenerateBody) -> dict[str, Any]:
    """The Generate/GenerateBatch fields a body sets; unset ones stay unset in proto3."""
    fields = body.model_dump(exclude_none=True, exclude={"rate_limit", "budget", "labels"})
    if body.rate_limit is not None:
        fields["rate_limit"] = keys_pb2.RateLimit(**body.rate_limit.model_dump(exclude_none=True))
    if body.budget is not None:
        fields["budget"] = keys_pb2.KeyBudget(**body.budget.model_dump())
    return fields


def _stub(request: Request) -> keys_pb2_grpc.KeysStub:
    channel = request.app.state.runtime.channels.get("keys")
    if channel is None:
        raise ApiError(503, "keys_unavailable", "Key service is disabled (SIGNALBOX_KEYS_ADDR=off)")
    return keys_pb2_grpc.KeysStub(channel)


async def _call(rpc: Any, message: Message) -> Any:
    """One keys RPC; INVALID_ARGUMENT → 400 with the service's code, anything else → 503."""
    try:
        return await rpc(message, timeout=RPC_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            metadata = dict(exc.trailing_metadata() or ())
            code = str(metadata.get(ERROR_CODE_METADATA) or "invalid_request")
            raise ApiError(400, code, exc.details() or "Invalid request") from None
        log.warning("keys service call failed", extra={"grpc_status": exc.code().name})
        raise ApiError(503, "keys_unavailable", "Key service unavailable", retry_after=1) from None


def _evict(request: Request, key_id: str) -> None:
    request.app.state.runtime.authenticator.evict(key_id.lower())


@router.get("")
async def list_keys(
    request: Request,
    label: str | None = None,
    label_prefix: str | None = None,
    include_revoked: bool = Query(default=True),
) -> Response:
    """`label` is an exact match and wins over `label_prefix`; oldest first."""
    fields: dict[str, Any] = {"include_revoked": include_revoked}
    if label is not None:
        fields["label"] = label
    elif label_prefix is not None:
        fields["label_prefix"] = label_prefix
    reply = await _call(_stub(request).List, keys_pb2.ListRequest(**fields))
    return json_response([key_info_json(k) for k in reply.keys])


@router.post("/generate")
async def generate(request: Request, body: GenerateBody) -> Response:
    reply = await _call(_stub(request).Generate, keys_pb2.GenerateRequest(**issue_fields(body)))
    log.info("key generated via admin", extra={"key_id": reply.id})
    return json_response(generated_key_json(reply))


@router.post("/generate_batch")
async def generate_batch(request: Request, body: GenerateBatchBody) -> Response:
    message = keys_pb2.GenerateBatchRequest(labels=body.labels, **issue_fields(body))
    reply = await _call(_stub(request).GenerateBatch, message)
    log.info("keys generated via admin", extra={"count": len(reply.keys)})
    return json_response([generated_key_json(k) for k in reply.keys])


@router.post("/revoke")
async def revoke(request: Request, body: RevokeBody) -> Response:
    reply = await _call(_stub(request).Revoke, keys_pb2.RevokeRequest(id=body.id))
    _evict(request, body.id)
    return json_response({"revoked": reply.revoked, "id": reply.id})


@router.post("/set_expiration")
async def set_expiration(request: Request, body: SetExpirationBody) -> Response:
    message = keys_pb2.SetExpirationRequest(**body.model_dump(exclude_none=True))
    reply = await _call(_stub(request).SetExpiration, message)
    if not reply.updated:
        return json_response({"updated": False, "id": reply.id})
    _evict(request, body.id)
    return json_response(
        {"updated": True, "id": reply.id, "expires_at": _optional(reply, "expires_at")}
    )
