"""`signalbox.router.v1.Router` / `RouterAdmin` over real loopback gRPC (router-schema §4, §12)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import grpc
import pytest

from services.common.grpc_client import check_health, open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from services.router.app import RouterApp
from services.router.errors import ERROR_METADATA_KEY
from tests.router.conftest import ALIASES, GPT4, MIXTRAL, StartRouter, write_json

Stub = router_pb2_grpc.RouterStub


def route_error(exc: grpc.aio.AioRpcError) -> router_pb2.RouteError:
    values = [v for k, v in exc.trailing_metadata() or () if k == ERROR_METADATA_KEY]
    assert len(values) == 1, exc.trailing_metadata()
    return router_pb2.RouteError.FromString(values[0])


async def plan_error(
    stub: Stub, request: router_pb2.RouteRequest
) -> tuple[grpc.StatusCode, router_pb2.RouteError]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Plan(request)
    return info.value.code(), route_error(info.value)


async def feedback(stub: Stub, items: Iterable[router_pb2.RouteFeedback]) -> int:
    async def stream() -> AsyncIterator[router_pb2.RouteFeedback]:
        for item in items:
            yield item

    return (await stub.Feedback(stream())).accepted


async def feedback_batch(stub: Stub, items: Iterable[router_pb2.RouteFeedback]) -> int:
    """The extension: the same items in one `RouteFeedbackBatch` message."""
    return (await stub.FeedbackBatch(router_pb2.RouteFeedbackBatch(items=items))).accepted


SendFeedback = Callable[[Stub, Iterable[router_pb2.RouteFeedback]], Awaitable[int]]


def fail_many(model: str, n: int = 20) -> list[router_pb2.RouteFeedback]:
    return [
        router_pb2.RouteFeedback(route_id=f"rte_{i:016x}", model_id=model, success=False)
        for i in range(n)
    ]


async def test_health_serving(router: RouterApp) -> None:
    async with open_channel(f"127.0.0.1:{router.grpc_port}") as channel:
        for service in ("", "signalbox.router.v1.Router", "signalbox.router.v1.RouterAdmin"):
            serving, _, error = await check_health(channel, service)
            assert serving, error


async def test_plan_and_metadata(stub: Stub, router: RouterApp) -> None:
    call = stub.Plan(router_pb2.RouteRequest(alias=GPT4 + "", api="chat"))
    plan = await call
    meta = dict(await call.initial_metadata())
    assert meta["router-schema"] == "1.1"
    assert meta["router-latency"].isdigit()
    assert meta["config-revision"] == router.service.config.policy_rev  # type: ignore[union-attr]
    assert meta["x-route-cache"] == "miss"
    assert meta["x-route-id"] == plan.route_id
    assert meta["x-resolved-model"] == plan.upstream.model_id == "shadowed"
    assert meta["x-policy-rev"] == plan.policy_rev
    assert meta["x-content-used"] == "none"
    assert "x-route-tier" not in meta
    call = stub.Plan(router_pb2.RouteRequest(alias=MIXTRAL))
    await call
    assert dict(await call.initial_metadata())["x-route-tier"] == "T1"


async def test_sticky_hit_metadata(stub: Stub) -> None:
    first = await stub.Plan(router_pb2.RouteRequest(alias="auto"))
    call = stub.Plan(router_pb2.RouteRequest(alias="auto", plan_token=first.stickiness.plan_token))
    second = await call
    assert dict(await call.initial_metadata())["x-route-cache"] == "hit"
    assert second.stickiness.turns_used == 2


async def test_error_codes(stub: Stub, router: RouterApp, start_router: StartRouter) -> None:
    rev = router.service.config.policy_rev  # type: ignore[union-attr]
    cases = [
        (router_pb2.RouteRequest(alias=""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
        (
            router_pb2.RouteRequest(alias="a", schema_version="2.0", request_id="req-1"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "UNSUPPORTED_SCHEMA",
        ),
        (
            router_pb2.RouteRequest(alias="auto", caps=["vision"]),
            grpc.StatusCode.FAILED_PRECONDITION,
            "NO_ROUTE",
        ),
        (
            router_pb2.RouteRequest(
                alias="auto",
                estimates=router_pb2.Estimates(prompt_tokens=10_000),
                budget=router_pb2.Budget(amount_micro=1),
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "BUDGET_EXCEEDED",
        ),
    ]
    for request, status, code in cases:
        got_status, error = await plan_error(stub, request)
        assert (got_status, error.code) == (status, code)
        assert error.schema_version == "1.1" and error.policy_rev == rev and error.message
    _, error = await plan_error(stub, cases[1][0])
    assert list(error.supported) == ["1.0", "1.1"] and error.request_id == "req-1"

    # UPSTREAM_UNHEALTHY: mixtral degraded through the Feedback stream.
    assert await feedback(stub, fail_many(MIXTRAL)) == 20
    status, error = await plan_error(stub, router_pb2.RouteRequest(alias=MIXTRAL))
    assert (status, error.code) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNHEALTHY")

    # ROUTER_OVERLOADED: 256 plans in flight.
    gate = router.service.planner.gate  # type: ignore[union-attr]
    with contextlib.ExitStack() as stack:
        for _ in range(256):
            stack.enter_context(gate.slot())
        status, error = await plan_error(stub, router_pb2.RouteRequest(alias="o3"))
    assert (status, error.code, error.retry_hint_ms) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ROUTER_OVERLOADED",
        100,
    )

    # ALIAS_UNKNOWN: default upstream off and nothing matches.
    strict = await start_router(router_default_upstream=False)
    async with open_channel(f"127.0.0.1:{strict.grpc_port}") as channel:
        status, error = await plan_error(Stub(channel), router_pb2.RouteRequest(alias="o3"))
    assert (status, error.code) == (grpc.StatusCode.NOT_FOUND, "ALIAS_UNKNOWN")


async def test_unexpected_failure_is_internal(
    stub: Stub, router: RouterApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(router.service.planner, "plan", explode)  # type: ignore[union-attr]
    status, error = await plan_error(stub, router_pb2.RouteRequest(alias="o3"))
    assert (status, error.code) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    assert "boom" not in error.message


async def test_plan_batch(stub: Stub) -> None:
    reply = await stub.PlanBatch(
        router_pb2.PlanBatchRequest(
            plans=[
                router_pb2.RouteRequest(alias="nano-basic"),
                router_pb2.RouteRequest(alias="", request_id="bad-1"),
                router_pb2.RouteRequest(alias="vllm-x"),
            ]
        )
    )
    assert re.fullmatch(r"bat_[0-9a-f]{16}", reply.batch_id)
    kinds = [item.WhichOneof("result") for item in reply.plans]
    assert kinds == ["plan", "error", "plan"]
    assert reply.plans[1].error.code == "INVALID_REQUEST"
    assert reply.plans[1].error.request_id == "bad-1"
    assert reply.plans[2].plan.upstream.base_url == "http://vllm:8000/v1"
    full = await stub.PlanBatch(
        router_pb2.PlanBatchRequest(plans=[router_pb2.RouteRequest(alias="o3")] * 64)
    )
    assert len(full.plans) == 64
    for size in (0, 65):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.PlanBatch(
                router_pb2.PlanBatchRequest(plans=[router_pb2.RouteRequest(alias="o3")] * size)
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert route_error(info.value).code == "INVALID_REQUEST"


async def test_catalog_and_not_modified(stub: Stub, router: RouterApp) -> None:
    catalog = await stub.Catalog(router_pb2.CatalogRequest())
    assert catalog.revision == router.service.config.catalog.revision  # type: ignore[union-attr]
    assert [m.id for m in catalog.models] == [MIXTRAL, GPT4]
    assert not catalog.not_modified
    again = await stub.Catalog(router_pb2.CatalogRequest(if_none_match=f'"{catalog.revision}"'))
    assert again.not_modified and len(again.models) == 0 and again.revision == catalog.revision


async def test_capabilities(stub: Stub) -> None:
    caps = await stub.Capabilities(router_pb2.CapabilitiesRequest())
    assert list(caps.schema_versions) == ["1.0", "1.1"]
    assert caps.router.name == "signalbox-router" and caps.router.version
    assert list(caps.features.policies) == ["alias_table", "knn", "catalog", "prefix", "default"]
    assert caps.features.stickiness and caps.features.explain_detail
    assert caps.limits.plan_batch_max == 64


@pytest.mark.parametrize("send", [feedback, feedback_batch], ids=["stream", "batch"])
async def test_feedback_window_degrades_and_invalidates(stub: Stub, send: SendFeedback) -> None:
    plans = [await stub.Plan(router_pb2.RouteRequest(alias=MIXTRAL)) for _ in range(20)]
    freeze = plans[0].cache.freeze_key
    # Attributed by route_id alone; the invalid item (no route_id) is skipped, not fatal.
    items = [
        router_pb2.RouteFeedback(route_id=p.route_id, success=False, duration_ms=900) for p in plans
    ]
    items.insert(3, router_pb2.RouteFeedback(success=True))
    assert await send(stub, items) == 20
    catalog = await stub.Catalog(router_pb2.CatalogRequest())
    mixtral = next(m for m in catalog.models if m.id == MIXTRAL)
    assert mixtral.status == "degraded" and "error_rate" in mixtral.status_reason
    assert mixtral.slos.recent.error_rate == 1 and mixtral.slos.recent.p95_ms == 900
    call = stub.Plan(router_pb2.RouteRequest(alias="o3"))
    await call
    assert dict(await call.initial_metadata())["x-route-invalidate"] == freeze
    # Recovery (error rate below 0.2) is a status change too: listed again.
    ok = [router_pb2.RouteFeedback(route_id="r", model_id=MIXTRAL, success=True)] * 81
    assert await send(stub, ok) == 81
    catalog = await stub.Catalog(router_pb2.CatalogRequest())
    assert next(m for m in catalog.models if m.id == MIXTRAL).status == "healthy"


async def test_reload_swaps_or_keeps(
    stub: Stub,
    admin_stub: router_pb2_grpc.RouterAdminStub,
    router: RouterApp,
    alias_file: Path,
) -> None:
    admin = admin_stub
    old_rev = router.service.config.policy_rev  # type: ignore[union-attr]
    write_json(
        alias_file,
        {**ALIASES, "new-one": {"base_url": "http://n/v1", "mode": "chat", "model_id": "n"}},
    )
    reply = await admin.Reload(router_pb2.ReloadRequest())
    assert reply.success, reply.message
    assert reply.stats.policy_rev != old_rev and reply.stats.aliases == 6
    assert (reply.stats.knn_aliases, reply.stats.prefix_rules, reply.stats.catalog_models) == (
        2,
        2,
        2,
    )
    plan = await stub.Plan(router_pb2.RouteRequest(alias="new-one"))
    assert plan.upstream.model_id == "n" and plan.policy_rev == reply.stats.policy_rev

    write_json(alias_file, {"broken": {"mode": "chat"}})
    failed = await admin.Reload(router_pb2.ReloadRequest())
    assert not failed.success and "broken" in failed.message
    assert failed.stats.policy_rev == reply.stats.policy_rev
    plan = await stub.Plan(router_pb2.RouteRequest(alias="new-one"))
    assert plan.upstream.model_id == "n"


async def test_internal_token_required(start_router: StartRouter) -> None:
    app = await start_router(internal_token="s3cret-token")
    addr = f"127.0.0.1:{app.grpc_port}"
    async with open_channel(addr) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await Stub(channel).Plan(router_pb2.RouteRequest(alias="o3"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with open_channel(addr, "s3cret-token") as channel:
        plan = await Stub(channel).Plan(router_pb2.RouteRequest(alias="o3"))
        assert plan.upstream.model_id == "o3"
