"""What a plan imposes on the request before it is sent (router-schema-1.1 §3).

Pure functions: the judge verdict, `limits` (input cap, output cap) and the system overlay,
applied to the client-shaped body so every attempt's translation starts from the same text.
"""

from __future__ import annotations

from typing import Any, Literal

from services.common.pb import router_pb2
from services.edge.errors import ApiError

Api = Literal["chat", "responses"]
_DENY_ACTIONS = ("block", "reject")


def enforce_plan(plan: router_pb2.RoutePlan, api: Api, estimated_prompt_tokens: int) -> None:
    """Raise the client error a plan implies: a denying judge or a too-long prompt."""
    if plan.HasField("judge"):
        judge = plan.judge
        if judge.action in _DENY_ACTIONS or judge.verdict == "deny":
            reason = judge.reason if judge.HasField("reason") else "Request denied by policy"
            raise ApiError(403, "policy_denied", reason)
    limits = plan.limits
    if limits.HasField("max_input_tokens") and estimated_prompt_tokens > limits.max_input_tokens:
        raise ApiError(
            400,
            "context_length_exceeded",
            f"The request is about {estimated_prompt_tokens} tokens; the routed model accepts "
            f"at most {limits.max_input_tokens}",
            param="messages" if api == "chat" else "input",
        )


def _output_key(api: Api, body: dict[str, Any]) -> str:
    if api == "responses":
        return "max_output_tokens"
    if "max_tokens" in body and "max_completion_tokens" not in body:
        return "max_tokens"
    return "max_completion_tokens"


def _with_output_cap(api: Api, body: dict[str, Any], cap: int) -> dict[str, Any]:
    key = _output_key(api, body)
    requested = body.get(key)
    if isinstance(requested, int) and not isinstance(requested, bool) and requested <= cap:
        return body
    return {**body, key: cap}


def _overlay(plan: router_pb2.RoutePlan) -> str | None:
    overlays = plan.prompt_overlays
    if not overlays.HasField("system_overlay") or not overlays.system_overlay:
        return None
    text = overlays.system_overlay
    if overlays.HasField("max_overlay_bytes") and len(text.encode()) > overlays.max_overlay_bytes:
        return None
    return text


def _with_overlay(api: Api, body: dict[str, Any], text: str) -> dict[str, Any]:
    if api == "chat":
        messages = [{"role": "system", "content": text}, *body["messages"]]
        return {**body, "messages": messages}
    item = {"type": "message", "role": "system", "content": text}
    current = body.get("input")
    if isinstance(current, str):
        items = [item, {"type": "message", "role": "user", "content": current}]
    else:
        items = [item, *(current or [])]
    return {**body, "input": items}


def apply_plan(api: Api, body: dict[str, Any], plan: router_pb2.RoutePlan) -> dict[str, Any]:
    """The body with the plan's output cap and system overlay; the input is never mutated."""
    if plan.limits.HasField("max_output_tokens"):
        body = _with_output_cap(api, body, plan.limits.max_output_tokens)
    overlay = _overlay(plan)
    if overlay is not None:
        body = _with_overlay(api, body, overlay)
    return body
