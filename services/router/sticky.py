"""Plan-token state (router-schema §7): Redis `<prefix>stk:<token>` with EXPIRE, else memory.

Memory is exact only for a single router process; Redis makes tokens survive restarts and
work across replicas. Turns are counted with an atomic increment so two concurrent requests
on one token cannot both take the last turn.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.common.pb import router_pb2

TOKEN_TTL_SECONDS = 1800
# Sticky lookups sit inside the edge's 250 ms Plan deadline: fail fast, then stop trying
# for a while instead of paying a connect timeout on every plan while Redis is down.
REDIS_TIMEOUT_SECONDS = 0.25
REDIS_RETRY_AFTER_SECONDS = 5.0
_TOKEN = re.compile(r"stk_[0-9a-f]{32}")
MAX_MEMORY_TOKENS = 100_000
# HINCRBY alone would recreate an expired token as a TTL-less hash.
_NEXT_TURN_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'turns_used', 1)
end
return 0
"""


def new_token() -> str:
    return "stk_" + secrets.token_hex(16)


def is_token(value: str) -> bool:
    return bool(_TOKEN.fullmatch(value))


@dataclass(frozen=True)
class StickyState:
    alias: str
    api: str
    plan: router_pb2.RoutePlan
    model: str
    caps: tuple[str, ...]
    turns_used: int
    max_turns: int
    expires_at: float  # unix seconds


class StickyStore(Protocol):
    async def put(self, token: str, state: StickyState) -> None: ...

    async def get(self, token: str) -> StickyState | None: ...

    async def next_turn(self, token: str) -> int:
        """Atomically add one turn and return the new `turns_used` (0 if the token vanished)."""
        ...

    async def close(self) -> None: ...


class MemoryStickyStore:
    def __init__(self) -> None:
        self._states: OrderedDict[str, StickyState] = OrderedDict()

    async def put(self, token: str, state: StickyState) -> None:
        self._states[token] = state
        self._states.move_to_end(token)
        while len(self._states) > MAX_MEMORY_TOKENS:
            self._states.popitem(last=False)

    async def get(self, token: str) -> StickyState | None:
        state = self._states.get(token)
        if state is not None and state.expires_at <= time.time():
            del self._states[token]
            return None
        return state

    async def next_turn(self, token: str) -> int:
        state = self._states.get(token)
        if state is None:
            return 0
        updated = StickyState(**{**state.__dict__, "turns_used": state.turns_used + 1})
        self._states[token] = updated
        return updated.turns_used

    async def close(self) -> None:
        self._states.clear()


class StickyStoreDown(RedisError):
    """Redis failed recently; calls are refused without touching the network."""


class RedisStickyStore:
    """One hash per token; EXPIREAT makes Redis forget it when the token expires."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self._redis = client
        self._prefix = f"{key_prefix}stk:"
        self._next_turn = client.register_script(_NEXT_TURN_LUA)
        self._down_until = 0.0

    @classmethod
    def from_url(cls, url: str, key_prefix: str) -> RedisStickyStore:
        client = aioredis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        return cls(client, key_prefix)

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """Refuse fast while Redis is known down; a failure marks it down for a while."""
        if time.monotonic() < self._down_until:
            raise StickyStoreDown("redis failed recently; sticky tokens paused")
        try:
            yield
        except (RedisError, OSError):
            self._down_until = time.monotonic() + REDIS_RETRY_AFTER_SECONDS
            raise

    def _key(self, token: str) -> str:
        return self._prefix + token

    async def put(self, token: str, state: StickyState) -> None:
        key = self._key(token)
        mapping = {
            "alias": state.alias,
            "api": state.api,
            "plan": state.plan.SerializeToString(),
            "model": state.model,
            "caps": orjson.dumps(list(state.caps)),
            "turns_used": state.turns_used,
            "max_turns": state.max_turns,
            "expires_at": state.expires_at,
        }
        with self._guarded():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=mapping)
                pipe.expireat(key, int(state.expires_at) + 1)
                await pipe.execute()

    async def get(self, token: str) -> StickyState | None:
        with self._guarded():
            raw = await self._redis.hgetall(self._key(token))
        if not raw:
            return None
        fields = {k.decode(): v for k, v in raw.items()}
        state = StickyState(
            alias=fields["alias"].decode(),
            api=fields["api"].decode(),
            plan=router_pb2.RoutePlan.FromString(fields["plan"]),
            model=fields["model"].decode(),
            caps=tuple(orjson.loads(fields["caps"])),
            turns_used=int(fields["turns_used"]),
            max_turns=int(fields["max_turns"]),
            expires_at=float(fields["expires_at"]),
        )
        return state if state.expires_at > time.time() else None

    async def next_turn(self, token: str) -> int:
        with self._guarded():
            return int(await self._next_turn(keys=[self._key(token)]))

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
