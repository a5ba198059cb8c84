"""Server-side execution of MCP tool calls (`"execute": true`), with the mock upstream
scripted to call the tools; the real demo MCP server runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.edge.conftest import BEARER, EdgeFactory
from tests.mcp_servers.fixture import stdio_server, write_config
from tests.mock_upstream.fixture import MockUpstream, mode_backends
from tests.mock_upstream.payloads import prompt_tokens

CONNECT_MS = 30_000
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2+3?"}]}


def _config(tmp_path: Path, **extra: Any) -> Path:
    return write_config(
        tmp_path / "mcp.json", {"demo": stdio_server(execute=True, env={"DEMO_SECRET": "s3"})},
        **extra,
    )  # fmt: skip


def _call(name: str, arguments: dict[str, Any]) -> dict[str, str]:
    return {"name": name, "arguments": orjson.dumps(arguments).decode()}


def _sse_payloads(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


async def test_chat_round_trip_runs_the_tool_and_sums_usage(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script(
        {"tool_calls": [_call("demo_add", {"a": 2, "b": 3})]}, {"text": "The sum is 5."}
    )
    async with make_edge(
        mcp_config=_config(tmp_path), mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat"
    ) as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
        assert response.status_code == 200, response.text
    first, second = await mock_upstream.requests()
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == "The sum is 5."
    messages = second["body"]["messages"]
    assistant, tool = messages[-2], messages[-1]
    [call] = assistant["tool_calls"]
    assert call["function"] == {"name": "demo_add", "arguments": '{"a":2,"b":3}'}
    assert tool == {"role": "tool", "tool_call_id": call["id"], "content": "5"}
    assert messages[:-2] == first["body"]["messages"]
    # usage summed over both rounds, in the reply and in the one analytics event:
    # round 1 wrote a 4-token call, round 2 the 4 words of "The sum is 5."
    prompt = prompt_tokens(first["body"]) + prompt_tokens(second["body"])
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["usage"]["prompt_tokens"] == prompt
    assert answer["usage"]["total_tokens"] == prompt + 8
    [event] = edge.events
    assert event["token_usage"]["completion_tokens"] == 8
    assert event["token_usage"]["prompt_tokens"] == prompt


async def test_env_reaches_the_server_and_tool_errors_become_error_outputs(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script(
        {"tool_calls": [_call("demo_env", {"name": "DEMO_SECRET"}),
                        _call("demo_fail", {"reason": "no"})]},
        {"text": "done"},
    )  # fmt: skip
    async with make_edge(
        mcp_config=_config(tmp_path), mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat"
    ) as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
        assert response.status_code == 200, response.text
    _, second = await mock_upstream.requests()
    env_out, fail_out = (m["content"] for m in second["body"]["messages"][-2:])
    assert env_out == "s3"
    assert orjson.loads(fail_out) == {"error": "Error executing tool fail: tool failed: no"}


async def test_responses_stream_sees_only_the_final_round(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script(
        {"tool_calls": [_call("demo_add", {"a": 20, "b": 22})]}, {"text": "It is 42."}
    )
    async with make_edge(
        mcp_config=_config(tmp_path), mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="responses"
    ) as edge:
        body = {"model": "gpt-4o-mini", "input": "20+22?", "stream": True}
        response = await edge.client.post("/v1/responses", json=body, headers=BEARER)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse_payloads(response.text)
    first, second = await mock_upstream.requests()
    assert first["body"]["stream"] is True and second["body"]["stream"] is True
    items = second["body"]["input"]
    assert items[0]["role"] == "user"
    assert items[1]["type"] == "function_call" and items[1]["name"] == "demo_add"
    assert items[2] == {
        "type": "function_call_output",
        "call_id": items[1]["call_id"],
        "output": "42",
    }
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" not in kinds  # round 1 never reached us
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "It is 42."
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens"] == 4 + 3  # the call, then the three words of "It is 42."
    assert usage["input_tokens"] == prompt_tokens(first["body"]) + prompt_tokens(second["body"])
    [event] = edge.events
    assert event["token_usage"]["completion_tokens"] == 7


async def test_chat_stream_through_a_chat_upstream(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script(
        {"tool_calls": [_call("demo_echo", {"text": "ping"})]}, {"text": "pong"}
    )
    async with make_edge(
        mcp_config=_config(tmp_path), mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat"
    ) as edge:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        assert response.status_code == 200, response.text
    chunks = _sse_payloads(response.text)
    assert chunks[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if c["choices"]]
    assert not any("tool_calls" in d for d in deltas)
    assert "".join(d.get("content") or "" for d in deltas) == "pong"
    _, second = await mock_upstream.requests()
    assert second["body"]["messages"][-1]["content"] == "ping"


async def test_client_tool_calls_go_back_to_the_client(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script(
        {"tool_calls": [_call("demo_add", {"a": 1, "b": 1}),
                        _call("get_weather", {"city": "Oslo"})]}
    )  # fmt: skip
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    async with make_edge(
        mcp_config=_config(tmp_path), mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat"
    ) as edge:
        body = {**CHAT, "tools": [weather]}
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        assert response.status_code == 200, response.text
    assert len(await mock_upstream.requests()) == 1
    calls = response.json()["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["demo_add", "get_weather"]


async def test_rounds_are_bounded_by_max_rounds(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    loop = {"tool_calls": [_call("demo_add", {"a": 1, "b": 2})]}
    await mock_upstream.script(loop, loop, loop, loop)
    config = _config(tmp_path, execution={"max_rounds": 2})
    async with make_edge(
        mcp_config=config, mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="responses"
    ) as edge:
        body = {"model": "gpt-4o-mini", "input": "loop"}
        response = await edge.client.post("/v1/responses", json=body, headers=BEARER)
        assert response.status_code == 200, response.text
    assert len(await mock_upstream.requests()) == 3  # two executed rounds, then the last reply
    [item] = response.json()["output"]
    assert item["type"] == "function_call" and item["name"] == "demo_add"


async def test_non_executing_server_returns_its_calls(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script({"tool_calls": [_call("demo_add", {"a": 1, "b": 2})]})
    config = write_config(tmp_path / "mcp.json", {"demo": stdio_server()})
    async with make_edge(
        mcp_config=config, mcp_connect_timeout_ms=CONNECT_MS, upstream_mode="chat"
    ) as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
    assert len(await mock_upstream.requests()) == 1
    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "demo_add"


async def test_chat_client_on_a_responses_upstream(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script(
        {"tool_calls": [_call("demo_add", {"a": 4, "b": 5})]}, {"text": "Nine."}
    )
    async with make_edge(
        mcp_config=_config(tmp_path), mcp_connect_timeout_ms=CONNECT_MS,
        backends=mode_backends(mock_upstream),
    ) as edge:  # fmt: skip
        body = {**CHAT, "model": "resp-model"}
        response = await edge.client.post("/v1/chat/completions", json=body, headers=BEARER)
        assert response.status_code == 200, response.text
    _, second = await mock_upstream.requests()
    assert second["path"] == "/v1/responses"
    call, output = second["body"]["input"][-2:]
    assert call["type"] == "function_call" and call["name"] == "demo_add"
    assert output == {"type": "function_call_output", "call_id": call["call_id"], "output": "9"}
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == "Nine."
    assert answer["usage"]["completion_tokens"] == 4 + 1  # the call, then "Nine."


async def test_responses_stream_on_a_chat_upstream(
    tmp_path: Path, make_edge: EdgeFactory, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.script(
        {"tool_calls": [_call("demo_echo", {"text": "abc"})]}, {"text": "Echoed."}
    )
    async with make_edge(
        mcp_config=_config(tmp_path), mcp_connect_timeout_ms=CONNECT_MS,
        backends=mode_backends(mock_upstream),
    ) as edge:  # fmt: skip
        body = {"model": "chat-model", "input": "echo abc", "stream": True}
        response = await edge.client.post("/v1/responses", json=body, headers=BEARER)
        assert response.status_code == 200, response.text
        events = _sse_payloads(response.text)
    _, second = await mock_upstream.requests()
    assert second["path"] == "/v1/chat/completions"
    assistant, tool = second["body"]["messages"][-2:]
    assert assistant["tool_calls"][0]["function"]["name"] == "demo_echo"
    assert tool["content"] == "abc"
    assert events[-1]["type"] == "response.completed"
    [message] = events[-1]["response"]["output"]
    assert message["content"][0]["text"] == "Echoed."
    assert not any(e["type"].startswith("response.function_call") for e in events)
