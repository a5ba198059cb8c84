"""Bad input and failing dependencies: typed OpenAI-style errors, never a stack trace."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.edge.conftest import BEARER, CHAT, EdgeFactory
from tests.mock_upstream.fixture import MockUpstream, closed_port_url


def assert_error(response: httpx.Response, status: int, code: str, err_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["type"] == err_type
    assert "Traceback" not in response.text
    return error


async def test_invalid_json_is_400(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", content=b"{not json", headers=BEARER
        )
    assert_error(response, 400, "invalid_json", "invalid_request_error")
    [event] = edge.events
    assert event["response"]["status_code"] == 400
    assert event["response"]["success"] is False
    assert event["auth"]["auth_method"] == "none"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([1, 2], None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ],
)
async def test_invalid_request_names_the_param(
    make_edge: EdgeFactory, body: Any, param: str | None
) -> None:
    async with make_edge() as edge:
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
    error = assert_error(response, 400, "invalid_request", "invalid_request_error")
    assert error["param"] == param


async def test_body_over_limit_is_413_before_auth(make_edge: EdgeFactory) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
    async with make_edge(max_body_bytes=1000) as edge:
        response = await edge.client.post("/v1/chat/completions", json=big)  # no bearer
    assert_error(response, 413, "request_too_large", "invalid_request_error")


async def test_missing_bearer_is_401(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT)
    error = assert_error(response, 401, "missing_api_key", "authentication_error")
    assert error["message"] == "Missing Authorization bearer"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Signalbox-Tradeoff", "1.5"),
        ("X-Signalbox-Tradeoff", "abc"),
        ("X-Signalbox-Budget-Micro", "-1"),
        ("X-Signalbox-Latency-Target-Ms", "0"),
        ("X-Signalbox-Privacy", "everything"),
    ],
)
async def test_invalid_routing_header_is_400_with_header_param(
    make_edge: EdgeFactory, header: str, value: str
) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers={**BEARER, header: value}
        )
    error = assert_error(response, 400, "invalid_request", "invalid_request_error")
    assert error["param"] == header


async def test_upstream_unreachable_is_502(make_edge: EdgeFactory) -> None:
    async with make_edge(openai_base_url=closed_port_url()) as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
    assert_error(response, 502, "upstream_unreachable", "upstream_error")
    assert response.headers["x-route-id"].startswith("rte_")
    [event] = edge.events
    assert event["response"]["status_code"] == 502
    assert event["routing"]["attempts"] == 1


async def test_upstream_timeout_is_504(make_edge: EdgeFactory) -> None:
    body = {**CHAT, "model": "mock-slow-3000"}
    async with make_edge(upstream_timeout_ms=300) as edge:
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
    assert_error(response, 504, "upstream_timeout", "timeout_error")


async def test_slow_first_byte_of_a_stream_is_504_not_a_committed_200(
    make_edge: EdgeFactory,
) -> None:
    body = {**CHAT, "model": "mock-stall-3000", "stream": True}
    async with make_edge(upstream_timeout_ms=300) as edge:
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
    assert_error(response, 504, "upstream_timeout", "timeout_error")


async def test_upstream_429_is_429_with_retry_after(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script({"status": 429, "retry_after": 7})
    async with make_edge() as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
    assert_error(response, 429, "upstream_rate_limited", "rate_limit_error")
    assert response.headers["retry-after"] == "7"


async def test_upstream_5xx_is_502(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "mock-fail-503"}, headers=BEARER
        )
    assert_error(response, 502, "upstream_error", "upstream_error")


async def test_upstream_4xx_is_relayed(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "mock-fail-404"}, headers=BEARER
        )
    error = assert_error(response, 404, "model_not_found", "invalid_request_error")
    assert error["message"] == "The model does not exist."
    assert response.headers["x-resolved-model"] == "mock-fail-404"


async def test_non_json_upstream_error_is_wrapped(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script({"status": 400, "non_json": True})
    async with make_edge() as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
    error = assert_error(response, 400, "upstream_error", "invalid_request_error")
    assert "upstream exploded" in error["message"]


async def test_passthrough_upstream_401_is_relayed(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "mock-fail-401"}, headers=BEARER
        )
    assert_error(response, 401, "invalid_api_key", "invalid_request_error")


async def test_bug_becomes_500_internal_error(
    make_edge: EdgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_edge() as edge:

        async def broken(_request: object) -> None:
            raise RuntimeError("secret internals")

        monkeypatch.setattr(edge.runtime.planner, "plan", broken)
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
    error = assert_error(response, 500, "internal_error", "server_error")
    assert "secret internals" not in response.text
    assert error["message"] == "Internal server error"
    [event] = edge.events
    assert event["response"]["status_code"] == 500


async def test_bug_outside_the_pipeline_is_500_with_request_id(
    make_edge: EdgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.edge.app as edge_app

    def broken(_runtime: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(edge_app, "status_document", broken)
    async with make_edge() as edge:
        response = await edge.client.get("/status", headers={"x-request-id": "bad id!"})
    assert_error(response, 500, "internal_error", "server_error")
    assert response.headers["x-request-id"].startswith("req_")
    assert "secret internals" not in response.text


async def test_chat_rejects_stateful_fields(make_edge: EdgeFactory) -> None:
    body = {**CHAT, "previous_response_id": "resp_1"}
    async with make_edge() as edge:
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
    error = assert_error(response, 400, "unsupported_parameter", "invalid_request_error")
    assert error["param"] == "previous_response_id"


async def test_unknown_route_is_404_json(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.get("/v1/nope")
    assert_error(response, 404, "not_found", "not_found_error")


async def test_router_down_strict_is_503(make_edge: EdgeFactory) -> None:
    async with make_edge(router_addr=closed_port_url()[7:-3], router_strict=True) as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
    assert_error(response, 503, "router_unavailable", "service_unavailable_error")
    assert response.headers["retry-after"] == "1"


async def test_router_down_non_strict_falls_back_to_local_plan(make_edge: EdgeFactory) -> None:
    async with make_edge(router_addr=closed_port_url()[7:-3]) as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
    assert response.status_code == 200
    assert response.headers["x-policy-rev"] == "local"
    [event] = edge.events
    assert event["routing"]["backend"] == "default"


async def test_backends_rule_routes_by_prefix(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    backends = f"prefix=local-,base={mock_upstream.base_url},mode=chat"
    async with make_edge(backends=backends, openai_base_url=closed_port_url()) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "local-llama"}, headers=BEARER
        )
    assert response.status_code == 200
    assert response.headers["x-resolved-model"] == "local-llama"
    [event] = edge.events
    assert event["routing"]["strategy"] == "backends_env"
    assert event["routing"]["backend"] == "backends_env"
