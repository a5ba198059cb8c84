"""Property: chat -> responses -> chat keeps messages, tools, tool_choice and parameters.

The only differences are the ones conversion.md prescribes: `developer` becomes `system`,
image `detail` defaults to "auto", assistant text parts are joined, `max_completion_tokens`
comes back as `max_tokens`, an absent function `strict` comes back as false, and a stream
asks for usage.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.edge.translate import chat_to_responses_request, responses_to_chat_request
from tests.translate.sdk import validate_chat_request, validate_responses_request

texts = st.text(max_size=12)
non_empty = st.text(min_size=1, max_size=12)
names = st.from_regex(r"[a-z][a-z0-9_]{0,9}", fullmatch=True)
ids = st.from_regex(r"call_[A-Za-z0-9]{6}", fullmatch=True)


def _optional(key: str, values: st.SearchStrategy) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.just({}), values.map(lambda v: {key: v}))


text_part = texts.map(lambda t: {"type": "text", "text": t})
image_part = st.builds(
    lambda url, detail: {"type": "image_url", "image_url": {"url": url, **detail}},
    st.sampled_from(["https://x.test/a.png", "data:image/png;base64,iVBORw0KGgo="]),
    _optional("detail", st.sampled_from(["auto", "low", "high"])),
)
file_part = st.builds(
    lambda ref, name: {"type": "file", "file": {**ref, **name}},
    st.one_of(
        st.builds(lambda i: {"file_id": i}, st.from_regex(r"file-[a-z0-9]{4}", fullmatch=True)),
        st.just({"file_data": "data:application/pdf;base64,JVBERi0="}),
    ),
    _optional("filename", st.just("a.pdf")),
)

system_message = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["system", "developer"]),
    st.one_of(texts, st.lists(text_part, min_size=1, max_size=3)),
)
user_message = st.builds(
    lambda content: {"role": "user", "content": content},
    st.one_of(texts, st.lists(st.one_of(text_part, image_part, file_part), min_size=1, max_size=4)),
)


@st.composite
def assistant_turn(draw: st.DrawFn) -> list[dict[str, Any]]:
    """An assistant message, then one tool result per tool call it made."""
    content = draw(
        st.one_of(
            st.none(),
            non_empty,
            st.lists(non_empty.map(lambda t: {"type": "text", "text": t}), min_size=1, max_size=3),
        )
    )
    refusal = draw(st.one_of(st.none(), non_empty)) if not draw(st.booleans()) else None
    call_ids = draw(st.lists(ids, max_size=3, unique=True))
    if content is None and refusal is None and not call_ids:
        content = "ok"
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if refusal is not None:
        message["refusal"] = refusal
    if call_ids:
        message["tool_calls"] = [
            {
                "id": i,
                "type": "function",
                "function": {
                    "name": draw(names),
                    "arguments": draw(st.sampled_from(["{}", '{"a":1}'])),
                },
            }
            for i in call_ids
        ]
    tools = [{"role": "tool", "tool_call_id": i, "content": draw(texts)} for i in call_ids]
    return [message, *tools]


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for block in draw(
        st.lists(st.sampled_from(["system", "user", "turn"]), min_size=1, max_size=6)
    ):
        if block == "system":
            messages.append(draw(system_message))
        else:
            messages.append(draw(user_message))  # a user message keeps assistant turns apart
            if block == "turn":
                messages += draw(assistant_turn())
    return messages


function_tool = st.builds(
    lambda name, extra: {"type": "function", "function": {"name": name, **extra}},
    names,
    st.fixed_dictionaries(
        {},
        optional={
            "description": texts,
            "parameters": st.just({"type": "object", "properties": {"a": {"type": "integer"}}}),
            "strict": st.booleans(),
        },
    ),
)
tool_choice = st.one_of(
    st.sampled_from(["none", "auto", "required"]),
    names.map(lambda n: {"type": "function", "function": {"name": n}}),
    st.builds(
        lambda mode, ns: {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": mode,
                "tools": [{"type": "function", "function": {"name": n}} for n in ns],
            },
        },
        st.sampled_from(["auto", "required"]),
        st.lists(names, min_size=1, max_size=3),
    ),
)
response_format = st.one_of(
    st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    st.builds(
        lambda name, strict: {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": {"type": "object"}, **strict},
        },
        names,
        _optional("strict", st.booleans()),
    ),
)
parameters = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2, allow_nan=False),
        "top_p": st.floats(0, 1, allow_nan=False),
        "max_completion_tokens": st.integers(1, 200000),
        "user": texts,
        "metadata": st.dictionaries(names, texts, max_size=2),
        "parallel_tool_calls": st.booleans(),
        "reasoning_effort": st.sampled_from(["minimal", "low", "medium", "high"]),
        "verbosity": st.sampled_from(["low", "medium", "high"]),
        "response_format": response_format,
        "service_tier": st.sampled_from(["auto", "default", "flex", "priority"]),
        "prompt_cache_key": texts,
        "safety_identifier": texts,
        "stream": st.booleans(),
        "top_logprobs": st.integers(0, 20),
        "logprobs": st.booleans(),
        "tools": st.lists(function_tool, max_size=3),
        "tool_choice": tool_choice,
    },
)


def expected_after_round_trip(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out["messages"] = [_expected_message(m) for m in body["messages"]]
    if "max_completion_tokens" in out:
        out["max_tokens"] = out.pop("max_completion_tokens")
    if out.get("stream"):
        out["stream_options"] = {"include_usage": True}
    if not out.get("logprobs", True):
        del out["logprobs"]
    if "tools" in out:
        out["tools"] = [
            {"type": "function", "function": {"strict": False, **t["function"]}}
            for t in out["tools"]
        ]
    return out


def _expected_message(message: dict[str, Any]) -> dict[str, Any]:
    role, content = message["role"], message.get("content")
    if role == "developer":
        return {**message, "role": "system"}
    if role == "user" and isinstance(content, list):
        parts = []
        for part in content:
            if part["type"] == "image_url":
                part = {"type": "image_url", "image_url": {"detail": "auto", **part["image_url"]}}
            parts.append(part)
        return {"role": "user", "content": parts}
    if role == "assistant":
        out = dict(message)
        if isinstance(content, list):
            out["content"] = "".join(p["text"] for p in content)
        out.setdefault("content", None)
        return out
    return message


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(), params=parameters)
def test_chat_round_trip(messages: list[dict[str, Any]], params: dict[str, Any]) -> None:
    body = {"model": "gpt-4o", "messages": messages, **params}
    validate_chat_request(body)
    responses_body = chat_to_responses_request(body)
    if not any(m.get("refusal") for m in messages):  # the SDK's input messages lack refusal parts
        validate_responses_request(responses_body)
    back = responses_to_chat_request(responses_body)
    validate_chat_request(back)
    assert back == expected_after_round_trip(body)
