"""The edge FastAPI app: OpenAI-compatible inference, health and status.

`create_app(settings)` builds an app whose lifespan opens every client (gRPC channels,
upstream pool, analytics sink) and closes them in order, so tests and the server share
exactly one wiring. The two inference routes skip FastAPI's own layers (`EdgeApp`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.edge.admin_analytics import router as analytics_admin_router
from services.edge.admin_keys import router as keys_admin_router
from services.edge.convert_route import router as convert_router
from services.edge.errors import install_error_handlers, json_response
from services.edge.health import readiness_checks
from services.edge.lifecycle import Lifecycle
from services.edge.metrics_route import router as metrics_router
from services.edge.middleware import EdgeMiddleware
from services.edge.models_route import router as models_router
from services.edge.reload import router as reload_router
from services.edge.runtime import EdgeRuntime
from services.edge.settings import EdgeSettings
from services.edge.status import package_version, served_routes, status_document

CORS_EXPOSED_HEADERS = (
    "x-request-id",
    "x-route-id",
    "x-resolved-model",
    "router-schema",
    "x-signalbox-overhead-ms",
    "retry-after",
    *(
        f"x-ratelimit-{w}-{k}"
        for w in ("limit", "remaining", "reset")
        for k in ("requests", "tokens")
    ),
)


INFERENCE_ROUTES: dict[str, Literal["chat", "responses"]] = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
}


def _runtime(request: Request) -> EdgeRuntime:
    return request.app.state.runtime


class EdgeApp(FastAPI):
    """FastAPI, except that `POST` to an inference route goes from the app's own middleware
    (CORS, `EdgeMiddleware`) straight to the proxy.

    FastAPI's server-error, telemetry, body-limit, exception and exit-stack layers, the
    router's match over every route and the endpoint machinery were 13 % of the edge's
    profile samples and do nothing for these routes: the proxy reads its own body, answers
    every failure itself and `EdgeMiddleware` catches what escapes. Any other method or
    path (a trailing slash, a `root_path` prefix) takes the full stack as before.
    """

    _inference_stack: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in INFERENCE_ROUTES
        ):
            scope["app"] = self
            if self._inference_stack is None:
                self._inference_stack = self._with_user_middleware(self._inference)
            await self._inference_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _with_user_middleware(self, app: ASGIApp) -> ASGIApp:
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app

    async def _inference(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        proxy = self.state.runtime.proxy
        response = await proxy.handle(request, INFERENCE_ROUTES[scope["path"]])
        await response(scope, receive, send)


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    settings = settings or EdgeSettings()
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await EdgeRuntime.open(settings)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.close()

    app = EdgeApp(
        title="Signalbox edge",
        version=package_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.lifecycle = lifecycle
    install_error_handlers(app)
    app.add_middleware(EdgeMiddleware)
    if settings.cors_origins:
        # Closed unless configured: browsers may call the API only from the listed origins.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-request-id", "openai-organization"],
            expose_headers=list(CORS_EXPOSED_HEADERS),
            max_age=600,
        )

    # Feature routers: one module per surface, each included here.
    app.include_router(reload_router)
    app.include_router(metrics_router)
    app.include_router(models_router)
    app.include_router(convert_router)
    app.include_router(keys_admin_router)
    app.include_router(analytics_admin_router)

    # Served by `EdgeApp` directly; registered too for the prefixed paths and `/status`.
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _runtime(request).proxy.handle(request, "chat")

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        return await _runtime(request).proxy.handle(request, "responses")

    @app.get("/_health/live")
    async def live() -> Response:
        return json_response({"status": "alive"})

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/_health/ready")
    async def ready(request: Request) -> Response:
        if lifecycle.draining:
            checks = {"shutdown": {"status": "error", "error": "draining"}}
            return json_response({"status": "not_ready", "checks": checks}, 503)
        checks = await readiness_checks(_runtime(request))
        if any(check["status"] == "error" for check in checks.values()):
            return json_response({"status": "not_ready", "checks": checks}, 503)
        return json_response({"status": "ready", "checks": checks})

    @app.get("/status")
    async def status(request: Request) -> Response:
        runtime = _runtime(request)
        routes = served_routes(request.app.routes, runtime.reloads.names)
        return json_response(status_document(runtime, routes))

    return app
