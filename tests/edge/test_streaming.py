"""Streaming behaviour: keep-alives, mid-stream failures, client disconnects (real server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import uvicorn

from deploy.local.stack import free_port
from services.edge.app import create_app
from tests.edge.conftest import BEARER, CHAT, EdgeFactory, edge_settings
from tests.edge.test_passthrough import sse_data
from tests.mock_upstream.fixture import MockUpstream

STREAM = {**CHAT, "stream": True}


async def test_keep_alive_comment_during_upstream_silence(
    make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script({"chunk_delay_ms": 250, "text": "Hi"})
    async with make_edge(sse_keepalive_seconds=0.1) as edge:
        response = await edge.client.post("/v1/chat/completions", json=STREAM, headers=BEARER)
    assert ": keep-alive\n\n" in response.text
    assert sse_data(response.text)[-1] == "[DONE]"
    [event] = edge.events
    assert event["response"]["success"] is True


async def test_chat_stream_cut_mid_way_ends_with_error_frame_and_done(
    make_edge: EdgeFactory,
) -> None:
    async with make_edge() as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**STREAM, "model": "mock-cut-3"}, headers=BEARER
        )
    assert response.status_code == 200
    frames = sse_data(response.text)
    assert frames[-1] == "[DONE]"
    error = orjson.loads(frames[-2])["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "upstream_stream_error"
    assert error["param"] is None
    assert orjson.loads(frames[1])["choices"][0]["delta"]["content"] == "Hello"
    [event] = edge.events
    assert event["response"]["status_code"] == 200
    assert event["response"]["success"] is False
    assert event["response"]["error_message"]


async def test_responses_stream_cut_ends_with_response_failed(make_edge: EdgeFactory) -> None:
    body = {"model": "mock-cut-5", "input": "hi", "stream": True}
    async with make_edge(upstream_mode="responses") as edge:
        response = await edge.client.post("/v1/responses", json=body, headers=BEARER)
    payloads = [orjson.loads(d) for d in sse_data(response.text)]
    last = payloads[-1]
    assert last["type"] == "response.failed"
    assert last["sequence_number"] == payloads[-2]["sequence_number"] + 1
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["code"] == "server_error"
    assert "[DONE]" not in response.text
    [event] = edge.events
    assert event["response"]["success"] is False


async def test_client_disconnect_cancels_the_stream(
    tmp_path: Path, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script({"chunk_delay_ms": 300})
    app = create_app(edge_settings(tmp_path, mock_upstream.base_url))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        events: list[dict[str, object]] = []
        app.state.runtime.proxy.emit = events.append
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
            client.stream("POST", "/v1/chat/completions", json=STREAM, headers=BEARER) as resp,
        ):
            assert resp.status_code == 200
            first = await anext(resp.aiter_bytes())
            assert first.startswith(b"data: ")
        for _ in range(200):
            if events:
                break
            await asyncio.sleep(0.02)
        [event] = events
        assert event["response"]["success"] is False  # type: ignore[index]
        assert event["response"]["error_message"] == "client_disconnected"  # type: ignore[index]
        assert app.state.runtime.proxy.inflight == 0
        for _ in range(200):  # the edge dropped its upstream request too
            if (await mock_upstream.requests())[0]["outcome"] == "cancelled":
                break
            await asyncio.sleep(0.02)
        assert (await mock_upstream.requests())[0]["outcome"] == "cancelled"
    finally:
        server.should_exit = True
        await serving
