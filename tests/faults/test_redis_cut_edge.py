"""Redis cut under a serving edge (issue 10, keys.md §4): limits degrade as configured and
everything recovers by itself once Redis is back.

Redis is reached through a TCP proxy we cut (open connections reset, new ones refused) and
restore, never by stopping the machine's Redis. Defaults: rpm/tpm fail open
(`SIGNALBOX_RATE_LIMIT_FAIL_OPEN`), budgets fail closed (`SIGNALBOX_BUDGET_FAIL_OPEN`).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.common.pb import keys_pb2
from tests.edge.conftest import (  # noqa: F401 (pytest fixtures)
    CHAT,
    Edge,
    EdgeFactory,
    RunningKeys,
    keys_service,
    make_edge,
)
from tests.edge.test_errors import assert_error
from tests.faults.conftest import through, wait_for
from tests.faults.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e


async def chat(edge: Edge, token: str) -> httpx.Response:
    return await edge.client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {token}"}
    )


async def test_redis_cut_degrades_limits_and_readiness_then_recovers(
    make_edge: EdgeFactory,  # noqa: F811
    keys_service: RunningKeys,  # noqa: F811
    redis_url: str,
    redis_prefix: str,
    redis_proxy: TcpProxy,
) -> None:
    rpm_key = await keys_service.generate(rate_limit=keys_pb2.RateLimit(rpm=1000))
    budget_key = await keys_service.generate(
        budget=keys_pb2.KeyBudget(limit_micro=10**9, period="month")
    )
    plain = await keys_service.generate()
    settings: dict[str, Any] = {
        "auth_mode": "managed",
        "openai_api_key": "sk-provider-secret",
        "keys_addr": keys_service.addr,
        "redis_url": through(redis_url, redis_proxy),
        "redis_key_prefix": redis_prefix,
    }
    async with make_edge(**settings) as edge:

        async def ready() -> httpx.Response:
            return await edge.client.get("/_health/ready")

        # Healthy: counters in Redis, limits reported in headers.
        before = [await chat(edge, key.token) for key in (rpm_key, budget_key, plain)]
        assert [r.status_code for r in before] == [200, 200, 200]
        assert before[0].headers["x-ratelimit-limit-requests"] == "1000"
        assert (await ready()).status_code == 200

        await redis_proxy.cut()
        open_rpm = [await chat(edge, rpm_key.token) for _ in range(3)]
        closed_budget = await chat(edge, budget_key.token)
        unlimited = await chat(edge, plain.token)
        degraded = await ready()
        # rpm fails open (served, without limit headers), budgets fail closed, keys without
        # limits never touch Redis; readiness names Redis as the failing check.
        assert [r.status_code for r in open_rpm] == [200, 200, 200]
        assert "x-ratelimit-limit-requests" not in open_rpm[0].headers
        assert_error(closed_budget, 503, "rate_limiter_unavailable", "service_unavailable_error")
        assert closed_budget.headers["retry-after"] == "1"
        assert unlimited.status_code == 200
        assert degraded.status_code == 503
        assert degraded.json()["checks"]["redis"]["status"] == "error"

        await redis_proxy.restore()

        async def recovered() -> bool:
            return (await ready()).status_code == 200

        await wait_for(recovered, 30, "readiness back to 200 after Redis restore")

        async def budget_served() -> bool:
            return (await chat(edge, budget_key.token)).status_code == 200

        await wait_for(budget_served, 30, "budget key served again after Redis restore")
        after = await chat(edge, rpm_key.token)
        assert after.status_code == 200
        # Counting in Redis again: the limit headers are back.
        assert after.headers["x-ratelimit-limit-requests"] == "1000"
        assert int(after.headers["x-ratelimit-remaining-requests"]) < 1000
        assert redis_proxy.connections > 1  # the edge reconnected through the restored proxy
