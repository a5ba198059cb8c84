"""Pure translation of an inference request into a Router Schema 1.1 `RouteRequest` (§2).

No I/O: everything the router may learn about a request is decided here, including how much
content leaks under each privacy mode, so it can be tested exhaustively without a router.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from google.protobuf import struct_pb2

from services.common.pb import keys_pb2, router_pb2
from services.edge.errors import invalid_request
from services.edge.settings import PRIVACY_MODES

Api = Literal["chat", "responses"]

DEFAULT_P95_LATENCY_MS = 30_000
SUMMARY_CHARS = 512
RECENT_MESSAGES = 5
RECENT_CHARS = 16_000
_ATTESTATION = {"features_only": "none", "summary": "summary", "full": "full"}
_SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class RoutingHeaders:
    """The optional `X-Signalbox-*` and trace headers (http-api §3), validated."""

    traceparent: str | None = None
    tracestate: str | None = None
    tradeoff: float | None = None
    budget_micro: int | None = None
    latency_target_ms: int | None = None
    plan_token: str | None = None
    privacy: str | None = None


def parse_routing_headers(headers: Mapping[str, str]) -> RoutingHeaders:
    """Reject malformed values with 400 `invalid_request`, `param` = the header name."""

    def number(name: str, kind: type[int] | type[float], low: float, high: float) -> Any:
        raw = headers.get(name.lower())
        if raw is None:
            return None
        try:
            value = kind(raw.strip())
        except ValueError:
            raise invalid_request(f"{name} must be a number", name) from None
        if not (low <= value <= high) or (kind is float and not math.isfinite(value)):
            raise invalid_request(f"{name} must be between {low:g} and {high:g}", name)
        return value

    privacy = headers.get("x-signalbox-privacy")
    if privacy is not None:
        privacy = privacy.strip().lower()
        privacy = "features_only" if privacy == "features" else privacy
        if privacy not in PRIVACY_MODES:
            raise invalid_request(
                "X-Signalbox-Privacy must be features_only, summary or full",
                "X-Signalbox-Privacy",
            )
    plan_token = headers.get("x-signalbox-plan-token")
    if plan_token is not None and not (0 < len(plan_token.strip()) <= 256):
        raise invalid_request(
            "X-Signalbox-Plan-Token is empty or too long", "X-Signalbox-Plan-Token"
        )
    return RoutingHeaders(
        traceparent=headers.get("traceparent"),
        tracestate=headers.get("tracestate"),
        tradeoff=number("X-Signalbox-Tradeoff", float, 0.0, 1.0),
        budget_micro=number("X-Signalbox-Budget-Micro", int, 0, 2**62),
        latency_target_ms=number("X-Signalbox-Latency-Target-Ms", int, 1, 2**31),
        plan_token=plan_token.strip() if plan_token else None,
        privacy=privacy,
    )


def effective_privacy(configured: str, requested: str | None) -> str:
    """The header may lower the configured privacy mode, never raise it."""
    if requested is None:
        return configured
    return min(configured, requested, key=PRIVACY_MODES.index)


# ----------------------------------------------------------------------------- content


@dataclass(frozen=True)
class Transcript:
    """The request's messages as `(role, text)` plus what the content needs from a model."""

    messages: tuple[tuple[str, str], ...]
    has_image: bool
    has_file: bool

    @property
    def chars(self) -> int:
        return sum(len(text) for _, text in self.messages)


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, Mapping):
        for key in ("text", "refusal"):
            value = part.get(key)
            if isinstance(value, str):
                return value
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(_part_text(part) for part in content)
    return ""


def _part_types(content: Any) -> set[str]:
    if not isinstance(content, Sequence) or isinstance(content, str):
        return set()
    return {str(p.get("type")) for p in content if isinstance(p, Mapping)}


def chat_transcript(body: Mapping[str, Any]) -> Transcript:
    messages: list[tuple[str, str]] = []
    types: set[str] = set()
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        types |= _part_types(content)
        messages.append((str(message.get("role", "")), _content_text(content)))
    return Transcript(tuple(messages), "image_url" in types, "file" in types)


def responses_transcript(body: Mapping[str, Any]) -> Transcript:
    messages: list[tuple[str, str]] = []
    types: set[str] = set()
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append(("system", instructions))
    items = body.get("input")
    if isinstance(items, str):
        messages.append(("user", items))
        items = ()
    for item in items or ():
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            content = item.get("content")
            types |= _part_types(content)
            messages.append((str(item.get("role", "user")), _content_text(content)))
        elif kind == "function_call_output":
            messages.append(("tool", _content_text(item.get("output"))))
    return Transcript(tuple(messages), "input_image" in types, "input_file" in types)


def transcript(api: Api, body: Mapping[str, Any]) -> Transcript:
    return chat_transcript(body) if api == "chat" else responses_transcript(body)


