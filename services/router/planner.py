"""RouteRequest → RoutePlan: stickiness, the policy chain (§5), and the plan's dressing."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.exceptions import RedisError

from services.common.backends import new_route_id
from services.common.pb import router_pb2
from services.router.catalog import Catalog
from services.router.config_models import AliasLimits
from services.router.errors import SCHEMA_VERSION, ErrorCode, RouteFailure
from services.router.health import ModelHealth
from services.router.knn import KnnPolicy
from services.router.policies import (
    AliasTablePolicy,
    CatalogPolicy,
    DefaultPolicy,
    PrefixPolicy,
    ensure_some_healthy,
)
from services.router.resolution import PlanContext, Policy, Resolution
from services.router.route_request import normalize_request, output_tokens, prompt_tokens
from services.router.routing_config import RoutingConfig
from services.router.sticky import TOKEN_TTL_SECONDS, StickyState, StickyStore, is_token, new_token

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256
OVERLOAD_RETRY_MS = 100
LEDGER_SIZE = 100_000
STICKY = "sticky"


def freeze_key(base_url: str, model_id: str) -> str:
    return "frz_" + hashlib.sha256(f"{base_url}|{model_id}".encode()).hexdigest()[:12]


def rfc3339(unix_seconds: float) -> str:
    return (
        datetime.fromtimestamp(unix_seconds, UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


@dataclass(frozen=True)
class PlanResult:
    plan: router_pb2.RoutePlan
    cache_status: str  # "hit" (sticky honoured) or "miss"


class InFlightGate:
    """Sheds load past `limit` concurrent plans instead of queueing behind them."""

    def __init__(self, limit: int = MAX_IN_FLIGHT) -> None:
        self.limit = limit
        self.in_flight = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise RouteFailure(
                ErrorCode.ROUTER_OVERLOADED,
                f"more than {self.limit} plans in flight",
                retry_hint_ms=OVERLOAD_RETRY_MS,
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


class RouteLedger:
    """Recent route_id → model, so feedback without `model_id` still reaches a window."""

    def __init__(self, size: int = LEDGER_SIZE) -> None:
        self._routes: OrderedDict[str, str] = OrderedDict()
        self._size = size

    def remember(self, route_id: str, model: str) -> None:
        self._routes[route_id] = model
        if len(self._routes) > self._size:
            self._routes.popitem(last=False)

    def model_for(self, route_id: str) -> str | None:
        return self._routes.get(route_id)


def _struct(data: dict[str, object]) -> router_pb2.Policy:
    policy = router_pb2.Policy()
    policy.explain_detail.update(data)
    return policy


def _fill_limits(limits: router_pb2.Limits, res: Resolution) -> None:
    """The alias's caps; the input cap is the tighter of the alias's and the context window."""
    alias = res.limits or AliasLimits()
    entry = res.catalog_entry
    context = entry.context_tokens if entry is not None else None
    inputs = [n for n in (context, alias.max_input_tokens) if n is not None]
    if inputs:
        limits.max_input_tokens = min(inputs)
    if alias.max_output_tokens is not None:
        limits.max_output_tokens = alias.max_output_tokens
    if alias.timeout_ms is not None:
        limits.timeout_ms = alias.timeout_ms


def _valid_until(res: Resolution, catalog: Catalog, now: datetime) -> str | None:
    """The first future `deprecates_at` among the plan's models: no cache outlives a model."""
    entries = [res.catalog_entry, *(catalog.for_upstream(fb) for fb in res.fallbacks)]
    retiring = [
        e.deprecates_at
        for e in entries
        if e is not None and e.deprecates_at is not None and e.deprecates_at > now
    ]
    return rfc3339(min(retiring).timestamp()) if retiring else None


def build_plan(
    res: Resolution, request: router_pb2.RouteRequest, config: RoutingConfig, health: ModelHealth
) -> router_pb2.RoutePlan:
    """Dress a resolution: hints, limits, overlays, cache directive and policy block."""
    plan = router_pb2.RoutePlan(
        schema_version=SCHEMA_VERSION,
        route_id=new_route_id(),
        upstream=res.upstream,
        fallbacks=res.fallbacks,
        policy_rev=config.policy_rev,
        content_used=res.content_used,
    )
    _fill_limits(plan.limits, res)
    entry = res.catalog_entry
    if entry is not None:
        out = res.output_tokens if res.output_tokens is not None else output_tokens(request)
        cost = entry.est_cost_micro(prompt_tokens(request), out)
        hints = plan.hints
        if cost is not None:
            hints.est_cost_micro = cost
            hints.currency = entry.model.cost.currency or "USD"
        if entry.tier:
            hints.tier = entry.tier
        if entry.model.HasField("provider"):
            hints.provider = entry.model.provider
        recent = health.recent(entry.id)
        if recent is not None and recent.HasField("p95_ms"):
            hints.est_latency_ms = round(recent.p95_ms)
        elif entry.model.slos.HasField("target_p95_ms"):
            hints.est_latency_ms = entry.model.slos.target_p95_ms
    if res.system_overlay:
        overlay = res.system_overlay.encode()
        plan.prompt_overlays.system_overlay = res.system_overlay
        plan.prompt_overlays.overlay_fingerprint = "sha256:" + hashlib.sha256(overlay).hexdigest()
        plan.prompt_overlays.overlay_size_bytes = len(overlay)
    plan.cache.ttl_ms = res.cache_ttl_ms
    plan.cache.etag = config.catalog.revision
    plan.cache.freeze_key = freeze_key(res.upstream.base_url, res.upstream.model_id)
    until = _valid_until(res, config.catalog, datetime.now(UTC))
    if until is not None:
        plan.cache.valid_until = until
    plan.policy.CopyFrom(_struct(res.detail()))
    plan.policy.revision = config.policy_rev
    plan.policy.id = res.strategy
    plan.policy.explain = res.explain_line()
    return plan


