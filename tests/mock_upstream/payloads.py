"""Realistic OpenAI response bodies and SSE streams (chat chunks, Responses events)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """A deterministic stand-in for a tokenizer: one token per four characters, at least one."""
    chars = len(body.get("instructions") or "") if isinstance(body.get("instructions"), str) else 0
    for message in body.get("messages") or ():
        chars += len(_text_of(message.get("content")))
    items = body.get("input")
    if isinstance(items, str):
        chars += len(items)
    elif isinstance(items, list):
        chars += sum(len(_text_of(i.get("content"))) for i in items if isinstance(i, Mapping))
    return max(1, chars // 4)


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def chat_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def responses_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _chunk_encoder(model: str, include_usage: bool) -> tuple[dict[str, Any], Callable[..., bytes]]:
    """One stream's shared chunk fields, and `chunk(delta, finish=None)` giving its SSE bytes."""
    base = {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice], **extra}) + b"\n\n"

    return base, chunk


def tool_call_ids(calls: Sequence[Mapping[str, str]]) -> list[str]:
    return ["call_" + secrets.token_hex(8) for _ in calls]


def _call_tokens(calls: Sequence[Mapping[str, str]]) -> int:
    return sum(1 + len(c["arguments"]) // 4 for c in calls)


def chat_tool_calls(model: str, calls: Sequence[Mapping[str, str]], prompt: int) -> dict[str, Any]:
    """A chat completion whose assistant message only calls functions."""
    body = chat_completion(model, "", prompt)
    tool_calls = [
        {"id": call_id, "type": "function",
         "function": {"name": c["name"], "arguments": c["arguments"]}}
        for call_id, c in zip(tool_call_ids(calls), calls, strict=True)
    ]  # fmt: skip
    body["choices"][0]["message"] = {
        "role": "assistant", "content": None, "refusal": None, "tool_calls": tool_calls,
    }  # fmt: skip
    body["choices"][0]["finish_reason"] = "tool_calls"
    body["usage"] = chat_usage(prompt, _call_tokens(calls))
    return body


def chat_tool_stream(
    model: str, calls: Sequence[Mapping[str, str]], prompt: int, include_usage: bool
) -> Iterator[bytes]:
    """Tool-call deltas (name first, then the arguments in two pieces), `tool_calls` finish."""
    base, chunk = _chunk_encoder(model, include_usage)

    yield chunk({"role": "assistant", "content": None, "refusal": None})
    for index, (call_id, call) in enumerate(zip(tool_call_ids(calls), calls, strict=True)):
        head = {"index": index, "id": call_id, "type": "function",
                "function": {"name": call["name"], "arguments": ""}}  # fmt: skip
        yield chunk({"tool_calls": [head]})
        half = len(call["arguments"]) // 2
        for piece in (call["arguments"][:half], call["arguments"][half:]):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls")
    if include_usage:
        usage = {**base, "choices": [], "usage": chat_usage(prompt, _call_tokens(calls))}
        yield b"data: " + orjson.dumps(usage) + b"\n\n"
    yield b"data: [DONE]\n\n"


def chat_completion(model: str, text: str, prompt: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": chat_usage(prompt, len(words(text))),
    }


def chat_stream(model: str, text: str, prompt: int, include_usage: bool) -> Iterator[bytes]:
    """`data:` chunks ending with `data: [DONE]`; with include_usage, a `choices:[]` usage chunk."""
    base, chunk = _chunk_encoder(model, include_usage)

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    pieces = words(text)
    for piece in pieces:
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    if include_usage:
        usage = {**base, "choices": [], "usage": chat_usage(prompt, len(pieces))}
        yield b"data: " + orjson.dumps(usage) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _response_object(
    model: str, resp_id: str, status: str, output: list[Any], usage: Any
) -> dict[str, Any]:
    return {
        "id": resp_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }


def _message_item(msg_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": msg_id,
        "status": status,
        "role": "assistant",
        "content": content if status == "completed" else [],
    }


def _function_call_items(calls: Sequence[Mapping[str, str]], status: str) -> list[dict[str, Any]]:
    return [
        {"type": "function_call", "id": "fc_" + secrets.token_hex(12), "call_id": call_id,
         "name": c["name"], "arguments": c["arguments"] if status == "completed" else "",
         "status": status}
        for call_id, c in zip(tool_call_ids(calls), calls, strict=True)
    ]  # fmt: skip


def response_tool_calls(
    model: str, calls: Sequence[Mapping[str, str]], prompt: int
) -> dict[str, Any]:
    """A Responses object whose output is only `function_call` items."""
    items = _function_call_items(calls, "completed")
    usage = responses_usage(prompt, _call_tokens(calls))
    return _response_object(model, "resp_" + secrets.token_hex(16), "completed", items, usage)


def response_tool_stream(
    model: str, calls: Sequence[Mapping[str, str]], prompt: int
) -> Iterator[bytes]:
    """Responses SSE for function calls: item added, argument deltas, item done, completed."""
    resp_id = "resp_" + secrets.token_hex(16)
    seq = 0

    def event(kind: str, **payload: Any) -> bytes:
        nonlocal seq
        data = {"type": kind, "sequence_number": seq, **payload}
        seq += 1
        return f"event: {kind}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"

    pending = _response_object(model, resp_id, "in_progress", [], None)
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    done_items = _function_call_items(calls, "completed")
    for index, item in enumerate(done_items):
        yield event("response.output_item.added", output_index=index,
                    item={**item, "arguments": "", "status": "in_progress"})  # fmt: skip
        where = {"item_id": item["id"], "output_index": index}
        yield event("response.function_call_arguments.delta", **where, delta=item["arguments"])
        yield event("response.function_call_arguments.done", **where, arguments=item["arguments"])
        yield event("response.output_item.done", output_index=index, item=item)
    usage = responses_usage(prompt, _call_tokens(calls))
    final = _response_object(model, resp_id, "completed", done_items, usage)
    yield event("response.completed", response=final)


def response(model: str, text: str, prompt: int) -> dict[str, Any]:
    msg = _message_item("msg_" + secrets.token_hex(12), text, "completed")
    usage = responses_usage(prompt, len(words(text)))
    return _response_object(model, "resp_" + secrets.token_hex(16), "completed", [msg], usage)


def response_stream(model: str, text: str, prompt: int) -> Iterator[bytes]:
    """Responses SSE: `event:` + `data:` with contiguous `sequence_number`s, no `[DONE]`."""
    resp_id, msg_id = "resp_" + secrets.token_hex(16), "msg_" + secrets.token_hex(12)
    seq = 0

    def event(kind: str, **payload: Any) -> bytes:
        nonlocal seq
        data = {"type": kind, "sequence_number": seq, **payload}
        seq += 1
        return f"event: {kind}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"

    pending = _response_object(model, resp_id, "in_progress", [], None)
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    yield event(
        "response.output_item.added",
        output_index=0,
        item=_message_item(msg_id, "", "in_progress"),
    )
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    yield event("response.content_part.added", **where, part=part)
    pieces = words(text)
    for piece in pieces:
        yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
    yield event("response.output_text.done", **where, text=text, logprobs=[])
    yield event("response.content_part.done", **where, part={**part, "text": text})
    done_item = _message_item(msg_id, text, "completed")
    yield event("response.output_item.done", output_index=0, item=done_item)
    final = _response_object(
        model, resp_id, "completed", [done_item], responses_usage(prompt, len(pieces))
    )
    yield event("response.completed", response=final)


def error_body(status: int) -> dict[str, Any]:
    kinds = {
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        403: ("invalid_request_error", "forbidden", "Access denied."),
        404: ("invalid_request_error", "model_not_found", "The model does not exist."),
        429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached."),
    }
    kind, code, message = kinds.get(
        status,
        ("invalid_request_error", "bad_request", "Bad request.")
        if status < 500
        else ("server_error", "server_error", "The server had an error."),
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
