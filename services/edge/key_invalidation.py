"""Listens for the keys service's revocation broadcast and evicts cached verifications.

Channel `<SIGNALBOX_REDIS_KEY_PREFIX>keys:invalidate`, message = the key id (see
`services.keys.invalidation`). Best effort by design: when Redis is down the listener keeps
retrying in the background and the cache TTL still bounds how stale a verification can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.edge.auth import VerifiedKeyCache
from services.keys.invalidation import channel_name

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0
_KEY_ID = re.compile(r"^[0-9a-f]{32}$")


class KeyInvalidationListener:
    """One background task: SUBSCRIBE, evict on each message, resubscribe after failures."""

    def __init__(
        self, redis: aioredis.Redis, redis_key_prefix: str, cache: VerifiedKeyCache
    ) -> None:
        self._redis = redis
        self.channel = channel_name(redis_key_prefix)
        self._cache = cache
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="key-invalidation")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = RETRY_MIN_S
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                if self.subscribed.is_set():
                    delay = RETRY_MIN_S  # it worked for a while: retry quickly
                self.subscribed.clear()
                log.warning(
                    "key invalidation listener lost Redis; retrying",
                    extra={"channel": self.channel, "error": repr(exc), "retry_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _listen(self) -> None:
        async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(self.channel)
            self.subscribed.set()
            async for message in pubsub.listen():
                data = message.get("data")
                key_id = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
                if _KEY_ID.fullmatch(key_id):
                    self._cache.evict(key_id)
                    log.debug("key verification evicted", extra={"key_id": key_id})
