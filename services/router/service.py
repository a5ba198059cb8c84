"""The router's operations, independent of transport; gRPC and HTTP are thin adapters over it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata

import httpx
from pydantic import ValidationError

from services.common.backends import match_backend
from services.common.pb import router_pb2
from services.router.catalog import CatalogEntry, ConfigError
from services.router.config_models import KnnAlias
from services.router.errors import SUPPORTED_SCHEMAS, ErrorCode, RouteFailure, invalid
from services.router.feedback import apply_feedback, normalize_feedback
from services.router.health import ModelHealth
from services.router.knn import KnnPolicy, KnnScorer
from services.router.planner import Planner, PlanResult, freeze_key
from services.router.route_request import PRIVACY_MODES
from services.router.routing_config import RoutingConfig, load_routing_config
from services.router.settings import RouterSettings
from services.router.sticky import StickyStore

log = logging.getLogger(__name__)

PLAN_BATCH_MAX = 64
BATCH_CONCURRENCY = max(2, os.cpu_count() or 1)
PROBE_TIMEOUT_SECONDS = 2.0
ROUTER_NAME = "signalbox-router"
HTTP_ENDPOINTS = (
    "/route/plan",
    "/route/plan_batch",
    "/route/prefetch",
    "/route/feedback",
    "/catalog/models",
    "/capabilities",
    "/health",
)
POLICIES = ("alias_table", "knn", "catalog", "prefix", "default")


def version() -> str:
    try:
        return metadata.version("signalbox")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def etag_matches(if_none_match: str | None, revision: str) -> bool:
    """RFC 9110 If-None-Match: `*` or any listed (weak or strong) tag equal to the revision."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip().removeprefix("W/").strip('"')
        if tag in ("*", revision):
            return True
    return False


@contextlib.contextmanager
def typed_errors() -> Iterator[None]:
    """Anything that is not already a RouteFailure becomes INTERNAL (and is logged once)."""
    try:
        yield
    except RouteFailure:
        raise
    except Exception as exc:
        log.exception("unexpected router failure")
        raise RouteFailure(ErrorCode.INTERNAL, "unexpected router failure") from exc


# (settings, scorer being replaced) -> the new scorer, or None when KNN is unavailable.
KnnLoader = Callable[[RouterSettings, KnnScorer | None], KnnScorer | None]


