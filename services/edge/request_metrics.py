"""The metric updates of one finished edge request (http-api §8).

Called once per request on the event loop, so the metrics are the lock-free `LoopCounter` /
`LoopHistogram` (services/common/loop_metrics) and the children an endpoint always needs are
looked up once per endpoint, not once per request (endpoints are the proxy's fixed routes).
"""

from __future__ import annotations

import time
from collections.abc import Container, Mapping
from typing import Any, NamedTuple

from services.common import metrics
from services.common.loop_metrics import HistogramChild
from services.edge.events import RequestRecord
from services.edge.routing import PlanResult

TOKEN_KINDS = ("input", "output", "cached", "reasoning")


class _EndpointChildren(NamedTuple):
    duration: HistogramChild
    ttfb: HistogramChild
    overhead: HistogramChild
    upstream: HistogramChild
    router: HistogramChild


class RequestMetrics:
    """Counts finished requests into the process's edge metrics."""

    def __init__(self, known_models: Container[str]) -> None:
        # Models with their own price entry (built-ins + catalog + pricing file) are labels.
        self._known = known_models
        # Every token kind is exported from the start, even while zero.
        self._tokens = tuple(metrics.TOKENS.labels(kind) for kind in TOKEN_KINDS)
        self._attempts_ok = metrics.UPSTREAM_ATTEMPTS.labels("ok")
        self._endpoints: dict[str, _EndpointChildren] = {}

    def _endpoint(self, endpoint: str) -> _EndpointChildren:
        children = self._endpoints.get(endpoint)
        if children is None:
            histograms = (
                metrics.REQUEST_DURATION,
                metrics.TTFB,
                metrics.OVERHEAD,
                metrics.UPSTREAM_DURATION,
                metrics.ROUTER_LATENCY,
            )
            children = _EndpointChildren(*(h.labels(endpoint) for h in histograms))
            self._endpoints[endpoint] = children
        return children

    def count(self, record: RequestRecord, cost: Mapping[str, Any] | None) -> None:
        """Requests, attempts, routing, tokens, cost and the latency histograms of `record`."""
        target = record.target
        served = target.model_id if target is not None else record.model
        model = metrics.model_label(served, self._known)
        metrics.REQUESTS.labels(record.endpoint, str(record.status_code or 0), model).inc()
        for _target, failure in record.attempts.failures:
            metrics.UPSTREAM_ATTEMPTS.labels(metrics.bounded(failure.outcome, "outcome")).inc()
        if target is not None and record.upstream_sent_at is not None:
            self._attempts_ok.inc()
            if target.fallback_index is not None:
                metrics.FALLBACKS.inc()
        children = self._endpoint(record.endpoint)
        if record.plan is not None:
            _count_plan(record.plan, children.router)
        usage = record.usage
        if usage is not None:
            counts = (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.reasoning_tokens,
            )
            for child, tokens in zip(self._tokens, counts, strict=True):
                if tokens:
                    child.inc(tokens)
        if cost is not None:
            metrics.COST_USD.labels(model).inc(float(cost["total_cost"]))
        _observe_times(record, children)


def _count_plan(plan: PlanResult, router_latency: HistogramChild) -> None:
    if plan.route_cache:
        metrics.ROUTE_CACHE.labels(plan.route_cache).inc()
    metrics.ROUTE_STRATEGY.labels(metrics.bounded(plan.strategy)).inc()
    if plan.router_latency_ms is not None:
        router_latency.observe(plan.router_latency_ms / 1000)


def _observe_times(record: RequestRecord, children: _EndpointChildren) -> None:
    arrived, sent = record.arrived, record.upstream_sent_at
    finished = record.finished_at or time.perf_counter()
    children.duration.observe(max(0.0, finished - arrived))
    if record.first_byte_at is not None:
        children.ttfb.observe(max(0.0, record.first_byte_at - arrived))
    overhead_ms = record.overhead_ms()
    if sent is not None and overhead_ms is not None:
        children.overhead.observe(overhead_ms / 1000)
        if record.upstream_done_at is not None:
            children.upstream.observe(max(0.0, record.upstream_done_at - sent))
