"""Per-key rate limits and spend budgets at the edge (keys.md §4, http-api §3 step 4).

`admit` runs before routing: it refuses with 429 (or 503 when the counters are unreachable
and the knob says fail closed), reserves the request and the estimated prompt tokens, and
caps the router's `budget.amount_micro` at what the key has left. `settle` runs when the
request finished: it reconciles the token reservation with the real usage and charges the
analytics cost of the request to the budget, off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from services.common import metrics
from services.common.pb import keys_pb2, router_pb2
from services.edge.errors import ApiError
from services.edge.events import CostTable, RequestRecord, event_cost
from services.edge.limits.store import Ask, Charge, CounterStore, Refusal, Verdict
from services.edge.limits.windows import (
    MINUTE_KEY_TTL_S,
    Period,
    Window,
    budget_window,
    minute_window,
)

log = logging.getLogger(__name__)

COUNTERS_TIMEOUT_S = 0.5
SETTLE_CLOSE_TIMEOUT_S = 2.0
COUNTER_FAILURES = (RedisError, OSError, TimeoutError)

_REFUSED: dict[Refusal, tuple[str, str]] = {
    "rpm": ("rate_limit_exceeded", "Rate limit exceeded: requests per minute"),
    "tpm": ("token_rate_limit_exceeded", "Rate limit exceeded: tokens per minute"),
    "budget": ("spend_budget_exceeded", "Spend budget exhausted for the current period"),
}


@dataclass
class Admission:
    """What one admitted request reserved, and the headers its response carries."""

    tpm_key: str | None = None
    reserved_tokens: int = 0
    budget_key: str | None = None
    budget_ttl_s: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def ratelimit_headers(
    key: keys_pb2.KeyInfo, verdict: Verdict | None, minute: Window
) -> dict[str, str]:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the limits a key has."""
    headers: dict[str, str] = {}
    if verdict is None:
        return headers
    reset = f"{minute.retry_after}s"
    rl = key.rate_limit
    for kind, limit, used in (
        ("requests", rl.rpm if rl.HasField("rpm") else 0, verdict.requests),
        ("tokens", rl.tpm if rl.HasField("tpm") else 0, verdict.tokens),
    ):
        if limit > 0:
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, limit - used))
            headers[f"x-ratelimit-reset-{kind}"] = reset
    return headers


def has_limits(key: keys_pb2.KeyInfo | None) -> bool:
    return key is not None and (key.HasField("rate_limit") or key.HasField("budget"))


