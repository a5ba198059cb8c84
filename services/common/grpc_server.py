"""One way to run a grpc.aio server in every service.

Health (`grpc.health.v1`), reflection, the optional internal bearer token, and a SIGTERM
drain: health flips to NOT_SERVING, new calls are refused, in-flight calls get the grace period.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.tracing import TelemetryServerInterceptor

log = logging.getLogger(__name__)

_OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class InternalTokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <SIGNALBOX_INTERNAL_TOKEN>` on every non-health call."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_METHOD_PREFIXES):
            return handler
        presented = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(presented).encode(), self._expected):
            return handler
        return _denying_handler(handler)


def _denying_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def deny(_request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid internal token")

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


class GrpcServer:
    """A started-once, stopped-once aio server with health and reflection wired in."""

    def __init__(
        self,
        bind: str,
        service_names: Iterable[str],
        *,
        internal_token: str | None = None,
        grace_seconds: float = 30.0,
        options: Iterable[tuple[str, object]] = (),
    ) -> None:
        interceptors: list[grpc.aio.ServerInterceptor] = [TelemetryServerInterceptor()]
        if internal_token:
            interceptors.append(InternalTokenInterceptor(internal_token))
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024), *options],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = tuple(service_names)
        reflection.enable_server_reflection(
            (
                *self.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self.bind = bind
        self.grace_seconds = grace_seconds
        self.port: int | None = None

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(self.bind)
        if not self.port:
            raise OSError(f"could not bind gRPC server to {self.bind}")
        await self.server.start()
        return self.port

    async def set_serving(self, serving: bool) -> None:
        """Health for the whole server ("") and each named service."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_seconds)


async def run_until_signal(
    server: GrpcServer,
    *,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight calls and release resources."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": server.grace_seconds})
    await server.stop()
    if on_stop is not None:
        await on_stop()
    log.info("stopped")
