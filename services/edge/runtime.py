"""Everything the edge opens at start and closes at stop, in one place.

Built in the app's lifespan: gRPC channels to the router, keys and analytics services,
the upstream HTTP pool, the analytics sink, the price table, the database and Redis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
import redis.asyncio as aioredis

from services.common.backends import parse_backends
from services.common.db import Database, connect
from services.common.grpc_client import open_channel
from services.common.pricing import PriceTable
from services.edge.analytics_sink import AnalyticsSink
from services.edge.auth import Authenticator, VerifiedKeyCache
from services.edge.catalog_view import CatalogView
from services.edge.key_invalidation import KeyInvalidationListener
from services.edge.limits import Limiter, MemoryCounters, RedisCounters
from services.edge.mcp import McpManager
from services.edge.plan_cache import PlanCache
from services.edge.proxy import InferenceProxy
from services.edge.reload import ReloadRegistry
from services.edge.response_store import ResponseStore
from services.edge.route_feedback import FeedbackSender
from services.edge.routing import Planner
from services.edge.routing_reload import RoutingReloader
from services.edge.settings import EdgeSettings
from services.edge.system_prompt import SystemPrompts
from services.edge.upstream_client import UpstreamClient, UpstreamTimeouts

log = logging.getLogger(__name__)

DEPENDENCIES = ("router", "keys", "analytics")
SINK_CLOSE_TIMEOUT_S = 5.0
UPSTREAM_MAX_CONNECTIONS = 1000


@dataclass
class EdgeRuntime:
    settings: EdgeSettings
    channels: dict[str, grpc.aio.Channel | None]
    http: UpstreamClient
    prices: PriceTable
    database: Database
    redis: aioredis.Redis | None
    sink: AnalyticsSink | None
    planner: Planner
    authenticator: Authenticator
    key_invalidation: KeyInvalidationListener | None
    limiter: Limiter
    system_prompts: SystemPrompts
    response_store: ResponseStore
    proxy: InferenceProxy = field(init=False)
    # Features register their `POST /reload/<name>` handlers here while opening (http-api §9).
    reloads: ReloadRegistry = field(default_factory=ReloadRegistry)
    # Routing (router-schema §10, §11): feedback sender (router on) and the catalog poller.
    feedback: FeedbackSender | None = None
    catalog: CatalogView = field(default_factory=lambda: CatalogView(None))
    mcp: McpManager = field(default_factory=McpManager)

    def __post_init__(self) -> None:
        self.proxy = InferenceProxy(
            settings=self.settings,
            authenticator=self.authenticator,
            planner=self.planner,
            http=self.http,
            prices=self.prices,
            emit=self.sink.submit if self.sink is not None else None,
            limiter=self.limiter,
            system_prompts=self.system_prompts,
            response_store=self.response_store,
            mcp=self.mcp,
        )
        self.reloads.register("mcp", self.mcp.reload)
        self.reloads.register("system_prompt", self.system_prompts.reload)
        if self.feedback is not None:
            self.proxy.finish_hooks.append(self.feedback.on_finished)
        self.reloads.register(
            "routing", RoutingReloader(self.channels["router"], self.planner.cache, self.catalog)
        )

    @classmethod
    async def open(cls, settings: EdgeSettings) -> EdgeRuntime:
        """Fail fast on bad config (pricing, catalog); dependencies may still be down."""
        prices = PriceTable.load(settings.pricing_config, settings.catalog_path)
        channels = {
            name: open_channel(addr, settings.internal_token)
            if (addr := settings.dependency_addr(name))
            else None
            for name in DEPENDENCIES
        }
        system_prompts = SystemPrompts(settings.system_prompt_config)
        database = await connect(settings.database_url, settings.sqlite_path, lazy=True)
        sink = None
        if (addr := settings.dependency_addr("analytics")) is not None:
            sink = AnalyticsSink(
                addr, internal_token=settings.internal_token, spool_dir=settings.analytics_spool_dir
            )
            await sink.start()
        http = UpstreamClient(
            max_connections=UPSTREAM_MAX_CONNECTIONS,
            timeouts=UpstreamTimeouts(
                settings.upstream_timeout_ms / 1000, settings.upstream_connect_timeout_ms / 1000
            ),
        )
        planner = Planner(
            channels["router"],
            rules=parse_backends(settings.backends, settings.upstream_mode),
            openai_base_url=settings.openai_base_url,
            upstream_mode=settings.upstream_mode,
            strict=settings.router_strict,
            timeout_ms=settings.router_timeout_ms,
            cache=PlanCache(default_ttl_ms=settings.cache_ttl_ms, stale_ms=settings.cache_stale_ms),
        )
        key_cache = VerifiedKeyCache(settings.keys_cache_ms)
        authenticator = Authenticator(
            settings.auth_mode or "passthrough", channels["keys"], key_cache
        )
        redis = aioredis.from_url(settings.redis_url) if settings.redis_url else None
        key_invalidation = None
        if redis is not None and settings.auth_mode == "managed":
            key_invalidation = KeyInvalidationListener(redis, settings.redis_key_prefix, key_cache)
            key_invalidation.start()
        limiter = Limiter(
            RedisCounters(redis) if redis is not None else MemoryCounters(),
            settings.redis_key_prefix,
            prices,
            rate_fail_open=settings.rate_limit_fail_open,
            budget_fail_open=settings.budget_fail_open,
        )
        mcp = await McpManager.open(
            settings.mcp_config,
            connect_timeout_s=settings.mcp_connect_timeout_ms / 1000,
            default_max_rounds=settings.mcp_max_rounds,
        )
        router_channel = channels["router"]
        feedback = FeedbackSender(router_channel, prices) if router_channel is not None else None
        if feedback is not None:
            feedback.start()
        catalog = CatalogView(router_channel)
        catalog.start()
        log.info(
            "edge runtime opened",
            extra={
                "auth_mode": settings.auth_mode,
                "dependencies": {n: settings.dependency_addr(n) or "off" for n in DEPENDENCIES},
            },
        )
        return cls(
            settings,
            channels,
            http,
            prices,
            database,
            redis,
            sink,
            planner,
            authenticator,
            key_invalidation,
            feedback=feedback,
            catalog=catalog,
            limiter=limiter,
            system_prompts=system_prompts,
            response_store=ResponseStore(database, settings.response_store_ttl_seconds),
            mcp=mcp,
        )

    async def close(self) -> None:
        """Flush analytics first (it may still need the network), then release the rest."""
        if self.sink is not None:
            await self.sink.close(SINK_CLOSE_TIMEOUT_S)
        if self.key_invalidation is not None:
            await self.key_invalidation.close()
        await self.mcp.close()
        await self.limiter.close()
        if self.feedback is not None:
            await self.feedback.close()
        await self.catalog.close()
        await self.http.aclose()
        for channel in self.channels.values():
            if channel is not None:
                await channel.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.database.close()
