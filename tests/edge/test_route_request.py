"""RouteRequest building (router-schema-1.1 §2): estimates, caps, privacy, fingerprints."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.pb import keys_pb2
from services.edge.errors import ApiError
from services.edge.route_request import (
    RoutingHeaders,
    build_route_request,
    effective_privacy,
    parse_routing_headers,
)

CONVERSATION = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
    ],
    "tools": [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ],
    "response_format": {"type": "json_object"},
    "temperature": 0.2,
    "max_completion_tokens": 300,
    "stream": True,
}


def build(body: dict[str, Any], privacy: str = "features_only", **kw: Any) -> Any:
    return build_route_request(
        api=kw.pop("api", "chat"),
        body=body,
        request_id="req_1",
        headers=kw.pop("headers", RoutingHeaders()),
        privacy_mode=privacy,
        key=kw.pop("key", None),
    )


def test_features_only_request_carries_no_text() -> None:
    request = build(CONVERSATION)
    assert request.schema_version == "1.1"
    assert request.alias == "auto"
    assert request.api == "chat"
    assert request.stream is True
    assert list(request.caps) == ["text", "vision", "tools", "json_mode"]
    chars = len("You are terse.first questionfirst answerwhat is in this image?")
    assert request.estimates.prompt_tokens == chars // 4 + 10 * 4 + 50 * 1
    assert request.estimates.max_output_tokens == 300
    assert request.estimates.tokenizer_id == "chars4"
    assert request.targets.p95_latency_ms == 30_000
    assert request.content_attestation.included == "none"
    conversation = request.conversation
    assert conversation.turns == 2
    assert conversation.system_fingerprint.startswith("sha256:")
    assert conversation.history_fingerprint.startswith("sha256:")
    assert not conversation.HasField("summary")
    assert len(conversation.recent_messages) == 0
    assert dict(request.params) == {"json_mode": True, "temperature": 0.2}
    [tool] = request.tools
    assert (tool.name, tool.tool_type, tool.source) == ("lookup", "function", "client")
    assert tool.json_schema_hash.startswith("sha256:")


def test_history_fingerprint_ignores_the_last_user_message() -> None:
    other = {
        **CONVERSATION,
        "messages": [*CONVERSATION["messages"][:3], {"role": "user", "content": "new"}],
    }
    assert (
        build(CONVERSATION).conversation.history_fingerprint
        == build(other).conversation.history_fingerprint
    )


def test_summary_and_full_privacy_modes() -> None:
    summary = build(CONVERSATION, "summary")
    assert summary.content_attestation.included == "summary"
    assert summary.conversation.summary == "what is in this image?"
    full = build(CONVERSATION, "full")
    assert full.conversation.system_prompt == "You are terse."
    recent = [dict(m) for m in full.conversation.recent_messages]
    assert recent[0] == {"role": "user", "content": "first question"}
    assert recent[-1]["content"] == "what is in this image?"


def test_privacy_header_lowers_but_never_raises() -> None:
    assert effective_privacy("full", "summary") == "summary"
    assert effective_privacy("features_only", "full") == "features_only"
    lowered = build(CONVERSATION, "full", headers=RoutingHeaders(privacy="features_only"))
    assert lowered.privacy_mode == "features_only"
    assert not lowered.conversation.HasField("summary")


def test_headers_and_key_fill_targets_budget_overrides_org() -> None:
    headers = parse_routing_headers(
        {
            "x-signalbox-tradeoff": "0.25",
            "x-signalbox-budget-micro": "5000",
            "x-signalbox-latency-target-ms": "800",
            "x-signalbox-plan-token": "stk_abc",
            "traceparent": "00-abc-def-01",
        }
    )
    key = keys_pb2.KeyInfo(id="k1", tenant="acme", project="web")
    request = build(CONVERSATION, headers=headers, key=key)
    assert request.targets.p95_latency_ms == 800
    assert (request.budget.amount_micro, request.budget.currency) == (5000, "USD")
    assert dict(request.overrides) == {"quality_cost_tradeoff": 0.25}
    assert request.plan_token == "stk_abc"
    assert request.trace.traceparent == "00-abc-def-01"
    assert (request.org.tenant, request.org.project, request.org.user_id) == ("acme", "web", "k1")


def test_responses_body() -> None:
    body = {
        "model": "m",
        "instructions": "Be nice",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_file", "file_id": "f"}],
            },
        ],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}},
        "reasoning": {"effort": "low"},
        "include": ["message.output_text.logprobs"],
        "max_output_tokens": 50,
    }
    request = build(body, api="responses")
    assert list(request.caps) == ["text", "file", "structured_output", "logprobs", "reasoning"]
    assert request.estimates.prompt_tokens == len("Be nicehello") // 4 + 10 * 3
    assert request.estimates.max_output_tokens == 50
    assert request.params["reasoning_effort"] == "low"
    assert request.conversation.turns == 2


@pytest.mark.parametrize(
    "headers",
    [
        {"x-signalbox-tradeoff": "nan"},
        {"x-signalbox-budget-micro": "1.5"},
        {"x-signalbox-plan-token": " "},
    ],
)
def test_invalid_headers(headers: dict[str, str]) -> None:
    with pytest.raises(ApiError) as caught:
        parse_routing_headers(headers)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_request"
