"""gRPC adapters: `signalbox.router.v1.Router` and `RouterAdmin` over `RouterService`."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import NoReturn

import grpc

from services.common.pb import router_pb2, router_pb2_grpc
from services.router.errors import ERROR_METADATA_KEY, RouteFailure
from services.router.headers import common_headers, invalidate_headers, plan_headers
from services.router.service import RouterService

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    router_pb2.DESCRIPTOR.services_by_name["Router"].full_name,
    router_pb2.DESCRIPTOR.services_by_name["RouterAdmin"].full_name,
)


def plan_or_error(
    result: object, *, request_id: str | None, policy_rev: str
) -> router_pb2.PlanOrError:
    if isinstance(result, RouteFailure):
        return router_pb2.PlanOrError(
            error=result.to_proto(request_id=request_id, policy_rev=policy_rev)
        )
    return router_pb2.PlanOrError(plan=result.plan)  # type: ignore[attr-defined]


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, service: RouterService) -> None:
        self.service = service

    async def _metadata(
        self, context: grpc.aio.ServicerContext, started: float, extra: Mapping[str, str]
    ) -> None:
        headers = {**common_headers(self.service.config.policy_rev, started), **extra}
        await context.send_initial_metadata(tuple(headers.items()))

    async def _fail(
        self,
        context: grpc.aio.ServicerContext,
        failure: RouteFailure,
        started: float,
        request_id: str | None = None,
    ) -> NoReturn:
        """Abort with the §4 status and `route-error-bin` = the serialised RouteError."""
        policy_rev = self.service.config.policy_rev
        error = failure.to_proto(request_id=request_id, policy_rev=policy_rev)
        await self._metadata(context, started, {})
        await context.abort(
            failure.grpc_status,
            failure.message,
            trailing_metadata=((ERROR_METADATA_KEY, error.SerializeToString()),),
        )
        raise AssertionError("context.abort returned")  # it always raises

    async def Plan(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RoutePlan:
        started = time.perf_counter()
        try:
            result = await self.service.plan(request)
        except RouteFailure as failure:
            await self._fail(context, failure, started, request.request_id or None)
        await self._metadata(context, started, plan_headers(result, self.service.invalidations()))
        return result.plan

    async def PlanBatch(
        self, request: router_pb2.PlanBatchRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.PlanBatchResponse:
        started = time.perf_counter()
        try:
            results = await self.service.plan_batch(list(request.plans))
        except RouteFailure as failure:
            await self._fail(context, failure, started)
        policy_rev = self.service.config.policy_rev
        reply = router_pb2.PlanBatchResponse(batch_id=self.service.new_batch_id())
        for item, result in zip(request.plans, results, strict=True):
            reply.plans.append(
                plan_or_error(result, request_id=item.request_id or None, policy_rev=policy_rev)
            )
        await self._metadata(context, started, invalidate_headers(self.service.invalidations()))
        return reply

    async def Prefetch(
        self, request: router_pb2.PrefetchRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.PrefetchResponse:
        started = time.perf_counter()
        try:
            reply = await self.service.prefetch(request)
        except RouteFailure as failure:
            await self._fail(context, failure, started)
        await self._metadata(context, started, {})
        return reply

    async def Feedback(
        self,
        request_iterator: AsyncIterator[router_pb2.RouteFeedback],
        context: grpc.aio.ServicerContext,
    ) -> router_pb2.FeedbackAck:
        """Items are applied as they arrive; an invalid one is logged and not counted."""
        started = time.perf_counter()
        accepted = 0
        async for item in request_iterator:
            accepted += self._accept_feedback(item)
        await self._metadata(context, started, {})
        return router_pb2.FeedbackAck(accepted=accepted)

    async def FeedbackBatch(
        self, request: router_pb2.RouteFeedbackBatch, context: grpc.aio.ServicerContext
    ) -> router_pb2.FeedbackAck:
        """Extension: the `Feedback` stream's items in one message, each handled the same way."""
        started = time.perf_counter()
        accepted = sum(self._accept_feedback(item) for item in request.items)
        await self._metadata(context, started, {})
        return router_pb2.FeedbackAck(accepted=accepted)

    def _accept_feedback(self, item: router_pb2.RouteFeedback) -> int:
        """One item applied on its own (1), or logged and skipped when invalid (0)."""
        try:
            return self.service.feedback([item])
        except RouteFailure as failure:
            log.warning("feedback item rejected", extra={"error": failure.message})
            return 0

    async def Catalog(
        self, request: router_pb2.CatalogRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ModelCatalog:
        started = time.perf_counter()
        reply = self.service.catalog(request.if_none_match or None)
        await self._metadata(context, started, {})
        return reply

    async def Capabilities(
        self, request: router_pb2.CapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.CapabilitiesResponse:
        started = time.perf_counter()
        await self._metadata(context, started, {})
        return self.service.capabilities()


class RouterAdminServicer(router_pb2_grpc.RouterAdminServicer):
    def __init__(self, service: RouterService) -> None:
        self.service = service

    async def Reload(
        self, request: router_pb2.ReloadRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ReloadResponse:
        return await self.service.reload()


def add_router_services(server: grpc.aio.Server, service: RouterService) -> None:
    router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(service), server)
    router_pb2_grpc.add_RouterAdminServicer_to_server(RouterAdminServicer(service), server)
