"""`signalbox.keys.v1.Keys`: the gRPC face of the key store (spec keys §3, §5-§7).

Bad input aborts with INVALID_ARGUMENT and the edge's error code in trailing metadata
`error-code`; a database outage aborts with UNAVAILABLE and flips health to NOT_SERVING.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from services.common.db import DATABASE_UNAVAILABLE
from services.common.db_health import DatabaseHealth
from services.common.pb import keys_pb2, keys_pb2_grpc
from services.keys.convert import attributes_from, generated_key, key_info, optional
from services.keys.errors import KeyValidationError
from services.keys.expiry import ExpiryPolicy
from services.keys.invalidation import InvalidationPublisher
from services.keys.model import KeyAttributes, KeyRecord, batch_labels, validate_text
from services.keys.store import KeyStore, StoredKey
from services.keys.tokens import MintedKey, mint_key, parse_token, secret_matches

log = logging.getLogger(__name__)

ERROR_CODE_METADATA = "error-code"
SERVICE_NAME = keys_pb2.DESCRIPTOR.services_by_name["Keys"].full_name
_KEY_ID = re.compile(r"[0-9a-f]{32}")

Clock = Callable[[], float]
Reply = TypeVar("Reply")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]]


def _rpc(handler: Handler[Reply]) -> Handler[Reply]:
    """Map the service's typed failures onto gRPC status codes."""

    @functools.wraps(handler)
    async def wrapper(self: KeysService, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        try:
            return await handler(self, request, context)
        except KeyValidationError as exc:
            log.info(
                "request rejected",
                extra={"rpc": handler.__name__, "error_code": exc.code, "reason": exc.message},
            )
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                exc.message,
                trailing_metadata=((ERROR_CODE_METADATA, exc.code),),
            )
        except DATABASE_UNAVAILABLE as exc:
            await self.health.mark(False, repr(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "keys database unavailable")

    return wrapper


def _normalized_id(key_id: str) -> str | None:
    """Ids are stored lowercase; anything that is not a key id cannot match a row."""
    lowered = key_id.lower()
    return lowered if _KEY_ID.fullmatch(lowered) else None


class KeysService(keys_pb2_grpc.KeysServicer):
    """Verify, issue, list, revoke and re-expire keys."""

    def __init__(
        self,
        store: KeyStore,
        policy: ExpiryPolicy,
        health: DatabaseHealth,
        publisher: InvalidationPublisher | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.health = health
        self.publisher = publisher
        self.clock = clock

    @_rpc
    async def Verify(
        self, request: keys_pb2.VerifyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.VerifyResponse:
        """Format, lookup, constant-time hash, revoked, expired: in that order (§3)."""
        parsed = parse_token(request.token)
        if parsed is None:
            return keys_pb2.VerifyResponse(result=keys_pb2.INVALID_FORMAT)
        stored = await self.store.lookup(parsed.key_id)
        matches = secret_matches(
            stored.salt_hex if stored else None, stored.hash_hex if stored else None, parsed.secret
        )
        if stored is None:
            return keys_pb2.VerifyResponse(result=keys_pb2.NOT_FOUND)
        if not matches:
            return keys_pb2.VerifyResponse(result=keys_pb2.HASH_MISMATCH)
        record = stored.record
        if record.revoked_at is not None:
            result = keys_pb2.REVOKED
        elif record.is_expired(self.clock()):
            result = keys_pb2.EXPIRED
        else:
            result = keys_pb2.VALID
        return keys_pb2.VerifyResponse(result=result, key=key_info(record))

    @_rpc
    async def Generate(
        self, request: keys_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.GeneratedKey:
        label = validate_text("label", optional(request, "label"))
        (generated,) = await self._issue([label], request)
        return generated

    @_rpc
    async def GenerateBatch(
        self, request: keys_pb2.GenerateBatchRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.GenerateBatchResponse:
        labels = batch_labels(list(request.labels), optional(request, "label_prefix"))
        return keys_pb2.GenerateBatchResponse(keys=await self._issue(labels, request))

    async def _issue(
        self,
        labels: Sequence[str | None],
        request: keys_pb2.GenerateRequest | keys_pb2.GenerateBatchRequest,
    ) -> list[keys_pb2.GeneratedKey]:
        """Validate everything first, then write every key in one transaction."""
        attributes = attributes_from(request)
        now = self.clock()
        expires_at = self.policy.for_new_key(
            expires_at=optional(request, "expires_at"),
            ttl_seconds=optional(request, "ttl_seconds"),
            now=now,
        )
        minted = [mint_key() for _ in labels]
        rows = [
            _stored(m, label, int(now), expires_at, attributes)
            for m, label in zip(minted, labels, strict=True)
        ]
        await self.store.insert(rows)
        for row in rows:
            log.info(
                "key generated",
                extra={
                    "key_id": row.record.id,
                    "label": row.record.label,
                    "expires_at": expires_at,
                },
            )
        return [generated_key(row.record, m.token) for row, m in zip(rows, minted, strict=True)]

    @_rpc
    async def List(
        self, request: keys_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.ListResponse:
        include_revoked = optional(request, "include_revoked")
        records = await self.store.list(
            label=optional(request, "label"),
            label_prefix=optional(request, "label_prefix"),
            include_revoked=True if include_revoked is None else include_revoked,
        )
        return keys_pb2.ListResponse(keys=[key_info(r) for r in records])

    @_rpc
    async def Revoke(
        self, request: keys_pb2.RevokeRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.RevokeResponse:
        """Unknown or already revoked ids answer revoked=false, not an error (§6)."""
        key_id = _normalized_id(request.id)
        revoked = key_id is not None and await self.store.revoke(key_id, int(self.clock()))
        if revoked:
            log.info("key revoked", extra={"key_id": key_id})
            await self._invalidate(key_id)
        return keys_pb2.RevokeResponse(revoked=revoked, id=request.id)

    @_rpc
    async def SetExpiration(
        self, request: keys_pb2.SetExpirationRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.SetExpirationResponse:
        expires_at = self.policy.for_update(
            expires_at=optional(request, "expires_at"),
            ttl_seconds=optional(request, "ttl_seconds"),
            now=self.clock(),
        )
        key_id = _normalized_id(request.id)
        updated = key_id is not None and await self.store.set_expiration(key_id, expires_at)
        if not updated:
            return keys_pb2.SetExpirationResponse(updated=False, id=request.id)
        log.info("key expiration set", extra={"key_id": key_id, "expires_at": expires_at})
        await self._invalidate(key_id)
        return keys_pb2.SetExpirationResponse(updated=True, id=request.id, expires_at=expires_at)

    async def _invalidate(self, key_id: str | None) -> None:
        if self.publisher is not None and key_id is not None:
            await self.publisher.publish(key_id)


def _stored(
    minted: MintedKey,
    label: str | None,
    created_at: int,
    expires_at: int | None,
    attributes: KeyAttributes,
) -> StoredKey:
    record = KeyRecord(
        id=minted.id,
        label=label,
        created_at=created_at,
        expires_at=expires_at,
        revoked_at=None,
        attributes=attributes,
    )
    return StoredKey(record=record, salt_hex=minted.salt_hex, hash_hex=minted.hash_hex)
