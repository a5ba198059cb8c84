"""conversion.md §2 (every row), the §0 passthrough helpers, responses -> chat §7 rejections."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge.translate import (
    TranslationError,
    flatten_response_tools,
    prepare_chat_passthrough,
    responses_to_chat_request,
)
from tests.translate.sdk import validate_chat_request, validate_responses_request

MODEL = "gpt-4.1"
HI = {"role": "user", "content": "Hi"}
WEATHER = {
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def translate(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    out = responses_to_chat_request({"model": MODEL, **body}, **kwargs)
    validate_chat_request(out)
    return out


# ---------------------------------------------------------------- input -> messages

INPUT_CASES = [
    pytest.param({"input": "Hi"}, [HI], id="input-string"),
    pytest.param(
        {"instructions": "Be brief.", "input": "Hi"},
        [{"role": "system", "content": "Be brief."}, HI],
        id="instructions-first-system",
    ),
    pytest.param(
        {
            "input": [
                {"role": "user", "content": "Hi"},
                {"type": "message", "role": "user", "content": "Again"},
            ]
        },
        [HI, {"role": "user", "content": "Again"}],
        id="user-with-or-without-type",
    ),
    pytest.param(
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is in"},
                        {
                            "type": "input_image",
                            "image_url": "https://x.test/a.png",
                            "detail": "low",
                        },
                        {
                            "type": "input_image",
                            "image_url": "data:image/png;base64,iVBO",
                            "detail": "auto",
                        },
                        {"type": "input_file", "file_id": "file-abc", "filename": "a.pdf"},
                        {
                            "type": "input_file",
                            "file_data": "data:application/pdf;base64,JVBE",
                            "filename": "b.pdf",
                        },
                    ],
                }
            ]
        },
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBO", "detail": "auto"},
                    },
                    {"type": "file", "file": {"file_id": "file-abc", "filename": "a.pdf"}},
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBE",
                            "filename": "b.pdf",
                        },
                    },
                ],
            }
        ],
        id="user-parts",
    ),
    pytest.param(
        {
            "input": [
                {"role": "system", "content": "S"},
                {"role": "developer", "content": [{"type": "input_text", "text": "D"}]},
                HI,
            ]
        },
        [
            {"role": "system", "content": "S"},
            {"role": "system", "content": [{"type": "text", "text": "D"}]},
            HI,
        ],
        id="system-developer-become-system",
    ),
    pytest.param(
        {"input": [HI, {"role": "assistant", "content": "Hello!"}]},
        [HI, {"role": "assistant", "content": "Hello!"}],
        id="assistant-string",
    ),
    pytest.param(
        {
            "input": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": "Hel", "annotations": []},
                        {"type": "output_text", "text": "lo", "annotations": []},
                    ],
                }
            ]
        },
        [{"role": "assistant", "content": "Hello"}],
        id="assistant-output_text",
    ),
    pytest.param(
        {"input": [{"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}]},
        [{"role": "assistant", "content": None, "refusal": "No."}],
        id="assistant-refusal",
    ),
    pytest.param(
        {
            "input": [
                HI,
                {"role": "assistant", "content": "Checking both."},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "18C"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [
                        {"type": "input_text", "text": "12:"},
                        {"type": "input_text", "text": "00"},
                    ],
                },
            ]
        },
        [
            HI,
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            {"role": "tool", "tool_call_id": "c2", "content": "12:00"},
        ],
        id="function-calls-grouped-with-preceding-text",
    ),
    pytest.param(
        {
            "input": [
                HI,
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "think"}],
                },
                {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
                {"type": "reasoning", "id": "rs_2", "summary": []},
                {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {"type": "function_call", "call_id": "c3", "name": "c", "arguments": "{}"},
            ]
        },
        [
            HI,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "1"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c3", "type": "function", "function": {"name": "c", "arguments": "{}"}}
                ],
            },
        ],
        id="reasoning-dropped-and-runs-split-by-outputs",
    ),
]


@pytest.mark.parametrize(("body", "messages"), INPUT_CASES)
def test_input_becomes_messages(body: dict, messages: list[dict]) -> None:
    if "refusal" not in repr(body):  # the SDK's input-message type has no refusal part
        validate_responses_request({"model": MODEL, **body})
    assert translate(body)["messages"] == messages


def test_history_precedes_input_and_old_instructions_are_not_carried() -> None:
    history = [
        {"type": "message", "role": "user", "content": "First"},
        {
            "type": "message",
            "id": "msg_a",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "One", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_a",
            "call_id": "c1",
            "name": "f",
            "arguments": "{}",
            "status": "completed",
        },
    ]
    new_input = [{"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"}]
    out = translate({"instructions": "Now", "input": new_input}, history=history)
    assert out["messages"] == [
        {"role": "system", "content": "Now"},
        {"role": "user", "content": "First"},
        {
            "role": "assistant",
            "content": "One",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
            ],
        },
    ]


def test_history_errors_point_at_previous_response_id() -> None:
    with pytest.raises(TranslationError) as caught:
        responses_to_chat_request(
            {"model": MODEL, "input": "x"}, history=[{"type": "item_reference", "id": "x"}]
        )
    assert caught.value.param == "previous_response_id"


# ---------------------------------------------------------------- parameters

PARAM_CASES = [
    pytest.param({"max_output_tokens": 256}, {"max_tokens": 256}, id="max_output_tokens"),
    pytest.param(
        {
            "temperature": 0.3,
            "top_p": 0.8,
            "parallel_tool_calls": False,
            "user": "u",
            "metadata": {"a": "b"},
            "service_tier": "priority",
            "prompt_cache_key": "k",
            "safety_identifier": "s",
        },
        {
            "temperature": 0.3,
            "top_p": 0.8,
            "parallel_tool_calls": False,
            "user": "u",
            "metadata": {"a": "b"},
            "service_tier": "priority",
            "prompt_cache_key": "k",
            "safety_identifier": "s",
        },
        id="same-name-fields",
    ),
    pytest.param(
        {"text": {"format": {"type": "text"}}},
        {"response_format": {"type": "text"}},
        id="text.format-text",
    ),
    pytest.param(
        {"text": {"format": {"type": "json_object"}}},
        {"response_format": {"type": "json_object"}},
        id="text.format-json_object",
    ),
    pytest.param(
        {
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "w",
                    "description": "d",
                    "schema": {"type": "object"},
                    "strict": True,
                }
            }
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "w",
                    "description": "d",
                    "schema": {"type": "object"},
                    "strict": True,
                },
            }
        },
        id="text.format-json_schema",
    ),
    pytest.param({"text": {"verbosity": "low"}}, {"verbosity": "low"}, id="text.verbosity"),
    pytest.param(
        {"reasoning": {"effort": "minimal", "summary": "auto"}},
        {"reasoning_effort": "minimal"},
        id="reasoning-effort-summary-dropped",
    ),
    pytest.param({"reasoning": {"summary": "detailed"}}, {}, id="reasoning-summary-only"),
    pytest.param(
        {
            "tools": [
                {"type": "function", **WEATHER},
                {"type": "function", "function": {"name": "now", "parameters": {}}},
            ]
        },
        {
            "tools": [
                {"type": "function", "function": WEATHER},
                {"type": "function", "function": {"name": "now", "parameters": {}}},
            ]
        },
        id="tools-flat-or-nested-become-nested",
    ),
    pytest.param({"tool_choice": "required"}, {"tool_choice": "required"}, id="tool_choice-mode"),
    pytest.param(
        {"tool_choice": {"type": "function", "name": "get_weather"}},
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        id="tool_choice-function",
    ),
    pytest.param(
        {
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "function", "name": "get_weather"}],
            }
        },
        {
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            }
        },
        id="tool_choice-allowed_tools",
    ),
    pytest.param(
        {
            "include": ["message.output_text.logprobs", "reasoning.encrypted_content"],
            "top_logprobs": 4,
        },
        {"logprobs": True, "top_logprobs": 4},
        id="include-logprobs-others-dropped",
    ),
    pytest.param({"include": ["reasoning.encrypted_content"]}, {}, id="include-other-dropped"),
    pytest.param(
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        id="stream-include_usage",
    ),
    pytest.param({"stream": False}, {"stream": False}, id="stream-false"),
    pytest.param(
        {"store": True, "previous_response_id": "resp_1", "conversation": {"id": "conv_1"}},
        {},
        id="state-fields-not-forwarded",
    ),
    pytest.param(
        {"truncation": "disabled", "background": False}, {}, id="no-effect-values-accepted"
    ),
]


@pytest.mark.parametrize(("extra", "expected"), PARAM_CASES)
def test_parameters(extra: dict, expected: dict) -> None:
    assert translate({"input": "Hi", **extra}) == {"model": MODEL, "messages": [HI], **expected}


def test_vendor_fields_are_forwarded_unchanged() -> None:
    out = translate({"input": "Hi", "top_k": 5})
    assert out["top_k"] == 5


# ---------------------------------------------------------------- §7 rejections

HOSTED = [
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
    "custom",
]

REJECTIONS = [
    pytest.param({"background": True}, "unsupported_parameter", "background", id="background"),
    pytest.param(
        {"truncation": "auto"}, "unsupported_parameter", "truncation", id="truncation-auto"
    ),
    pytest.param(
        {"max_tool_calls": 3}, "unsupported_parameter", "max_tool_calls", id="max_tool_calls"
    ),
    pytest.param({"prompt": {"id": "pmpt_1"}}, "unsupported_parameter", "prompt", id="prompt"),
    pytest.param(
        {"input": [HI, {"type": "item_reference", "id": "msg_1"}]},
        "unsupported_parameter",
        "input[1]",
        id="item_reference",
    ),
    pytest.param(
        {"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]},
        "unsupported_parameter",
        "input[0]",
        id="non-message-item",
    ),
    pytest.param(
        {
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_image", "file_id": "file-1", "detail": "auto"}],
                }
            ]
        },
        "unsupported_content_type",
        "input[0].content[0]",
        id="input_image-file_id-only",
    ),
    pytest.param(
        {
            "input": [
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [
                        {"type": "input_text", "text": "a"},
                        {
                            "type": "input_image",
                            "image_url": "https://x.test/a.png",
                            "detail": "auto",
                        },
                    ],
                }
            ]
        },
        "unsupported_content_type",
        "input[0].output[1]",
        id="image-in-function_call_output",
    ),
    *[
        pytest.param(
            {"tools": [{"type": "function", **WEATHER}, {"type": kind}]},
            "unsupported_tool_type",
            "tools[1]",
            id=f"tool-{kind}",
        )
        for kind in HOSTED
    ],
    pytest.param(
        {"tool_choice": {"type": "web_search_preview"}},
        "unsupported_tool_type",
        "tool_choice",
        id="tool_choice-hosted",
    ),
    pytest.param(
        {"tool_choice": {"type": "mcp", "server_label": "x"}},
        "unsupported_tool_type",
        "tool_choice",
        id="tool_choice-mcp",
    ),
    pytest.param(
        {
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "function", "name": "f"}, {"type": "file_search"}],
            }
        },
        "unsupported_tool_type",
        "tool_choice.tools[1]",
        id="tool_choice-allowed-hosted",
    ),
]


@pytest.mark.parametrize(("extra", "code", "param"), REJECTIONS)
def test_rejections(extra: dict, code: str, param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        responses_to_chat_request({"model": MODEL, "input": "Hi", **extra})
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, code, param)


MALFORMED = [
    pytest.param({"input": 42}, "input", id="input-not-array"),
    pytest.param(
        {"input": [{"role": "critic", "content": "x"}]}, "input[0].role", id="unknown-role"
    ),
    pytest.param(
        {"input": [{"type": "function_call", "name": "f"}]},
        "input[0].call_id",
        id="call-without-id",
    ),
    pytest.param({"instructions": ["x"]}, "instructions", id="instructions-not-string"),
]


@pytest.mark.parametrize(("body", "param"), MALFORMED)
def test_malformed_bodies_get_a_typed_error(body: dict, param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        responses_to_chat_request({"model": MODEL, **body})
    assert (caught.value.code, caught.value.param) == ("invalid_request", param)


# ---------------------------------------------------------------- §0 passthrough helpers


def test_flatten_response_tools_flattens_nested_functions_only() -> None:
    body = {
        "model": MODEL,
        "input": "Hi",
        "tools": [
            {"type": "function", "function": WEATHER},
            {"type": "function", **WEATHER},
            {"type": "web_search"},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    out = flatten_response_tools(body)
    assert out["tools"] == [
        {"type": "function", **WEATHER},
        {"type": "function", **WEATHER},
        {"type": "web_search"},
    ]
    assert out["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["tools"][0] == {"type": "function", "function": WEATHER}  # input untouched
    validate_responses_request(out)


@pytest.mark.parametrize(
    ("stream_options", "wants"),
    [(None, False), ({"include_usage": False}, False), ({"include_usage": True}, True)],
)
def test_chat_passthrough_stream_always_asks_for_usage(
    stream_options: dict | None, wants: bool
) -> None:
    body = {"model": MODEL, "messages": [HI], "stream": True, "top_k": 3}
    if stream_options is not None:
        body["stream_options"] = stream_options
    out, client_wants_usage = prepare_chat_passthrough(body)
    assert out["stream_options"]["include_usage"] is True
    assert out["top_k"] == 3  # unknown vendor fields kept
    assert client_wants_usage is wants
    assert body.get("stream_options") == stream_options  # input untouched


def test_chat_passthrough_non_stream_is_unchanged() -> None:
    body = {"model": MODEL, "messages": [HI]}
    assert prepare_chat_passthrough(body) == (body, True)


@pytest.mark.parametrize("field", ["previous_response_id", "conversation"])
def test_chat_passthrough_is_stateless(field: str) -> None:
    with pytest.raises(TranslationError) as caught:
        prepare_chat_passthrough({"model": MODEL, "messages": [HI], field: "x"})
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", field)
