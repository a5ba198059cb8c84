"""The analytics event of one inference request (analytics.md §1).

`RequestRecord` collects facts as the request moves through the pipeline; `build_event`
turns it into the wire dict once, at the end, so every exit path (errors included) yields
exactly one event with the same shape.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from services.edge.auth import AuthContext
from services.edge.routing import PlanResult
from services.edge.upstream import AttemptLog, Target

if TYPE_CHECKING:
    from services.edge.limits import Admission


class CostTable(Protocol):
    def cost(
        self,
        model_id: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int,
        reasoning_tokens: int,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Usage:
    """Final token counts, whichever API shape they arrived in."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _details(usage: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        value = usage.get(key)
        if isinstance(value, dict):
            return value
    return {}


def parse_usage(usage: Any) -> Usage | None:
    """Chat (`prompt_tokens`…) or Responses (`input_tokens`…) usage; None when absent."""
    if not isinstance(usage, dict):
        return None
    responses_shape = "input_tokens" in usage or "output_tokens" in usage
    prompt = _int(usage.get("input_tokens" if responses_shape else "prompt_tokens"))
    completion = _int(usage.get("output_tokens" if responses_shape else "completion_tokens"))
    inputs = _details(usage, "input_tokens_details", "prompt_tokens_details")
    outputs = _details(usage, "output_tokens_details", "completion_tokens_details")
    total = _int(usage.get("total_tokens")) or prompt + completion
    return Usage(
        prompt, completion, total, _int(inputs.get("cached_tokens")),
        _int(outputs.get("reasoning_tokens")),
    )  # fmt: skip


@dataclass
class RequestRecord:
    """Everything known about one request so far; mutated by the pipeline, read once."""

    request_id: str
    endpoint: str
    method: str
    user_agent: str | None
    client_ip: str | None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    arrived_wall: float = field(default_factory=time.time)
    arrived: float = field(default_factory=time.perf_counter)
    model: str | None = None
    stream: bool = False
    size_bytes: int = 0
    message_count: int | None = None
    input_tokens: int | None = None
    auth: AuthContext | None = None
    plan: PlanResult | None = None
    target: Target | None = None
    attempts: AttemptLog = field(default_factory=AttemptLog)
    status_code: int | None = None
    response_bytes: int = 0
    error_message: str | None = None
    completed: bool = False
    first_byte_at: float | None = None
    finished_at: float | None = None
    upstream_sent_at: float | None = None
    upstream_done_at: float | None = None
    usage: Usage | None = None
    span: Any = None  # the request's trace span while tracing is on (services/edge/telemetry)
    limits: Admission | None = None  # what the key's rate limits reserved (limits.py)
    # (prices, usage, model, cost) of the last `event_cost`: telemetry, limits, feedback and
    # the analytics event all need the cost of a finished request; it is computed once.
    cost_memo: tuple[Any, Usage, str, dict[str, Any]] | None = field(default=None, repr=False)

    def mark_sent(self, size: int) -> None:
        now = time.perf_counter()
        if self.first_byte_at is None:
            self.first_byte_at = now
        self.response_bytes += size

    def elapsed_ms(self, until: float | None) -> float | None:
        return None if until is None else round((until - self.arrived) * 1000, 3)

    @property
    def success(self) -> bool:
        ok = self.status_code is not None and 200 <= self.status_code < 300
        return ok and (self.completed or not self.stream)

    def overhead_ms(self) -> float | None:
        """Time before the serving attempt was sent, minus time spent in failed attempts."""
        if self.upstream_sent_at is None:
            return None
        spent = self.upstream_sent_at - self.arrived - self.attempts.failed_seconds
        return round(max(0.0, spent) * 1000, 3)


def _upstream_ms(record: RequestRecord) -> float | None:
    if record.upstream_sent_at is None or record.upstream_done_at is None:
        return None
    return round((record.upstream_done_at - record.upstream_sent_at) * 1000, 3)


def _confidence(plan: PlanResult | None) -> float | None:
    if plan is None or not plan.plan.policy.HasField("explain_detail"):
        return None
    value = plan.plan.policy.explain_detail.fields.get("confidence")
    if value is None or value.WhichOneof("kind") != "number_value":
        return None
    return value.number_value


def _routing(record: RequestRecord) -> dict[str, Any]:
    plan, target = record.plan, record.target
    fallback_index = target.fallback_index if target is not None else None
    return {
        "backend": plan.backend if plan else None,
        "upstream_mode": target.mode if target else (plan.plan.upstream.mode if plan else None),
        "mcp_enabled": False,
        "mcp_servers": [],
        "system_prompt_applied": False,
        "route_id": plan.plan.route_id if plan else None,
        "strategy": plan.strategy if plan else None,
        "policy_rev": plan.policy_rev if plan else None,
        "resolved_model": target.model_id if target else None,
        "fallback_used": fallback_index is not None,
        "fallback_index": fallback_index,
        "attempts": len(record.attempts.failures) + (1 if target else 0),
        "router_latency_ms": plan.router_latency_ms if plan else None,
        "route_cache": plan.route_cache if plan else None,
        "confidence": _confidence(plan),
    }


def event_cost(record: RequestRecord, prices: CostTable) -> dict[str, Any] | None:
    """The §1 `cost` object (shared, do not mutate); None without usage."""
    u = record.usage
    if u is None:
        return None
    model = record.target.model_id if record.target else (record.model or "")
    memo = record.cost_memo
    if memo is not None and memo[0] is prices and memo[1] is u and memo[2] == model:
        return memo[3]
    cost = prices.cost(
        model, u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens
    )
    record.cost_memo = (prices, u, model, cost)
    return cost


def build_event(record: RequestRecord, prices: CostTable) -> dict[str, Any]:
    """The analytics.md §1 event; `cost` and `token_usage` are null without usage."""
    usage = record.usage
    upstream_ms = _upstream_ms(record)
    tps = None
    if usage and usage.completion_tokens and upstream_ms:
        tps = round(usage.completion_tokens / (upstream_ms / 1000), 3)
    auth = record.auth
    return {
        "id": record.event_id,
        "request_id": record.request_id,
        "timestamp": record.arrived_wall,
        "request": {
            "endpoint": record.endpoint,
            "method": record.method,
            "model": record.model,
            "stream": record.stream,
            "size_bytes": record.size_bytes,
            "message_count": record.message_count,
            "input_tokens": record.input_tokens,
            "user_agent": record.user_agent,
            "client_ip": record.client_ip,
        },
        "response": {
            "status_code": record.status_code,
            "size_bytes": record.response_bytes,
            "output_tokens": usage.completion_tokens if usage else None,
            "success": record.success,
            "error_message": None if record.success else record.error_message,
        },
        "performance": {
            "duration_ms": record.elapsed_ms(record.finished_at or time.perf_counter()),
            "ttfb_ms": record.elapsed_ms(record.first_byte_at),
            "upstream_duration_ms": upstream_ms,
            "tokens_per_second": tps,
        },
        "auth": {
            "authenticated": auth is not None,
            "api_key_id": auth.key_id if auth else None,
            "api_key_label": auth.key_label if auth else None,
            "auth_method": auth.method if auth else "none",
        },
        "routing": _routing(record),
        "token_usage": usage.as_dict() if usage else None,
        "cost": event_cost(record, prices),
    }
