"""Channels to our own gRPC services: the internal token on every call, health probes."""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import tracing
from services.common.logging import request_id_var
from services.common.tracing import REQUEST_ID_METADATA

_CHANNEL_OPTIONS: Sequence[tuple[str, object]] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Fail fast and reconnect quickly after a dependency restarts.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


class _TokenMetadata:
    """Adds our bearer token (and the current request id, for the callee's logs) to a call.

    grpc.aio files each client interceptor under ONE call type (the first base class it
    matches), so one object per call type is needed for streaming calls to carry the token.
    """

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._header)
        if (request_id := request_id_var.get()) is not None:
            metadata.add(REQUEST_ID_METADATA, request_id)
        return details._replace(metadata=metadata)


class _UnaryUnaryToken(_TokenMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[override]
        return await continuation(self._with_token(details), request)


class _UnaryStreamToken(_TokenMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[override]
        return await continuation(self._with_token(details), request)


class _StreamUnaryToken(_TokenMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[override]
        return await continuation(self._with_token(details), request_iterator)


class _StreamStreamToken(_TokenMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[override]
        return await continuation(self._with_token(details), request_iterator)


def token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call type, all adding `authorization: Bearer <token>`."""
    kinds = (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)
    return [kind(token) for kind in kinds]


def open_channel(addr: str, internal_token: str | None = None) -> grpc.aio.Channel:
    """An insecure aio channel (services talk on a private network) carrying our token."""
    interceptors = token_interceptors(internal_token) if internal_token else []
    interceptors += tracing.client_interceptors()  # none unless tracing is on
    return grpc.aio.insecure_channel(
        addr, options=_CHANNEL_OPTIONS, interceptors=interceptors or None
    )


async def check_health(
    channel: grpc.aio.Channel, service: str = "", timeout: float = 1.0
) -> tuple[bool, float, str | None]:
    """`grpc.health.v1/Check`: (serving, latency_ms, error)."""
    started = time.perf_counter()
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    except grpc.aio.AioRpcError as exc:
        return False, (time.perf_counter() - started) * 1000, exc.code().name
    latency = (time.perf_counter() - started) * 1000
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    return (
        serving,
        latency,
        None if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status),
    )
