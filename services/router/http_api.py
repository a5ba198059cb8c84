"""HTTP JSON surface (router-schema §1, §11): Routiium can use it as `ROUTIIUM_ROUTER_URL`."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.pb import router_pb2
from services.router.errors import ErrorCode, RouteFailure, invalid
from services.router.grpc_api import plan_or_error
from services.router.headers import common_headers, invalidate_headers, plan_headers
from services.router.pbjson import JsonShapeError, from_json, to_json
from services.router.route_request import request_from_json
from services.router.service import RouterService, version

log = logging.getLogger(__name__)

JSON = "application/json"


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def error_response(
    failure: RouteFailure, service: RouterService, request_id: str | None
) -> Response:
    error = failure.to_proto(request_id=request_id, policy_rev=service.config.policy_rev)
    headers = {}
    if failure.retry_after_seconds is not None:
        headers["retry-after"] = str(failure.retry_after_seconds)
    return json_response(to_json(error), failure.http_status, headers)


class SchemaHeaders:
    """ASGI middleware adding Router-Schema / Router-Latency / Config-Revision to every reply."""

    def __init__(self, app: ASGIApp, service: RouterService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = common_headers(self.service.config.policy_rev, started)
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.encode(), v.encode()) for k, v in extra.items()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _json_body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise invalid(f"body is not valid JSON ({exc})") from exc


def _request_id(request: Request | None, data: Any) -> str | None:
    """The body's `request_id`, else the `x-request-id` header (errors echo it)."""
    if isinstance(data, dict) and isinstance(data.get("request_id"), str):
        return data["request_id"]
    return request.headers.get("x-request-id") if request is not None else None


def build_http_app(service: RouterService, *, admin_token: str | None) -> ASGIApp:
    async def plan(request: Request) -> Response:
        data: Any = None
        try:
            data = await _json_body(request)
            result = await service.plan(request_from_json(data))
        except RouteFailure as failure:
            return error_response(failure, service, _request_id(request, data))
        return json_response(
            to_json(result.plan), headers=plan_headers(result, service.invalidations())
        )

    async def plan_batch(request: Request) -> Response:
        try:
            data = await _json_body(request)
            items = data.get("plans") if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise invalid('body must be {"plans": [RouteRequest, ...]}')
            parsed: list[router_pb2.RouteRequest | RouteFailure] = []
            for item in items:
                try:
                    parsed.append(request_from_json(item))
                except RouteFailure as failure:
                    parsed.append(failure)
            results = await service.plan_batch(parsed)
        except RouteFailure as failure:
            return error_response(failure, service, request.headers.get("x-request-id"))
        policy_rev = service.config.policy_rev
        plans = []
        for item, result in zip(items, results, strict=True):
            one = plan_or_error(result, request_id=_request_id(None, item), policy_rev=policy_rev)
            plans.append(to_json(getattr(one, one.WhichOneof("result"))))
        return json_response(
            {"plans": plans, "batch_id": service.new_batch_id()},
            headers=invalidate_headers(service.invalidations()),
        )

    async def prefetch(request: Request) -> Response:
        try:
            data = await _json_body(request)
            reply = await service.prefetch(_decode(data, router_pb2.PrefetchRequest))
        except RouteFailure as failure:
            return error_response(failure, service, request.headers.get("x-request-id"))
        return json_response(
            {"alias": reply.alias, "warmed": list(reply.warmed), "unknown": list(reply.unknown)},
            202,
        )

    async def feedback(request: Request) -> Response:
        try:
            data = await _json_body(request)
            raw = data.get("feedback") if isinstance(data, dict) and "feedback" in data else [data]
            if not isinstance(raw, list):
                raise invalid('"feedback" must be a list')
            for item in raw:
                if isinstance(item, dict) and not isinstance(item.get("success"), bool):
                    raise invalid("feedback.success is required (a boolean)")
            accepted = service.feedback(_decode(item, router_pb2.RouteFeedback) for item in raw)
        except RouteFailure as failure:
            return error_response(failure, service, request.headers.get("x-request-id"))
        return json_response({"accepted": accepted}, 202)

    async def catalog(request: Request) -> Response:
        reply = service.catalog(request.headers.get("if-none-match"))
        headers = {"etag": f'"{reply.revision}"', "cache-control": "no-cache"}
        if reply.not_modified:
            return Response(status_code=304, headers=headers)
        body = {"revision": reply.revision, "models": [to_json(m) for m in reply.models]}
        return json_response(body, headers=headers)

    async def capabilities(request: Request) -> Response:
        return json_response(to_json(service.capabilities()))

    async def health(request: Request) -> Response:
        return json_response({"status": "healthy", "service": "router", "version": version()})

    async def reload_routing(request: Request) -> Response:
        denied = _admin_denied(request, admin_token)
        if denied is not None:
            return denied
        reply = await service.reload()
        if not reply.success:
            return _openai_error(500, "server_error", "config_invalid", reply.message)
        return json_response(
            {"success": True, "message": reply.message, "stats": to_json(reply.stats)}
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled HTTP error", exc_info=exc)
        failure = RouteFailure(ErrorCode.INTERNAL, "unexpected router failure")
        return error_response(failure, service, request.headers.get("x-request-id"))

    app = Starlette(
        exception_handlers={Exception: unexpected},
        routes=[
            Route("/route/plan", plan, methods=["POST"]),
            Route("/route/plan_batch", plan_batch, methods=["POST"]),
            Route("/route/prefetch", prefetch, methods=["POST"]),
            Route("/route/feedback", feedback, methods=["POST"]),
            Route("/catalog/models", catalog, methods=["GET"]),
            Route("/capabilities", capabilities, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/reload/routing", reload_routing, methods=["POST"]),
        ],
    )
    return SchemaHeaders(app, service)


def _decode(data: Any, message_type: type[Any]) -> Any:
    try:
        return from_json(data, message_type)
    except JsonShapeError as exc:
        raise invalid(str(exc)) from exc


def _openai_error(status: int, kind: str, code: str, message: str) -> Response:
    """Admin errors use the edge's error body (http-api §2), as `/reload/*` does there."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json_response(body, status)


def _admin_denied(request: Request, admin_token: str | None) -> Response | None:
    if not admin_token:
        return _openai_error(
            401, "authentication_error", "admin_disabled", "SIGNALBOX_ADMIN_TOKEN is not set"
        )
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return _openai_error(
            401, "authentication_error", "missing_admin_token", "admin bearer token required"
        )
    if not hmac.compare_digest(presented.strip().encode(), admin_token.encode()):
        return _openai_error(
            401, "authentication_error", "invalid_admin_token", "admin token is not valid"
        )
    return None
