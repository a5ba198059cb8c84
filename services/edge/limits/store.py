"""Counter stores behind the limiter: Redis (shared by every edge) or process memory.

Admission is one atomic step that checks every limit of a key and only then reserves: a
request refused by one limit consumes nothing from the others. Redis runs it as a Lua
script; the memory store runs the same rules without awaiting, which is atomic on one loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Protocol

import redis.asyncio as aioredis

Refusal = Literal["budget", "rpm", "tpm"]
_REFUSALS: dict[int, Refusal] = {1: "budget", 2: "rpm", 3: "tpm"}


@dataclass(frozen=True)
class Ask:
    """One request's demand on a key's counters; a limit of 0 means "not limited"."""

    rpm_key: str
    tpm_key: str
    budget_key: str
    rpm: int
    tpm: int
    tokens: int
    budget_micro: int
    minute_ttl_s: int


@dataclass(frozen=True)
class Verdict:
    """Counter values after admission (before it, when refused)."""

    refused: Refusal | None
    requests: int
    tokens: int
    spent_micro: int


@dataclass(frozen=True)
class Charge:
    """A reconciliation after the request finished: add `delta` to `key`, refresh its TTL."""

    key: str
    delta: int
    ttl_s: int


class CounterStore(Protocol):
    shared: bool

    async def admit(self, ask: Ask) -> Verdict: ...

    async def charge(self, charges: list[Charge]) -> None: ...


# Budget first: its wait is the longest, so it is the refusal worth reporting.
ADMIT_LUA = """
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens, budget, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local used_req, used_tok, spent = 0, 0, 0
if rpm > 0 then used_req = tonumber(redis.call('GET', KEYS[1]) or '0') end
if tpm > 0 then used_tok = tonumber(redis.call('GET', KEYS[2]) or '0') end
if budget > 0 then spent = tonumber(redis.call('GET', KEYS[3]) or '0') end
if budget > 0 and spent >= budget then return {1, used_req, used_tok, spent} end
if rpm > 0 and used_req + 1 > rpm then return {2, used_req, used_tok, spent} end
if tpm > 0 and used_tok + tokens > tpm then return {3, used_req, used_tok, spent} end
if rpm > 0 then
  used_req = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ttl)
end
if tpm > 0 then
  used_tok = redis.call('INCRBY', KEYS[2], tokens)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {0, used_req, used_tok, spent}
"""


class RedisCounters:
    """Counters in Redis: exact across every edge process that shares it."""

    shared = True

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._admit = redis.register_script(ADMIT_LUA)

    async def admit(self, ask: Ask) -> Verdict:
        code, requests, tokens, spent = await self._admit(
            keys=[ask.rpm_key, ask.tpm_key, ask.budget_key],
            args=[ask.rpm, ask.tpm, ask.tokens, ask.budget_micro, ask.minute_ttl_s],
        )
        return Verdict(_REFUSALS.get(int(code)), int(requests), int(tokens), int(spent))

    async def charge(self, charges: list[Charge]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for c in charges:
                pipe.incrby(c.key, c.delta)
                pipe.expire(c.key, c.ttl_s)
            await pipe.execute()


class MemoryCounters:
    """Counters in this process only (no Redis): exact for a single edge process."""

    shared = False

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}

    def _get(self, key: str, now: float) -> int:
        value, expires = self._values.get(key, (0, 0.0))
        return value if expires > now else 0

    def _add(self, key: str, delta: int, ttl_s: int, now: float) -> int:
        value = self._get(key, now) + delta
        self._values[key] = (value, now + ttl_s)
        return value

    def _sweep(self, now: float) -> None:
        if len(self._values) > 10_000:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}

    async def admit(self, ask: Ask) -> Verdict:
        now = time.monotonic()
        self._sweep(now)
        requests = self._get(ask.rpm_key, now) if ask.rpm else 0
        tokens = self._get(ask.tpm_key, now) if ask.tpm else 0
        spent = self._get(ask.budget_key, now) if ask.budget_micro else 0
        refused: Refusal | None = None
        if ask.budget_micro and spent >= ask.budget_micro:
            refused = "budget"
        elif ask.rpm and requests + 1 > ask.rpm:
            refused = "rpm"
        elif ask.tpm and tokens + ask.tokens > ask.tpm:
            refused = "tpm"
        if refused is not None:
            return Verdict(refused, requests, tokens, spent)
        if ask.rpm:
            requests = self._add(ask.rpm_key, 1, ask.minute_ttl_s, now)
        if ask.tpm:
            tokens = self._add(ask.tpm_key, ask.tokens, ask.minute_ttl_s, now)
        return Verdict(None, requests, tokens, spent)

    async def charge(self, charges: list[Charge]) -> None:
        now = time.monotonic()
        for c in charges:
            self._add(c.key, c.delta, c.ttl_s, now)
