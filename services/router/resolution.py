"""What a policy decides, before it is dressed as a RoutePlan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.common.pb import router_pb2
from services.router.catalog import CatalogEntry
from services.router.config_models import AliasLimits
from services.router.health import ModelHealth
from services.router.routing_config import RoutingConfig

STATIC_CACHE_TTL_MS = 15_000


@dataclass
class Resolution:
    strategy: str
    alias: str
    matched: str
    upstream: router_pb2.Upstream
    health_key: str
    catalog_entry: CatalogEntry | None = None
    fallbacks: list[router_pb2.Fallback] = field(default_factory=list)
    cache_ttl_ms: int = STATIC_CACHE_TTL_MS
    system_overlay: str | None = None
    limits: AliasLimits | None = None  # the alias's own caps, merged with the catalog's
    output_tokens: int | None = None
    content_used: str = "none"
    sticky_turns: int = 0
    explain: str | None = None
    explain_detail: dict[str, Any] | None = None
    on_planned: Callable[[str], None] | None = None  # gets the route_id (KNN online learning)

    def detail(self) -> dict[str, Any]:
        if self.explain_detail is not None:
            return self.explain_detail
        return {"strategy": self.strategy, "alias": self.alias, "matched": self.matched}

    def explain_line(self) -> str:
        if self.explain is not None:
            return self.explain
        return f"{self.strategy} {self.matched} -> {self.upstream.model_id}"


@dataclass(frozen=True)
class PlanContext:
    config: RoutingConfig
    health: ModelHealth


class Policy(Protocol):
    """One step of router-schema §5; `None` passes the request to the next step."""

    name: str

    async def resolve(
        self, request: router_pb2.RouteRequest, ctx: PlanContext
    ) -> Resolution | None: ...
