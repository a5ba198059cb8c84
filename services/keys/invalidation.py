"""Revocation broadcast: tells every edge to drop its cached verification of a key.

Channel: `<SIGNALBOX_REDIS_KEY_PREFIX>keys:invalidate` (default `signalbox:keys:invalidate`).
Message: the key id alone, as 32 lowercase hex characters (UTF-8), e.g.
`3f2a9c0e6b7d4e1f8a5b2c3d4e5f6a7b`. No token, secret or other field is ever sent.

Published after `Revoke` revoked a key and after `SetExpiration` changed one. Edges SUBSCRIBE
and evict that id from their verification cache, so the change reaches them within about a
second instead of after `SIGNALBOX_KEYS_CACHE_MS`. Delivery is best effort (Redis pub/sub has
no replay): the database stays the truth, and an edge that missed a message still catches up
when its cache entry expires.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL_SUFFIX = "keys:invalidate"
_TIMEOUT_SECONDS = 1.0


def channel_name(redis_key_prefix: str) -> str:
    return f"{redis_key_prefix}{CHANNEL_SUFFIX}"


class InvalidationPublisher:
    """PUBLISHes key ids; a Redis failure is logged, never fails the RPC that changed the key."""

    def __init__(self, redis_url: str, redis_key_prefix: str) -> None:
        self.channel = channel_name(redis_key_prefix)
        self._redis = aioredis.from_url(
            redis_url,
            socket_timeout=_TIMEOUT_SECONDS,
            socket_connect_timeout=_TIMEOUT_SECONDS,
        )

    async def publish(self, key_id: str) -> None:
        try:
            receivers = await self._redis.publish(self.channel, key_id)
        except (RedisError, OSError) as exc:
            log.warning(
                "key invalidation not published",
                extra={"key_id": key_id, "channel": self.channel, "error": repr(exc)},
            )
            return
        log.debug("key invalidation published", extra={"key_id": key_id, "receivers": receivers})

    async def close(self) -> None:
        await self._redis.aclose()