class Limiter:
    """Admission and settlement against one counter store, with the Redis-failure policy."""

    def __init__(
        self,
        store: CounterStore,
        prefix: str,
        prices: CostTable,
        *,
        rate_fail_open: bool,
        budget_fail_open: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._prefix = prefix
        self._prices = prices
        self.rate_fail_open = rate_fail_open
        self.budget_fail_open = budget_fail_open
        self.clock = clock
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task[None]] = set()

    def describe(self) -> dict[str, Any]:
        """The `/status` view: where counters live and what a counter outage does."""
        shared = self.store.shared
        return {
            "backend": "redis" if shared else "memory",
            "scope": "shared" if shared else "per_process",
            "rate_limit_fail_open": self.rate_fail_open,
            "budget_fail_open": self.budget_fail_open,
        }

    def _ask(self, key: keys_pb2.KeyInfo, tokens: int, now: float) -> tuple[Ask, Window, Window]:
        minute = minute_window(now)
        rl = key.rate_limit if key.HasField("rate_limit") else None
        budget = key.budget if key.HasField("budget") else None
        period: Period = "month" if budget is not None and budget.period == "month" else "day"
        spend = budget_window(now, period)
        base = f"{self._prefix}rl:{key.id}"
        ask = Ask(
            rpm_key=f"{base}:rpm:{minute.suffix}",
            tpm_key=f"{base}:tpm:{minute.suffix}",
            budget_key=f"{self._prefix}budget:{key.id}:{spend.suffix}",
            rpm=rl.rpm if rl is not None and rl.HasField("rpm") else 0,
            tpm=rl.tpm if rl is not None and rl.HasField("tpm") else 0,
            tokens=max(0, tokens),
            budget_micro=budget.limit_micro if budget is not None else 0,
            minute_ttl_s=minute.ttl_s,
        )
        return ask, minute, spend

    async def admit(
        self, key: keys_pb2.KeyInfo | None, route_request: router_pb2.RouteRequest
    ) -> Admission | None:
        """Reserve the request or raise 429/503; None for keys without limits."""
        if key is None or not has_limits(key):
            return None
        tokens = route_request.estimates.prompt_tokens
        ask, minute, spend = self._ask(key, tokens, self.clock())
        try:
            async with asyncio.timeout(COUNTERS_TIMEOUT_S):
                verdict = await self.store.admit(ask)
        except COUNTER_FAILURES as exc:
            return self._counters_down(ask, exc)
        headers = ratelimit_headers(key, verdict, minute)
        if verdict.refused is not None:
            metrics.RATE_LIMITED.labels(verdict.refused).inc()
            code, message = _REFUSED[verdict.refused]
            window = spend if verdict.refused == "budget" else minute
            raise ApiError(429, code, message, retry_after=window.retry_after, headers=headers)
        if ask.budget_micro:
            remaining = max(0, ask.budget_micro - verdict.spent_micro)
            budget = route_request.budget
            if not budget.HasField("amount_micro") or budget.amount_micro > remaining:
                budget.amount_micro = remaining
            budget.currency = "USD"
        return Admission(
            tpm_key=ask.tpm_key if ask.tpm else None,
            reserved_tokens=ask.tokens if ask.tpm else 0,
            budget_key=ask.budget_key if ask.budget_micro else None,
            budget_ttl_s=spend.ttl_s,
            headers=headers,
        )

    def _counters_down(self, ask: Ask, exc: BaseException) -> Admission:
        closed = (ask.budget_micro and not self.budget_fail_open) or (
            (ask.rpm or ask.tpm) and not self.rate_fail_open
        )
        log.warning(
            "rate limit counters unavailable",
            extra={"error": repr(exc), "fail": "closed" if closed else "open"},
        )
        if closed:
            metrics.RATE_LIMITED.labels("unavailable").inc()
            raise ApiError(
                503, "rate_limiter_unavailable", "Rate limiter unavailable", retry_after=1
            )
        return Admission()

    def settle(self, record: RequestRecord) -> None:
        """Reconcile tokens and charge spend once the request finished; thread-safe, non-blocking.

        Without reported usage the token reservation is kept if an upstream was called (the
        tokens may have been spent) and released otherwise.
        """
        admission = record.limits
        if admission is None:
            return
        charges = _charges(admission, record, self._prices)
        if not charges:
            return
        try:
            self._loop.call_soon_threadsafe(self._spawn, charges)
        except RuntimeError:  # the loop is gone: the process is stopping
            log.warning("rate limit settlement dropped at shutdown")

    def _spawn(self, charges: list[Charge]) -> None:
        task = self._loop.create_task(self._charge(charges))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _charge(self, charges: list[Charge]) -> None:
        try:
            async with asyncio.timeout(COUNTERS_TIMEOUT_S * 4):
                await self.store.charge(charges)
        except COUNTER_FAILURES as exc:
            log.warning("rate limit settlement lost", extra={"error": repr(exc)})

    async def drain(self) -> None:
        """Wait for every settlement scheduled so far (shutdown, tests)."""
        await asyncio.sleep(0)
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_CLOSE_TIMEOUT_S):
                await self.drain()


def _charges(admission: Admission, record: RequestRecord, prices: CostTable) -> list[Charge]:
    charges: list[Charge] = []
    usage = record.usage
    if admission.tpm_key is not None:
        if usage is not None:
            delta = usage.total_tokens - admission.reserved_tokens
        else:
            delta = 0 if record.upstream_sent_at is not None else -admission.reserved_tokens
        if delta:
            charges.append(Charge(admission.tpm_key, delta, MINUTE_KEY_TTL_S))
    if admission.budget_key is not None and usage is not None:
        cost = event_cost(record, prices)
        micro = int(cost["total_cost_micro"]) if cost else 0
        if micro > 0:
            charges.append(Charge(admission.budget_key, micro, admission.budget_ttl_s))
    return charges
