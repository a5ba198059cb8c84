"""conversion.md §5.2, §5.3 (Responses client): a chat upstream stream as typed Responses events."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge.translate import DONE, ChatToResponsesStream, chat_completion_to_response
from tests.translate.sdk import fixture, validate_chat_chunk, validate_event, validate_response

REQUEST = {"model": "signalbox-fast", "input": "Hi", "store": False, "tools": [], "stream": True}


def run(
    chunks: list[Any], *, eof: bool = False, request: dict | None = None
) -> tuple[ChatToResponsesStream, list[dict]]:
    stream = ChatToResponsesStream(request or REQUEST)
    out: list[dict] = []
    for chunk in chunks:
        if chunk != DONE and "error" not in chunk:
            validate_chat_chunk(chunk)
        out += stream.feed(chunk)
    if eof:
        out += stream.finish()
    check_events(out)
    return stream, out


def check_events(out: list[dict]) -> None:
    """Every event parses as its SDK type; sequence numbers start at 0 and are contiguous."""
    for event in out:
        validate_event(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    terminals = [
        e
        for e in out
        if e["type"] in ("response.completed", "response.incomplete", "response.failed")
    ]
    assert terminals == [out[-1]]


def chunk(
    delta: dict | None = None,
    finish: str | None = None,
    *,
    logprobs: dict | None = None,
    usage: dict | None = None,
) -> dict:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]
    )
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o",
        "choices": choices,
        "usage": usage,
    }


def types(out: list[dict]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in out]


def test_golden_parallel_tool_calls() -> None:
    stream, out = run(fixture("chat_stream_tool_calls.json"))
    assert types(out) == [
        "created",
        "in_progress",
        "output_item.added",
        *["function_call_arguments.delta"] * 3,
        "output_item.added",
        *["function_call_arguments.delta"] * 2,
        "function_call_arguments.done",
        "output_item.done",
        "function_call_arguments.done",
        "output_item.done",
        "completed",
    ]
    created = out[0]["response"]
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    assert created["created_at"] == 1762393000 and created["model"] == "gpt-4o-2024-08-06"
    first, second = out[2], out[6]
    assert (first["output_index"], second["output_index"]) == (0, 1)
    assert first["item"] == {
        "type": "function_call",
        "id": first["item"]["id"],
        "call_id": "call_Wj1n5bU2GzLqM8zXo3iFqRkT",
        "name": "get_weather",
        "arguments": "",
        "status": "in_progress",
    }
    assert {e["item_id"] for e in out[3:6]} == {first["item"]["id"]}
    assert "".join(e["delta"] for e in out[3:6]) == '{"city": "Paris"}'
    assert (
        out[9]["arguments"] == '{"city": "Paris"}'
        and out[11]["arguments"] == '{"tz": "Europe/Paris"}'
    )
    final = out[-1]["response"]
    validate_response(final)
    assert final["id"] == created["id"]
    assert (final["status"], final["incomplete_details"]) == ("completed", None)
    assert [
        (i["type"], i["call_id"], i["name"], i["arguments"], i["status"]) for i in final["output"]
    ] == [
        (
            "function_call",
            "call_Wj1n5bU2GzLqM8zXo3iFqRkT",
            "get_weather",
            '{"city": "Paris"}',
            "completed",
        ),
        (
            "function_call",
            "call_Qe7rT9yU1iO3pA5sD7fG9hJk",
            "get_time",
            '{"tz": "Europe/Paris"}',
            "completed",
        ),
    ]
    assert final["output"] == [out[10]["item"], out[12]["item"]]
    assert (
        final["usage"]
        == stream.usage
        == {
            "input_tokens": 120,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 48,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 168,
        }
    )
    assert stream.done and stream.response is final


def test_golden_reasoning_then_text_with_logprobs_cut_by_length() -> None:
    stream, out = run(fixture("chat_stream_reasoning_logprobs.json"))
    assert types(out) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "reasoning_text.delta",
        "reasoning_text.delta",
        "reasoning_text.done",
        "content_part.done",
        "output_item.done",
        "output_item.added",
        "content_part.added",
        *["output_text.delta"] * 3,
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "incomplete",
    ]
    reasoning_added, message_added = out[2], out[9]
    assert reasoning_added["item"]["type"] == "reasoning" and reasoning_added["output_index"] == 0
    assert out[3]["part"] == {"type": "reasoning_text", "text": ""}
    assert out[6]["text"] == "Okay, the user greets me."
    assert message_added["output_index"] == 1
    assert message_added["item"] == {
        "type": "message",
        "id": message_added["item"]["id"],
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    assert out[10]["part"] == {"type": "output_text", "text": "", "annotations": []}
    text_deltas = out[11:14]
    assert [(e["item_id"], e["output_index"], e["content_index"]) for e in text_deltas] == [
        (message_added["item"]["id"], 1, 0)
    ] * 3
    assert text_deltas[0]["logprobs"] == [
        {
            "token": "Hello",
            "logprob": -0.01,
            "bytes": [72, 101, 108, 108, 111],
            "top_logprobs": [
                {"token": "Hello", "logprob": -0.01, "bytes": [72, 101, 108, 108, 111]}
            ],
        },
    ]
    assert out[14]["text"] == "Hello! How"
    assert [entry["token"] for entry in out[14]["logprobs"]] == ["Hello", "!", " How"]
    final = out[-1]["response"]
    validate_response(final)
    assert (final["status"], final["incomplete_details"]) == (
        "incomplete",
        {"reason": "max_output_tokens"},
    )
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["content"] == [
        {"type": "reasoning_text", "text": "Okay, the user greets me."}
    ]
    assert final["output"][1]["content"][0]["text"] == "Hello! How"
    assert final["usage"] == stream.usage
    assert (
        final["usage"]["output_tokens"] == 16
        and final["usage"]["input_tokens_details"]["cached_tokens"] == 0
    )


def test_refusal_part() -> None:
    _, out = run(
        [
            chunk({"role": "assistant", "content": None}),
            chunk({"refusal": "I can't"}),
            chunk({"refusal": " help."}),
            chunk({}, "stop"),
            DONE,
        ]
    )
    assert types(out) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "refusal.delta",
        "refusal.delta",
        "refusal.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert out[3]["part"] == {"type": "refusal", "refusal": ""}
    assert out[6]["refusal"] == "I can't help."
    assert out[-1]["response"]["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I can't help."}
    ]


def test_text_then_tool_call_closes_the_message_first() -> None:
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a":1}'},
    }
    _, out = run(
        [
            chunk({"role": "assistant", "content": "Let me check."}),
            chunk({"tool_calls": [call]}),
            chunk({}, "tool_calls"),
            DONE,
        ]
    )
    assert types(out) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "completed",
    ]
    assert [i["type"] for i in out[-1]["response"]["output"]] == ["message", "function_call"]


@pytest.mark.parametrize(
    ("finish", "status", "incomplete"),
    [
        ("stop", "completed", None),
        ("length", "incomplete", {"reason": "max_output_tokens"}),
        ("content_filter", "incomplete", {"reason": "content_filter"}),
    ],
)
def test_finish_reason_sets_the_terminal_status(
    finish: str, status: str, incomplete: dict | None
) -> None:
    _, out = run([chunk({"role": "assistant", "content": "Hi"}), chunk({}, finish), DONE])
    assert out[-1]["type"] == f"response.{status}"
    assert out[-1]["response"]["incomplete_details"] == incomplete


def test_no_output_at_all_emits_an_empty_message() -> None:
    _, out = run([chunk({"role": "assistant", "content": ""}), chunk({}, "stop"), DONE])
    assert types(out) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert out[-1]["response"]["output"][0]["content"] == [
        {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    ]


def test_eof_after_finish_reason_completes() -> None:
    stream, out = run(
        [
            chunk({"content": "Hi"}),
            chunk({}, "stop"),
            chunk(usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
        ],
        eof=True,
    )
    assert out[-1]["type"] == "response.completed"
    assert stream.usage["total_tokens"] == 2


def test_usage_on_the_last_choice_chunk_is_recorded() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    _, out = run([chunk({"content": "Hi"}), chunk({}, "stop", usage=usage), DONE])
    assert out[-1]["response"]["usage"]["total_tokens"] == 6


def test_done_without_finish_reason_is_a_clean_stop() -> None:
    _, out = run([chunk({"content": "Hi"}), DONE])
    assert out[-1]["type"] == "response.completed"
    assert out[-1]["response"]["output"][0]["content"][0]["text"] == "Hi"


def test_eof_before_finish_reason_fails_with_the_items_completed_so_far() -> None:
    stream, out = run(
        [chunk({"reasoning_content": "Think"}), chunk({"content": "Partial"})], eof=True
    )
    failed = out[-1]
    assert failed["type"] == "response.failed"
    response = failed["response"]
    assert response["status"] == "failed"
    assert response["error"]["code"] == "server_error" and "ended" in response["error"]["message"]
    assert [item["type"] for item in response["output"]] == [
        "reasoning"
    ]  # the open message is not complete
    assert stream.done and stream.feed(DONE) == [] and stream.finish() == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("rate_limit_exceeded", "rate_limit_exceeded"),
        ("overloaded", "server_error"),
        (None, "server_error"),
    ],
)
def test_chat_error_frame_mid_stream(code: str | None, expected: str) -> None:
    error = {"message": "Upstream overloaded", "type": "server_error", "param": None, "code": code}
    _, out = run([chunk({"content": "Hi"}), {"error": error}])
    assert out[-1]["type"] == "response.failed"
    assert out[-1]["response"]["error"] == {"code": expected, "message": "Upstream overloaded"}


def test_read_error_before_any_chunk_still_gives_a_well_formed_stream() -> None:
    stream = ChatToResponsesStream(REQUEST)
    out = stream.fail("connect reset", None)
    check_events(out)
    assert types(out) == ["created", "in_progress", "failed"]


def test_echoed_request_fields_and_sdk_valid_events() -> None:
    request = {
        **REQUEST,
        "instructions": "Be brief.",
        "temperature": 0.1,
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    _, out = run([chunk({"content": "Hi"}), chunk({}, "stop"), DONE], request=request)
    for event in (out[0], out[-1]):
        response = event["response"]
        assert (response["instructions"], response["temperature"], response["store"]) == (
            "Be brief.",
            0.1,
            False,
        )
        assert response["tools"] == [{"type": "function", "name": "f"}]


def test_stream_and_non_stream_give_the_same_output() -> None:
    """The final streamed response equals §4's translation of the same completion (ids aside)."""
    chunks = fixture("chat_stream_reasoning_logprobs.json")
    _, out = run(chunks)
    completion = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1762393100,
        "model": "Qwen/Qwen3-8B",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {
                    "role": "assistant",
                    "content": "Hello! How",
                    "reasoning_content": "Okay, the user greets me.",
                },
                "logprobs": {
                    "content": [
                        e for c in chunks[3:6] for e in c["choices"][0]["logprobs"]["content"]
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 14, "total_tokens": 30, "completion_tokens": 16},
    }
    expected = chat_completion_to_response(completion, REQUEST)

    def strip_ids(response: dict) -> dict:
        return {
            **response,
            "id": None,
            "output": [{**item, "id": None} for item in response["output"]],
        }

    assert strip_ids(out[-1]["response"]) == strip_ids(expected)
