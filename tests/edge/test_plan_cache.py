"""The edge plan cache (router-schema-1.1 §7): units with a fake clock, then a real router."""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf import struct_pb2

from services.common.pb import router_pb2
from services.edge.plan_cache import (
    PlanCache,
    parse_invalidate_header,
    parse_rfc3339,
    plan_cache_key,
)
from tests.edge.conftest import BEARER, CHAT, EdgeFactory, RouterFactory
from tests.edge.test_errors import assert_error
from tests.mock_upstream.fixture import MockUpstream


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(**fields: Any) -> router_pb2.RouteRequest:
    base: dict[str, Any] = {"alias": "fast", "api": "chat", "caps": ["text"], "stream": False}
    return router_pb2.RouteRequest(**{**base, **fields})


def plan(
    model: str = "m",
    *,
    ttl_ms: int | None = 1000,
    rev: str = "pol_a",
    valid_until: str | None = None,
    freeze: str | None = None,
) -> router_pb2.RoutePlan:
    p = router_pb2.RoutePlan(
        route_id="rte_0000000000000001",
        upstream=router_pb2.Upstream(base_url="http://u/v1", mode="chat", model_id=model),
        policy_rev=rev,
    )
    if ttl_ms is not None:
        p.cache.ttl_ms = ttl_ms
        if valid_until is not None:
            p.cache.valid_until = valid_until
        if freeze is not None:
            p.cache.freeze_key = freeze
    return p


def make_cache(clock: Clock, **kw: Any) -> PlanCache:
    return PlanCache(**{"default_ttl_ms": 15_000, "stale_ms": 60_000, "clock": clock, **kw})


# ----------------------------------------------------------------------------- key


def test_key_covers_every_decision_field_and_ignores_content() -> None:
    base = plan_cache_key(request())
    overrides = struct_pb2.Struct()
    overrides.update({"quality_cost_tradeoff": 0.9})
    variants = [
        request(alias="other"),
        request(api="responses"),
        request(stream=True),
        request(caps=["text", "tools"]),
        request(privacy_mode="full"),
        request(targets=router_pb2.Targets(p95_latency_ms=100)),
        request(budget=router_pb2.Budget(amount_micro=5, currency="USD")),
        request(overrides=overrides),
        request(org=router_pb2.Org(tenant="acme")),
        request(org=router_pb2.Org(project="p1")),
        request(plan_token="stk_" + "0" * 32),
    ]
    keys = {plan_cache_key(v) for v in variants}
    assert base not in keys and len(keys) == len(variants)
    same = [
        request(caps=["text"], request_id="req_other"),
        request(conversation=router_pb2.Conversation(summary="secret prompt text", turns=3)),
        request(org=router_pb2.Org(user_id="key_123")),
        request(estimates=router_pb2.Estimates(prompt_tokens=999)),
    ]
    assert {plan_cache_key(v) for v in same} == {base}


def test_key_sorts_caps() -> None:
    a = plan_cache_key(request(caps=["text", "tools", "vision"]))
    assert a == plan_cache_key(request(caps=["vision", "text", "tools"]))


# ----------------------------------------------------------------------------- store / expiry


def test_hit_until_ttl_then_miss_with_new_route_ids() -> None:
    clock = Clock()
    cache = make_cache(clock)
    key = plan_cache_key(request())
    assert cache.fresh(key) is None
    assert cache.store(key, plan(ttl_ms=1000))
    first, second = cache.fresh(key), cache.fresh(key)
    assert first is not None and second is not None
    assert first.upstream.model_id == "m"
    assert first.route_id.startswith("rte_") and first.route_id != second.route_id
    assert first.route_id != "rte_0000000000000001"
    clock.now += 1.0
    assert cache.fresh(key) is None
    assert (cache.stats.hits, cache.stats.misses) == (2, 2)


def test_zero_ttl_is_not_stored_and_missing_block_uses_default() -> None:
    clock = Clock()
    cache = make_cache(clock, default_ttl_ms=2000)
    key = plan_cache_key(request())
    assert not cache.store(key, plan(ttl_ms=0))
    assert cache.fresh(key) is None
    assert cache.store(key, plan(ttl_ms=None))
    clock.now += 1.9
    assert cache.fresh(key) is not None
    clock.now += 0.2
    assert cache.fresh(key) is None


def test_default_ttl_zero_disables_the_cache() -> None:
    cache = make_cache(Clock(), default_ttl_ms=0)
    assert not cache.enabled
    assert not cache.store(b"k", plan(ttl_ms=5000))