class Planner:
    """Applies §5 in order; sticky first, ALIAS_UNKNOWN when nothing matches."""

    def __init__(
        self, *, sticky: StickyStore, health: ModelHealth, knn: KnnPolicy | None = None
    ) -> None:
        self.sticky = sticky
        self.health = health
        self.knn = knn or KnnPolicy()
        self.policies: Sequence[Policy] = (
            AliasTablePolicy(),
            self.knn,
            CatalogPolicy(),
            PrefixPolicy(),
            DefaultPolicy(),
        )
        self.gate = InFlightGate()
        self.ledger = RouteLedger()

    async def plan(self, request: router_pb2.RouteRequest, config: RoutingConfig) -> PlanResult:
        with self.gate.slot():
            req = normalize_request(request)
            ctx = PlanContext(config, self.health)
            honoured = await self._honour_token(req, ctx)
            if honoured is not None:
                return honoured
            res = await self._resolve(req, ctx)
            plan = build_plan(res, req, config, self.health)
            if res.on_planned is not None:
                res.on_planned(plan.route_id)
            if res.sticky_turns > 0:
                await self._issue_token(plan, req, res)
            self._remember(plan, res.health_key)
            return PlanResult(plan, "miss")

    async def _resolve(self, req: router_pb2.RouteRequest, ctx: PlanContext) -> Resolution:
        for policy in self.policies:
            res = await policy.resolve(req, ctx)
            if res is not None:
                if res.strategy != self.knn.name:
                    ensure_some_healthy(res, ctx)
                return res
        raise RouteFailure(
            ErrorCode.ALIAS_UNKNOWN,
            f"no alias, catalog model or prefix rule matches {req.alias!r} "
            "and the default upstream is off",
        )

    def _remember(self, plan: router_pb2.RoutePlan, model: str) -> None:
        self.ledger.remember(plan.route_id, model)
        self.health.remember_freeze_key(model, plan.cache.freeze_key)

    async def _issue_token(
        self, plan: router_pb2.RoutePlan, req: router_pb2.RouteRequest, res: Resolution
    ) -> None:
        token, expires_at = new_token(), time.time() + TOKEN_TTL_SECONDS
        plan.stickiness.plan_token = token
        plan.stickiness.max_turns = res.sticky_turns
        plan.stickiness.expires_at = rfc3339(expires_at)
        plan.stickiness.turns_used = 1
        state = StickyState(
            alias=req.alias,
            api=req.api,
            plan=plan,
            model=res.health_key,
            caps=tuple(req.caps),
            turns_used=1,
            max_turns=res.sticky_turns,
            expires_at=expires_at,
        )
        try:
            await self.sticky.put(token, state)
        except (RedisError, OSError) as exc:
            log.warning("sticky token not stored; plan sent without one", extra={"error": str(exc)})
            plan.ClearField("stickiness")

    async def _honour_token(
        self, req: router_pb2.RouteRequest, ctx: PlanContext
    ) -> PlanResult | None:
        """§7: the stored plan again, or None (a bad or spent token is never an error)."""
        token = req.plan_token
        if not is_token(token):
            return None
        try:
            state = await self.sticky.get(token)
            if not self._honourable(state, req, ctx):
                return None
            turns = await self.sticky.next_turn(token)
        except (RedisError, OSError) as exc:
            log.warning("sticky store unavailable; planning afresh", extra={"error": str(exc)})
            return None
        assert state is not None
        if not 0 < turns <= state.max_turns:
            return None
        plan = router_pb2.RoutePlan()
        plan.CopyFrom(state.plan)
        plan.route_id = new_route_id()
        plan.stickiness.turns_used = turns
        plan.cache.ttl_ms = 0
        plan.content_used = "none"
        plan.policy.CopyFrom(
            _struct({"strategy": STICKY, "alias": req.alias, "matched": state.model})
        )
        plan.policy.revision = ctx.config.policy_rev
        plan.policy.id = STICKY
        plan.policy.explain = f"sticky turn {turns}/{state.max_turns} -> {plan.upstream.model_id}"
        self._remember(plan, state.model)
        return PlanResult(plan, "hit")

    def _honourable(
        self, state: StickyState | None, req: router_pb2.RouteRequest, ctx: PlanContext
    ) -> bool:
        if state is None or state.alias != req.alias or state.turns_used >= state.max_turns:
            return False
        if state.plan.policy_rev != ctx.config.policy_rev:
            return False  # the config changed under the token; plan with the new one
        entry = ctx.config.catalog.get(state.model)
        return (
            entry is not None
            and not entry.missing_caps(req.caps)
            and not self.health.is_degraded(state.model)
        )
