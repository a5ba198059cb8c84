"""The non-learned policies of router-schema §5: alias_table, catalog, prefix, default."""

from __future__ import annotations

from services.common.backends import default_upstream, match_backend, rule_upstream
from services.common.pb import router_pb2
from services.router.config_models import StaticAlias
from services.router.errors import ErrorCode, RouteFailure
from services.router.resolution import STATIC_CACHE_TTL_MS, PlanContext, Resolution


def health_key(ctx: PlanContext, model_id: str) -> str:
    """Health is tracked per catalog model where one is known, else per upstream model_id."""
    return ctx.config.catalog.resolve_model(model_id) or model_id


def _upstream_resolution(
    strategy: str, alias: str, matched: str, upstream: router_pb2.Upstream, ctx: PlanContext
) -> Resolution:
    entry = ctx.config.catalog.for_upstream(upstream)
    return Resolution(
        strategy=strategy,
        alias=alias,
        matched=matched,
        upstream=upstream,
        catalog_entry=entry,
        health_key=entry.id if entry is not None else upstream.model_id,
    )


def ensure_some_healthy(resolution: Resolution, ctx: PlanContext) -> None:
    """UPSTREAM_UNHEALTHY when the upstream and every fallback are degraded."""
    keys = [resolution.health_key, *(health_key(ctx, fb.model_id) for fb in resolution.fallbacks)]
    if ctx.health.all_degraded(keys):
        raise RouteFailure(
            ErrorCode.UPSTREAM_UNHEALTHY,
            f"{resolution.upstream.model_id} is degraded and no healthy fallback exists",
        )


class AliasTablePolicy:
    name = "alias_table"

    async def resolve(
        self, request: router_pb2.RouteRequest, ctx: PlanContext
    ) -> Resolution | None:
        entry = ctx.config.aliases.get(request.alias)
        if not isinstance(entry, StaticAlias):
            return None
        resolution = _upstream_resolution(
            self.name, request.alias, request.alias, entry.to_proto(), ctx
        )
        resolution.fallbacks = [fb.to_proto() for fb in entry.fallbacks]
        resolution.cache_ttl_ms = (
            entry.cache_ttl_ms if entry.cache_ttl_ms is not None else STATIC_CACHE_TTL_MS
        )
        resolution.system_overlay = entry.system_overlay
        resolution.limits = entry.limits
        return resolution


class CatalogPolicy:
    name = "catalog"

    async def resolve(
        self, request: router_pb2.RouteRequest, ctx: PlanContext
    ) -> Resolution | None:
        entry = ctx.config.catalog.get(request.alias)
        if entry is None:
            return None
        upstream = router_pb2.Upstream()
        upstream.CopyFrom(entry.upstream)
        return Resolution(
            strategy=self.name,
            alias=request.alias,
            matched=entry.id,
            upstream=upstream,
            catalog_entry=entry,
            health_key=entry.id,
        )


class PrefixPolicy:
    name = "prefix"

    async def resolve(
        self, request: router_pb2.RouteRequest, ctx: PlanContext
    ) -> Resolution | None:
        rule = match_backend(ctx.config.rules, request.alias)
        if rule is None:
            return None
        upstream = rule_upstream(rule, request.alias)
        return _upstream_resolution(self.name, request.alias, rule.prefix, upstream, ctx)


class DefaultPolicy:
    name = "default"

    async def resolve(
        self, request: router_pb2.RouteRequest, ctx: PlanContext
    ) -> Resolution | None:
        config = ctx.config
        if not config.default_upstream:
            return None
        upstream = default_upstream(
            request.alias,
            request.api,
            openai_base_url=config.openai_base_url,
            upstream_mode=config.upstream_mode,
        )
        return _upstream_resolution(self.name, request.alias, upstream.base_url, upstream, ctx)
