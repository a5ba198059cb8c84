"""The `signalbox.analytics.v1.Analytics` servicer: wire messages in, store calls, wire out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc

from services.analytics import export
from services.analytics.events import (
    InvalidEvent,
    StoredEvent,
    document_to_stored,
    event_from_json,
    to_stored,
)
from services.analytics.store import Aggregate, EventStore
from services.analytics.window import (
    EXPORT_WINDOW_SECONDS,
    QUERY_WINDOW_SECONDS,
    InvalidQuery,
    resolve_limit,
    resolve_window,
)
from services.common.db import DATABASE_UNAVAILABLE
from services.common.db_health import DatabaseHealth
from services.common.pb import analytics_pb2, analytics_pb2_grpc
from services.common.pricing import PriceTable

log = logging.getLogger(__name__)

SERVICE_NAME = analytics_pb2.DESCRIPTOR.services_by_name["Analytics"].full_name
CLEARED_MESSAGE = "Analytics data cleared"

Clock = Callable[[], float]


def _opt(message: object, name: str) -> int | None:
    return getattr(message, name) if message.HasField(name) else None  # type: ignore[attr-defined]


def aggregate_response(agg: Aggregate, start: int, end: int) -> analytics_pb2.AggregateResponse:
    return analytics_pb2.AggregateResponse(
        total_requests=agg.total_requests,
        successful_requests=agg.successful_requests,
        failed_requests=agg.failed_requests,
        total_input_tokens=agg.total_input_tokens,
        total_output_tokens=agg.total_output_tokens,
        total_cached_tokens=agg.total_cached_tokens,
        total_reasoning_tokens=agg.total_reasoning_tokens,
        avg_duration_ms=agg.avg_duration_ms,
        avg_tokens_per_second=agg.avg_tokens_per_second,
        total_cost=agg.total_cost,
        cost_by_model=agg.cost_by_model,
        models_used=agg.models_used,
        endpoints_hit=agg.endpoints_hit,
        backends_used=agg.backends_used,
        strategies_used=agg.strategies_used,
        fallbacks_used=agg.fallbacks_used,
        p50_duration_ms=agg.p50_duration_ms,
        p95_duration_ms=agg.p95_duration_ms,
        period_start=start,
        period_end=end,
    )


class AnalyticsService(analytics_pb2_grpc.AnalyticsServicer):
    def __init__(
        self,
        store: EventStore,
        prices: PriceTable,
        health: DatabaseHealth,
        *,
        retention_seconds: int | None,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._prices = prices
        self._health = health
        self._retention = retention_seconds
        self._clock = clock

    @contextlib.asynccontextmanager
    async def _errors(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Typed statuses: bad input → INVALID_ARGUMENT, database down → UNAVAILABLE, else
        INTERNAL (logged with its traceback; the client sees no internals)."""
        try:
            yield
        except (InvalidEvent, InvalidQuery) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except DATABASE_UNAVAILABLE as exc:
            await self._health.mark(False, repr(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "analytics database unavailable")
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("analytics call failed")
            await context.abort(grpc.StatusCode.INTERNAL, "analytics storage error")

    def _prepare(self, batch: analytics_pb2.EventBatch) -> list[StoredEvent]:
        prices = self._prices
        stored = [to_stored(event, prices) for event in batch.events]
        stored += [document_to_stored(raw, prices) for raw in batch.documents]
        return stored

    async def Ingest(
        self,
        request_iterator: AsyncIterator[analytics_pb2.EventBatch],
        context: grpc.aio.ServicerContext,
    ) -> analytics_pb2.IngestAck:
        """Each batch commits on its own; a failed call is retried whole and deduplicated."""
        accepted = duplicates = 0
        async with self._errors(context):
            async for batch in request_iterator:
                # On the loop, not a worker thread: the GIL gives a thread no parallelism, and
                # the hand-off cost ~12 % of ingest throughput (bench/analytics_bench.py, A/B).
                # A 500-event batch holds the loop ~10-20 ms; gRPC's message limit bounds it.
                stored = self._prepare(batch)
                new, dup = await self._store.ingest(stored)
                accepted += new
                duplicates += dup
        return analytics_pb2.IngestAck(accepted=accepted, duplicates=duplicates)

    async def Query(
        self, request: analytics_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> analytics_pb2.QueryResponse:
        async with self._errors(context):
            window = resolve_window(
                _opt(request, "start"), _opt(request, "end"), QUERY_WINDOW_SECONDS, self._clock()
            )
            documents = await self._store.recent(window, resolve_limit(_opt(request, "limit")))
        events = await asyncio.to_thread(lambda: [event_from_json(doc) for doc in documents])
        return analytics_pb2.QueryResponse(
            events=events,
            count=len(documents),
            start=window.start,
            end=window.end,
        )

    async def Aggregate(
        self, request: analytics_pb2.AggregateRequest, context: grpc.aio.ServicerContext
    ) -> analytics_pb2.AggregateResponse:
        async with self._errors(context):
            window = resolve_window(
                _opt(request, "start"), _opt(request, "end"), QUERY_WINDOW_SECONDS, self._clock()
            )
            agg = await self._store.aggregate(window)
        return aggregate_response(agg, window.start, window.end)

    async def Stats(
        self, request: analytics_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> analytics_pb2.StatsResponse:
        async with self._errors(context):
            total = await self._store.count()
        return analytics_pb2.StatsResponse(
            total_events=total,
            backend_type=self._store.db.dialect,
            ttl_seconds=self._retention,
        )

    async def Export(
        self, request: analytics_pb2.ExportRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[analytics_pb2.ExportChunk]:
        async with self._errors(context):
            if request.format not in export.FORMATS:
                raise InvalidQuery(f"format must be json or csv, got {request.format!r}")
            window = resolve_window(
                _opt(request, "start"), _opt(request, "end"), EXPORT_WINDOW_SECONDS, self._clock()
            )
            async for data in export.export_document(self._store, request.format, window):
                yield analytics_pb2.ExportChunk(data=data, start=window.start, end=window.end)

    async def Clear(
        self, request: analytics_pb2.ClearRequest, context: grpc.aio.ServicerContext
    ) -> analytics_pb2.ClearResponse:
        async with self._errors(context):
            await self._store.clear()
        log.info("analytics data cleared")
        return analytics_pb2.ClearResponse(success=True, message=CLEARED_MESSAGE)
