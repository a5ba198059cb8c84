"""`GET /metrics` (http-api §8): the process registry in Prometheus text format, no auth.

Gauges that describe this edge's state (in-flight requests, the analytics queue and spool) are
read from the runtime at scrape time instead of being maintained on the request path.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.common import metrics
from services.edge.errors import ApiError
from services.edge.runtime import EdgeRuntime
from services.edge.telemetry import (
    ANALYTICS_QUEUE,
    ANALYTICS_SPOOL,
    ANALYTICS_SPOOL_BYTES,
    INFLIGHT,
    spool_usage,
)

router = APIRouter()


def refresh_gauges(runtime: EdgeRuntime) -> None:
    INFLIGHT.set(runtime.proxy.inflight)
    queued = runtime.sink.stats()["queued"] if runtime.sink is not None else 0
    ANALYTICS_QUEUE.set(queued)
    events, size = spool_usage(runtime.settings.analytics_spool_dir)
    ANALYTICS_SPOOL.set(events)
    ANALYTICS_SPOOL_BYTES.set(size)


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    runtime: EdgeRuntime = request.app.state.runtime
    if not runtime.settings.metrics_enabled:
        raise ApiError(404, "not_found", "Metrics are disabled (SIGNALBOX_METRICS_ENABLED=false)")
    refresh_gauges(runtime)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
