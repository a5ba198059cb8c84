"""conversion.md §5.1 and §5.3 (chat client): a Responses upstream stream as chat chunks."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge.translate import DONE, ResponsesToChatStream, responses_to_chat_completion
from tests.translate.sdk import fixture, validate_chat_chunk, validate_event

MODEL = "signalbox-smart"
RESPONSE = {
    "id": "resp_abc123",
    "object": "response",
    "created_at": 1700000000,
    "status": "in_progress",
    "model": "gpt-4.1",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "error": None,
    "incomplete_details": None,
    "usage": None,
}
USAGE = {
    "input_tokens": 9,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 4,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 13,
}


def events(*bodies: dict[str, Any]) -> list[dict[str, Any]]:
    """Number a hand-written event sequence and check it against the SDK types."""
    out = [{**body, "sequence_number": n} for n, body in enumerate(bodies)]
    for event in out:
        validate_event(event)
    return out


def created() -> dict[str, Any]:
    return {"type": "response.created", "response": RESPONSE}


def terminal(kind: str = "completed", output: list | None = None, **fields: Any) -> dict[str, Any]:
    status = kind.removeprefix("response.")
    response = {**RESPONSE, "status": status, "output": output or [], "usage": USAGE, **fields}
    return {"type": f"response.{status}", "response": response}


def run(
    stream: ResponsesToChatStream, sequence: list[dict[str, Any]], *, eof: bool = True
) -> list[Any]:
    out: list[Any] = []
    for event in sequence:
        out += stream.feed(event)
    if eof:
        out += stream.finish()
    for chunk in out:
        if chunk is not DONE and "error" not in chunk:
            validate_chat_chunk(chunk)
    return out


def deltas(out: list[Any]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in out if c is not DONE and c.get("choices")]


def test_golden_stream_with_reasoning_text_tool_call_and_usage() -> None:
    sequence = fixture("responses_stream_reasoning_text_tool.json")
    stream = ResponsesToChatStream(MODEL, include_usage=True)
    out = run(stream, sequence)

    assert out[-1] == DONE
    chunks = out[:-1]
    assert {c["id"] for c in chunks} == {
        "chatcmpl-68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b"
    }
    assert {(c["object"], c["created"], c["model"], c["system_fingerprint"]) for c in chunks} == {
        ("chat.completion.chunk", 1756315696, MODEL, None)
    }
    assert all(c["usage"] is None for c in chunks[:-1])
    assert deltas(out) == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "**Checking the weather**\n\n"},
        {"reasoning_content": "The user wants Paris weather; I should call the tool."},
        {"reasoning_content": "\n\n**Answering**"},
        {"content": "Let me"},
        {"content": " check"},
        {"content": " the weather in Paris."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_DF3wZtLHv5eBNfURjvI8MULJ",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 312,
        "completion_tokens": 196,
        "total_tokens": 508,
        "prompt_tokens_details": {"cached_tokens": 128, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 128},
    }
    assert stream.usage == usage_chunk["usage"]
    assert stream.done

    # The stream reads the same as the non-streaming translation of the final response.
    final = responses_to_chat_completion(sequence[-1]["response"])["choices"][0]["message"]
    streamed = deltas(out)
    assert "".join(d.get("reasoning_content", "") for d in streamed) == final["reasoning_content"]
    assert "".join(d.get("content") or "" for d in streamed) == final["content"]


def test_without_include_usage_there_is_no_usage_field_or_chunk() -> None:
    stream = ResponsesToChatStream(MODEL, include_usage=False)
    out = run(stream, fixture("responses_stream_reasoning_text_tool.json"))
    assert all("usage" not in c for c in out[:-1])
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert stream.usage is not None and stream.usage["total_tokens"] == 508  # still metered


def _message_events(*content_events: dict[str, Any]) -> list[dict[str, Any]]:
    item = {
        "type": "message",
        "id": "msg_1",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    return [
        created(),
        {"type": "response.in_progress", "response": RESPONSE},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *content_events,
    ]


def test_refusal_deltas() -> None:
    part = {"type": "refusal", "refusal": ""}
    sequence = events(
        *_message_events(
            {
                "type": "response.content_part.added",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
            {
                "type": "response.refusal.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "I can't",
            },
            {
                "type": "response.refusal.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": " help.",
            },
            {
                "type": "response.refusal.done",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "refusal": "I can't help.",
            },
        ),
        terminal(),
    )
    out = run(ResponsesToChatStream(MODEL, include_usage=False), sequence)
    assert deltas(out)[1:] == [{"refusal": "I can't"}, {"refusal": " help."}, {}]
    assert out[-2]["choices"][0]["finish_reason"] == "stop"


def test_text_logprobs_become_chunk_logprobs() -> None:
    logprobs = [
        {
            "token": "Hé",
            "logprob": -0.5,
            "top_logprobs": [{"token": "Hé", "logprob": -0.5}, {"token": "He", "logprob": -1.5}],
        }
    ]
    sequence = events(
        *_message_events(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "Hé",
                "logprobs": logprobs,
            },
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "!",
                "logprobs": [],
            },
        ),
        terminal(),
    )
    out = run(ResponsesToChatStream(MODEL, include_usage=True), sequence)
    with_text = [c for c in out[:-1] if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert with_text[0]["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "Hé",
                "logprob": -0.5,
                "bytes": [72, 195, 169],
                "top_logprobs": [
                    {"token": "Hé", "logprob": -0.5, "bytes": [72, 195, 169]},
                    {"token": "He", "logprob": -1.5, "bytes": [72, 101]},
                ],
            }
        ],
        "refusal": None,
    }
    assert with_text[1]["choices"][0]["logprobs"] is None


def test_reasoning_text_deltas_of_open_models() -> None:
    item = {"type": "reasoning", "id": "rs_1", "summary": [], "content": []}
    sequence = events(
        created(),
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {
            "type": "response.reasoning_text.delta",
            "item_id": "rs_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hmm",
        },
        {
            "type": "response.reasoning_text.delta",
            "item_id": "rs_1",
            "output_index": 0,
            "content_index": 0,
            "delta": ", ok",
        },
        terminal(),
    )
    out = run(ResponsesToChatStream(MODEL, include_usage=False), sequence)
    assert deltas(out)[1:3] == [{"reasoning_content": "Hmm"}, {"reasoning_content": ", ok"}]


def test_parallel_function_calls_get_ordinal_indices() -> None:
    def added(n: int) -> dict[str, Any]:
        item = {
            "type": "function_call",
            "id": f"fc_{n}",
            "call_id": f"call_{n}",
            "name": f"f{n}",
            "arguments": "",
            "status": "in_progress",
        }
        return {"type": "response.output_item.added", "output_index": n + 1, "item": item}

    def args(n: int, delta: str) -> dict[str, Any]:
        return {
            "type": "response.function_call_arguments.delta",
            "item_id": f"fc_{n}",
            "output_index": n + 1,
            "delta": delta,
        }

    message = {
        "type": "message",
        "id": "msg_1",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    sequence = events(
        created(),
        {"type": "response.output_item.added", "output_index": 0, "item": message},
        added(0),
        args(0, "{}"),
        added(1),
        args(1, '{"a"'),
        args(1, ":1}"),
        terminal(),
    )
    out = run(ResponsesToChatStream(MODEL, include_usage=False), sequence)
    calls = [d["tool_calls"][0] for d in deltas(out) if "tool_calls" in d]
    assert [(c["index"], c.get("id"), c["function"]["arguments"]) for c in calls] == [
        (0, "call_0", ""),
        (0, None, "{}"),
        (1, "call_1", ""),
        (1, None, '{"a"'),
        (1, None, ":1}"),
    ]
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("reason", "finish_reason"),
    [("max_output_tokens", "length"), ("content_filter", "content_filter")],
)
def test_incomplete_ends_with_length_or_content_filter(reason: str, finish_reason: str) -> None:
    sequence = events(created(), terminal("incomplete", incomplete_details={"reason": reason}))
    stream = ResponsesToChatStream(MODEL, include_usage=True)
    out = run(stream, sequence)
    assert out[-3]["choices"][0]["finish_reason"] == finish_reason
    assert out[-2]["choices"] == [] and out[-2]["usage"]["total_tokens"] == 13
    assert out[-1] == DONE


def _error_frame(out: list[Any]) -> dict[str, Any]:
    assert out[-1] == DONE
    frame = out[-2]
    assert set(frame) == {"error"}
    return frame["error"]


def test_response_failed_becomes_an_error_frame() -> None:
    failed = {
        **RESPONSE,
        "status": "failed",
        "error": {"code": "server_error", "message": "The model broke."},
        "usage": USAGE,
    }
    sequence = events(created(), {"type": "response.failed", "response": failed})
    stream = ResponsesToChatStream(MODEL, include_usage=True)
    out = run(stream, sequence)
    assert stream.usage is not None and stream.usage["total_tokens"] == 13
    assert _error_frame(out) == {
        "message": "The model broke.",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }


def test_error_event_keeps_the_upstream_code() -> None:
    sequence = events(
        created(),
        {"type": "error", "code": "rate_limit_exceeded", "message": "Slow down.", "param": None},
    )
    error = _error_frame(run(ResponsesToChatStream(MODEL, include_usage=False), sequence))
    assert (error["code"], error["message"], error["type"]) == (
        "rate_limit_exceeded",
        "Slow down.",
        "server_error",
    )


def test_eof_without_a_terminal_event() -> None:
    sequence = events(*_message_events())
    error = _error_frame(run(ResponsesToChatStream(MODEL, include_usage=False), sequence))
    assert error["code"] == "upstream_stream_error"


def test_read_error_then_nothing_more() -> None:
    stream = ResponsesToChatStream(MODEL, include_usage=False)
    run(stream, events(created()), eof=False)
    error = _error_frame(stream.fail("connection reset"))
    assert (error["message"], error["code"]) == ("connection reset", "upstream_stream_error")
    assert stream.feed(terminal()) == [] and stream.finish() == [] and stream.fail("again") == []


def test_nothing_after_completion() -> None:
    stream = ResponsesToChatStream(MODEL, include_usage=False)
    run(stream, events(created(), terminal()), eof=False)
    assert stream.finish() == []
    assert stream.feed(created()) == []


IGNORED = [
    {"type": "response.in_progress", "response": RESPONSE},
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {
            "type": "message",
            "id": "msg_1",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        },
    },
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {"type": "reasoning", "id": "rs_1", "summary": []},
    },
    {
        "type": "response.content_part.added",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": []},
    },
    {
        "type": "response.content_part.done",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_text", "text": "Hi", "annotations": []},
    },
    {
        "type": "response.output_text.done",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "text": "Hi",
        "logprobs": [],
    },
    {
        "type": "response.output_text.annotation.added",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "annotation_index": 0,
        "annotation": {
            "type": "url_citation",
            "url": "https://x.test",
            "title": "X",
            "start_index": 0,
            "end_index": 2,
        },
    },
    {
        "type": "response.function_call_arguments.done",
        "item_id": "fc_1",
        "output_index": 1,
        "arguments": "{}",
    },
    {
        "type": "response.output_item.done",
        "output_index": 0,
        "item": {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [],
        },
    },
    {
        "type": "response.reasoning_summary_part.added",
        "item_id": "rs_1",
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": ""},
    },
    {
        "type": "response.reasoning_summary_part.done",
        "item_id": "rs_1",
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": "x"},
    },
]


@pytest.mark.parametrize("event", IGNORED, ids=lambda e: e["type"])
def test_bookkeeping_events_produce_nothing(event: dict[str, Any]) -> None:
    stream = ResponsesToChatStream(MODEL, include_usage=True)
    stream.feed(events(created())[0])
    [numbered] = events(event)
    assert stream.feed(numbered) == []