def requested_output_tokens(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def estimate_prompt_tokens(text: Transcript, tools: Sequence[Any]) -> int:
    """`⌊chars/4⌋ + 10·messages + 50·tools` (tokenizer id `chars4`)."""
    return text.chars // 4 + 10 * len(text.messages) + 50 * len(tools)


def _sha256(value: Any) -> str:
    return "sha256:" + hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _tools(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tools = body.get("tools")
    return [t for t in tools if isinstance(t, Mapping)] if isinstance(tools, list) else []


def _tool_info(tool: Mapping[str, Any]) -> router_pb2.ToolInfo:
    function = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
    return router_pb2.ToolInfo(
        name=str(function.get("name") or tool.get("type") or ""),
        json_schema_hash=_sha256(function.get("parameters") or {}),
        tool_type=str(tool.get("type") or "function"),
        source="client",
    )


def _format_type(api: Api, body: Mapping[str, Any]) -> str | None:
    if api == "chat":
        fmt = body.get("response_format")
    else:
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, Mapping) else None
    return str(fmt.get("type")) if isinstance(fmt, Mapping) and fmt.get("type") else None


def _reasoning_effort(api: Api, body: Mapping[str, Any]) -> str | None:
    if api == "chat":
        effort = body.get("reasoning_effort")
    else:
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None
    return effort if isinstance(effort, str) else None


def _wants_logprobs(api: Api, body: Mapping[str, Any]) -> bool:
    if api == "chat":
        return body.get("logprobs") is True
    include = body.get("include")
    return isinstance(include, list) and "message.output_text.logprobs" in include


def capabilities(api: Api, body: Mapping[str, Any], text: Transcript) -> list[str]:
    fmt = _format_type(api, body)
    flags = {
        "vision": text.has_image,
        "file": text.has_file,
        "tools": bool(_tools(body)),
        "json_mode": fmt == "json_object",
        "structured_output": fmt == "json_schema",
        "logprobs": _wants_logprobs(api, body),
        "reasoning": _reasoning_effort(api, body) is not None,
    }
    return ["text", *(cap for cap, on in flags.items() if on)]


def _fill_conversation(
    conversation: router_pb2.Conversation, text: Transcript, privacy: str
) -> None:
    messages = text.messages
    user_positions = [i for i, (role, _) in enumerate(messages) if role == "user"]
    system_texts = [t for role, t in messages if role in _SYSTEM_ROLES]
    conversation.turns = len(user_positions)
    if system_texts:
        conversation.system_fingerprint = _sha256(system_texts)
    last_user = user_positions[-1] if user_positions else None
    history = [[role, t] for i, (role, t) in enumerate(messages) if i != last_user]
    conversation.history_fingerprint = _sha256(history)
    if privacy in ("summary", "full") and last_user is not None:
        conversation.summary = messages[last_user][1][:SUMMARY_CHARS]
    if privacy == "full":
        if system_texts:
            conversation.system_prompt = "\n\n".join(system_texts)[:RECENT_CHARS]
        for role, content in _recent_messages(messages, user_positions):
            entry = struct_pb2.Struct()
            entry.update({"role": role, "content": content})
            conversation.recent_messages.append(entry)


def _recent_messages(
    messages: Sequence[tuple[str, str]], user_positions: Sequence[int]
) -> list[tuple[str, str]]:
    """The first user message plus the last five, trimmed to `RECENT_CHARS` in total."""
    chat = [i for i, (role, _) in enumerate(messages) if role not in _SYSTEM_ROLES]
    picked = sorted({*chat[-RECENT_MESSAGES:], *user_positions[:1]})
    budget = RECENT_CHARS
    recent = []
    for index in picked:
        role, content = messages[index]
        recent.append((role, content[:budget]))
        budget = max(0, budget - len(content))
    return recent


def build_route_request(
    *,
    api: Api,
    body: Mapping[str, Any],
    request_id: str,
    headers: RoutingHeaders,
    privacy_mode: str,
    key: keys_pb2.KeyInfo | None,
) -> router_pb2.RouteRequest:
    """Every field of router-schema §2 that this edge can fill for one request.

    Sub-messages are filled in place: passing them to the constructor builds each twice
    (≈ 10 µs of the edge's per-request CPU)."""
    text = transcript(api, body)
    tools = _tools(body)
    privacy = effective_privacy(privacy_mode, headers.privacy)
    request = router_pb2.RouteRequest(
        schema_version="1.1",
        request_id=request_id,
        alias=str(body["model"]),
        api=api,
        privacy_mode=privacy,
        caps=capabilities(api, body, text),
        stream=body.get("stream") is True,
    )
    request.content_attestation.included = _ATTESTATION[privacy]
    request.targets.p95_latency_ms = headers.latency_target_ms or DEFAULT_P95_LATENCY_MS
    request.estimates.prompt_tokens = estimate_prompt_tokens(text, tools)
    request.estimates.tokenizer_id = "chars4"
    _fill_conversation(request.conversation, text, privacy)
    if tools:
        request.tools.extend(_tool_info(tool) for tool in tools)
    if headers.traceparent or headers.tracestate:
        request.trace.SetInParent()
        if headers.traceparent:
            request.trace.traceparent = headers.traceparent
        if headers.tracestate:
            request.trace.tracestate = headers.tracestate
    params: dict[str, Any] = {"json_mode": _format_type(api, body) == "json_object"}
    for name in ("temperature", "top_p"):
        if isinstance(body.get(name), int | float) and not isinstance(body.get(name), bool):
            params[name] = body[name]
    if (effort := _reasoning_effort(api, body)) is not None:
        params["reasoning_effort"] = effort
    request.params.update(params)
    if (max_out := requested_output_tokens(body)) is not None:
        request.estimates.max_output_tokens = max_out
    if headers.plan_token:
        request.plan_token = headers.plan_token
    if headers.budget_micro is not None:
        request.budget.amount_micro = headers.budget_micro
        request.budget.currency = "USD"
    if headers.tradeoff is not None:
        request.overrides.update({"quality_cost_tradeoff": headers.tradeoff})
    if key is not None:
        request.org.user_id = key.id
        if key.HasField("tenant"):
            request.org.tenant = key.tenant
        if key.HasField("project"):
            request.org.project = key.project
    return request
