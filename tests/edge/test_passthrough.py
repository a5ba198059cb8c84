"""chat→chat and responses→responses passthrough, JSON and SSE, through the real mock upstream."""

from __future__ import annotations

import orjson

from tests.edge.conftest import BEARER, CHAT, EdgeFactory
from tests.mock_upstream.fixture import MockUpstream


def sse_data(body: str) -> list[str]:
    return [line[len("data: ") :] for line in body.splitlines() if line.startswith("data: ")]


async def test_chat_json_relays_upstream_body_and_headers(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers={**BEARER, "x-request-id": "my-req.1"}
        )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello from the mock upstream."
    headers = response.headers
    assert headers["x-request-id"] == "my-req.1"
    assert headers["x-route-id"].startswith("rte_")
    assert headers["x-resolved-model"] == "gpt-4o-mini"
    assert headers["router-schema"] == "1.1"
    assert headers["x-policy-rev"] == "local"
    assert float(headers["x-signalbox-overhead-ms"]) >= 0
    # gpt-4o-mini built-in price: 0.15 in / 0.60 out per 1M; mock usage: 2 prompt, 5 completion
    assert headers["x-signalbox-cost-usd"] == "0.000003"
    [seen] = await mock_upstream.requests()
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == "Bearer client-token"
    assert seen["body"]["model"] == "gpt-4o-mini"
    assert "stream_options" not in seen["body"]


async def test_chat_json_event(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers={**BEARER, "user-agent": "pytest"}
        )
    [event] = edge.events
    assert event["request_id"] == response.headers["x-request-id"]
    assert event["request"] == {
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "model": "gpt-4o-mini",
        "stream": False,
        "size_bytes": len(orjson.dumps(CHAT)),
        "message_count": 1,
        "input_tokens": 11 // 4 + 10,
        "user_agent": "pytest",
        "client_ip": "127.0.0.1",
    }
    assert event["response"]["status_code"] == 200
    assert event["response"]["success"] is True
    assert event["response"]["output_tokens"] == 5
    assert event["auth"] == {
        "authenticated": True,
        "api_key_id": None,
        "api_key_label": None,
        "auth_method": "passthrough",
    }
    routing = event["routing"]
    assert routing["backend"] == "default"
    assert routing["strategy"] == "default"
    assert routing["upstream_mode"] == "chat"
    assert routing["resolved_model"] == "gpt-4o-mini"
    assert routing["fallback_used"] is False
    assert routing["attempts"] == 1
    assert event["token_usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 5,
        "total_tokens": 7,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert event["cost"]["total_cost_micro"] == 3
    assert event["cost"]["pricing_model"] == "gpt-4o-mini"
    assert event["performance"]["duration_ms"] >= event["performance"]["upstream_duration_ms"]


async def test_chat_stream_strips_usage_chunk_the_client_did_not_ask_for(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=BEARER
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-route-id"].startswith("rte_")
    frames = sse_data(response.text)
    assert frames[-1] == "[DONE]"
    chunks = [orjson.loads(f) for f in frames[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello from the mock upstream."
    [seen] = await mock_upstream.requests()
    assert seen["body"]["stream_options"] == {"include_usage": True}
    [event] = edge.events
    assert event["response"]["success"] is True
    assert event["request"]["stream"] is True
    assert event["token_usage"]["completion_tokens"] == 5
    assert event["performance"]["ttfb_ms"] is not None


async def test_chat_stream_keeps_usage_chunk_when_asked(make_edge: EdgeFactory) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with make_edge() as edge:
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
    frames = sse_data(response.text)
    usage_chunk = orjson.loads(frames[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] == 7
    assert frames[-1] == "[DONE]"


async def test_responses_json_passthrough(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    body = {"model": "gpt-4o", "input": "Say hi", "instructions": "Be brief"}
    async with make_edge(upstream_mode="responses") as edge:
        response = await edge.client.post("/v1/responses", json=body, headers=BEARER)
    assert response.status_code == 200
    assert response.json()["object"] == "response"
    [seen] = await mock_upstream.requests()
    assert seen["path"] == "/v1/responses"
    assert seen["body"] == {**body, "model": "gpt-4o"}
    [event] = edge.events
    assert event["token_usage"]["prompt_tokens"] == 3
    assert event["routing"]["upstream_mode"] == "responses"
    assert event["request"]["message_count"] == 1


async def test_responses_stream_passthrough_ends_with_terminal_event(
    make_edge: EdgeFactory,
) -> None:
    body = {"model": "gpt-4o", "input": "Say hi", "stream": True}
    async with make_edge(upstream_mode="responses") as edge:
        response = await edge.client.post("/v1/responses", json=body, headers=BEARER)
    assert response.status_code == 200
    kinds = [
        line[len("event: ") :] for line in response.text.splitlines() if line.startswith("event: ")
    ]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "[DONE]" not in response.text
    seqs = [orjson.loads(d)["sequence_number"] for d in sse_data(response.text)]
    assert seqs == list(range(len(seqs)))
    [event] = edge.events
    assert event["response"]["success"] is True
    assert event["token_usage"]["completion_tokens"] == 5


async def test_trace_headers_are_forwarded(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with make_edge() as edge:
        await edge.client.post(
            "/v1/chat/completions", json=CHAT, headers={**BEARER, "traceparent": traceparent}
        )
    [seen] = await mock_upstream.requests()
    assert seen["headers"]["traceparent"] == traceparent


async def test_vendor_fields_are_kept(make_edge: EdgeFactory, mock_upstream: MockUpstream) -> None:
    body = {**CHAT, "top_k": 5, "chat_template_kwargs": {"enable_thinking": False}}
    async with make_edge() as edge:
        await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
    [seen] = await mock_upstream.requests()
    assert seen["body"]["top_k"] == 5
    assert seen["body"]["chat_template_kwargs"] == {"enable_thinking": False}
