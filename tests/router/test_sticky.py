"""Plan tokens (router-schema §7) in memory and in the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from services.common.pb import router_pb2
from services.router.health import ModelHealth
from services.router.planner import Planner
from services.router.routing_config import RoutingConfig, load_routing_config
from services.router.settings import RouterSettings
from services.router.sticky import (
    MemoryStickyStore,
    RedisStickyStore,
    StickyStore,
    StickyStoreDown,
)
from tests.router.conftest import GPT4, MIXTRAL


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[StickyStore]:
    sticky: StickyStore = (
        MemoryStickyStore()
        if request.param == "memory"
        else RedisStickyStore.from_url(redis_url, redis_prefix)
    )
    yield sticky
    await sticky.close()


@pytest.fixture
def config(router_settings: Callable[..., RouterSettings]) -> RoutingConfig:
    return load_routing_config(router_settings())


@pytest.fixture
def planner(store: StickyStore) -> Planner:
    return Planner(sticky=store, health=ModelHealth())


def knn(
    alias: str = "auto-short", token: str | None = None, **fields: object
) -> router_pb2.RouteRequest:
    req = router_pb2.RouteRequest(alias=alias, **fields)
    if token is not None:
        req.plan_token = token
    return req


async def test_token_is_honoured_until_turns_run_out(
    planner: Planner, config: RoutingConfig
) -> None:
    first = await planner.plan(knn(), config)
    token = first.plan.stickiness.plan_token
    assert first.cache_status == "miss"
    assert (first.plan.stickiness.max_turns, first.plan.stickiness.turns_used) == (2, 1)
    assert first.plan.stickiness.expires_at.endswith("Z")

    second = await planner.plan(knn(token=token), config)
    assert second.cache_status == "hit"
    assert second.plan.route_id != first.plan.route_id
    assert second.plan.stickiness.plan_token == token
    assert second.plan.stickiness.turns_used == 2
    assert second.plan.upstream == first.plan.upstream
    assert second.plan.policy.id == "sticky"
    assert second.plan.policy.explain == f"sticky turn 2/2 -> {GPT4}"
    assert second.plan.cache.ttl_ms == 0

    third = await planner.plan(knn(token=token), config)  # max_turns reached
    assert third.cache_status == "miss"
    assert third.plan.stickiness.plan_token not in ("", token)


@pytest.mark.parametrize(
    "change",
    [
        {"alias": "auto"},  # another alias
        {"caps": ["vision"], "alias": "with-fallback"},  # alias mismatch and caps
    ],
)
async def test_token_for_other_alias_is_not_honoured(
    planner: Planner, config: RoutingConfig, change: dict[str, object]
) -> None:
    token = (await planner.plan(knn(), config)).plan.stickiness.plan_token
    result = await planner.plan(knn(token=token, **change), config)
    assert result.cache_status == "miss"


async def test_unmet_caps_or_degraded_model_plan_afresh(
    planner: Planner, config: RoutingConfig
) -> None:
    token = (await planner.plan(knn("auto"), config)).plan.stickiness.plan_token
    # mixtral (the default) lacks tools: not honoured; the fresh plan moves to gpt-4.
    fresh = await planner.plan(knn("auto", token=token, caps=["tools"]), config)
    assert fresh.cache_status == "miss" and fresh.plan.upstream.model_id == GPT4
    token = (await planner.plan(knn("auto"), config)).plan.stickiness.plan_token
    for _ in range(20):
        planner.health.record(MIXTRAL, success=False)
    again = await planner.plan(knn("auto", token=token), config)
    assert again.cache_status == "miss"


@pytest.mark.parametrize("token", ["nonsense", "stk_" + "0" * 32, ""])
async def test_bad_tokens_are_never_errors(
    planner: Planner, config: RoutingConfig, token: str
) -> None:
    result = await planner.plan(knn(token=token), config)
    assert result.cache_status == "miss"


async def test_non_knn_plans_carry_no_token(planner: Planner, config: RoutingConfig) -> None:
    plan = (await planner.plan(knn("nano-basic"), config)).plan
    assert not plan.HasField("stickiness")


async def test_config_change_retires_tokens(
    planner: Planner, config: RoutingConfig, router_settings: Callable[..., RouterSettings]
) -> None:
    token = (await planner.plan(knn(), config)).plan.stickiness.plan_token
    other = load_routing_config(router_settings(router_default_upstream=False))
    assert (await planner.plan(knn(token=token), other)).cache_status == "miss"


async def test_redis_layout(config: RoutingConfig, redis_url: str, redis_prefix: str) -> None:
    store = RedisStickyStore.from_url(redis_url, redis_prefix)
    planner = Planner(sticky=store, health=ModelHealth())
    try:
        token = (await planner.plan(knn(), config)).plan.stickiness.plan_token
        client = aioredis.from_url(redis_url)
        key = f"{redis_prefix}stk:{token}"
        fields = await client.hgetall(key)
        assert fields[b"alias"] == b"auto-short"
        assert int(fields[b"turns_used"]) == 1 and int(fields[b"max_turns"]) == 2
        assert 1790 <= await client.ttl(key) <= 1801
        # A second planner (another replica) honours the same token.
        replica = Planner(sticky=store, health=ModelHealth())
        assert (await replica.plan(knn(token=token), config)).cache_status == "hit"
        await client.delete(key)
        assert await store.next_turn(token) == 0
        assert not await client.exists(key)  # no TTL-less husk left behind
        await client.aclose()
    finally:
        await store.close()


async def test_unreachable_redis_degrades_to_no_stickiness(
    config: RoutingConfig, free_port: Callable[[], int]
) -> None:
    store = RedisStickyStore.from_url(f"redis://127.0.0.1:{free_port()}/0", "sb:")
    planner = Planner(sticky=store, health=ModelHealth())
    try:
        plan = (await planner.plan(knn(), config)).plan
        assert not plan.HasField("stickiness")
        result = await planner.plan(knn(token="stk_" + "a" * 32), config)
        assert result.cache_status == "miss"
        # After a failure the store refuses at once instead of waiting on a dead socket.
        with pytest.raises(StickyStoreDown):
            await store.get("stk_" + "a" * 32)
    finally:
        await store.close()
