"""`POST /reload/routing` (http-api §9): the router re-reads its config, then the edge forgets.

Calls `RouterAdmin.Reload` (aliases, catalog, `SIGNALBOX_BACKENDS`, KNN index when its manifest
changed). On success the edge clears its plan cache and re-fetches the catalog, so neither a
cached plan nor `/v1/models` outlives the old config. The router keeps its old config when the
new one is invalid (500 `config_invalid`); an unreachable router is 503 and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from services.common.pb import router_pb2, router_pb2_grpc
from services.edge.catalog_view import CatalogView
from services.edge.errors import ApiError
from services.edge.plan_cache import PlanCache

log = logging.getLogger(__name__)

RELOAD_TIMEOUT_S = 60.0  # a KNN index rebuild may take a while
_STATS = ("policy_rev", "aliases", "knn_aliases", "prefix_rules", "catalog_models", "knn_examples")


class RoutingReloader:
    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        cache: PlanCache | None,
        catalog: CatalogView,
        *,
        timeout_s: float = RELOAD_TIMEOUT_S,
    ) -> None:
        self._stub = router_pb2_grpc.RouterAdminStub(channel) if channel is not None else None
        self._cache = cache
        self._catalog = catalog
        self._timeout_s = timeout_s

    async def __call__(self) -> dict[str, Any]:
        if self._stub is None:
            raise ApiError(400, "config_not_set", "Routing is off (SIGNALBOX_ROUTER_ADDR=off)")
        try:
            reply = await self._stub.Reload(router_pb2.ReloadRequest(), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            log.warning("routing reload: router unreachable", extra={"code": exc.code().name})
            raise ApiError(
                503, "router_unavailable", f"Router unavailable: {exc.code().name}", retry_after=1
            ) from None
        if not reply.success:
            raise ApiError(500, "config_invalid", reply.message or "Routing config is invalid")
        cleared = self._cache.clear() if self._cache is not None else 0
        await self._catalog.refresh(force=True)
        log.info("routing reloaded", extra={"plans_cleared": cleared})
        return {
            "success": True,
            "message": reply.message,
            "stats": {name: getattr(reply.stats, name) for name in _STATS},
        }
