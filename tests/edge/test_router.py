"""Planning through the real router service: typed errors, fallbacks, plan headers, translation."""

from __future__ import annotations

from typing import Any

import orjson

from tests.edge.conftest import BEARER, CHAT, EdgeFactory, RouterFactory
from tests.edge.test_errors import assert_error
from tests.edge.test_passthrough import sse_data
from tests.mock_upstream.fixture import MockUpstream, closed_port_url


def alias(base_url: str, model_id: str, mode: str = "chat", **extra: Any) -> dict[str, Any]:
    return {"base_url": base_url, "mode": mode, "model_id": model_id, **extra}


async def test_unknown_model_without_default_upstream_is_404(
    make_edge: EdgeFactory, router_service: RouterFactory
) -> None:
    async with (
        router_service({}, router_default_upstream=False) as router,
        make_edge(router_addr=router.addr) as edge,
    ):
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "no-such-model"}, headers=BEARER
        )
    error = assert_error(response, 404, "model_not_found", "not_found_error")
    assert error["param"] == "model"
    [event] = edge.events
    assert event["response"]["status_code"] == 404


async def test_router_plan_headers_and_event(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"fast": alias(mock_upstream.base_url, "mock-model-a")}
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "fast"}, headers=BEARER
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-resolved-model"] == "mock-model-a"
    assert response.headers["x-policy-rev"].startswith("pol_")
    assert response.headers["x-route-cache"] == "miss"
    [seen] = await mock_upstream.requests()
    assert seen["body"]["model"] == "mock-model-a"
    [event] = edge.events
    routing = event["routing"]
    assert routing["backend"] == "router"
    assert routing["strategy"] == "alias_table"
    assert routing["route_cache"] == "miss"
    assert routing["router_latency_ms"] > 0
    assert event["request"]["model"] == "fast"


async def test_fallbacks_in_order_after_connect_error_and_5xx(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "resilient": alias(
            closed_port_url(),
            "primary",
            fallbacks=[
                {"base_url": up, "mode": "chat", "model_id": "mock-fail-500"},
                {"base_url": up, "mode": "chat", "model_id": "backup"},
            ],
        )
    }
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "resilient"}, headers=BEARER
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-resolved-model"] == "backup"
    assert [r["body"]["model"] for r in await mock_upstream.requests()] == [
        "mock-fail-500",
        "backup",
    ]
    [event] = edge.events
    routing = event["routing"]
    assert routing["fallback_used"] is True
    assert routing["fallback_index"] == 1
    assert routing["attempts"] == 3
    assert routing["resolved_model"] == "backup"


async def test_plan_headers_go_to_the_primary_only(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "hdr": alias(
            up,
            "primary",
            headers={"X-Mock-Status": "503"},
            fallbacks=[{"base_url": up, "mode": "chat", "model_id": "secondary"}],
        )
    }
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "hdr", "stream": True}, headers=BEARER
        )
    assert response.status_code == 200
    assert response.headers["x-resolved-model"] == "secondary"
    primary, secondary = await mock_upstream.requests()
    assert primary["headers"]["x-mock-status"] == "503"
    assert "x-mock-status" not in secondary["headers"]
    assert sse_data(response.text)[-1] == "[DONE]"


async def test_all_attempts_failing_last_429_decides(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "busy": alias(
            up, "mock-fail-500", fallbacks=[{"base_url": up, "mode": "chat", "model_id": "x"}]
        )
    }
    await mock_upstream.script({"model": "x", "status": 429})
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "busy"}, headers=BEARER
        )
    assert_error(response, 429, "upstream_rate_limited", "rate_limit_error")
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-route-id"].startswith("rte_")


async def test_chat_client_on_responses_upstream_is_translated(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"resp": alias(mock_upstream.base_url, "gpt-4o", mode="responses")}
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        plain = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "resp"}, headers=BEARER
        )
        streamed = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "resp", "stream": True}, headers=BEARER
        )
    assert plain.status_code == 200
    message = plain.json()["choices"][0]["message"]
    assert message["content"] == "Hello from the mock upstream."
    frames = sse_data(streamed.text)
    assert frames[-1] == "[DONE]"
    text = "".join(
        orjson.loads(f)["choices"][0]["delta"].get("content") or ""
        for f in frames[:-1]
        if orjson.loads(f)["choices"]
    )
    assert text == "Hello from the mock upstream."
    paths = {r["path"] for r in await mock_upstream.requests()}
    assert paths == {"/v1/responses"}
    assert all(e["token_usage"]["completion_tokens"] == 5 for e in edge.events)
