"""Per-key rate limits and budgets at the edge (keys.md §4) against the real keys service,
Postgres and Redis. Each edge runs in-process; two edges sharing one Redis share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.common.pb import keys_pb2
from services.edge.limits.windows import budget_window, minute_window
from tests.edge.conftest import CHAT, Edge, EdgeFactory, RunningKeys
from tests.edge.test_errors import assert_error

PROVIDER_KEY = "sk-provider-secret"
# Mid-minute, so no test straddles a window boundary.
FIXED_NOW = (int(time.time()) // 60) * 60 + 30.0


def limited(keys: RunningKeys, redis_url: str | None, prefix: str, **extra: Any) -> dict[str, Any]:
    return {
        "auth_mode": "managed",
        "openai_api_key": PROVIDER_KEY,
        "keys_addr": keys.addr,
        "redis_url": redis_url,
        "redis_key_prefix": prefix,
        **extra,
    }


def refusals(reason: str) -> float:
    """`signalbox_rate_limited_total{reason}` of this process (in-process edges share it)."""
    return REGISTRY.get_sample_value("signalbox_rate_limited_total", {"reason": reason}) or 0.0


def frozen(edge: Edge) -> Edge:
    edge.runtime.limiter.clock = lambda: FIXED_NOW
    return edge


async def chat(edge: Edge, token: str, **body: Any) -> httpx.Response:
    return await edge.client.post(
        "/v1/chat/completions", json={**CHAT, **body}, headers={"authorization": f"Bearer {token}"}
    )


async def redis_int(url: str, key: str) -> int:
    client = aioredis.from_url(url)
    try:
        value = await client.get(key)
    finally:
        await client.aclose()
    return int(value) if value is not None else 0


async def test_rpm_is_shared_by_two_edges(
    make_edge: EdgeFactory, keys_service: RunningKeys, redis_url: str, redis_prefix: str
) -> None:
    key = await keys_service.generate(rate_limit=keys_pb2.RateLimit(rpm=3))
    settings = limited(keys_service, redis_url, redis_prefix)
    before = refusals("rpm")
    async with make_edge(**settings) as a, make_edge(**settings) as b:
        frozen(a), frozen(b)
        answers = [await chat(a, key.token), await chat(b, key.token), await chat(a, key.token)]
        refused = await chat(b, key.token)
    assert refusals("rpm") == before + 1
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[0].headers["x-ratelimit-reset-requests"] == "30s"
    assert "x-ratelimit-limit-tokens" not in answers[0].headers
    error = assert_error(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "requests per minute" in error["message"]
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    minute = minute_window(FIXED_NOW).suffix
    assert await redis_int(redis_url, f"{redis_prefix}rl:{key.id}:rpm:{minute}") == 3


async def test_tpm_reserves_the_estimate_and_reconciles_with_usage(
    make_edge: EdgeFactory, keys_service: RunningKeys, redis_url: str, redis_prefix: str
) -> None:
    probe = await keys_service.generate()
    async with make_edge(**limited(keys_service, redis_url, redis_prefix)) as edge:
        assert (await chat(edge, probe.token)).status_code == 200
        estimate = edge.events[0]["request"]["input_tokens"]
        total = edge.events[0]["token_usage"]["total_tokens"]
    assert estimate > 0 and total > 0
    tpm = total + estimate - 1  # the first request fits, the second does not
    key = await keys_service.generate(rate_limit=keys_pb2.RateLimit(tpm=tpm))
    async with make_edge(**limited(keys_service, redis_url, redis_prefix)) as edge:
        frozen(edge)
        first = await chat(edge, key.token)
        await edge.runtime.limiter.drain()
        refused = await chat(edge, key.token)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == str(tpm)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(tpm - estimate)
    assert "x-ratelimit-limit-requests" not in first.headers
    assert_error(refused, 429, "token_rate_limit_exceeded", "rate_limit_error")
    assert refused.headers["x-ratelimit-remaining-tokens"] == str(tpm - total)
    minute = minute_window(FIXED_NOW).suffix
    assert await redis_int(redis_url, f"{redis_prefix}rl:{key.id}:tpm:{minute}") == total


async def test_budget_is_charged_the_analytics_cost_then_exhausted(
    make_edge: EdgeFactory, keys_service: RunningKeys, redis_url: str, redis_prefix: str
) -> None:
    key = await keys_service.generate(
        budget=keys_pb2.KeyBudget(limit_micro=1, period="day"), label="budgeted"
    )
    async with make_edge(**limited(keys_service, redis_url, redis_prefix)) as edge:
        frozen(edge)
        first = await chat(edge, key.token)
        await edge.runtime.limiter.drain()
        refused = await chat(edge, key.token)
        cost = edge.events[0]["cost"]["total_cost_micro"]
    assert first.status_code == 200
    assert cost >= 1
    error = assert_error(refused, 429, "spend_budget_exceeded", "rate_limit_error")
    assert "budget" in error["message"]
    window = budget_window(FIXED_NOW, "day")
    assert refused.headers["retry-after"] == str(window.retry_after)
    budget_key = f"{redis_prefix}budget:{key.id}:{window.suffix}"
    assert await redis_int(redis_url, budget_key) == cost
    client = aioredis.from_url(redis_url)
    try:
        ttl = await client.ttl(budget_key)
    finally:
        await client.aclose()
    assert 86_400 < ttl <= 2 * 86_400


async def test_failed_request_releases_its_token_reservation(
    make_edge: EdgeFactory, keys_service: RunningKeys, redis_url: str, redis_prefix: str
) -> None:
    key = await keys_service.generate(rate_limit=keys_pb2.RateLimit(tpm=10_000))
    settings = limited(keys_service, redis_url, redis_prefix, router_strict=True)
    async with make_edge(**settings, router_addr="127.0.0.1:1") as edge:
        frozen(edge)
        failed = await chat(edge, key.token)
        await edge.runtime.limiter.drain()
    assert failed.status_code >= 500
    assert failed.headers["x-ratelimit-limit-tokens"] == "10000"
    minute = minute_window(FIXED_NOW).suffix
    assert await redis_int(redis_url, f"{redis_prefix}rl:{key.id}:tpm:{minute}") == 0


async def test_redis_down_fails_open_for_rpm_and_closed_for_budgets(
    make_edge: EdgeFactory,
    keys_service: RunningKeys,
    free_port: Callable[[], int],
    redis_prefix: str,
) -> None:
    rpm_key = await keys_service.generate(rate_limit=keys_pb2.RateLimit(rpm=1))
    budget_key = await keys_service.generate(
        budget=keys_pb2.KeyBudget(limit_micro=1000, period="month")
    )
    plain = await keys_service.generate()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    before = refusals("unavailable")
    async with make_edge(**limited(keys_service, dead, redis_prefix)) as edge:
        open_rpm = [await chat(edge, rpm_key.token) for _ in range(2)]
        closed_budget = await chat(edge, budget_key.token)
        unlimited = await chat(edge, plain.token)
        ready = await edge.client.get("/_health/ready")
    assert [r.status_code for r in open_rpm] == [200, 200]
    assert "x-ratelimit-limit-requests" not in open_rpm[0].headers
    assert_error(closed_budget, 503, "rate_limiter_unavailable", "service_unavailable_error")
    assert closed_budget.headers["retry-after"] == "1"
    assert unlimited.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["status"] == "error"

    strict = limited(
        keys_service, dead, redis_prefix, rate_limit_fail_open=False, budget_fail_open=True
    )
    async with make_edge(**strict) as edge:
        closed_rpm = await chat(edge, rpm_key.token)
        open_budget = await chat(edge, budget_key.token)
    assert_error(closed_rpm, 503, "rate_limiter_unavailable", "service_unavailable_error")
    assert open_budget.status_code == 200
    assert refusals("unavailable") == before + 2  # the closed budget, then the closed rpm


async def test_without_redis_limits_are_per_process_and_status_says_so(
    make_edge: EdgeFactory, keys_service: RunningKeys, redis_prefix: str
) -> None:
    key = await keys_service.generate(rate_limit=keys_pb2.RateLimit(rpm=1))
    async with make_edge(**limited(keys_service, None, redis_prefix)) as edge:
        frozen(edge)
        status = (await edge.client.get("/status")).json()
        first = await chat(edge, key.token)
        refused = await chat(edge, key.token)
    async with make_edge(**limited(keys_service, None, redis_prefix)) as other:
        frozen(other)
        elsewhere = await chat(other, key.token)
    limits = status["features"]["limits"]
    assert limits["backend"] == "memory" and limits["scope"] == "per_process"
    assert first.status_code == 200
    assert_error(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert elsewhere.status_code == 200  # another process has its own counters


async def test_status_reports_shared_counters_with_redis(
    make_edge: EdgeFactory, keys_service: RunningKeys, redis_url: str, redis_prefix: str
) -> None:
    async with make_edge(**limited(keys_service, redis_url, redis_prefix)) as edge:
        limits = (await edge.client.get("/status")).json()["features"]["limits"]
    assert limits == {
        "backend": "redis",
        "scope": "shared",
        "rate_limit_fail_open": True,
        "budget_fail_open": False,
    }


async def test_scope_refusal_names_the_scope_before_limits_count(
    make_edge: EdgeFactory, keys_service: RunningKeys, redis_url: str, redis_prefix: str
) -> None:
    key = await keys_service.generate(
        scopes=["api:chat", "models:gpt-4o*"], rate_limit=keys_pb2.RateLimit(rpm=5)
    )
    async with make_edge(**limited(keys_service, redis_url, redis_prefix)) as edge:
        frozen(edge)
        wrong_model = await chat(edge, key.token, model="o1-mini")
        wrong_api = await edge.client.post(
            "/v1/responses",
            json={"model": "gpt-4o-mini", "input": "hi"},
            headers={"authorization": f"Bearer {key.token}"},
        )
        allowed = await chat(edge, key.token)
    error = assert_error(wrong_model, 403, "insufficient_scope", "permission_error")
    assert error["param"] == "model" and "models:" in error["message"]
    error = assert_error(wrong_api, 403, "insufficient_scope", "permission_error")
    assert "api:responses" in error["message"]
    assert allowed.headers["x-ratelimit-remaining-requests"] == "4"


async def test_remaining_budget_caps_the_routers_budget() -> None:
    from services.common.pb import router_pb2
    from services.common.pricing import PriceTable
    from services.edge.limits import Limiter, MemoryCounters
    from services.edge.limits.store import Charge

    limiter = Limiter(
        MemoryCounters(),
        "t:",
        PriceTable.load(None, None),
        rate_fail_open=True,
        budget_fail_open=False,
        clock=lambda: FIXED_NOW,
    )
    key = keys_pb2.KeyInfo(id="a" * 32, budget=keys_pb2.KeyBudget(limit_micro=1000, period="day"))
    spent_key = f"t:budget:{key.id}:{budget_window(FIXED_NOW, 'day').suffix}"
    await limiter.store.charge([Charge(spent_key, 300, 100)])
    plain = router_pb2.RouteRequest()
    lower_header = router_pb2.RouteRequest(budget=router_pb2.Budget(amount_micro=500))
    higher_header = router_pb2.RouteRequest(budget=router_pb2.Budget(amount_micro=900))
    for request in (plain, lower_header, higher_header):
        assert await limiter.admit(key, request) is not None
    assert plain.budget.amount_micro == 700 and plain.budget.currency == "USD"
    assert lower_header.budget.amount_micro == 500
    assert higher_header.budget.amount_micro == 700
    assert await limiter.admit(None, plain) is None
    assert await limiter.admit(keys_pb2.KeyInfo(id="b" * 32), plain) is None


def test_windows_are_utc_minutes_days_and_months() -> None:
    leap_day = 1_709_164_800.0 + 3600  # 2024-02-29T01:00:00Z
    minute = minute_window(leap_day + 12.5)
    assert minute.suffix == str(int(leap_day // 60)) and minute.retry_after == 48
    day = budget_window(leap_day, "day")
    assert day.suffix == "20240229" and day.retry_after == 23 * 3600
    assert day.ttl_s == 2 * 86_400
    month = budget_window(leap_day, "month")
    assert month.suffix == "202402" and month.retry_after == 23 * 3600
    assert month.ttl_s == 30 * 86_400  # 29 days of February + 1
    assert budget_window(1_735_689_599.0, "month").suffix == "202412"  # 2024-12-31T23:59:59Z
    assert budget_window(1_735_689_599.0, "month").retry_after == 1