class RouterService:
    def __init__(
        self,
        config: RoutingConfig,
        *,
        sticky: StickyStore,
        load_settings: Callable[[], RouterSettings],
        knn_scorer: KnnScorer | None = None,
        knn_loader: KnnLoader | None = None,
    ) -> None:
        self.health = ModelHealth()
        self.knn = KnnPolicy(knn_scorer)
        self._knn_loader = knn_loader
        self.planner = Planner(sticky=sticky, health=self.health, knn=self.knn)
        self._load_settings = load_settings
        self._config = config
        self._register_freeze_keys(config)

    @property
    def config(self) -> RoutingConfig:
        return self._config

    def _register_freeze_keys(self, config: RoutingConfig) -> None:
        for entry in config.catalog.entries.values():
            key = freeze_key(entry.upstream.base_url, entry.upstream.model_id)
            self.health.remember_freeze_key(entry.id, key)

    def invalidations(self) -> list[str]:
        return self.health.invalidations()

    # ------------------------------------------------------------------ planning

    async def plan(self, request: router_pb2.RouteRequest) -> PlanResult:
        with typed_errors():
            return await self.planner.plan(request, self._config)

    async def plan_batch(
        self, requests: Sequence[router_pb2.RouteRequest | RouteFailure]
    ) -> list[PlanResult | RouteFailure]:
        """Plans in order; a failing element becomes its error in place."""
        if not 1 <= len(requests) <= PLAN_BATCH_MAX:
            raise invalid(f"plans must hold 1 to {PLAN_BATCH_MAX} requests, got {len(requests)}")
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def one(request: router_pb2.RouteRequest | RouteFailure) -> PlanResult | RouteFailure:
            if isinstance(request, RouteFailure):
                return request
            async with gate:
                try:
                    return await self.plan(request)
                except RouteFailure as failure:
                    return failure

        # KNN plans embed off the event loop, so a few at once use every core.
        return list(await asyncio.gather(*(one(r) for r in requests)))

    @staticmethod
    def new_batch_id() -> str:
        return "bat_" + secrets.token_hex(8)

    # ------------------------------------------------------------------ prefetch

    def _alias_known(self, alias: str) -> bool:
        config = self._config
        return (
            alias in config.aliases
            or config.catalog.get(alias) is not None
            or match_backend(config.rules, alias) is not None
            or config.default_upstream
        )

    async def prefetch(self, request: router_pb2.PrefetchRequest) -> router_pb2.PrefetchResponse:
        alias = request.alias.strip()
        if not alias:
            raise invalid("alias is required")
        if not self._alias_known(alias):
            raise RouteFailure(ErrorCode.ALIAS_UNKNOWN, f"unknown alias {alias!r}")
        with typed_errors():
            entry = self._config.aliases.get(alias)
            if isinstance(entry, KnnAlias):
                await self.knn.warm(entry)
            reply = router_pb2.PrefetchResponse(alias=alias)
            targets: dict[str, CatalogEntry] = {}
            for name in request.warm:
                matched = [
                    e
                    for e in self._config.catalog.entries.values()
                    if name in (e.id, e.model.provider)
                ]
                (reply.warmed if matched else reply.unknown).append(name)
                targets.update((e.id, e) for e in matched)
            await self._probe(list(targets.values()))
            return reply

    async def _probe(self, entries: Sequence[CatalogEntry]) -> None:
        """GET {base_url}/models per model (2 s); the answer sets its health status."""
        if not entries:
            return
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_SECONDS) as client:
            results = await asyncio.gather(*(self._probe_one(client, e) for e in entries))
        for entry, (ok, detail) in zip(entries, results, strict=True):
            self.health.record_probe(entry.id, ok=ok, detail=detail)
            log.info("probe", extra={"model": entry.id, "ok": ok, "detail": detail})

    @staticmethod
    async def _probe_one(client: httpx.AsyncClient, entry: CatalogEntry) -> tuple[bool, str]:
        upstream = entry.upstream
        headers = dict(upstream.headers)
        secret = os.environ.get(upstream.auth_env) if upstream.HasField("auth_env") else None
        if secret:
            headers["authorization"] = f"Bearer {secret}"
        try:
            response = await client.get(f"{upstream.base_url}/models", headers=headers)
        except httpx.HTTPError as exc:
            return False, f"probe failed: {type(exc).__name__}"
        # A 4xx proves the server is up (e.g. our key is not the one it wants); 5xx does not.
        return response.status_code < 500, f"probe: HTTP {response.status_code}"

    # ------------------------------------------------------------------ feedback

    def feedback(self, items: Iterable[router_pb2.RouteFeedback]) -> int:
        """Validate every item first, then record them all (nothing half-applied)."""
        normalized = [normalize_feedback(item) for item in items]
        config = self._config
        with typed_errors():
            for fb in normalized:
                apply_feedback(
                    fb, catalog=config.catalog, health=self.health, ledger=self.planner.ledger
                )
                if fb.HasField("quality"):
                    self._learn(fb, config)
        return len(normalized)

    def _learn(self, fb: router_pb2.RouteFeedback, config: RoutingConfig) -> None:
        """A quality signal teaches the KNN scorer (when it learns online)."""
        learn = getattr(self.knn.scorer, "learn", None)
        if learn is None:
            return
        model = config.catalog.resolve_model(fb.model_id) if fb.HasField("model_id") else None
        learn(fb.route_id, fb.quality, model)

    # ------------------------------------------------------------------ catalog, capabilities

    def catalog(self, if_none_match: str | None = None) -> router_pb2.ModelCatalog:
        catalog = self._config.catalog
        aliases = sorted(self._config.aliases)  # for the edge's /v1/models (proto extension)
        if etag_matches(if_none_match, catalog.revision):
            return router_pb2.ModelCatalog(
                revision=catalog.revision, not_modified=True, route_aliases=aliases
            )
        return router_pb2.ModelCatalog(
            revision=catalog.revision,
            models=[self._served_model(entry) for entry in catalog.entries.values()],
            route_aliases=aliases,
        )

    def _served_model(self, entry: CatalogEntry) -> router_pb2.CatalogModel:
        model = router_pb2.CatalogModel()
        model.CopyFrom(entry.model)
        status, reason = self.health.status(entry.id)
        model.status = status
        if reason:
            model.status_reason = reason
        recent = self.health.recent(entry.id)
        if recent is not None:
            model.slos.recent.CopyFrom(recent)
        return model

    @staticmethod
    def capabilities() -> router_pb2.CapabilitiesResponse:
        return router_pb2.CapabilitiesResponse(
            schema_versions=SUPPORTED_SCHEMAS,
            router=router_pb2.RouterIdentity(name=ROUTER_NAME, version=version()),
            endpoints=HTTP_ENDPOINTS,
            features=router_pb2.RouterFeatures(
                plan_batch=True,
                prefetch=True,
                feedback=True,
                stickiness=True,
                fallbacks=True,
                cache=["ttl_ms", "valid_until", "freeze_key", "etag"],
                privacy_modes=PRIVACY_MODES,
                policies=POLICIES,
                explain_detail=True,
            ),
            limits=router_pb2.RouterLimits(plan_batch_max=PLAN_BATCH_MAX),
        )

    # ------------------------------------------------------------------ reload

    def knn_examples(self) -> int:
        return getattr(self.knn.scorer, "examples", 0) if self.knn.scorer else 0

    async def _reload_knn(self, settings: RouterSettings) -> None:
        """Load the (possibly rebuilt) KNN index beside the live one, then swap: plans in
        flight finish on the scorer they started with. A failed load keeps the old one."""
        if self._knn_loader is None:
            return
        scorer = await asyncio.to_thread(self._knn_loader, settings, self.knn.scorer)
        if scorer is not None:
            self.knn.scorer = scorer

    async def reload(self) -> router_pb2.ReloadResponse:
        """Re-read aliases, catalog and backends; swap atomically or keep the old config."""
        settings = self._load_settings()
        try:
            config = await asyncio.to_thread(load_routing_config, settings)
        except (ConfigError, ValidationError) as exc:
            log.error("routing reload failed; previous config kept", extra={"error": str(exc)})
            return router_pb2.ReloadResponse(
                success=False,
                message=f"config_invalid: {exc}",
                stats=self._config.stats(self.knn_examples()),
            )
        await self._reload_knn(settings)
        self._register_freeze_keys(config)
        self._config = config
        return router_pb2.ReloadResponse(
            success=True,
            message="routing config reloaded",
            stats=config.stats(self.knn_examples()),
        )
