"""Client authentication (http-api §1, keys.md §3).

Managed mode verifies `sk_<id>.<secret>` tokens with the keys service and caches VALID
results briefly, so a hot key costs one gRPC call per `SIGNALBOX_KEYS_CACHE_MS`, never past
the key's own expiry. Passthrough mode only requires a bearer, which is forwarded upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import grpc

from services.common import metrics
from services.common.pb import keys_pb2, keys_pb2_grpc
from services.edge.errors import ApiError
from services.keys.tokens import parse_token

log = logging.getLogger(__name__)

VERIFY_TIMEOUT_S = 2.0
CACHE_MAX_ENTRIES = 10_000

_REJECTIONS: dict[int, tuple[str, str]] = {
    keys_pb2.INVALID_FORMAT: ("invalid_api_key", "Invalid API key"),
    keys_pb2.NOT_FOUND: ("invalid_api_key", "Invalid API key"),
    keys_pb2.HASH_MISMATCH: ("invalid_api_key", "Invalid API key"),
    keys_pb2.REVOKED: ("api_key_revoked", "API key revoked"),
    keys_pb2.EXPIRED: ("api_key_expired", "API key expired"),
}


@dataclass(frozen=True)
class AuthContext:
    """Who is calling: the key record (managed) or the bearer to forward (passthrough)."""

    method: Literal["managed", "passthrough"]
    key: keys_pb2.KeyInfo | None = None
    bearer: str | None = None

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key is not None else None

    @property
    def key_label(self) -> str | None:
        if self.key is None or not self.key.HasField("label"):
            return None
        return self.key.label


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class VerifiedKeyCache:
    """VALID verifications by token digest; an entry never outlives the key's `expires_at`."""

    def __init__(self, ttl_ms: int, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self._ttl_s = ttl_ms / 1000
        self._max = max_entries
        self._entries: OrderedDict[bytes, tuple[float, keys_pb2.KeyInfo]] = OrderedDict()
        self._by_key: dict[str, set[bytes]] = {}

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> keys_pb2.KeyInfo | None:
        digest = self._digest(token)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        valid_until, key = entry
        if time.time() >= valid_until:
            self._drop(digest)
            return None
        return key

    def put(self, token: str, key: keys_pb2.KeyInfo) -> None:
        if self._ttl_s <= 0:
            return
        valid_until = time.time() + self._ttl_s
        if key.HasField("expires_at"):
            valid_until = min(valid_until, float(key.expires_at))
        digest = self._digest(token)
        self._entries[digest] = (valid_until, key)
        self._entries.move_to_end(digest)
        self._by_key.setdefault(key.id, set()).add(digest)
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))

    def evict(self, key_id: str) -> None:
        """Forget every cached verification of one key (revoked or re-dated elsewhere)."""
        for digest in self._by_key.pop(key_id, set()):
            self._entries.pop(digest, None)

    def _drop(self, digest: bytes) -> None:
        _, key = self._entries.pop(digest)
        digests = self._by_key.get(key.id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._by_key[key.id]


class Authenticator:
    """Turns the `Authorization` header into an `AuthContext` or a typed 401/503."""

    def __init__(
        self,
        mode: Literal["managed", "passthrough"],
        keys_channel: grpc.aio.Channel | None,
        cache: VerifiedKeyCache,
    ) -> None:
        self.mode = mode
        self._stub = keys_pb2_grpc.KeysStub(keys_channel) if keys_channel is not None else None
        self._cache = cache
        # One Verify RPC per token at a time: a burst of requests with a cold cache (a client
        # opening 1 000 streams at once) waits on the same call instead of stampeding keys.
        self._inflight: dict[bytes, asyncio.Task[keys_pb2.KeyInfo]] = {}

    @property
    def key_store_available(self) -> bool:
        return self._stub is not None

    async def authenticate(self, authorization: str | None) -> AuthContext:
        token = bearer_token(authorization)
        if token is None:
            raise ApiError(401, "missing_api_key", "Missing Authorization bearer")
        if self.mode == "passthrough":
            return AuthContext(method="passthrough", bearer=token)
        return AuthContext(method="managed", key=await self._verify(token))

    def evict(self, key_id: str) -> None:
        """Forget this edge's cached verifications of a key it just revoked or re-dated."""
        self._cache.evict(key_id)

    async def _verify(self, token: str) -> keys_pb2.KeyInfo:
        cached = self._cache.get(token)
        metrics.KEY_CACHE.labels("miss" if cached is None else "hit").inc()
        if cached is not None:
            return cached
        if self._stub is None:
            raise _keys_unavailable("Key service is disabled (SIGNALBOX_KEYS_ADDR=off)")
        if parse_token(token) is None:  # cannot be valid: no gRPC call, no lookup
            raise ApiError(401, "invalid_api_key", "Invalid API key")
        digest = VerifiedKeyCache._digest(token)
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._verify_remote(token))
            self._inflight[digest] = task
            task.add_done_callback(lambda _: self._inflight.pop(digest, None))
        # Shielded: a waiter whose client went away must not cancel the others' call.
        return await asyncio.shield(task)

    async def _verify_remote(self, token: str) -> keys_pb2.KeyInfo:
        assert self._stub is not None
        try:
            with metrics.KEY_VERIFY.time():
                reply = await self._stub.Verify(
                    keys_pb2.VerifyRequest(token=token), timeout=VERIFY_TIMEOUT_S
                )
        except grpc.aio.AioRpcError as exc:
            log.warning("keys service call failed", extra={"grpc_status": exc.code().name})
            raise _keys_unavailable("Key service unavailable") from None
        if reply.result == keys_pb2.VALID and reply.HasField("key"):
            self._cache.put(token, reply.key)
            return reply.key
        code, message = _REJECTIONS.get(reply.result, ("invalid_api_key", "Invalid API key"))
        raise ApiError(401, code, message)


def _keys_unavailable(message: str) -> ApiError:
    return ApiError(503, "keys_unavailable", message, retry_after=1)
