"""RouteFeedback (router-schema-1.1 §10): built per request, queued, batched to a real router."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import REGISTRY

from services.common.grpc_client import open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from services.edge.events import RequestRecord, Usage
from services.edge.route_feedback import FeedbackSender, build_feedback
from services.edge.routing import PlanResult
from services.edge.upstream import AttemptFailed, Target
from tests.edge.conftest import BEARER, CHAT, EdgeFactory, RouterFactory
from tests.mock_upstream.fixture import MockUpstream, closed_port_url

ARRIVAL_TIMEOUT_S = 10.0


class FlatPrices:
    """$1 per million tokens in and out, so costs are easy to check."""

    def cost(self, model_id: str, prompt: int, completion: int, cached: int, reasoning: int) -> Any:
        total = (prompt + completion) / 1_000_000
        return {"total_cost": total, "total_cost_micro": prompt + completion, "currency": "USD"}


def target(model: str, index: int | None = None) -> Target:
    return Target("http://u/v1", "chat", model, None, {}, index)


def record(backend: str = "router", **fields: Any) -> RequestRecord:
    plan = router_pb2.RoutePlan(
        route_id="rte_00000000000000aa",
        upstream=router_pb2.Upstream(base_url="http://u/v1", mode="chat", model_id="primary"),
    )
    rec = RequestRecord(
        request_id="req_1", endpoint="/v1/chat/completions", method="POST", user_agent=None,
        client_ip=None,
    )  # fmt: skip
    rec.plan = PlanResult(plan, backend, "miss", 1.0)  # type: ignore[arg-type]
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def test_feedback_after_a_fallback_and_a_429() -> None:
    rec = record(target=target("backup", 1), status_code=200, usage=Usage(10, 5, 15, 2, 1))
    rec.attempts.failures.append(
        (target("primary"), AttemptFailed("status", "429", status=429, body=b""))
    )
    rec.finished_at = rec.arrived + 0.25
    fb = build_feedback(rec, FlatPrices())
    assert fb is not None
    assert fb.route_id == "rte_00000000000000aa"
    assert fb.model_id == "backup"
    assert fb.success is True
    assert fb.status_code == 200
    assert fb.duration_ms == 250
    assert list(fb.errors) == ["primary: http_429"]
    assert fb.rl_applied is True
    assert fb.cache_hit is False
    assert (fb.usage.prompt_tokens, fb.usage.completion_tokens) == (10, 5)
    assert (fb.usage.cached_tokens, fb.usage.reasoning_tokens) == (2, 1)
    assert (fb.actual_cost_micro, fb.currency) == (15, "USD")
    assert not fb.HasField("upstream_error_code")


def test_failed_request_and_unfinished_stream() -> None:
    rec = record(target=target("primary"), status_code=502)
    rec.attempts.failures.append((target("primary"), AttemptFailed("connect", "refused")))
    fb = build_feedback(rec, FlatPrices())
    assert fb is not None and fb.success is False and fb.upstream_error_code == "connect"
    assert fb.rl_applied is False and not fb.HasField("actual_cost_micro")
    stream = record(target=target("primary"), status_code=200, stream=True, completed=False)
    streamed = build_feedback(stream, FlatPrices())
    assert streamed is not None and streamed.success is False


def test_no_feedback_for_local_plans_or_planless_errors() -> None:
    assert build_feedback(record(backend="default"), FlatPrices()) is None
    assert build_feedback(record(backend="backends_env"), FlatPrices()) is None
    planless = record()
    planless.plan = None
    assert build_feedback(planless, FlatPrices()) is None


async def test_queue_is_bounded_and_drops_the_oldest() -> None:
    async with open_channel(closed_port_url()[7:-3]) as channel:
        sender = FeedbackSender(channel, FlatPrices(), queue_max=3, batch_max=100)
        before = REGISTRY.get_sample_value("signalbox_feedback_dropped_total") or 0.0
        for n in range(5):
            sender.submit(router_pb2.RouteFeedback(route_id=f"rte_{n}", success=True))
        assert sender.stats()["queued"] == 3 and sender.dropped == 2
        assert [fb.route_id for fb in sender._queue] == ["rte_2", "rte_3", "rte_4"]
        await sender.flush()  # nothing listens: the batch is lost and counted, no exception
    assert sender.stats() == {"queued": 0, "sent": 0, "accepted": 0, "dropped": 2, "failed": 3}
    assert REGISTRY.get_sample_value("signalbox_feedback_dropped_total") == before + 5


async def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, "feedback never arrived"
        await asyncio.sleep(0.05)


def capture(router_app: Any) -> list[router_pb2.RouteFeedback]:
    """Record what reaches the router's service (the servicer calls `service.feedback`)."""
    seen: list[router_pb2.RouteFeedback] = []
    service = router_app.service
    original = service.feedback

    def spy(items: Any) -> int:
        items = list(items)
        seen.extend(items)
        return original(items)

    service.feedback = spy
    return seen


