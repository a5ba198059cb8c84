"""The four client/upstream paths through real processes, with the official `openai` SDK.

`chat-*` models go to a chat-mode upstream and `resp-*` models to a responses-mode upstream
(SIGNALBOX_BACKENDS prefix rules, resolved by the router process). Every call relies on the
SDK's own typed parsing; the mock upstream records what the edge actually sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from pydantic import BaseModel

from deploy.local.stack import LocalStack, free_ports, issue_first_key
from tests.conftest import PG_ADMIN_URL, _admin, _with_database
from tests.mock_upstream.fixture import MockUpstream, mode_backends

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PROVIDER_KEY = "sk-upstream-sdk-paths"
MOCK_TEXT = "Hello from the mock upstream."
HEADERS = ("x-request-id", "x-route-id", "x-resolved-model", "router-schema")
WEATHER_TOOL_CHAT = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_TOOL_RESPONSES = {"type": "function", **WEATHER_TOOL_CHAT["function"], "strict": False}
CALL = {"name": "get_weather", "arguments": '{"city":"Paris"}'}
TINY_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
    "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
UPSTREAMS = ["chat-e2e", "resp-e2e"]


class Weather(BaseModel):
    city: str
    temp_c: int


WEATHER_JSON = '{"city":"Paris","temp_c":21}'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    tmp_path_factory: pytest.TempPathFactory, mock_upstream_server: MockUpstream
) -> AsyncIterator[tuple[LocalStack, str]]:
    """One stack for the module (four processes), on its own Postgres database."""
    tmp = tmp_path_factory.mktemp("sdk_paths")
    name = "sbtest_sdk_" + tmp.name.replace("-", "_")[-20:].lower()
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    ports = free_ports()
    env = {
        "SIGNALBOX_DATABASE_URL": _with_database(PG_ADMIN_URL, name),
        "SIGNALBOX_REDIS_URL": "",
        "SIGNALBOX_INTERNAL_TOKEN": "",
        "SIGNALBOX_DATA_DIR": str(tmp / "data"),
        "SIGNALBOX_ANALYTICS_SPOOL_DIR": str(tmp / "spool"),
        "SIGNALBOX_KNN_INDEX_DIR": str(tmp / "knn"),
        "SIGNALBOX_AUTH_MODE": "managed",
        "SIGNALBOX_SHUTDOWN_GRACE_SECONDS": "5",
        "SIGNALBOX_BACKENDS": mode_backends(mock_upstream_server),
        "OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_BASE_URL": mock_upstream_server.base_url,
    }
    try:
        async with LocalStack(env=env, ports=ports, log_dir=tmp / "logs") as stack:
            yield stack, await issue_first_key(stack, label="sdk-paths")
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def client(running: tuple[LocalStack, str]) -> openai.AsyncOpenAI:
    stack, token = running
    return openai.AsyncOpenAI(
        base_url=f"{stack.edge_url}/v1", api_key=token, max_retries=0, timeout=30
    )


def _check_headers(headers: Any, model: str) -> None:
    for name in HEADERS:
        assert headers.get(name), name
    assert headers["router-schema"] == "1.1"
    assert headers["x-resolved-model"] == model
    assert float(headers["x-signalbox-overhead-ms"]) >= 0


async def _last_body(mock: MockUpstream) -> tuple[str, dict[str, Any]]:
    last = (await mock.requests())[-1]
    return last["path"], last["body"]


# ---------------------------------------------------------------- chat clients


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_chat_plain_and_headers(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}]
    )
    completion = raw.parse()
    _check_headers(raw.headers, model)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == MOCK_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    path, _ = await _last_body(mock_upstream)
    assert path.endswith("/chat/completions" if model.startswith("chat") else "/responses")


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_chat_stream_usage_only_when_asked(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    messages = [{"role": "user", "content": "Say hello"}]
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    _check_headers(raw.headers, model)
    chunks = [chunk async for chunk in raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == MOCK_TEXT
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5

    plain = [
        c
        async for c in await client.chat.completions.create(
            model=model, messages=messages, stream=True
        )
    ]
    assert all(c.choices for c in plain)  # no usage chunk for a client that did not ask
    assert all(c.usage is None for c in plain)
    _, sent = await _last_body(mock_upstream)
    if model.startswith("chat"):
        assert sent["stream_options"] == {"include_usage": True}  # the edge still meters


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_chat_tools_multi_turn(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    await mock_upstream.script({"tool_calls": [CALL]}, {"text": "It is sunny in Paris."})
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = await client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL_CHAT], tool_choice="auto"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == (CALL["name"], CALL["arguments"])
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21C, sunny"},
    ]
    second = await client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL_CHAT]
    )
    assert second.choices[0].message.content == "It is sunny in Paris."
    _, sent = await _last_body(mock_upstream)
    if model.startswith("chat"):
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.id
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": call.id,
            "content": "21C, sunny",
        }
    else:
        assert sent["tools"] == [WEATHER_TOOL_RESPONSES]
        assert [i["type"] for i in sent["input"]] == [
            "message",
            "function_call",
            "function_call_output",
        ]
        assert sent["input"][1]["call_id"] == call.id
        assert sent["input"][2] == {
            "type": "function_call_output",
            "call_id": call.id,
            "output": "21C, sunny",
        }


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_chat_streamed_tool_call(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    await mock_upstream.script({"tool_calls": [CALL]})
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL_CHAT],
        stream=True,
    )
    name, arguments, finish = "", "", None
    async for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            assert delta_call.index == 0
            name += (delta_call.function and delta_call.function.name) or ""
            arguments += (delta_call.function and delta_call.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, arguments, finish) == (CALL["name"], CALL["arguments"], "tool_calls")


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_chat_response_format_json_schema(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    await mock_upstream.script({"text": WEATHER_JSON})
    parsed = await client.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Weather?"}], response_format=Weather
    )
    assert parsed.choices[0].message.parsed == Weather(city="Paris", temp_c=21)
    _, sent = await _last_body(mock_upstream)
    if model.startswith("chat"):
        assert sent["response_format"]["type"] == "json_schema"
    else:
        fmt = sent["text"]["format"]
        assert (fmt["type"], fmt["name"], fmt["strict"]) == ("json_schema", "Weather", True)
        assert fmt["schema"]["required"] == ["city", "temp_c"]


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_chat_stream_cut_mid_way_is_an_error_not_a_silent_end(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    await mock_upstream.script({"cut_after": 3})
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as failure:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert received  # the first bytes were relayed before the cut
    assert "upstream" in failure.value.message


async def test_chat_untranslatable_field_is_a_400_naming_it(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream
) -> None:
    for field, value in (("n", 2), ("stop", ["x"]), ("seed", 1)):
        with pytest.raises(openai.BadRequestError) as rejected:
            await client.chat.completions.create(
                model="resp-e2e",
                messages=[{"role": "user", "content": "x"}],
                **{field: value},  # type: ignore[arg-type]
            )
        assert rejected.value.code == "unsupported_parameter"
        assert rejected.value.param == field
    assert await mock_upstream.requests() == []


# ---------------------------------------------------------------- Responses clients


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_responses_plain_and_headers(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    raw = await client.responses.with_raw_response.create(
        model=model, input="Say hello", instructions="Be brief"
    )
    response = raw.parse()
    _check_headers(raw.headers, model)
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == MOCK_TEXT
    assert response.usage is not None and response.usage.output_tokens == 5
    path, sent = await _last_body(mock_upstream)
    if model.startswith("chat"):
        assert path.endswith("/chat/completions")
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Say hello"},
        ]
    else:
        assert path.endswith("/responses") and sent["input"] == "Say hello"


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_responses_stream_typed_events(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    raw = await client.responses.with_raw_response.create(
        model=model, input="Say hello", stream=True
    )
    _check_headers(raw.headers, model)
    events = [event async for event in raw.parse()]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == MOCK_TEXT
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == MOCK_TEXT
    assert final.usage is not None and final.usage.output_tokens == 5


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_responses_tools_then_function_call_output_by_previous_response_id(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    await mock_upstream.script({"tool_calls": [CALL]}, {"text": "It is sunny in Paris."})
    first = await client.responses.create(
        model=model, input="Weather in Paris?", tools=[WEATHER_TOOL_RESPONSES]
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert (call.name, call.arguments) == (CALL["name"], CALL["arguments"])
    second = await client.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21C"}],
        tools=[WEATHER_TOOL_RESPONSES],
    )
    assert second.output_text == "It is sunny in Paris."
    _, sent = await _last_body(mock_upstream)
    if model.startswith("chat"):
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["tools"][0]["function"]["name"] == "get_weather"
    else:
        assert sent["previous_response_id"] == first.id  # the state lives upstream


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_responses_streamed_tool_call(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    await mock_upstream.script({"tool_calls": [CALL]})
    stream = await client.responses.create(
        model=model, input="Weather?", tools=[WEATHER_TOOL_RESPONSES], stream=True
    )
    events = [event async for event in stream]
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert arguments == CALL["arguments"]
    final = events[-1]
    assert final.type == "response.completed"
    [item] = final.response.output
    assert item.type == "function_call" and item.name == CALL["name"]


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_responses_image_input(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    response = await client.responses.create(
        model=model,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": TINY_PNG, "detail": "low"},
                ],
            }
        ],
    )
    assert response.output_text == MOCK_TEXT
    _, sent = await _last_body(mock_upstream)
    if model.startswith("chat"):
        assert sent["messages"][0]["content"][1] == {
            "type": "image_url",
            "image_url": {"url": TINY_PNG, "detail": "low"},
        }
    else:
        assert sent["input"][0]["content"][1]["image_url"] == TINY_PNG


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_responses_text_format_json_schema(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    await mock_upstream.script({"text": WEATHER_JSON})
    parsed = await client.responses.parse(model=model, input="Weather?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Paris", temp_c=21)
    _, sent = await _last_body(mock_upstream)
    if model.startswith("chat"):
        fmt = sent["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
        assert fmt["json_schema"]["strict"] is True
    else:
        assert sent["text"]["format"]["type"] == "json_schema"


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_responses_stream_cut_ends_with_response_failed(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, model: str
) -> None:
    await mock_upstream.script({"cut_after": 4})
    stream = await client.responses.create(model=model, input="Say hello", stream=True)
    events = [event async for event in stream]
    final = events[-1]
    assert final.type == "response.failed"
    assert final.response.status == "failed"
    assert final.response.error is not None and final.response.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_responses_unknown_previous_response_on_chat_upstream(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.create(
            model="chat-e2e", input="x", previous_response_id="resp_never_stored"
        )
    assert missing.value.code == "previous_response_not_found"
    assert missing.value.param == "previous_response_id"
    assert await mock_upstream.requests() == []
