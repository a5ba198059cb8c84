"""CPU cost of Chat <-> Responses translation (`python -m bench.translate_bench`).

Measures process CPU time (not wall time, so other load on the machine matters less) per
~4 KB request or response body in each direction, and per 200-chunk stream, both as
parsed dicts through the converters and wire-to-wire (SSE bytes in, SSE bytes out).
Writes bench/results/translate.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from services.edge.translate import (
    DONE,
    ChatToResponsesStream,
    ResponsesToChatStream,
    SSEParser,
    chat_completion_to_response,
    chat_to_responses_request,
    decode_data,
    encode_chat_chunk,
    encode_done,
    encode_response_event,
    responses_to_chat_completion,
    responses_to_chat_request,
)

RESULTS = Path(__file__).parent / "results" / "translate.json"
BUDGET_US = 200  # issue 3: at most 0.2 ms of translation CPU per request (4 KB body)
STREAM_CHUNKS = 200
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
SENTENCE = "The quick brown fox jumps over the lazy dog while the gateway translates. "


def chat_request() -> dict[str, Any]:
    turns: list[dict[str, Any]] = [{"role": "system", "content": "You are helpful. " * 4}]
    for n in range(6):
        turns.append({"role": "user", "content": [{"type": "text", "text": SENTENCE * 3}]})
        call = {
            "id": f"call_{n}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
        turns.append({"role": "assistant", "content": SENTENCE, "tool_calls": [call]})
        turns.append({"role": "tool", "tool_call_id": f"call_{n}", "content": "18C, clear"})
    return {
        "model": "gpt-4o",
        "messages": turns,
        "tools": [TOOL],
        "tool_choice": "auto",
        "temperature": 0.2,
        "max_tokens": 500,
        "stream": False,
    }


def chat_completion() -> dict[str, Any]:
    logprobs = [
        {"token": w, "logprob": -0.1, "bytes": list(w.encode()), "top_logprobs": []}
        for w in (SENTENCE * 2).split()
    ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": {"content": logprobs},
                "message": {
                    "role": "assistant",
                    "content": SENTENCE * 25,
                    "reasoning_content": SENTENCE * 5,
                },
            }
        ],
        "usage": {"prompt_tokens": 900, "completion_tokens": 400, "total_tokens": 1300},
    }


def chat_chunks() -> list[Any]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    words = (SENTENCE * 20).split()[: STREAM_CHUNKS - 2]
    usage = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 198, "total_tokens": 207},
    }
    return (
        [chunk({"role": "assistant", "content": ""})]
        + [chunk({"content": w + " "}) for w in words]
        + [
            chunk({}, "stop"),
            usage,
            DONE,
        ]
    )


def run_chat_stream(chunks: list[Any]) -> list[dict[str, Any]]:
    stream = ChatToResponsesStream({"model": "m", "input": "x"})
    return [event for c in chunks for event in stream.feed(c)]


def run_responses_stream(events: list[dict[str, Any]]) -> list[Any]:
    stream = ResponsesToChatStream("m", include_usage=True)
    return [out for e in events for out in stream.feed(e)]


def chat_wire_to_responses_wire(raw: bytes) -> bytes:
    parser, stream, out = SSEParser(), ChatToResponsesStream({"model": "m", "input": "x"}), []
    for start in range(0, len(raw), 512):  # upstream reads arrive in pieces
        for event in parser.feed(raw[start : start + 512]):
            out += [encode_response_event(e) for e in stream.feed(decode_data(event))]
    return b"".join(out)


def responses_wire_to_chat_wire(raw: bytes) -> bytes:
    parser, stream, out = SSEParser(), ResponsesToChatStream("m", include_usage=True), []
    for start in range(0, len(raw), 512):
        for event in parser.feed(raw[start : start + 512]):
            for item in stream.feed(decode_data(event)):
                out.append(encode_done() if item == DONE else encode_chat_chunk(item))
    return b"".join(out)


def cpu_us(fn: Callable[[], object], *, min_seconds: float = 0.5) -> tuple[float, int]:
    """CPU microseconds per call, averaged over enough calls to fill `min_seconds`."""
    fn()  # warm caches
    iterations, elapsed = 0, 0.0
    start = time.process_time()
    while elapsed < min_seconds:
        for _ in range(20):
            fn()
        iterations += 20
        elapsed = time.process_time() - start
    return elapsed / iterations * 1e6, iterations


def main() -> None:
    chat_body = chat_request()
    responses_body = chat_to_responses_request(chat_body)
    completion = chat_completion()
    response = chat_completion_to_response(completion, responses_body)
    chunks = chat_chunks()
    responses_events = run_chat_stream(chunks)
    chat_wire = b"".join(encode_done() if c == DONE else encode_chat_chunk(c) for c in chunks)
    responses_wire = b"".join(encode_response_event(e) for e in responses_events)

    cases: dict[str, tuple[Callable[[], object], int]] = {
        "request_chat_to_responses": (
            lambda: chat_to_responses_request(chat_body),
            len(orjson.dumps(chat_body)),
        ),
        "request_responses_to_chat": (
            lambda: responses_to_chat_request(responses_body),
            len(orjson.dumps(responses_body)),
        ),
        "response_chat_to_responses": (
            lambda: chat_completion_to_response(completion, responses_body),
            len(orjson.dumps(completion)),
        ),
        "response_responses_to_chat": (
            lambda: responses_to_chat_completion(response),
            len(orjson.dumps(response)),
        ),
        "stream_chat_to_responses_200": (lambda: run_chat_stream(chunks), len(chat_wire)),
        "stream_responses_to_chat_200": (
            lambda: run_responses_stream(responses_events),
            len(responses_wire),
        ),
        "wire_chat_to_responses_200": (
            lambda: chat_wire_to_responses_wire(chat_wire),
            len(chat_wire),
        ),
        "wire_responses_to_chat_200": (
            lambda: responses_wire_to_chat_wire(responses_wire),
            len(responses_wire),
        ),
    }
    results: dict[str, dict[str, float | int]] = {}
    print(f"{'case':32} {'input bytes':>12} {'cpu µs/op':>12} {'iterations':>11}")
    for name, (fn, size) in cases.items():
        micros, iterations = cpu_us(fn)
        results[name] = {
            "input_bytes": size,
            "cpu_us_per_op": round(micros, 2),
            "iterations": iterations,
        }
        print(f"{name:32} {size:>12} {micros:>12.1f} {iterations:>11}")
    # One non-streaming request = its request translation + the answer's translation back.
    per_request = {
        "chat_client_responses_upstream": results["request_chat_to_responses"]["cpu_us_per_op"]
        + results["response_responses_to_chat"]["cpu_us_per_op"],
        "responses_client_chat_upstream": results["request_responses_to_chat"]["cpu_us_per_op"]
        + results["response_chat_to_responses"]["cpu_us_per_op"],
    }
    for path, micros in per_request.items():
        verdict = "within" if micros <= BUDGET_US else "OVER"
        print(f"per-request CPU {path}: {micros:.1f} µs ({verdict} the {BUDGET_US} µs budget)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_bytes(
        orjson.dumps(
            {
                "stream_chunks": STREAM_CHUNKS,
                "cases": results,
                "per_request_cpu_us": {k: round(v, 2) for k, v in per_request.items()},
                "budget_us": BUDGET_US,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
