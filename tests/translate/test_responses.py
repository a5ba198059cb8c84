"""conversion.md §3, §4 and §5.4: non-streaming bodies in both directions, usage and status."""

from __future__ import annotations

import copy
import re

import pytest

from services.edge.translate import (
    TranslationError,
    chat_completion_to_response,
    responses_to_chat_completion,
    usage_chat_to_responses,
    usage_responses_to_chat,
)
from tests.translate.sdk import fixture, validate_chat_completion, validate_response

# ---------------------------------------------------------------- §3 responses -> chat


def test_full_response_golden() -> None:
    resp = fixture("responses_response.json")
    out = responses_to_chat_completion(resp)
    validate_chat_completion(out)
    assert out["id"] == "chatcmpl-0c5e2c1f0b6a4e0a00690b7a3e9f1c8190a0c7d2b4e6f8a1b3"
    assert (out["object"], out["created"], out["model"], out["system_fingerprint"]) == (
        "chat.completion",
        1762392638,
        "gpt-4.1-2025-04-14",
        None,
    )
    choice = out["choices"][0]
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] == "Paris is the capital of France. Its mayor is Anne Hidalgo."
    assert message["refusal"] is None
    # url_citation kept (the second one shifted by the first part's length), file_citation dropped.
    assert message["annotations"] == [
        {
            "type": "url_citation",
            "url_citation": {
                "url": "https://en.wikipedia.org/wiki/Paris",
                "title": "Paris - Wikipedia",
                "start_index": 0,
                "end_index": 31,
            },
        },
        {
            "type": "url_citation",
            "url_citation": {
                "url": "https://www.paris.fr/",
                "title": "Paris.fr",
                "start_index": 45,
                "end_index": 57,
            },
        },
    ]
    assert message["content"][45:57] == "Anne Hidalgo"
    assert message["tool_calls"] == [
        {
            "id": "call_a1B2c3D4e5F6g7H8i9J0kLmN",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
    ]
    assert message["reasoning_content"] == "Looking up sources.\n\nThe question is about Paris."
    assert choice["logprobs"] == {
        "content": [
            {
                "token": "Paris",
                "logprob": -0.0012,
                "bytes": [80, 97, 114, 105, 115],
                "top_logprobs": [
                    {"token": "Paris", "logprob": -0.0012, "bytes": [80, 97, 114, 105, 115]},
                    {"token": "The", "logprob": -6.9, "bytes": [84, 104, 101]},
                ],
            },
            {
                "token": " is",
                "logprob": -0.0001,
                "bytes": [32, 105, 115],
                "top_logprobs": [{"token": " is", "logprob": -0.0001, "bytes": [32, 105, 115]}],
            },
        ],
        "refusal": None,
    }
    assert choice["finish_reason"] == "tool_calls"
    assert out["usage"] == {
        "prompt_tokens": 1240,
        "completion_tokens": 87,
        "total_tokens": 1327,
        "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }


def _response(output: list[dict], **fields: object) -> dict:
    base = copy.deepcopy(fixture("responses_response.json"))
    base.update(output=output, **fields)
    return base


TEXT_MESSAGE = {
    "type": "message",
    "id": "msg_1",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Hi.", "annotations": [], "logprobs": []}],
}


@pytest.mark.parametrize(
    ("output", "fields", "content", "refusal", "finish_reason"),
    [
        pytest.param([TEXT_MESSAGE], {}, "Hi.", None, "stop", id="text-stop"),
        pytest.param([], {}, None, None, "stop", id="no-message-content-null"),
        pytest.param(
            [
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "refusal", "refusal": "I can't."}],
                }
            ],
            {},
            None,
            "I can't.",
            "stop",
            id="refusal",
        ),
        pytest.param(
            [TEXT_MESSAGE],
            {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
            "Hi.",
            None,
            "length",
            id="incomplete-max_output_tokens",
        ),
        pytest.param(
            [TEXT_MESSAGE],
            {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}},
            "Hi.",
            None,
            "content_filter",
            id="incomplete-content_filter",
        ),
    ],
)
def test_message_mapping(output, fields, content, refusal, finish_reason) -> None:
    out = responses_to_chat_completion(_response(output, **fields))
    validate_chat_completion(out)
    choice = out["choices"][0]
    assert (choice["message"]["content"], choice["message"]["refusal"]) == (content, refusal)
    assert choice["finish_reason"] == finish_reason
    assert choice["logprobs"] is None
    assert "tool_calls" not in choice["message"]
    assert "reasoning_content" not in choice["message"]


