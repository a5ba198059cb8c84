"""Prometheus metrics of every service (http-api §8), on the process-wide default registry.

Each metric is defined once here so the names, labels and buckets never drift between the
edge and the gRPC services. Labels are bounded: no key ids, no prompts, and a label fed from
outside (model, strategy) goes through `bounded()` / `model_label()`.

Counters other features increment (import the object, call `.labels(...).inc()`):

- `PLAN_CACHE.labels(result="hit"|"miss").inc()` — a plan cache answered (or missed) a lookup;
  `record_plan_cache(hit)` is the shorthand.
- `RATE_LIMITED.labels(reason=...).inc()` — a request refused by a limit (`reason` is a fixed
  code: `rpm`, `tpm`, `budget`, or `unavailable` when the counters are down and the limit fails
  closed; never a key id).
- `FEEDBACK_DROPPED.inc()` — a routing feedback item that could not be delivered (pushed out
  of the full queue, or in a batch the router did not take).
- `KEY_CACHE.labels(result="hit"|"miss").inc()` — the edge's verified-key cache.

The edge's per-request metrics (requests, attempts, tokens, cost, latency histograms) are
`LoopCounter` / `LoopHistogram`: updated on the event loop only, without prometheus-client's
per-update lock. Edge-only gauges (in-flight requests, active streams, analytics queue and
spool) live in services/edge/telemetry.py.
`serve_metrics(bind)` exposes the registry on its own HTTP port for the gRPC services.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Container
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from services.common.config import is_off, split_bind
from services.common.loop_metrics import LoopCounter, LoopHistogram

log = logging.getLogger(__name__)

OTHER = "other"
NONE = "none"
MAX_LABEL_VALUES = 64
_LABEL_SAFE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")

# Request latencies span sub-millisecond (overhead) to minutes (long generations).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
FAST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

# -- edge: requests (http-api §8) ---------------------------------------------------------
# Updated once per request on the edge's event loop only: lock-free (services/common/loop_metrics).
REQUESTS = LoopCounter(
    "signalbox_requests", "Inference requests by endpoint, HTTP status and served model",
    ["endpoint", "status", "model"],
)  # fmt: skip
UPSTREAM_ATTEMPTS = LoopCounter(
    "signalbox_upstream_attempts", "Upstream attempts by outcome (ok, connect, http_503, …)",
    ["outcome"],
)  # fmt: skip
FALLBACKS = LoopCounter("signalbox_fallbacks", "Requests served by a fallback target")
ROUTE_CACHE = LoopCounter(
    "signalbox_route_cache", "Router plans by the router's cache result", ["result"]
)
ROUTE_STRATEGY = LoopCounter(
    "signalbox_route_strategy", "Routing decisions by strategy (policy id)", ["strategy"]
)
TOKENS = LoopCounter(
    "signalbox_tokens", "Tokens by kind (input, output, cached, reasoning)", ["kind"]
)
COST_USD = LoopCounter("signalbox_cost_usd", "Cost of served requests in USD", ["model"])

REQUEST_DURATION = LoopHistogram(
    "signalbox_request_duration_seconds", "Arrival to last byte", ["endpoint"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
TTFB = LoopHistogram(
    "signalbox_ttfb_seconds", "Arrival to first response byte", ["endpoint"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
OVERHEAD = LoopHistogram(
    "signalbox_overhead_seconds", "Edge time before the serving attempt was sent", ["endpoint"],
    buckets=FAST_BUCKETS,
)  # fmt: skip
ROUTER_LATENCY = LoopHistogram(
    "signalbox_router_latency_seconds", "Router decision (Plan call) latency", ["endpoint"],
    buckets=FAST_BUCKETS,
)  # fmt: skip
UPSTREAM_DURATION = LoopHistogram(
    "signalbox_upstream_duration_seconds", "Serving attempt sent to upstream done", ["endpoint"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip

# -- edge: other features (any thread) ------------------------------------------------------
RATE_LIMITED = Counter("signalbox_rate_limited", "Requests refused by a limit", ["reason"])
FEEDBACK_DROPPED = Counter("signalbox_feedback_dropped", "Routing feedback items dropped")
KEY_CACHE = Counter("signalbox_key_cache", "Verified-key cache lookups", ["result"])
KEY_VERIFY = Histogram(
    "signalbox_key_verify_seconds", "Keys.Verify round trips (cache misses)",
    buckets=FAST_BUCKETS,
)  # fmt: skip

# -- router ---------------------------------------------------------------------------------
PLAN_CACHE = Counter("signalbox_plan_cache", "Plan cache lookups", ["result"])
KNN_EMBED = Histogram(
    "signalbox_knn_embed_seconds", "KNN router: query embedding time", buckets=FAST_BUCKETS
)
KNN_SEARCH = Histogram(
    "signalbox_knn_search_seconds", "KNN router: neighbour search time", buckets=FAST_BUCKETS
)
KNN_INDEX_SIZE = Gauge("signalbox_knn_index_examples", "KNN router: examples searchable")

# -- every gRPC server ----------------------------------------------------------------------
GRPC_HANDLED = Counter(
    "signalbox_grpc_server_handled", "gRPC calls served by method and status code",
    ["method", "code"],
)  # fmt: skip
GRPC_DURATION = Histogram(
    "signalbox_grpc_server_handling_seconds", "gRPC call handling time by method", ["method"],
    buckets=(*FAST_BUCKETS, 2.5, 5.0, 10.0),
)  # fmt: skip


class _BoundedValues:
    """Remembers the label values already seen; past `limit` new ones become `other`."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if not value:
            return NONE
        if value in self._seen:
            return value
        if not _LABEL_SAFE.fullmatch(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value


_STRATEGIES = _BoundedValues()
_OUTCOMES = _BoundedValues()


def bounded(value: str | None, kind: str = "strategy") -> str:
    """A label value from configuration (strategy, outcome), capped to 64 distinct values."""
    return (_OUTCOMES if kind == "outcome" else _STRATEGIES)(value)


def model_label(model: str | None, known: Container[str]) -> str:
    """The model as a label only when the catalog knows it; `other` otherwise, `none` if unset."""
    if not model:
        return NONE
    return model if model in known else OTHER


def record_plan_cache(hit: bool) -> None:
    """For a plan cache anywhere in the process: one lookup, hit or miss."""
    PLAN_CACHE.labels(result="hit" if hit else "miss").inc()


def render() -> tuple[bytes, str]:
    """The registry in Prometheus text format, with its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


@dataclass
class MetricsServer:
    """The registry served over HTTP by prometheus-client's threaded server."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(bind: str | None, service: str) -> MetricsServer | None:
    """Start `GET /metrics` on `bind` (`host:port`); `off`/empty disables it.

    A port that cannot be bound is logged and skipped: losing metrics must not stop a service
    that can otherwise serve (Prometheus shows the target as down).
    """
    if is_off(bind):
        return None
    assert bind is not None
    host, port = split_bind(bind)
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        log.error(
            "metrics port unavailable; metrics not served",
            extra={"service": service, "bind": bind, "error": str(exc)},
        )
        return None
    metrics = MetricsServer(server, thread)
    log.info("metrics served", extra={"service": service, "port": metrics.port})
    return metrics
