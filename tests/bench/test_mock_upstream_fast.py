"""The fast mock answers what an OpenAI client and a gateway expect, over real HTTP."""

from __future__ import annotations

import httpx
import orjson

from bench.mock_upstream_fast import completion_body, latency_ms, stream_events
from tests.bench.conftest import STREAM_CHUNKS

CHAT = {"model": "bench-lat0", "messages": [{"role": "user", "content": "hi"}]}


def test_latency_comes_from_the_model_suffix_else_the_default() -> None:
    assert latency_ms("bench-lat50", 0.0) == 50.0
    assert latency_ms("openai/bench-lat7", 3.0) == 7.0
    assert latency_ms("gpt-4o-mini", 3.0) == 3.0
    assert latency_ms("bench-lat", 2.0) == 2.0


def test_stream_events_shape() -> None:
    events = stream_events("m", 2, include_usage=True)
    payloads = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert events[-1] == b"data: [DONE]\n\n"
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [p["choices"][0]["delta"]["content"] for p in payloads[1:3]] == ["tok0 ", "tok1 "]
    assert payloads[3]["choices"][0]["finish_reason"] == "stop"
    assert payloads[4]["choices"] == [] and payloads[4]["usage"]["completion_tokens"] == 2
    assert len(stream_events("m", 2, include_usage=False)) == len(events) - 1


async def test_chat_completion_json(fast_mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=fast_mock_url) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(response.content))
    body = response.json()
    assert body["model"] == "bench-lat0"
    assert body["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
    assert response.content == completion_body("bench-lat0", STREAM_CHUNKS)


async def test_chat_completion_stream(fast_mock_url: str) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(base_url=fast_mock_url) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    frames = [f for f in response.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    assert len(frames) == STREAM_CHUNKS + 4  # role, chunks, finish, usage, [DONE]


async def test_bad_input_gets_typed_errors(fast_mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=fast_mock_url) as client:
        not_json = await client.post("/v1/chat/completions", content=b"{nope")
        not_object = await client.post("/v1/chat/completions", json=[1, 2])
        unknown = await client.get("/v1/nothing")
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    assert not_object.status_code == 400
    assert unknown.status_code == 404
