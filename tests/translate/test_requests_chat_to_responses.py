"""conversion.md §1 (every row) and the chat -> responses rejections of §7."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge.translate import TranslationError, chat_to_responses_request
from tests.translate.sdk import validate_chat_request, validate_responses_request

MODEL = "gpt-4o"
USER = {"role": "user", "content": "Hi"}
USER_ITEM = {"type": "message", "role": "user", "content": "Hi"}
WEATHER_FN = {
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def translate(body: dict[str, Any]) -> dict[str, Any]:
    full = {"model": MODEL, **body}
    validate_chat_request(full)  # every case starts from a valid chat body
    return chat_to_responses_request(full)


# ---------------------------------------------------------------- messages -> input items

MESSAGE_CASES = [
    pytest.param(
        [
            {"role": "system", "content": "Be brief."},
            USER,
            {"role": "developer", "content": "Use SI."},
        ],
        [
            {"type": "message", "role": "system", "content": "Be brief."},
            USER_ITEM,
            {"type": "message", "role": "developer", "content": "Use SI."},
        ],
        id="system-developer-keep-role-and-position",
    ),
    pytest.param(
        [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}],
        [
            {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Be brief."}],
            }
        ],
        id="system-text-parts",
    ),
    pytest.param([USER], [USER_ITEM], id="user-string"),
    pytest.param(
        [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}],
        [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What is this?"}],
            }
        ],
        id="part-text",
    ),
    pytest.param(
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x.test/a.png", "detail": "high"},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
        ],
        [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "high"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,iVBORw0KGgo=",
                        "detail": "auto",
                    },
                ],
            }
        ],
        id="part-image-url-detail-or-auto",
    ),
    pytest.param(
        [
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"file_id": "file-abc", "filename": "a.pdf"}},
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBERi0=",
                            "filename": "b.pdf",
                        },
                    },
                    {"type": "file", "file": {"file_id": "file-def"}},
                ],
            }
        ],
        [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_file", "file_id": "file-abc", "filename": "a.pdf"},
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,JVBERi0=",
                        "filename": "b.pdf",
                    },
                    {"type": "input_file", "file_id": "file-def"},
                ],
            }
        ],
        id="part-file",
    ),
    pytest.param(
        [USER, {"role": "assistant", "content": "Hello!"}],
        [USER_ITEM, {"type": "message", "role": "assistant", "content": "Hello!"}],
        id="assistant-string",
    ),
    pytest.param(
        [
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
            }
        ],
        [{"type": "message", "role": "assistant", "content": "Hello"}],
        id="assistant-text-parts-joined",
    ),
    pytest.param(
        [USER, {"role": "assistant", "content": ""}, {"role": "assistant", "content": None}],
        [USER_ITEM],
        id="assistant-empty-omitted",
    ),
    pytest.param(
        [{"role": "assistant", "content": None, "refusal": "I can't help with that."}],
        [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": "I can't help with that."}],
            }
        ],
        id="assistant-refusal",
    ),
    pytest.param(
        [
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            }
        ],
        [
            {"type": "message", "role": "assistant", "content": "Checking."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
        ],
        id="assistant-tool-calls-after-text",
    ),
    pytest.param(
        [
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "12:"}, {"type": "text", "text": "00"}],
            },
        ],
        [
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "function_call_output", "call_id": "call_2", "output": "12:00"},
        ],
        id="tool-message-text-parts-joined",
    ),
    pytest.param(
        [
            {"role": "user", "content": "Hi", "name": "alice"},
            {"role": "system", "content": "x", "name": "ops"},
        ],
        [USER_ITEM, {"type": "message", "role": "system", "content": "x"}],
        id="name-dropped",
    ),
]


@pytest.mark.parametrize(("messages", "items"), MESSAGE_CASES)
def test_messages_become_input_items(messages: list[dict], items: list[dict]) -> None:
    out = translate({"messages": messages})
    assert out["input"] == items
    assert out["model"] == MODEL
    if not _has_refusal_part(items):
        validate_responses_request(out)


def _has_refusal_part(items: list[dict]) -> bool:
    """The SDK's input-message type has no refusal part (only output messages with an id do);
    conversion.md §1 still prescribes `content:[{"type":"refusal",...}]`, which the API takes."""
    return any(
        isinstance(item.get("content"), list)
        and any(p.get("type") == "refusal" for p in item["content"])
        for item in items
    )


def test_refusal_beside_text_keeps_both() -> None:
    out = translate(
        {"messages": [{"role": "assistant", "content": "Partly.", "refusal": "No more."}]}
    )
    assert out["input"] == [
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Partly."},
                {"type": "refusal", "refusal": "No more."},
            ],
        }
    ]


# ---------------------------------------------------------------- parameters

PARAM_CASES = [
    pytest.param(
        {"max_completion_tokens": 300, "max_tokens": 99},
        {"max_output_tokens": 300},
        id="max_completion_tokens-wins",
    ),
    pytest.param(
        {"max_tokens": 100000}, {"max_output_tokens": 100000}, id="max_tokens-never-clamped"
    ),
    pytest.param(
        {
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u-1",
            "metadata": {"team": "a"},
            "service_tier": "flex",
            "prompt_cache_key": "k",
            "safety_identifier": "s",
            "parallel_tool_calls": False,
            "stream": True,
        },
        {
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u-1",
            "metadata": {"team": "a"},
            "service_tier": "flex",
            "prompt_cache_key": "k",
            "safety_identifier": "s",
            "parallel_tool_calls": False,
            "stream": True,
        },
        id="same-name-fields",
    ),
    pytest.param({"store": True}, {"store": True}, id="store-kept"),
    pytest.param({}, {"store": False}, id="store-absent-false"),
    pytest.param(
        {"stream": True, "stream_options": {"include_usage": True}},
        {"stream": True},
        id="stream_options-not-sent",
    ),
    pytest.param(
        {"response_format": {"type": "text"}},
        {"text": {"format": {"type": "text"}}},
        id="response_format-text",
    ),
    pytest.param(
        {"response_format": {"type": "json_object"}},
        {"text": {"format": {"type": "json_object"}}},
        id="response_format-json_object",
    ),
    pytest.param(
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "description": "A city",
                    "schema": {"type": "object"},
                    "strict": True,
                },
            }
        },
        {
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "city",
                    "description": "A city",
                    "schema": {"type": "object"},
                    "strict": True,
                }
            }
        },
        id="response_format-json_schema",
    ),
    pytest.param({"verbosity": "low"}, {"text": {"verbosity": "low"}}, id="verbosity"),
    pytest.param(
        {"verbosity": "high", "response_format": {"type": "json_object"}},
        {"text": {"format": {"type": "json_object"}, "verbosity": "high"}},
        id="verbosity-and-format",
    ),
    pytest.param(
        {
            "tools": [
                {"type": "function", "function": WEATHER_FN},
                {"type": "function", "function": {"name": "now"}},
            ]
        },
        {
            "tools": [
                {"type": "function", **WEATHER_FN},
                {"type": "function", "name": "now", "parameters": None, "strict": False},
            ]
        },
        id="tools-flattened",
    ),
    pytest.param({"tool_choice": "none"}, {"tool_choice": "none"}, id="tool_choice-none"),
    pytest.param({"tool_choice": "auto"}, {"tool_choice": "auto"}, id="tool_choice-auto"),
    pytest.param(
        {"tool_choice": "required"}, {"tool_choice": "required"}, id="tool_choice-required"
    ),
    pytest.param(
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"tool_choice": {"type": "function", "name": "get_weather"}},
        id="tool_choice-function",
    ),
    pytest.param(
        {
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            }
        },
        {
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_weather"}],
            }
        },
        id="tool_choice-allowed_tools",
    ),
    pytest.param(
        {"reasoning_effort": "high"}, {"reasoning": {"effort": "high"}}, id="reasoning_effort"
    ),
    pytest.param(
        {"logprobs": True, "top_logprobs": 3},
        {"include": ["message.output_text.logprobs"], "top_logprobs": 3},
        id="logprobs-top_logprobs",
    ),
    pytest.param({"logprobs": False}, {}, id="logprobs-false-nothing"),
    pytest.param({"n": 1}, {}, id="n-1-omitted"),
    pytest.param(
        {
            "stop": None,
            "seed": None,
            "logit_bias": {},
            "frequency_penalty": 0,
            "presence_penalty": 0.0,
            "modalities": ["text"],
            "audio": None,
            "prediction": None,
        },
        {},
        id="no-effect-values-accepted",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), PARAM_CASES)
def test_parameters(extra: dict, expected: dict) -> None:
    out = translate({"messages": [USER], **extra})
    assert out == {"model": MODEL, "input": [USER_ITEM], "store": False, **expected}
    validate_responses_request(out)


def test_vendor_fields_are_forwarded_unchanged() -> None:
    out = chat_to_responses_request(
        {"model": MODEL, "messages": [USER], "top_k": 20, "chat_template_kwargs": {"a": 1}}
    )
    assert out["top_k"] == 20
    assert out["chat_template_kwargs"] == {"a": 1}


def test_full_conversation_validates_as_an_sdk_request() -> None:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        ],
        "tools": [{"type": "function", "function": WEATHER_FN}],
        "tool_choice": "auto",
        "max_tokens": 50,
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}},
        },
        "logprobs": True,
        "top_logprobs": 2,
    }
    validate_chat_request(body)
    validate_responses_request(chat_to_responses_request(body))


def test_input_is_not_mutated() -> None:
    body = {
        "model": MODEL,
        "messages": [USER],
        "tools": [{"type": "function", "function": WEATHER_FN}],
    }
    snapshot = repr(body)
    chat_to_responses_request(body)
    assert repr(body) == snapshot


# ---------------------------------------------------------------- §7 rejections

REJECTIONS = [
    pytest.param({"n": 2}, "unsupported_parameter", "n", id="n>1"),
    pytest.param({"stop": "END"}, "unsupported_parameter", "stop", id="stop-string"),
    pytest.param({"stop": ["a", "b"]}, "unsupported_parameter", "stop", id="stop-list"),
    pytest.param({"seed": 7}, "unsupported_parameter", "seed", id="seed"),
    pytest.param(
        {"logit_bias": {"50256": -100}}, "unsupported_parameter", "logit_bias", id="logit_bias"
    ),
    pytest.param(
        {"frequency_penalty": 0.5},
        "unsupported_parameter",
        "frequency_penalty",
        id="frequency_penalty",
    ),
    pytest.param(
        {"presence_penalty": -1}, "unsupported_parameter", "presence_penalty", id="presence_penalty"
    ),
    pytest.param(
        {"audio": {"voice": "alloy", "format": "wav"}}, "unsupported_parameter", "audio", id="audio"
    ),
    pytest.param(
        {"modalities": ["text", "audio"]}, "unsupported_parameter", "modalities", id="modalities"
    ),
    pytest.param(
        {"prediction": {"type": "content", "content": "x"}},
        "unsupported_parameter",
        "prediction",
        id="prediction",
    ),
    pytest.param(
        {"web_search_options": {}},
        "unsupported_parameter",
        "web_search_options",
        id="web_search_options",
    ),
    pytest.param(
        {"functions": [{"name": "f"}]}, "unsupported_parameter", "functions", id="functions"
    ),
    pytest.param(
        {"function_call": "auto"}, "unsupported_parameter", "function_call", id="function_call"
    ),
    pytest.param(
        {"messages": [USER, {"role": "function", "name": "f", "content": "x"}]},
        "unsupported_parameter",
        "messages[1].role",
        id="role-function",
    ),
    pytest.param(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {
                            "type": "input_audio",
                            "input_audio": {"data": "UklGRg==", "format": "wav"},
                        },
                    ],
                }
            ]
        },
        "unsupported_content_type",
        "messages[0].content[1]",
        id="part-input_audio",
    ),
    pytest.param(
        {
            "tools": [
                {"type": "function", "function": WEATHER_FN},
                {"type": "custom", "custom": {"name": "grep"}},
            ]
        },
        "unsupported_tool_type",
        "tools[1]",
        id="tool-custom",
    ),
    pytest.param(
        {"tool_choice": {"type": "custom", "custom": {"name": "grep"}}},
        "unsupported_tool_type",
        "tool_choice",
        id="tool_choice-custom",
    ),
    pytest.param(
        {"previous_response_id": "resp_1"},
        "unsupported_parameter",
        "previous_response_id",
        id="stateless-previous",
    ),
    pytest.param(
        {"conversation": "conv_1"},
        "unsupported_parameter",
        "conversation",
        id="stateless-conversation",
    ),
]


@pytest.mark.parametrize(("extra", "code", "param"), REJECTIONS)
def test_rejections(extra: dict, code: str, param: str) -> None:
    body = {"model": MODEL, "messages": [USER], **extra}
    with pytest.raises(TranslationError) as caught:
        chat_to_responses_request(body)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, code, param)
    assert error.to_body()["error"]["type"] == "invalid_request_error"


def test_rejection_body_matches_the_spec_example() -> None:
    with pytest.raises(TranslationError) as caught:
        chat_to_responses_request({"model": MODEL, "messages": [USER], "stop": "x"})
    assert caught.value.to_body() == {
        "error": {
            "message": "'stop' cannot be translated for a responses-mode upstream",
            "type": "invalid_request_error",
            "param": "stop",
            "code": "unsupported_parameter",
        }
    }


MALFORMED = [
    pytest.param({"messages": "hi"}, "messages", id="messages-not-array"),
    pytest.param(
        {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", id="unknown-role"
    ),
    pytest.param(
        {"messages": [{"role": "tool", "content": "x"}]},
        "messages[0].tool_call_id",
        id="tool-without-id",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages[0].content[0].text",
        id="part-no-text",
    ),
    pytest.param(
        {"messages": [USER], "response_format": "json"},
        "response_format",
        id="response_format-not-object",
    ),
    pytest.param(
        {"messages": [USER], "tool_choice": "sometimes"}, "tool_choice", id="tool_choice-unknown"
    ),
]


@pytest.mark.parametrize(("body", "param"), MALFORMED)
def test_malformed_bodies_get_a_typed_error(body: dict, param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        chat_to_responses_request({"model": MODEL, **body})
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "invalid_request",
        param,
    )