async def test_feedback_reaches_the_router_in_the_background(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    up = mock_upstream.base_url
    aliases = {
        "fast": {"base_url": up, "mode": "chat", "model_id": "mock-model-a"},
        "busy": {
            "base_url": up,
            "mode": "chat",
            "model_id": "limited",
            "fallbacks": [{"base_url": up, "mode": "chat", "model_id": "spare"}],
        },
    }
    await mock_upstream.script({"model": "limited", "status": 429})
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        seen = capture(router.app)
        plain = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "fast"}, headers=BEARER
        )
        cached = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "fast"}, headers=BEARER
        )
        streamed = await edge.client.post(
            "/v1/chat/completions",
            json={**CHAT, "model": "busy", "stream": True},
            headers=BEARER,
        )
        assert [r.status_code for r in (plain, cached, streamed)] == [200, 200, 200]
        # No explicit flush: the sender's own loop delivers within its 1 s interval.
        await wait_for(lambda: len(seen) == 3)
        sender = edge.runtime.feedback
        assert sender is not None
        await wait_for(lambda: sender.stats()["accepted"] == 3)
        assert sender.batched  # our router has FeedbackBatch: no fallback to the stream
        service = router.app.service
        # Derived catalog: the alias is the catalog id of its upstream model.
        recent = service.health.recent(service.config.catalog.resolve_model("mock-model-a"))
    by_route = {fb.route_id: fb for fb in seen}
    first = by_route[plain.headers["x-route-id"]]
    assert first.success and first.model_id == "mock-model-a" and first.status_code == 200
    assert first.cache_hit is False and first.usage.completion_tokens > 0
    assert first.duration_ms >= 0
    hit = by_route[cached.headers["x-route-id"]]
    assert hit.cache_hit is True
    fallback = by_route[streamed.headers["x-route-id"]]
    assert fallback.model_id == "spare" and fallback.success is True
    assert fallback.rl_applied is True and list(fallback.errors) == ["limited: http_429"]
    # The router's health window for the model now holds the two samples.
    assert recent is not None and recent.error_rate == 0.0
    assert sender.stats()["dropped"] == 0 and sender.stats()["failed"] == 0


async def test_no_feedback_when_the_router_is_off(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        response = await edge.client.post("/v1/chat/completions", json=CHAT, headers=BEARER)
        assert response.status_code == 200
        assert edge.runtime.feedback is None


async def test_router_down_after_planning_loses_feedback_not_responses(
    make_edge: EdgeFactory, router_service: RouterFactory, mock_upstream: MockUpstream
) -> None:
    aliases = {"fast": {"base_url": mock_upstream.base_url, "mode": "chat", "model_id": "m"}}
    async with router_service(aliases) as router, make_edge(router_addr=router.addr) as edge:
        response = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "fast"}, headers=BEARER
        )
        assert response.status_code == 200
        await router.app.stop()
        sender = edge.runtime.feedback
        assert sender is not None
        await sender.flush()
        assert sender.stats()["failed"] == 1
        # Served from the edge cache while the router is gone; feedback again just fails.
        again = await edge.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "fast"}, headers=BEARER
        )
    assert again.status_code == 200 and again.headers["x-route-cache"] == "hit"


class MethodLog(grpc.aio.ServerInterceptor):
    """Names every RPC the server is asked for, implemented or not."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.methods.append(handler_call_details.method.rsplit("/", 1)[-1])
        return await continuation(handler_call_details)


class StreamOnlyRouter(router_pb2_grpc.RouterServicer):
    """An external Schema 1.1 router: `Feedback` only, so `FeedbackBatch` is UNIMPLEMENTED."""

    def __init__(self) -> None:
        self.received: list[str] = []

    async def Feedback(
        self, request_iterator: AsyncIterator[router_pb2.RouteFeedback], context: Any
    ) -> router_pb2.FeedbackAck:
        async for item in request_iterator:
            self.received.append(item.route_id)
        return router_pb2.FeedbackAck(accepted=len(self.received))


async def test_falls_back_to_the_stream_for_a_router_without_feedback_batch() -> None:
    calls, router = MethodLog(), StreamOnlyRouter()
    server = grpc.aio.server(interceptors=[calls])
    router_pb2_grpc.add_RouterServicer_to_server(router, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            sender = FeedbackSender(channel, FlatPrices(), batch_max=2)
            for n in range(3):
                sender.submit(router_pb2.RouteFeedback(route_id=f"rte_{n}", success=True))
            await sender.flush()
            assert not sender.batched
            sender.submit(router_pb2.RouteFeedback(route_id="rte_3", success=True))
            await sender.flush()
    finally:
        await server.stop(None)
    # The refused batch went again on the stream; later batches skip FeedbackBatch entirely.
    assert router.received == ["rte_0", "rte_1", "rte_2", "rte_3"]
    assert calls.methods == ["FeedbackBatch", "Feedback", "Feedback", "Feedback"]
    stats = sender.stats()
    assert (stats["sent"], stats["failed"], stats["dropped"], stats["queued"]) == (4, 0, 0, 0)
