"""One process, one event loop: the gRPC server and the HTTP JSON server over one service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

import uvicorn
from redis.exceptions import RedisError
from starlette.types import ASGIApp

from services.common import metrics
from services.common.config import split_bind
from services.common.grpc_server import GrpcServer
from services.router.grpc_api import SERVICE_NAMES, add_router_services
from services.router.http_api import build_http_app
from services.router.knn import KnnScorer
from services.router.routing_config import load_routing_config
from services.router.service import KnnLoader, RouterService
from services.router.settings import RouterSettings
from services.router.sticky import MemoryStickyStore, RedisStickyStore, StickyStore

log = logging.getLogger(__name__)


class _EmbeddedUvicorn(uvicorn.Server):
    """Uvicorn without its own signal handling: the process's SIGTERM drain owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedHttpServer:
    """An ASGI app served by uvicorn inside the caller's event loop."""

    def __init__(self, app: ASGIApp, bind: str, grace_seconds: float = 5.0) -> None:
        host, port = split_bind(bind)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=max(1, int(grace_seconds)),
        )
        self._server = _EmbeddedUvicorn(config)
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        self._task = asyncio.create_task(self._server.serve(), name="uvicorn")
        while not self._server.started:
            if self._task.done():
                await self._task  # surfaces the bind error
                raise OSError("HTTP server exited during start")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (uvicorn's graceful timeout)."""
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None


def _knn_loader() -> KnnLoader | None:
    """The learned KNN scorer (index dir + exported ONNX model), if the `knn` extra is here."""
    try:
        from services.router.knn_scorer.startup import open_scorer
    except ImportError as exc:
        log.warning(
            "knn extra not installed; knn aliases use their default model",
            extra={"error": str(exc)},
        )
        return None
    return open_scorer


class RouterApp:
    """Load config (aborting on errors), then serve gRPC and HTTP until `stop()`."""

    def __init__(
        self,
        settings: RouterSettings,
        *,
        load_settings: Callable[[], RouterSettings] | None = None,
        knn_scorer: KnnScorer | None = None,
    ) -> None:
        self.settings = settings
        self._load_settings = load_settings or (lambda: settings)
        self._knn_scorer = knn_scorer
        self.service: RouterService | None = None
        self.grpc: GrpcServer | None = None
        self._http: EmbeddedHttpServer | None = None
        self._sticky: StickyStore | None = None
        self.grpc_port = 0
        self.http_port = 0

    async def _sticky_store(self) -> StickyStore:
        s = self.settings
        if not s.redis_url:
            return MemoryStickyStore()
        store = RedisStickyStore.from_url(s.redis_url, s.redis_key_prefix)
        try:
            await store.ping()
        except (RedisError, OSError) as exc:
            log.warning(
                "redis unreachable at start; sticky tokens are skipped until it answers",
                extra={"error": str(exc)},
            )
        return store

    async def start(self) -> None:
        s = self.settings
        config = load_routing_config(s)
        self._sticky = await self._sticky_store()
        scorer, loader = self._knn_scorer, None
        if scorer is None:
            loader = _knn_loader()
            scorer = await asyncio.to_thread(loader, s, None) if loader else None
        self.service = RouterService(
            config,
            sticky=self._sticky,
            load_settings=self._load_settings,
            knn_scorer=scorer,
            knn_loader=loader,
        )
        metrics.KNN_INDEX_SIZE.set_function(self.service.knn_examples)
        self.grpc = GrpcServer(
            s.router_bind,
            SERVICE_NAMES,
            internal_token=s.internal_token,
            grace_seconds=s.shutdown_grace_seconds,
        )
        add_router_services(self.grpc.server, self.service)
        self.grpc_port = await self.grpc.start()
        await self._start_http()
        await self.grpc.set_serving(True)
        log.info(
            "router serving",
            extra={
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "policy_rev": config.policy_rev,
            },
        )

    async def _start_http(self) -> None:
        assert self.service is not None
        app = build_http_app(self.service, admin_token=self.settings.admin_token)
        self._http = EmbeddedHttpServer(
            app, self.settings.router_http_bind, self.settings.shutdown_grace_seconds
        )
        self.http_port = await self._http.start()

    async def stop(self) -> None:
        """Drain both servers: health NOT_SERVING, no new calls, in-flight calls finish."""
        if self.grpc is not None:
            await self.grpc.stop()
            self.grpc = None
        await self.release()

    async def release(self) -> None:
        """Everything but the gRPC server (which `run_until_signal` drains first)."""
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._sticky is not None:
            await self._sticky.close()
            self._sticky = None