def test_valid_until_caps_expiry_and_stale() -> None:
    clock = Clock(1_700_000_000.0)
    cache = make_cache(clock)
    key = plan_cache_key(request())
    cache.store(key, plan(ttl_ms=60_000, valid_until="2023-11-14T22:13:30Z"))  # now + 10 s
    clock.now += 9.9
    assert cache.fresh(key) is not None
    clock.now += 0.1
    assert cache.fresh(key) is None
    assert cache.stale(key) is None  # nothing is ever used past valid_until


def test_past_or_unreadable_valid_until_is_not_stored() -> None:
    clock = Clock(1_700_000_000.0)
    cache = make_cache(clock)
    assert not cache.store(b"a", plan(valid_until="2020-01-01T00:00:00Z"))
    assert not cache.store(b"b", plan(valid_until="tomorrow"))
    assert not cache.store(b"c", plan(valid_until="2030-01-01T00:00:00"))  # no offset
    assert len(cache) == 0


def test_rfc3339_parsing() -> None:
    assert parse_rfc3339("1970-01-01T00:00:10Z") == 10.0
    assert parse_rfc3339("1970-01-01T01:00:10+01:00") == 10.0
    assert parse_rfc3339("nope") is None


def test_stale_window_is_ttl_plus_grace() -> None:
    clock = Clock()
    cache = make_cache(clock, stale_ms=5000)
    key = plan_cache_key(request())
    cache.store(key, plan(ttl_ms=1000))
    clock.now += 5.9
    assert cache.fresh(key) is None
    stale = cache.stale(key)
    assert stale is not None and stale.upstream.model_id == "m"
    clock.now += 0.2
    assert cache.stale(key) is None
    assert cache.stats.stale == 1


def test_lru_bound_evicts_least_recently_used() -> None:
    cache = make_cache(Clock(), max_entries=2)
    cache.store(b"a", plan("a"))
    cache.store(b"b", plan("b"))
    assert cache.fresh(b"a") is not None  # a is now the most recent
    cache.store(b"c", plan("c"))
    assert len(cache) == 2
    assert cache.fresh(b"b") is None
    assert cache.fresh(b"a") is not None and cache.fresh(b"c") is not None


def test_revision_change_drops_other_revisions() -> None:
    cache = make_cache(Clock())
    cache.observe_revision("pol_a")
    cache.store(b"old", plan(rev="pol_a"))
    cache.observe_revision("pol_a")
    assert cache.fresh(b"old") is not None
    cache.observe_revision("pol_b")
    assert cache.fresh(b"old") is None
    assert cache.stale(b"old") is None


def test_freeze_key_invalidation_drops_only_matching_entries() -> None:
    cache = make_cache(Clock())
    cache.store(b"a", plan("a", freeze="frz_aaaaaaaaaaaa"))
    cache.store(b"a2", plan("a", freeze="frz_aaaaaaaaaaaa"))
    cache.store(b"b", plan("b", freeze="frz_bbbbbbbbbbbb"))
    dropped = cache.invalidate(parse_invalidate_header("frz_aaaaaaaaaaaa, frz_zzzzzzzzzzzz"))
    assert dropped == 2
    assert cache.fresh(b"a") is None and cache.fresh(b"a2") is None
    assert cache.fresh(b"b") is not None
    # Re-stored entries are indexed again.
    cache.store(b"a", plan("a", freeze="frz_aaaaaaaaaaaa"))
    assert cache.invalidate(["frz_aaaaaaaaaaaa"]) == 1


def test_invalidate_header_parsing() -> None:
    assert parse_invalidate_header(None) == []
    assert parse_invalidate_header(" frz_a ,frz_b,, ") == ["frz_a", "frz_b"]


def test_clear() -> None:
    cache = make_cache(Clock())
    cache.store(b"a", plan(freeze="frz_x"))
    assert cache.clear() == 1
    assert cache.fresh(b"a") is None and cache.invalidate(["frz_x"]) == 0


# ----------------------------------------------------------------------------- with a router


