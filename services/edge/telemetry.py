"""The edge's per-request observability: metrics, the request span, the one request log line.

`InferenceProxy` calls four hooks: `begin` (request span opened and made current, so the gRPC
calls to keys and the router join the trace), `before_plan` (the Schema 1.1 `trace` field and
GenAI request attributes), `upstream_trace_headers` (what `traceparent` goes upstream) and
`finish` (metrics, span attributes and end, the request log line). Nothing here raises into the
request path: observability must never fail a request.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Gauge

from services.common import tracing
from services.common.pb import router_pb2
from services.edge.events import CostTable, RequestRecord, event_cost
from services.edge.events import _confidence as plan_confidence
from services.edge.request_metrics import RequestMetrics

log = logging.getLogger(__name__)
request_log = logging.getLogger("signalbox.request")

GEN_AI_OPERATION = "chat"
GEN_AI_PROVIDER = "openai"
MAX_CAPTURED_CHARS = 16_384

# Edge-only gauges (read at scrape time by `metrics_route.refresh_gauges`).
ANALYTICS_QUEUE = Gauge(
    "signalbox_analytics_queue_events", "Analytics events queued in memory, not yet delivered"
)
ANALYTICS_SPOOL = Gauge(
    "signalbox_analytics_spool_events", "Analytics events waiting in the on-disk spool"
)
ANALYTICS_SPOOL_BYTES = Gauge(
    "signalbox_analytics_spool_bytes", "Size of the analytics spool segments on disk"
)
INFLIGHT = Gauge("signalbox_inflight_requests", "Inference requests being handled")
ACTIVE_STREAMS = Gauge("signalbox_active_streams", "SSE responses being relayed")


def spool_usage(directory: Path) -> tuple[int, int]:
    """(events, bytes) in the spool's `events-*.jsonl` segments; one line is one event."""
    events = size = 0
    for path in directory.glob("events-*.jsonl"):
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    events += chunk.count(b"\n")
                    size += len(chunk)
        except OSError:
            continue  # replayed and removed while we looked
    return events, size


