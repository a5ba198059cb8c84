"""Policy order (router-schema §5), plan dressing, and the KNN frame without a scorer (§6)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from typing import Any

import pytest

from services.common.pb import router_pb2
from services.router.errors import ErrorCode, RouteFailure
from services.router.health import ModelHealth
from services.router.knn import KNN_UNAVAILABLE
from services.router.planner import Planner
from services.router.routing_config import RoutingConfig, load_routing_config
from services.router.settings import RouterSettings
from services.router.sticky import MemoryStickyStore
from tests.router.conftest import GPT4, MIXTRAL

Settings = Callable[..., RouterSettings]


@pytest.fixture
def config(router_settings: Settings) -> RoutingConfig:
    return load_routing_config(router_settings())


@pytest.fixture
def planner() -> Planner:
    return Planner(sticky=MemoryStickyStore(), health=ModelHealth())


def request(alias: str, **fields: Any) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(alias=alias, **fields)


@pytest.mark.parametrize(
    ("alias", "api", "strategy", "base_url", "mode", "model_id", "ttl_ms"),
    [
        # 2. alias_table, also when the alias shadows a catalog id.
        (
            "nano-basic",
            "chat",
            "alias_table",
            "https://api.openai.com/v1",
            "responses",
            "gpt-5-nano",
            15000,
        ),
        (GPT4, "chat", "alias_table", "http://shadow/v1", "chat", "shadowed", 15000),
        (
            "with-fallback",
            "chat",
            "alias_table",
            "http://primary:8000/v1",
            "chat",
            "llama-70b",
            5000,
        ),
        # 3. knn (no scorer yet: default model).
        (
            "auto",
            "chat",
            "knn",
            "http://127.0.0.1:8000/v1",
            "chat",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            0,
        ),
        # 4. catalog.
        (
            MIXTRAL,
            "responses",
            "catalog",
            "http://127.0.0.1:8000/v1",
            "chat",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            15000,
        ),
        # 5. prefix: first rule wins, model_id = alias, mode from the rule or the default.
        ("vllm-llama", "responses", "prefix", "http://vllm:8000/v1", "chat", "vllm-llama", 15000),
        ("gpt-4o", "chat", "prefix", "http://gpt/v1", "responses", "gpt-4o", 15000),
        # 6. default: chat for api=chat, else SIGNALBOX_UPSTREAM_MODE.
        ("o3-mini", "chat", "default", "https://api.openai.com/v1", "chat", "o3-mini", 15000),
        (
            "o3-mini",
            "responses",
            "default",
            "https://api.openai.com/v1",
            "responses",
            "o3-mini",
            15000,
        ),
    ],
)
async def test_policy_order(
    planner: Planner,
    config: RoutingConfig,
    alias: str,
    api: str,
    strategy: str,
    base_url: str,
    mode: str,
    model_id: str,
    ttl_ms: int,
) -> None:
    result = await planner.plan(request(alias, api=api), config)
    plan = result.plan
    assert (plan.upstream.base_url, plan.upstream.mode, plan.upstream.model_id) == (
        base_url,
        mode,
        model_id,
    )
    assert plan.policy.id == strategy
    assert plan.cache.ttl_ms == ttl_ms
    assert plan.policy.explain_detail["strategy"] == strategy
    assert plan.policy.explain_detail["alias"] == alias
    assert result.cache_status == "miss"


async def test_unknown_alias_without_default(planner: Planner, router_settings: Settings) -> None:
    config = load_routing_config(router_settings(router_default_upstream=False))
    with pytest.raises(RouteFailure) as info:
        await planner.plan(request("o3-mini"), config)
    assert info.value.code is ErrorCode.ALIAS_UNKNOWN
    # Prefix rules still apply with the default upstream off.
    plan = (await planner.plan(request("vllm-x"), config)).plan
    assert plan.policy.id == "prefix"


async def test_plan_fields(planner: Planner, config: RoutingConfig) -> None:
    req = request(
        MIXTRAL, estimates=router_pb2.Estimates(prompt_tokens=1000, max_output_tokens=100)
    )
    plan = (await planner.plan(req, config)).plan
    assert re.fullmatch(r"rte_[0-9a-f]{16}", plan.route_id)
    assert plan.schema_version == "1.1"
    assert plan.policy_rev == plan.policy.revision == config.policy_rev
    assert plan.policy.explain == f"catalog {MIXTRAL} -> {plan.upstream.model_id}"
    assert dict(plan.policy.explain_detail) == {
        "strategy": "catalog",
        "alias": MIXTRAL,
        "matched": MIXTRAL,
    }
    assert plan.limits.max_input_tokens == 32768
    assert plan.hints.est_cost_micro == math.ceil((1000 * 600000 + 100 * 600000) / 1e6)
    assert (plan.hints.currency, plan.hints.tier, plan.hints.provider) == ("USD", "T1", "vllm")
    assert plan.cache.etag == config.catalog.revision
    digest = hashlib.sha256(
        f"{plan.upstream.base_url}|{plan.upstream.model_id}".encode()
    ).hexdigest()
    assert plan.cache.freeze_key == "frz_" + digest[:12]
    assert plan.content_used == "none"
    assert not plan.HasField("stickiness")


async def test_static_alias_fallbacks_and_overlay(planner: Planner, config: RoutingConfig) -> None:
    plan = (await planner.plan(request("with-fallback"), config)).plan
    assert [(f.base_url, f.model_id) for f in plan.fallbacks] == [
        ("http://backup:8000/v1", "llama-8b")
    ]
    overlay = plan.prompt_overlays
    assert overlay.system_overlay == "Answer in French."
    assert overlay.overlay_size_bytes == len(b"Answer in French.")
    assert (
        overlay.overlay_fingerprint == "sha256:" + hashlib.sha256(b"Answer in French.").hexdigest()
    )
    assert not plan.HasField("hints")  # not a catalog model


async def test_knn_defaults_without_scorer(planner: Planner, config: RoutingConfig) -> None:
    req = request("auto", estimates=router_pb2.Estimates(prompt_tokens=500))
    plan = (await planner.plan(req, config)).plan
    detail = plan.policy.explain_detail
    assert detail["fallback_reason"] == KNN_UNAVAILABLE
    assert detail["chosen"] == MIXTRAL
    assert detail["tradeoff"] == 0.5 and detail["lambda"] == 0.5
    assert [c["model"] for c in detail["candidates"]] == [MIXTRAL, GPT4]
    gpt = detail["candidates"][1]
    assert gpt["normalized_cost"] == 1 and gpt["score"] is None
    assert plan.policy.explain.startswith("knn k=10 kept=0 t=0.50 lambda=0.50 -> " + MIXTRAL)
    assert [(f.model_id, f.reason) for f in plan.fallbacks] == [(GPT4, "knn_rank_2")]
    assert plan.cache.ttl_ms == 0
    assert plan.stickiness.plan_token.startswith("stk_") and plan.stickiness.max_turns == 20
    # 256 default output tokens feed the cost estimate.
    assert plan.hints.est_cost_micro == math.ceil((500 + 256) * 600000 / 1e6)


async def test_knn_tradeoff_override_is_clamped(planner: Planner, config: RoutingConfig) -> None:
    req = request("auto")
    req.overrides.update({"quality_cost_tradeoff": 7})
    detail = (await planner.plan(req, config)).plan.policy.explain_detail
    assert detail["tradeoff"] == 1.0 and detail["lambda"] == 0.0


async def test_knn_default_model_filtered_out_uses_cheapest(
    planner: Planner, config: RoutingConfig
) -> None:
    # auto-short defaults to gpt-4; a 40k prompt exceeds mixtral's 32k context only.
    req = request("auto-short", estimates=router_pb2.Estimates(prompt_tokens=40_000))
    plan = (await planner.plan(req, config)).plan
    assert plan.upstream.model_id == GPT4
    req = request("auto-short", caps=["text"], budget=router_pb2.Budget(amount_micro=1_000))
    plan = (await planner.plan(req, config)).plan
    detail = plan.policy.explain_detail
    assert detail["chosen"] == MIXTRAL  # default gpt-4 is over budget
    assert list(detail["excluded"]) == [{"model": GPT4, "reason": "budget"}]
    assert len(plan.fallbacks) == 0


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"caps": ["vision"]}, ErrorCode.NO_ROUTE),
        ({"targets": router_pb2.Targets(p95_latency_ms=1000)}, ErrorCode.NO_ROUTE),
        ({"estimates": router_pb2.Estimates(prompt_tokens=200_000)}, ErrorCode.NO_ROUTE),
        (
            {
                "estimates": router_pb2.Estimates(prompt_tokens=10_000),
                "budget": router_pb2.Budget(amount_micro=1),
            },
            ErrorCode.BUDGET_EXCEEDED,
        ),
        (
            {
                "caps": ["tools"],
                "estimates": router_pb2.Estimates(prompt_tokens=10_000),
                "budget": router_pb2.Budget(amount_micro=1),
            },
            ErrorCode.NO_ROUTE,  # mixtral lacks tools: budget is not the only reason
        ),
    ],
)
async def test_knn_filters_every_candidate(
    planner: Planner, config: RoutingConfig, fields: dict[str, Any], code: ErrorCode
) -> None:
    with pytest.raises(RouteFailure) as info:
        await planner.plan(request("auto", **fields), config)
    assert info.value.code is code


async def test_legacy_fields_are_read(planner: Planner, config: RoutingConfig) -> None:
    req = request("auto", targets=router_pb2.Targets(max_cost_usd=0.000001), privacy="features")
    req.estimates.prompt_tokens = 10_000
    with pytest.raises(RouteFailure) as info:
        await planner.plan(req, config)
    assert info.value.code is ErrorCode.BUDGET_EXCEEDED  # max_cost_usd became a 1-micro budget


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"alias": ""}, ErrorCode.INVALID_REQUEST),
        ({"alias": "   "}, ErrorCode.INVALID_REQUEST),
        ({"alias": "x" * 257}, ErrorCode.INVALID_REQUEST),
        ({"alias": "a", "api": "completions"}, ErrorCode.INVALID_REQUEST),
        ({"alias": "a", "privacy_mode": "everything"}, ErrorCode.INVALID_REQUEST),
        (
            {"alias": "a", "estimates": router_pb2.Estimates(prompt_tokens=-1)},
            ErrorCode.INVALID_REQUEST,
        ),
        (
            {"alias": "a", "budget": router_pb2.Budget(amount_micro=5, currency="EUR")},
            ErrorCode.INVALID_REQUEST,
        ),
        ({"alias": "a", "schema_version": "2.0"}, ErrorCode.UNSUPPORTED_SCHEMA),
        ({"schema_version": "0.9"}, ErrorCode.UNSUPPORTED_SCHEMA),
    ],
)
async def test_request_validation(
    planner: Planner, config: RoutingConfig, fields: dict[str, Any], code: ErrorCode
) -> None:
    with pytest.raises(RouteFailure) as info:
        await planner.plan(router_pb2.RouteRequest(**fields), config)
    assert info.value.code is code
    if code is ErrorCode.UNSUPPORTED_SCHEMA:
        assert list(info.value.supported) == ["1.0", "1.1"]


@pytest.mark.parametrize("version", ["1.0", "1.1"])
async def test_supported_schema_versions(
    planner: Planner, config: RoutingConfig, version: str
) -> None:
    plan = (await planner.plan(request("o3", schema_version=version), config)).plan
    assert plan.schema_version == "1.1"


async def test_tradeoff_must_be_a_number(planner: Planner, config: RoutingConfig) -> None:
    req = request("auto")
    req.overrides.update({"quality_cost_tradeoff": "high"})
    with pytest.raises(RouteFailure) as info:
        await planner.plan(req, config)
    assert info.value.code is ErrorCode.INVALID_REQUEST


async def test_degraded_upstreams(planner: Planner, config: RoutingConfig) -> None:
    health = planner.health
    for _ in range(20):
        health.record(MIXTRAL, success=False)
    # catalog policy, no fallback → UPSTREAM_UNHEALTHY
    with pytest.raises(RouteFailure) as info:
        await planner.plan(request(MIXTRAL), config)
    assert info.value.code is ErrorCode.UPSTREAM_UNHEALTHY
    # KNN skips degraded candidates...
    plan = (await planner.plan(request("auto"), config)).plan
    assert plan.upstream.model_id == GPT4
    assert list(plan.policy.explain_detail["excluded"]) == [
        {"model": MIXTRAL, "reason": "degraded"}
    ]
    # ...unless all are degraded.
    for _ in range(20):
        health.record(GPT4, success=False)
    plan = (await planner.plan(request("auto"), config)).plan
    assert plan.policy.explain_detail["chosen"] == MIXTRAL
    # A static alias with a healthy fallback still plans; all degraded does not.
    for _ in range(20):
        health.record("llama-70b", success=False)
    assert (
        await planner.plan(request("with-fallback"), config)
    ).plan.upstream.model_id == "llama-70b"
    for _ in range(20):
        health.record("llama-8b", success=False)
    with pytest.raises(RouteFailure) as info:
        await planner.plan(request("with-fallback"), config)
    assert info.value.code is ErrorCode.UPSTREAM_UNHEALTHY


async def test_overload_sheds_with_retry_hint(planner: Planner, config: RoutingConfig) -> None:
    with planner.gate.slot():
        planner.gate.limit = 1
        with pytest.raises(RouteFailure) as info:
            await planner.plan(request("o3"), config)
    assert info.value.code is ErrorCode.ROUTER_OVERLOADED
    assert info.value.retry_hint_ms == 100
    assert info.value.retry_after_seconds == 1
    assert planner.gate.in_flight == 0
    assert (await planner.plan(request("o3"), config)).plan.upstream.model_id == "o3"