def test_failed_response_is_a_502_upstream_error() -> None:
    resp = _response(
        [], status="failed", error={"code": "server_error", "message": "The model crashed."}
    )
    with pytest.raises(TranslationError) as caught:
        responses_to_chat_completion(resp)
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        502,
        "upstream_error",
        "The model crashed.",
    )
    assert caught.value.to_body()["error"]["type"] == "upstream_error"


def test_unfinished_response_is_an_invalid_upstream_response() -> None:
    with pytest.raises(TranslationError) as caught:
        responses_to_chat_completion(_response([], status="in_progress"))
    assert (caught.value.status, caught.value.code) == (502, "upstream_invalid_response")


def test_missing_usage_stays_null() -> None:
    out = responses_to_chat_completion(_response([TEXT_MESSAGE], usage=None))
    assert out["usage"] is None
    validate_chat_completion(out)


# ---------------------------------------------------------------- §4 chat -> responses

REQUEST = {
    "model": "signalbox-fast",
    "input": "Weather in Paris?",
    "instructions": "Be brief.",
    "max_output_tokens": 500,
    "parallel_tool_calls": False,
    "previous_response_id": "resp_prev",
    "reasoning": {"effort": "low", "summary": None},
    "store": False,
    "temperature": 0.5,
    "text": {"format": {"type": "text"}, "verbosity": "low"},
    "tool_choice": "auto",
    "tools": [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": False},
        }
    ],
    "top_p": 0.9,
    "user": "user-1",
    "metadata": {"team": "a"},
}


def test_full_chat_completion_golden() -> None:
    chat = fixture("chat_completion.json")
    out = chat_completion_to_response(chat, REQUEST)
    validate_response(out)
    assert re.fullmatch(r"resp_[0-9a-f]{32}", out["id"])
    assert (out["object"], out["created_at"], out["model"], out["error"]) == (
        "response",
        1762392700,
        "gpt-4o-2024-08-06",
        None,
    )
    assert (out["status"], out["incomplete_details"]) == ("completed", None)
    echoed = {
        key: out[key]
        for key in (
            "instructions",
            "max_output_tokens",
            "parallel_tool_calls",
            "previous_response_id",
            "reasoning",
            "store",
            "temperature",
            "text",
            "tool_choice",
            "top_p",
            "truncation",
            "user",
            "metadata",
        )
    }
    assert echoed == {
        "instructions": "Be brief.",
        "max_output_tokens": 500,
        "parallel_tool_calls": False,
        "previous_response_id": "resp_prev",
        "reasoning": {"effort": "low", "summary": None},
        "store": False,
        "temperature": 0.5,
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "tool_choice": "auto",
        "top_p": 0.9,
        "truncation": "disabled",
        "user": "user-1",
        "metadata": {"team": "a"},
    }
    # Echoed tools are in the Responses (flat) form.
    assert out["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object"},
            "strict": False,
        }
    ]
    assert "output_text" not in out
    reasoning, message, call = out["output"]
    assert re.fullmatch(r"rs_[0-9a-f]{32}", reasoning["id"])
    assert reasoning == {
        "type": "reasoning",
        "id": reasoning["id"],
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "The user asks about Paris."}],
    }
    assert re.fullmatch(r"msg_[0-9a-f]{32}", message["id"])
    assert message == {
        "type": "message",
        "id": message["id"],
        "status": "completed",
        "role": "assistant",
        "content": [
            {
                "type": "output_text",
                "text": "Paris is the capital of France.",
                "annotations": [
                    {
                        "type": "url_citation",
                        "end_index": 31,
                        "start_index": 0,
                        "title": "Paris - Wikipedia",
                        "url": "https://en.wikipedia.org/wiki/Paris",
                    }
                ],
                "logprobs": [
                    {
                        "token": "Paris",
                        "logprob": -0.0009,
                        "bytes": [80, 97, 114, 105, 115],
                        "top_logprobs": [
                            {"token": "Paris", "logprob": -0.0009, "bytes": [80, 97, 114, 105, 115]}
                        ],
                    },
                    {
                        "token": " is",
                        "logprob": -0.0002,
                        "bytes": [32, 105, 115],
                        "top_logprobs": [],
                    },
                ],
            }
        ],
    }
    assert re.fullmatch(r"fc_[0-9a-f]{32}", call["id"])
    assert call == {
        "type": "function_call",
        "id": call["id"],
        "call_id": "call_9pXw2sT1yQ8rV7uZ6oN5mL4k",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
        "status": "completed",
    }
    assert out["usage"] == {
        "input_tokens": 82,
        "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
        "output_tokens": 41,
        "output_tokens_details": {"reasoning_tokens": 16},
        "total_tokens": 123,
    }


