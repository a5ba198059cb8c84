"""Two edge processes sharing one Redis and one keys service (real processes, official SDK):
per-key rpm/tpm limits and budgets hold across both, a revocation on one edge reaches the
other through the pub/sub broadcast, and no secret appears in any service log."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from deploy.local.stack import LocalStack, free_ports
from services.edge.limits.windows import budget_window, minute_window
from tests.mock_upstream.fixture import MockUpstream

pytestmark = pytest.mark.e2e

PROVIDER_KEY = "sk-upstream-two-edges"
INTERNAL_TOKEN = "internal-" + "two" * 12
ADMIN_TOKEN = "admin-" + "q" * 40
MESSAGES = [{"role": "user", "content": "Say hello"}]


@dataclass
class TwoEdges:
    a: LocalStack  # keys service + edge A
    b: LocalStack  # edge B, same keys service, same Redis
    redis_url: str
    prefix: str

    async def generate(self, **body: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.a.edge_url, timeout=10) as client:
            response = await client.post(
                "/keys/generate", json=body, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
            )
        assert response.status_code == 200, response.text
        return response.json()

    async def revoke(self, key_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.a.edge_url, timeout=10) as client:
            response = await client.post(
                "/keys/revoke",
                json={"id": key_id},
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        return response.json()

    async def counter(self, key: str) -> int:
        client = aioredis.from_url(self.redis_url)
        try:
            value = await client.get(f"{self.prefix}{key}")
        finally:
            await client.aclose()
        return int(value) if value is not None else 0

    async def counter_reaches(self, key: str, expected: int) -> int:
        """Settlement runs after the response: poll until it landed (or give up after 10 s)."""
        for _ in range(200):
            value = await self.counter(key)
            if value >= expected:
                return value
            await asyncio.sleep(0.05)
        return await self.counter(key)

    def logs(self) -> str:
        paths = [self.a.log_path("keys"), self.a.log_path("edge"), self.b.log_path("edge")]
        return "\n".join(p.read_text(errors="replace") for p in paths)


def sdk(stack: LocalStack, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{stack.edge_url}/v1", api_key=token, max_retries=0, timeout=30
    )


async def ask(stack: LocalStack, token: str) -> Any:
    """A non-streaming chat completion; returns the raw response (headers + parsed body)."""
    return await sdk(stack, token).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )


async def refused(stack: LocalStack, token: str, error: type[openai.APIStatusError]) -> Any:
    with pytest.raises(error) as caught:
        await sdk(stack, token).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    return caught.value


async def mid_minute() -> None:
    """Counters are per UTC minute: start a minute-bound check with at least 15 s to spare."""
    into = time.time() % 60
    if into > 45:
        await asyncio.sleep(60 - into + 0.5)


@pytest.fixture
async def edges(
    pg_url: str,
    redis_url: str,
    redis_prefix: str,
    mock_upstream: MockUpstream,
    tmp_path: Path,
) -> AsyncIterator[TwoEdges]:
    env = {
        "SIGNALBOX_DATABASE_URL": pg_url,
        "SIGNALBOX_REDIS_URL": redis_url,
        "SIGNALBOX_REDIS_KEY_PREFIX": redis_prefix,
        "SIGNALBOX_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "SIGNALBOX_ADMIN_TOKEN": ADMIN_TOKEN,
        "SIGNALBOX_AUTH_MODE": "managed",
        # Long enough that only the revocation broadcast can explain a fast 401.
        "SIGNALBOX_KEYS_CACHE_MS": "60000",
        "SIGNALBOX_LOG_LEVEL": "DEBUG",
        "SIGNALBOX_DATA_DIR": str(tmp_path / "data"),
        "SIGNALBOX_ANALYTICS_SPOOL_DIR": str(tmp_path / "spool"),
        "SIGNALBOX_SHUTDOWN_GRACE_SECONDS": "5",
        "OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_BASE_URL": mock_upstream.base_url,
    }
    ports_a = free_ports()
    a = LocalStack(env=env, ports=ports_a, log_dir=tmp_path / "a", services=("keys", "edge"))
    async with a:
        ports_b = dataclasses.replace(free_ports(), keys=ports_a.keys)
        env_b = {**env, "SIGNALBOX_KEYS_ADDR": a.addr("keys")}
        async with LocalStack(
            env=env_b, ports=ports_b, log_dir=tmp_path / "b", services=("edge",)
        ) as b:
            yield TwoEdges(a, b, redis_url, redis_prefix)


async def test_limits_and_budgets_hold_across_two_edges(edges: TwoEdges) -> None:
    a, b = edges.a, edges.b
    rpm_key = await edges.generate(label="rpm", rate_limit={"rpm": 3})
    probe = await edges.generate(label="probe", rate_limit={"tpm": 100_000})
    budget_key = await edges.generate(label="budget", budget={"limit_micro": 1, "period": "day"})

    await mid_minute()
    served = [await ask(a, rpm_key["token"]), await ask(b, rpm_key["token"])]
    served.append(await ask(a, rpm_key["token"]))
    over = await refused(b, rpm_key["token"], openai.RateLimitError)
    assert [r.headers["x-ratelimit-remaining-requests"] for r in served] == ["2", "1", "0"]
    assert over.code == "rate_limit_exceeded"
    assert 1 <= int(over.response.headers["retry-after"]) <= 60
    assert over.response.headers["x-ratelimit-limit-requests"] == "3"

    # Learn this request's prompt estimate and real usage, then size a tpm that fits one.
    first = await ask(a, probe["token"])
    estimate = 100_000 - int(first.headers["x-ratelimit-remaining-tokens"])
    total = first.parse().usage.total_tokens
    assert 0 < estimate and 0 < total
    tpm_key = await edges.generate(label="tpm", rate_limit={"tpm": total + estimate - 1})
    await mid_minute()
    minute = minute_window(time.time()).suffix
    assert (await ask(a, tpm_key["token"])).parse().usage.total_tokens == total
    counter = f"rl:{tpm_key['id']}:tpm:{minute}"
    assert await edges.counter_reaches(counter, total) == total  # reservation reconciled
    over_tokens = await refused(b, tpm_key["token"], openai.RateLimitError)
    assert over_tokens.code == "token_rate_limit_exceeded"
    assert over_tokens.response.headers["x-ratelimit-remaining-tokens"] == str(estimate - 1)

    spent_key = f"budget:{budget_key['id']}:{budget_window(time.time(), 'day').suffix}"
    assert (await ask(b, budget_key["token"])).http_response.status_code == 200
    spent = await edges.counter_reaches(spent_key, 1)
    assert spent >= 1  # the request's analytics cost, in micro-USD
    broke = await refused(a, budget_key["token"], openai.RateLimitError)
    assert broke.code == "spend_budget_exceeded"
    assert await edges.counter(spent_key) == spent  # refused requests cost nothing

    async with httpx.AsyncClient(base_url=b.edge_url) as client:
        status = (await client.get("/status")).json()["features"]["limits"]
    assert status["backend"] == "redis" and status["scope"] == "shared"


async def test_revocation_reaches_the_other_edge_within_a_second(edges: TwoEdges) -> None:
    a, b = edges.a, edges.b
    key = await edges.generate(label="revoke-me")
    assert (await ask(b, key["token"])).http_response.status_code == 200  # cached on B, 60 s

    assert await edges.revoke(key["id"]) == {"revoked": True, "id": key["id"]}
    deadline = time.monotonic() + 1.0
    while True:
        try:
            await ask(b, key["token"])
        except openai.AuthenticationError as exc:
            assert exc.code == "api_key_revoked"
            break
        assert time.monotonic() < deadline, "edge B still accepts the revoked key after 1 s"
        await asyncio.sleep(0.02)
    revoked_on_a = await refused(a, key["token"], openai.AuthenticationError)
    assert revoked_on_a.code == "api_key_revoked"

    logs = edges.logs()
    assert "key revoked" in logs  # the logs were captured at DEBUG
    for secret in (key["token"], key["token"].split(".")[1], ADMIN_TOKEN, PROVIDER_KEY):
        assert secret not in logs
