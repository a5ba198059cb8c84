"""What an upstream reply asks for, read in the upstream's own shape (chat or Responses).

Server-side execution needs three facts about a finished round: the function calls, whether
any other kind of client-side call is present, and the usage. Streams are read from their
parsed SSE payloads; the Responses stream's terminal event carries the whole response.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.edge.events import Usage, parse_usage

# Calls that only the client can run; hosted tools (web_search_call, …) are not among them.
CLIENT_CALL_TYPES = frozenset(
    {"custom_tool_call", "computer_call", "local_shell_call", "shell_call", "apply_patch_call"}
)
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


@dataclass(frozen=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str


@dataclass
class Reply:
    calls: list[FunctionCall] = field(default_factory=list)
    other_calls: bool = False
    text: str | None = None
    usage: dict[str, Any] | None = None


def _call_id(value: Any) -> str:
    return value if isinstance(value, str) and value else "call_" + secrets.token_hex(12)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def chat_reply(body: Mapping[str, Any]) -> Reply:
    reply = Reply(usage=body.get("usage") if isinstance(body.get("usage"), dict) else None)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return reply
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        return reply
    reply.text = message.get("content") if isinstance(message.get("content"), str) else None
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if call.get("type", "function") != "function" or not isinstance(function, Mapping):
            reply.other_calls = True
            continue
        reply.calls.append(
            FunctionCall(_call_id(call.get("id")), _str(function.get("name")),
                         _str(function.get("arguments")) or "{}")
        )  # fmt: skip
    return reply


def responses_reply(body: Mapping[str, Any]) -> Reply:
    reply = Reply(usage=body.get("usage") if isinstance(body.get("usage"), dict) else None)
    for item in body.get("output") or ():
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == "function_call":
            reply.calls.append(
                FunctionCall(_call_id(item.get("call_id")), _str(item.get("name")),
                             _str(item.get("arguments")) or "{}")
            )  # fmt: skip
        elif kind in CLIENT_CALL_TYPES:
            reply.other_calls = True
    return reply


def json_reply(mode: str, body: Mapping[str, Any]) -> Reply:
    return chat_reply(body) if mode == "chat" else responses_reply(body)


def stream_reply(mode: str, payloads: Iterable[Mapping[str, Any]]) -> Reply:
    """Chat: tool-call deltas merged by index. Responses: the terminal event's response."""
    if mode != "chat":
        for payload in payloads:
            response = payload.get("response")
            if payload.get("type") in TERMINAL_EVENTS and isinstance(response, Mapping):
                return responses_reply(response)
        return Reply()
    reply = Reply()
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for payload in payloads:
        if isinstance(payload.get("usage"), dict):
            reply.usage = payload["usage"]
        for choice in payload.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, Mapping) else None
            if not isinstance(delta, Mapping):
                continue
            if isinstance(delta.get("content"), str):
                text.append(delta["content"])
            for part in delta.get("tool_calls") or ():
                slot = calls.setdefault(part.get("index", 0), {"args": []})
                for key in ("id", "type"):
                    if part.get(key):
                        slot[key] = part[key]
                function = part.get("function") or {}
                if function.get("name"):
                    slot["name"] = slot.get("name", "") + function["name"]
                if function.get("arguments"):
                    slot["args"].append(function["arguments"])
    reply.text = "".join(text) or None
    for _, slot in sorted(calls.items()):
        if slot.get("type", "function") != "function":
            reply.other_calls = True
            continue
        reply.calls.append(
            FunctionCall(_call_id(slot.get("id")), slot.get("name", ""),
                         "".join(slot["args"]) or "{}")
        )  # fmt: skip
    return reply


def add_usage(usage: dict[str, Any], extra: Usage) -> dict[str, Any]:
    """`usage` (either shape) plus earlier rounds' counts, keeping its shape."""
    responses_shape = "input_tokens" in usage or "output_tokens" in usage
    prompt = "input_tokens" if responses_shape else "prompt_tokens"
    completion = "output_tokens" if responses_shape else "completion_tokens"
    inputs = "input_tokens_details" if responses_shape else "prompt_tokens_details"
    outputs = "output_tokens_details" if responses_shape else "completion_tokens_details"
    base = parse_usage(usage)
    assert base is not None
    out = {
        **usage,
        prompt: base.prompt_tokens + extra.prompt_tokens,
        completion: base.completion_tokens + extra.completion_tokens,
        "total_tokens": base.total_tokens + extra.total_tokens,
    }
    if extra.cached_tokens or isinstance(usage.get(inputs), dict):
        cached = base.cached_tokens + extra.cached_tokens
        out[inputs] = {**(usage.get(inputs) or {}), "cached_tokens": cached}
    if extra.reasoning_tokens or isinstance(usage.get(outputs), dict):
        out[outputs] = {
            **(usage.get(outputs) or {}),
            "reasoning_tokens": base.reasoning_tokens + extra.reasoning_tokens,
        }
    return out


def sum_usage(usages: Iterable[dict[str, Any] | None]) -> Usage | None:
    parsed = [u for u in (parse_usage(x) for x in usages) if u is not None]
    if not parsed:
        return None
    return Usage(
        sum(u.prompt_tokens for u in parsed),
        sum(u.completion_tokens for u in parsed),
        sum(u.total_tokens for u in parsed),
        sum(u.cached_tokens for u in parsed),
        sum(u.reasoning_tokens for u in parsed),
    )
