"""Admin analytics routes (analytics.md §4): thin HTTP fronts over the analytics gRPC API.

Windows, limits and formats are resolved by the analytics service (one place for the
defaults); the edge only parses query parameters and maps gRPC statuses onto §2 errors.
Exports are relayed chunk by chunk from the server-streaming `Export`, never assembled here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from fastapi import Request
from starlette.responses import Response, StreamingResponse

from services.analytics.events import message_to_document
from services.common.pb import analytics_pb2, analytics_pb2_grpc
from services.edge.admin import admin_router
from services.edge.errors import ApiError, invalid_request, json_response

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0
# An export of a long window may legitimately take minutes; only a stalled one is cut.
EXPORT_TIMEOUT_S = 600.0
EXPORT_FORMATS = {"json": "application/json", "csv": "text/csv"}
INT64_MAX = 2**63 - 1

router = admin_router("/analytics")


def analytics_stub(request: Request) -> analytics_pb2_grpc.AnalyticsStub:
    """The stub over the runtime's channel; 503 `analytics_disabled` when analytics is off."""
    channel = request.app.state.runtime.channels.get("analytics")
    if channel is None:
        raise ApiError(503, "analytics_disabled", "Analytics not enabled")
    return analytics_pb2_grpc.AnalyticsStub(channel)


def int_param(request: Request, name: str) -> int | None:
    """An optional integer query parameter; anything else is 400 with `param` set."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise invalid_request(f"'{name}' must be an integer", name) from None
    if not -INT64_MAX <= value <= INT64_MAX:
        raise invalid_request(f"'{name}' is out of range", name)
    return value


def window_params(request: Request) -> dict[str, int]:
    """Only the parameters given: the service fills in the defaults and checks start <= end."""
    params = {name: int_param(request, name) for name in ("start", "end")}
    return {name: value for name, value in params.items() if value is not None}


def grpc_error(exc: grpc.aio.AioRpcError) -> ApiError:
    """INVALID_ARGUMENT is the caller's fault (400); anything else means analytics is not usable."""
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return invalid_request(exc.details() or "Invalid analytics query")
    log.warning("analytics call failed", extra={"code": code.name, "details": exc.details()})
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ApiError(504, "analytics_timeout", "Analytics service did not answer in time")
    return ApiError(503, "analytics_unavailable", "Analytics service unavailable", retry_after=5)


async def _call(method: Any, message: Any) -> Any:
    try:
        return await method(message, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        raise grpc_error(exc) from None


@router.get("/stats")
async def stats(request: Request) -> Response:
    reply = await _call(analytics_stub(request).Stats, analytics_pb2.StatsRequest())
    return json_response(message_to_document(reply))


@router.get("/events")
async def events(request: Request) -> Response:
    query = analytics_pb2.QueryRequest(**window_params(request), limit=int_param(request, "limit"))
    reply = await _call(analytics_stub(request).Query, query)
    return json_response(
        {
            "events": [message_to_document(event) for event in reply.events],
            "count": reply.count,
            "start": reply.start,
            "end": reply.end,
        }
    )


@router.get("/aggregate")
async def aggregate(request: Request) -> Response:
    query = analytics_pb2.AggregateRequest(**window_params(request))
    reply = await _call(analytics_stub(request).Aggregate, query)
    return json_response(message_to_document(reply))


@router.post("/clear")
async def clear(request: Request) -> Response:
    reply = await _call(analytics_stub(request).Clear, analytics_pb2.ClearRequest())
    return json_response({"success": reply.success, "message": reply.message})


async def _relay(
    first: analytics_pb2.ExportChunk, call: grpc.aio.UnaryStreamCall
) -> AsyncIterator[bytes]:
    """The chunks as they arrive. A failure after the status went out cannot become an error
    body, so the connection is cut instead (the client sees a broken download, not a short
    file that looks complete). A client that goes away cancels the call."""
    try:
        yield first.data
        while (chunk := await call.read()) is not grpc.aio.EOF:
            yield chunk.data
    except grpc.aio.AioRpcError as exc:
        log.error(
            "analytics export interrupted",
            extra={"code": exc.code().name, "details": exc.details()},
        )
        raise
    finally:
        call.cancel()


@router.get("/export")
async def export(request: Request) -> Response:
    fmt = request.query_params.get("format") or "json"
    if fmt not in EXPORT_FORMATS:
        raise invalid_request("'format' must be 'json' or 'csv'", "format")
    query = analytics_pb2.ExportRequest(format=fmt, **window_params(request))
    call = analytics_stub(request).Export(query, timeout=EXPORT_TIMEOUT_S)
    try:
        # The first chunk decides the status: a bad window fails here, before any byte is sent.
        first = await call.read()
    except grpc.aio.AioRpcError as exc:
        raise grpc_error(exc) from None
    if first is grpc.aio.EOF:
        raise ApiError(502, "analytics_error", "Analytics export ended without data")
    filename = f"analytics_{first.start}_to_{first.end}.{fmt}"
    return StreamingResponse(
        _relay(first, call),
        media_type=EXPORT_FORMATS[fmt],
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
