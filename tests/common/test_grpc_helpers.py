"""Health, reflection and the internal token, through a real server on loopback."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.grpc_client import check_health, open_channel
from services.common.grpc_server import GrpcServer
from services.common.pb import analytics_pb2, analytics_pb2_grpc

SERVICE = analytics_pb2.DESCRIPTOR.services_by_name["Analytics"].full_name


class _Stats(analytics_pb2_grpc.AnalyticsServicer):
    async def Stats(self, request, context):
        return analytics_pb2.StatsResponse(total_events=7, backend_type="sqlite")

    async def Ingest(self, request_iterator, context):
        count = 0
        async for batch in request_iterator:
            count += len(batch.events)
        return analytics_pb2.IngestAck(accepted=count)


@pytest.fixture
async def server() -> GrpcServer:
    srv = GrpcServer("127.0.0.1:0", [SERVICE], internal_token="t" * 32, grace_seconds=1)
    analytics_pb2_grpc.add_AnalyticsServicer_to_server(_Stats(), srv.server)
    await srv.start()
    yield srv
    await srv.stop()


async def test_health_follows_set_serving(server: GrpcServer) -> None:
    async with open_channel(f"127.0.0.1:{server.port}") as ch:
        await server.set_serving(False)
        assert (await check_health(ch, SERVICE))[0] is False
        await server.set_serving(True)
        serving, latency, error = await check_health(ch, SERVICE)
        assert serving and latency >= 0 and error is None


async def test_internal_token_required_except_for_health(server: GrpcServer) -> None:
    await server.set_serving(True)
    async with open_channel(f"127.0.0.1:{server.port}") as ch:
        assert (await check_health(ch))[0]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await analytics_pb2_grpc.AnalyticsStub(ch).Stats(analytics_pb2.StatsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with open_channel(f"127.0.0.1:{server.port}", "t" * 32) as ch:
        reply = await analytics_pb2_grpc.AnalyticsStub(ch).Stats(analytics_pb2.StatsRequest())
        assert reply.total_events == 7


async def test_streaming_calls_carry_the_token_too(server: GrpcServer) -> None:
    """Client-streaming (Analytics.Ingest) is intercepted separately from unary calls."""
    await server.set_serving(True)
    batch = analytics_pb2.EventBatch(events=[analytics_pb2.AnalyticsEvent(id="e1")])
    async with open_channel(f"127.0.0.1:{server.port}", "t" * 32) as ch:
        reply = await analytics_pb2_grpc.AnalyticsStub(ch).Ingest(iter([batch]))
    assert reply.accepted == 1


async def test_reflection_lists_services(server: GrpcServer) -> None:
    async with open_channel(f"127.0.0.1:{server.port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.done_writing()
        reply = await call.read()
        names = {s.name for s in reply.list_services_response.service}
    assert SERVICE in names
    assert health_pb2.DESCRIPTOR.services_by_name["Health"].full_name in names