def alias(base_url: str, model_id: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": base_url, "mode": "chat", "model_id": model_id, **extra}


async def test_second_request_is_served_from_the_edge_cache(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"fast": alias(mock_upstream.base_url, "mock-model-a")}
    body = {**CHAT, "model": "fast"}
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        first = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        second = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        # A different decision input is a different entry.
        other = await edge.client.post(
            "/v1/chat/completions",
            json=body,
            headers={**BEARER, "x-signalbox-tradeoff": "0.9"},
        )
    assert [r.status_code for r in (first, second, other)] == [200, 200, 200]
    assert first.headers["x-route-cache"] == "miss"
    assert second.headers["x-route-cache"] == "hit"
    assert other.headers["x-route-cache"] == "miss"
    assert second.headers["x-route-id"] != first.headers["x-route-id"]
    assert second.headers["x-resolved-model"] == "mock-model-a"
    # The router planned twice: the hit never reached it.
    assert router.app.service.planner.ledger.model_for(second.headers["x-route-id"]) is None
    assert router.app.service.planner.ledger.model_for(first.headers["x-route-id"]) is not None
    assert [e["routing"]["route_cache"] for e in edge.events] == ["miss", "hit", "miss"]
    hit_event = edge.events[1]["routing"]
    assert hit_event["backend"] == "router" and hit_event["router_latency_ms"] is None


async def test_zero_ttl_alias_always_asks_the_router(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"live": alias(mock_upstream.base_url, "mock-model-a", cache_ttl_ms=0)}
    body = {**CHAT, "model": "live"}
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        for _ in range(2):
            response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
            assert response.headers["x-route-cache"] == "miss"
        assert len(edge.runtime.planner.cache or ()) == 0


async def test_cache_off_by_setting(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"fast": alias(mock_upstream.base_url, "mock-model-a")}
    body = {**CHAT, "model": "fast"}
    async with (
        router_service(aliases) as router,
        make_edge(router_addr=router.addr, cache_ttl_ms=0) as edge,
    ):
        for _ in range(2):
            response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
            assert response.headers["x-route-cache"] == "miss"


async def test_router_invalidation_header_drops_cached_plans(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    """A model turning degraded (20 failed feedbacks) makes the router list its freeze key;
    the next router reply for any alias carries it and the edge drops the cached plan."""
    up = mock_upstream.base_url
    aliases = {"a": alias(up, "mock-model-a"), "b": alias(up, "mock-model-b")}
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        a = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "a"}, headers=BEARER
        )
        cached = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "a"}, headers=BEARER
        )
        assert (a.headers["x-route-cache"], cached.headers["x-route-cache"]) == ("miss", "hit")
        failures = [
            router_pb2.RouteFeedback(route_id=a.headers["x-route-id"], success=False)
            for _ in range(20)
        ]
        assert router.app.service.feedback(failures) == 20
        assert router.app.service.invalidations()
        b = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "b"}, headers=BEARER
        )
        assert b.headers["x-route-cache"] == "miss"
        again = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "a"}, headers=BEARER
        )
    # Not a cache hit: the router was asked and refuses the degraded model's only upstream.
    assert_error(again, 502, "upstream_unhealthy", "upstream_error")
    assert edge.runtime.planner.cache is not None
    assert edge.runtime.planner.cache.stats.invalidated == 1


async def test_stale_plan_served_when_router_goes_down(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"fast": alias(mock_upstream.base_url, "mock-model-a", cache_ttl_ms=1)}
    body = {**CHAT, "model": "fast"}
    async with router_service(aliases) as router:
        async with make_edge(router_addr=router.addr) as edge:
            first = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
            assert first.headers["x-route-cache"] == "miss"
            await router.app.stop()
            await asyncio.sleep(0.01)  # past the 1 ms TTL, well inside the 60 s grace
            stale = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
            unknown = await edge.client.post(
                "/v1/chat/completions", json={**CHAT, "model": "gpt-4o-mini"}, headers=BEARER
            )
    assert stale.status_code == 200, stale.text
    assert stale.headers["x-route-cache"] == "stale"
    assert stale.headers["x-resolved-model"] == "mock-model-a"
    assert stale.headers["x-policy-rev"] == first.headers["x-policy-rev"]
    # No stale entry for this alias: local resolution (default upstream), no cache header.
    assert unknown.status_code == 200
    assert "x-route-cache" not in unknown.headers
    assert edge.events[1]["routing"]["route_cache"] == "stale"
    assert edge.events[2]["routing"]["backend"] == "default"


async def test_strict_mode_never_serves_stale(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"fast": alias(mock_upstream.base_url, "mock-model-a", cache_ttl_ms=1)}
    body = {**CHAT, "model": "fast"}
    async with router_service(aliases) as router:
        async with make_edge(router_addr=router.addr, router_strict=True) as edge:
            first = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
            assert first.status_code == 200
            await router.app.stop()
            await asyncio.sleep(0.01)
            response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
    assert_error(response, 503, "router_unavailable", "service_unavailable_error")
