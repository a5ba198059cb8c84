"""Pure pieces of the edge: router error mapping, the key cache, client IPs, plan limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from starlette.requests import Request

from services.common.pb import keys_pb2, router_pb2
from services.edge.auth import VerifiedKeyCache, bearer_token
from services.edge.errors import ApiError
from services.edge.plan_apply import apply_plan, enforce_plan
from services.edge.proxy import client_ip
from services.edge.routing import ROUTE_ERROR_KEY, Planner, _typed_error, route_error_to_api
from services.edge.settings import EdgeSettings
from tests.edge.conftest import CHAT


@pytest.mark.parametrize(
    ("code", "status", "edge_code"),
    [
        ("ALIAS_UNKNOWN", 404, "model_not_found"),
        ("NO_ROUTE", 409, "no_route"),
        ("POLICY_DENY", 403, "policy_denied"),
        ("BUDGET_EXCEEDED", 409, "budget_exceeded"),
        ("ROUTER_OVERLOADED", 503, "router_overloaded"),
        ("UPSTREAM_UNHEALTHY", 502, "upstream_unhealthy"),
        ("INVALID_REQUEST", 400, "invalid_request"),
        ("UNSUPPORTED_SCHEMA", 409, "unsupported_schema"),
        ("INTERNAL", 500, "internal_error"),
        ("SOMETHING_NEW", 502, "router_error"),
    ],
)
def test_route_error_mapping(code: str, status: int, edge_code: str) -> None:
    error = route_error_to_api(router_pb2.RouteError(code=code, message="why"))
    assert (error.status, error.code, error.message) == (status, edge_code, "why")


def test_retry_hint_becomes_retry_after_seconds() -> None:
    error = route_error_to_api(router_pb2.RouteError(code="ROUTER_OVERLOADED", retry_hint_ms=1500))
    assert error.to_response().headers["retry-after"] == "2"


def test_typed_error_is_read_from_the_trailer() -> None:
    typed = router_pb2.RouteError(code="NO_ROUTE", message="none")
    exc = grpc.aio.AioRpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((ROUTE_ERROR_KEY, typed.SerializeToString())),
    )
    assert _typed_error(exc) == typed
    garbled = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((ROUTE_ERROR_KEY, b"\xff\xff\xff")),
    )
    assert _typed_error(garbled) is None


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """A TCP port that accepts connections and never answers: a hung router."""
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"127.0.0.1:{port}"


@pytest.mark.parametrize(("strict", "outcome"), [(True, "router_timeout"), (False, "local")])
async def test_router_timeout_strict_and_lenient(
    black_hole: str, strict: bool, outcome: str
) -> None:
    async with grpc.aio.insecure_channel(black_hole) as channel:
        planner = Planner(
            channel,
            rules=[],
            openai_base_url="http://upstream/v1",
            upstream_mode="responses",
            strict=strict,
            timeout_ms=200,
        )
        request = router_pb2.RouteRequest(alias="gpt-4o", api="chat")
        if strict:
            with pytest.raises(ApiError) as caught:
                await planner.plan(request)
            assert (caught.value.status, caught.value.code) == (504, outcome)
        else:
            result = await planner.plan(request)
            assert result.policy_rev == outcome
            assert result.plan.upstream.mode == "chat"


def test_key_cache_never_outlives_expiry() -> None:
    cache = VerifiedKeyCache(ttl_ms=60_000)
    live = keys_pb2.KeyInfo(id="a")
    expired = keys_pb2.KeyInfo(id="b", expires_at=int(time.time()) - 1)
    cache.put("tok-a", live)
    cache.put("tok-b", expired)
    assert cache.get("tok-a") == live
    assert cache.get("tok-b") is None
    assert cache.get("tok-unknown") is None
    disabled = VerifiedKeyCache(ttl_ms=0)
    disabled.put("tok-a", live)
    assert disabled.get("tok-a") is None


def test_key_cache_evicts_every_token_of_a_key() -> None:
    cache = VerifiedKeyCache(ttl_ms=60_000)
    cache.put("tok-1", keys_pb2.KeyInfo(id="a"))
    cache.put("tok-2", keys_pb2.KeyInfo(id="a"))
    cache.put("tok-3", keys_pb2.KeyInfo(id="b"))
    cache.evict("a")
    cache.evict("unknown")
    assert cache.get("tok-1") is None and cache.get("tok-2") is None
    assert cache.get("tok-3") is not None


def test_key_cache_is_bounded() -> None:
    cache = VerifiedKeyCache(ttl_ms=60_000, max_entries=2)
    for name in ("1", "2", "3"):
        cache.put(name, keys_pb2.KeyInfo(id=name))
    assert cache.get("1") is None
    assert cache.get("3") is not None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer ", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def _request(peer: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "headers": headers, "client": (peer, 5000)})


def test_client_ip_trusts_forwarded_only_from_trusted_proxies() -> None:
    trusted = EdgeSettings(trusted_proxies="10.0.0.0/8,127.0.0.1/32").trusted_networks
    assert client_ip(_request("203.0.113.9", "1.2.3.4"), trusted) == "203.0.113.9"
    assert client_ip(_request("10.1.1.1", "1.2.3.4, 10.2.2.2"), trusted) == "1.2.3.4"
    assert client_ip(_request("127.0.0.1", "6.6.6.6, 5.5.5.5"), trusted) == "5.5.5.5"
    assert client_ip(_request("10.1.1.1", None), trusted) == "10.1.1.1"


def _plan(**fields: object) -> router_pb2.RoutePlan:
    return router_pb2.RoutePlan(route_id="rte_1", **fields)  # type: ignore[arg-type]


def test_plan_limits_and_overlay() -> None:
    plan = _plan(
        limits=router_pb2.Limits(max_input_tokens=100, max_output_tokens=64),
        prompt_overlays=router_pb2.PromptOverlays(system_overlay="Be safe.", max_overlay_bytes=64),
    )
    enforce_plan(plan, "chat", 100)
    with pytest.raises(ApiError) as caught:
        enforce_plan(plan, "chat", 101)
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")
    body = apply_plan("chat", {**CHAT, "max_tokens": 500}, plan)
    assert body["max_tokens"] == 64
    assert body["messages"][0] == {"role": "system", "content": "Be safe."}
    assert (
        apply_plan("chat", {**CHAT, "max_completion_tokens": 10}, plan)["max_completion_tokens"]
        == 10
    )
    responses = apply_plan("responses", {"model": "m", "input": "hi"}, plan)
    assert responses["max_output_tokens"] == 64
    assert responses["input"][0]["role"] == "system"
    assert responses["input"][1] == {"type": "message", "role": "user", "content": "hi"}


def test_oversized_overlay_is_skipped_and_judge_denies() -> None:
    plan = _plan(
        prompt_overlays=router_pb2.PromptOverlays(system_overlay="x" * 100, max_overlay_bytes=10)
    )
    assert apply_plan("chat", CHAT, plan) == CHAT
    with pytest.raises(ApiError) as caught:
        enforce_plan(_plan(judge=router_pb2.Judge(verdict="deny")), "chat", 1)
    assert (caught.value.status, caught.value.code) == (403, "policy_denied")