class EdgeTelemetry:
    """One per proxy; holds only configuration, per-request state lives on the record."""

    def __init__(
        self,
        prices: CostTable,
        *,
        metrics_enabled: bool = True,
        request_log_enabled: bool = True,
    ) -> None:
        self._prices = prices
        self.metrics_enabled = metrics_enabled
        self.request_log_enabled = request_log_enabled
        known = prices if isinstance(prices, Container) else frozenset()
        self._metrics = RequestMetrics(known) if metrics_enabled else None

    # -- request path ----------------------------------------------------------------------

    def begin(self, record: RequestRecord, headers: Mapping[str, str]) -> object | None:
        """Open the request's SERVER span (child of the client's `traceparent`) and make it
        current; returns the token for `leave`. A no-op while tracing is off."""
        tracer = tracing.tracer()
        if tracer is None:
            return None
        parent = tracing.extract_headers(headers)
        span = tracer.start_span(f"POST {record.endpoint}", context=parent, kind=SpanKind.SERVER)
        if span.is_recording():  # sampled out: no attributes to build
            span.set_attributes(
                {
                    "http.request.method": record.method,
                    "url.path": record.endpoint,
                    "signalbox.request_id": record.request_id,
                    "gen_ai.operation.name": GEN_AI_OPERATION,
                }
            )
        record.span = span
        context = trace.set_span_in_context(span, parent)
        span_context = span.get_span_context()
        if span_context.is_valid:  # its headers go to the router and upstream: format once
            current = _RequestTrace(span, tracing.trace_headers(span_context))
            context = otel_context.set_value(_REQUEST_TRACE, current, context)
        return otel_context.attach(context)

    @staticmethod
    def leave(token: object | None) -> None:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def before_plan(self, route_request: router_pb2.RouteRequest, body: Mapping[str, Any]) -> None:
        """The edge's own context in the Schema 1.1 `trace` field; GenAI request attributes."""
        current = _request_trace()
        if current is None:
            return
        span, carrier = current
        field = route_request.trace
        field.traceparent = carrier[tracing.TRACEPARENT]
        if tracing.TRACESTATE in carrier:
            field.tracestate = carrier[tracing.TRACESTATE]
        if not span.is_recording():
            return
        span.set_attribute("gen_ai.request.model", str(body.get("model")))
        for name, attribute in (
            ("temperature", "gen_ai.request.temperature"),
            ("top_p", "gen_ai.request.top_p"),
            ("max_tokens", "gen_ai.request.max_tokens"),
            ("max_output_tokens", "gen_ai.request.max_tokens"),
            ("max_completion_tokens", "gen_ai.request.max_tokens"),
        ):
            value = body.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                span.set_attribute(attribute, value)
        if tracing.capture_content():
            messages = body.get("messages", body.get("input"))
            text = orjson.dumps(messages, default=str).decode()[:MAX_CAPTURED_CHARS]
            span.set_attribute("gen_ai.input.messages", text)

    @staticmethod
    def stream_opened() -> None:
        ACTIVE_STREAMS.inc()

    @staticmethod
    def stream_closed() -> None:
        ACTIVE_STREAMS.dec()

    @staticmethod
    def upstream_trace_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
        """With tracing on, the edge's span continues upstream; otherwise the client's headers
        are forwarded untouched (http-api §3)."""
        if not tracing.enabled():
            return tracing.forwarded(headers)
        current = _request_trace()
        return current.headers if current is not None else {}

    # -- the end of a request --------------------------------------------------------------

    def finish(self, record: RequestRecord) -> None:
        """Everything recorded once per request, whichever way it ended. Never raises."""
        try:
            span = record.span
            cost = None
            recording = span is not None and span.is_recording()
            if record.usage is not None and (self.metrics_enabled or recording):
                cost = event_cost(record, self._prices)
            if self._metrics is not None:
                self._metrics.count(record, cost)
            if span is not None:
                self._end_span(record, span, cost)
            if self.request_log_enabled:
                self._log(record)
        except Exception:
            log.exception("request telemetry failed", extra={"request_id": record.request_id})

    def _end_span(self, record: RequestRecord, span: Any, cost: Mapping[str, Any] | None) -> None:
        status = record.status_code or 0
        if span.is_recording():
            if record.model:
                span.update_name(f"{GEN_AI_OPERATION} {record.model}")
            attributes: dict[str, Any] = {
                "http.response.status_code": status,
                "gen_ai.provider.name": GEN_AI_PROVIDER,
                "signalbox.stream": record.stream,
                "signalbox.attempts": len(record.attempts.failures)
                + (1 if record.upstream_sent_at is not None else 0),
            }
            if record.target is not None:
                attributes["gen_ai.response.model"] = record.target.model_id
                attributes["signalbox.fallback_used"] = record.target.fallback_index is not None
            if record.usage is not None:
                attributes["gen_ai.usage.input_tokens"] = record.usage.prompt_tokens
                attributes["gen_ai.usage.output_tokens"] = record.usage.completion_tokens
            if cost is not None:
                attributes["signalbox.cost_usd"] = float(cost["total_cost"])
            if record.auth is not None and record.auth.key_id:
                attributes["signalbox.api_key_id"] = record.auth.key_id
            attributes.update(_routing_attributes(record))
            span.set_attributes(attributes)
            if status >= 500 or status == 0:
                span.set_status(Status(StatusCode.ERROR, record.error_message or str(status)))
        span.end()
        tracing.remember_event(record.event_id, span.get_span_context())

    def _log(self, record: RequestRecord) -> None:
        plan = record.plan
        usage = record.usage
        request_log.info(
            "request finished",
            extra={
                "request_id": record.request_id,
                "endpoint": record.endpoint,
                "status": record.status_code,
                "model": record.model,
                "resolved_model": record.target.model_id if record.target else None,
                "route_id": plan.plan.route_id if plan is not None else None,
                "strategy": plan.strategy if plan is not None else None,
                "key_id": record.auth.key_id if record.auth is not None else None,
                "stream": record.stream,
                "attempts": len(record.attempts.failures)
                + (1 if record.upstream_sent_at is not None else 0),
                "duration_ms": record.elapsed_ms(record.finished_at),
                "ttfb_ms": record.elapsed_ms(record.first_byte_at),
                "overhead_ms": record.overhead_ms(),
                "router_ms": plan.router_latency_ms if plan is not None else None,
                "input_tokens": usage.prompt_tokens if usage else None,
                "output_tokens": usage.completion_tokens if usage else None,
                "error": record.error_message,
            },
        )


class _RequestTrace(NamedTuple):
    span: Any
    headers: Mapping[str, str]  # the span's traceparent/tracestate; shared, read-only


_REQUEST_TRACE = otel_context.create_key("signalbox-request-trace")


def _request_trace() -> _RequestTrace | None:
    """The request span and its headers while tracing is on and the request's context (`begin`)
    is current."""
    if not tracing.enabled():
        return None
    return otel_context.get_value(_REQUEST_TRACE)  # type: ignore[return-value]


def _routing_attributes(record: RequestRecord) -> dict[str, Any]:
    plan = record.plan
    if plan is None:
        return {}
    attributes: dict[str, Any] = {
        "signalbox.route_id": plan.plan.route_id,
        "signalbox.routing.backend": plan.backend,
        "signalbox.routing.selected_model": plan.plan.upstream.model_id,
    }
    if plan.strategy:
        attributes["signalbox.routing.strategy"] = plan.strategy
    if plan.router_latency_ms is not None:
        attributes["signalbox.routing.decision_ms"] = round(plan.router_latency_ms, 3)
    if plan.route_cache:
        attributes["signalbox.routing.cache"] = plan.route_cache
    if (confidence := plan_confidence(plan)) is not None:
        attributes["signalbox.routing.confidence"] = confidence
    return attributes