def _chat(message: dict, finish_reason: str = "stop") -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


@pytest.mark.parametrize(
    ("message", "finish_reason", "status", "incomplete", "parts"),
    [
        pytest.param(
            {"content": "Hi"}, "stop", "completed", None, [("output_text", "Hi")], id="stop"
        ),
        pytest.param(
            {"content": "Hi"},
            "length",
            "incomplete",
            {"reason": "max_output_tokens"},
            [("output_text", "Hi")],
            id="length",
        ),
        pytest.param(
            {"content": ""},
            "content_filter",
            "incomplete",
            {"reason": "content_filter"},
            [("output_text", "")],
            id="content_filter",
        ),
        pytest.param(
            {"content": None, "refusal": "No."},
            "stop",
            "completed",
            None,
            [("refusal", "No.")],
            id="refusal",
        ),
        pytest.param(
            {"content": "Part", "refusal": "No."},
            "stop",
            "completed",
            None,
            [("output_text", "Part"), ("refusal", "No.")],
            id="text-and-refusal",
        ),
        pytest.param(
            {"content": None}, "stop", "completed", None, [("output_text", "")], id="empty-message"
        ),
    ],
)
def test_status_and_message_parts(message, finish_reason, status, incomplete, parts) -> None:
    out = chat_completion_to_response(_chat(message, finish_reason), {"model": "m", "input": "x"})
    validate_response(out)
    assert (out["status"], out["incomplete_details"]) == (status, incomplete)
    [item] = out["output"]
    assert [(p["type"], p.get("text", p.get("refusal"))) for p in item["content"]] == parts


def test_tool_calls_only_have_no_message_item() -> None:
    chat = _chat(
        {
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        "tool_calls",
    )
    out = chat_completion_to_response(chat, {"model": "m", "input": "x"})
    validate_response(out)
    assert [item["type"] for item in out["output"]] == ["function_call"]
    assert out["status"] == "completed"


def test_defaults_when_the_request_sets_nothing() -> None:
    out = chat_completion_to_response(_chat({"content": "Hi"}), {"model": "m", "input": "x"})
    validate_response(out)
    assert (out["parallel_tool_calls"], out["tool_choice"], out["tools"], out["truncation"]) == (
        True,
        "auto",
        [],
        "disabled",
    )
    assert out["store"] is True and out["metadata"] == {}


# ---------------------------------------------------------------- §5.4 usage

CHAT_USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 20,
    "total_tokens": 30,
    "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
    "completion_tokens_details": {"reasoning_tokens": 7},
}
RESPONSES_USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 7},
    "total_tokens": 30,
}
ZERO_RESPONSES = {
    "input_tokens": 0,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 0,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 0,
}


def test_usage_both_ways() -> None:
    assert usage_chat_to_responses(CHAT_USAGE) == RESPONSES_USAGE
    assert usage_responses_to_chat(RESPONSES_USAGE) == CHAT_USAGE


@pytest.mark.parametrize(
    "usage", [None, {}, {"prompt_tokens_details": None, "completion_tokens_details": None}]
)
def test_missing_usage_values_become_zero(usage) -> None:
    assert usage_chat_to_responses(usage) == ZERO_RESPONSES
    assert usage_responses_to_chat(usage_chat_to_responses(usage))["total_tokens"] == 0
