"""Getting a `RoutePlan` for a request (router-schema-1.1 §4, §9).

The router is asked over gRPC under `SIGNALBOX_ROUTER_TIMEOUT_MS`. Typed `RouteError`s always
reach the client; untyped failures (timeout, unreachable, malformed reply) become errors in
strict mode and a local plan otherwise, so the router is never a single point of failure.
Router plans that allow it are kept in the edge plan cache (`plan_cache.py`, §7): a fresh entry
skips the router, and a recently expired one stands in for it after an untyped failure.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import grpc

from services.common.backends import BackendRule, local_plan
from services.common.pb import router_pb2, router_pb2_grpc
from services.edge.errors import ApiError
from services.edge.plan_cache import PlanCache, parse_invalidate_header, plan_cache_key
from services.edge.upstream import Target
from services.keys.scopes import model_allowed

log = logging.getLogger(__name__)

ROUTE_ERROR_KEY = "route-error-bin"

Backend = Literal["router", "backends_env", "default"]
Failure = Literal["timeout", "unreachable", "malformed"]

# router-schema §4: typed code -> (status, edge code)
_TYPED: dict[str, tuple[int, str]] = {
    "ALIAS_UNKNOWN": (404, "model_not_found"),
    "NO_ROUTE": (409, "no_route"),
    "POLICY_DENY": (403, "policy_denied"),
    "BUDGET_EXCEEDED": (409, "budget_exceeded"),
    "ROUTER_OVERLOADED": (503, "router_overloaded"),
    "UPSTREAM_UNHEALTHY": (502, "upstream_unhealthy"),
    "INVALID_REQUEST": (400, "invalid_request"),
    "UNSUPPORTED_SCHEMA": (409, "unsupported_schema"),
    "INTERNAL": (500, "internal_error"),
}
_STRICT: dict[Failure, tuple[int, str, str]] = {
    "timeout": (504, "router_timeout", "Router did not answer in time"),
    "unreachable": (503, "router_unavailable", "Router unavailable"),
    "malformed": (502, "router_error", "Router returned an invalid plan"),
}


@dataclass(frozen=True)
class PlanResult:
    """The plan plus how it was obtained (headers and analytics need both)."""

    plan: router_pb2.RoutePlan
    backend: Backend
    route_cache: str | None
    router_latency_ms: float | None
    # True when the plan came from the edge's own cache (fresh or stale): feedback `cache_hit`.
    from_edge_cache: bool = False

    @property
    def strategy(self) -> str | None:
        return self.plan.policy.id if self.plan.policy.HasField("id") else None

    @property
    def policy_rev(self) -> str | None:
        if self.plan.HasField("policy_rev"):
            return self.plan.policy_rev
        return self.plan.policy.revision if self.plan.policy.HasField("revision") else None


def route_error_to_api(error: router_pb2.RouteError) -> ApiError:
    """A typed router error as the client sees it; unknown codes count as router errors."""
    status, code = _TYPED.get(error.code, (502, "router_error"))
    retry_after = math.ceil(error.retry_hint_ms / 1000) if error.HasField("retry_hint_ms") else None
    message = error.message if error.HasField("message") else error.code
    param = "model" if code == "model_not_found" else None
    return ApiError(status, code, message, param=param, retry_after=retry_after)


def in_scope_targets(targets: Sequence[Target], scopes: Sequence[str] | None) -> list[Target]:
    """The primary plus the fallbacks the key's `models:` scopes admit.

    The primary serves the model the key was checked against; a fallback to a model the key
    may not use is skipped rather than silently widening what the key can reach.
    """
    return [t for t in targets if t.fallback_index is None or model_allowed(scopes, t.model_id)]


def _typed_error(exc: grpc.aio.AioRpcError) -> router_pb2.RouteError | None:
    for key, value in exc.trailing_metadata() or ():
        if key == ROUTE_ERROR_KEY and isinstance(value, bytes):
            try:
                return router_pb2.RouteError.FromString(value)
            except Exception:  # a garbled trailer is an untyped failure, not a crash
                log.warning("unparseable route-error-bin trailer")
                return None
    return None


def _classify(exc: grpc.aio.AioRpcError) -> Failure:
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return "unreachable"
    return "malformed"


def _is_well_formed(plan: router_pb2.RoutePlan) -> bool:
    upstream = plan.upstream
    return bool(plan.route_id and upstream.base_url and upstream.model_id and upstream.mode)


class Planner:
    """Edge cache, then the router, then (non-strict) a stale plan or local resolution."""

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        *,
        rules: Sequence[BackendRule],
        openai_base_url: str,
        upstream_mode: str,
        strict: bool,
        timeout_ms: int,
        cache: PlanCache | None = None,
    ) -> None:
        self._stub = router_pb2_grpc.RouterStub(channel) if channel is not None else None
        self.cache = cache
        self._rules = tuple(rules)
        self._openai_base_url = openai_base_url
        self._upstream_mode = upstream_mode
        self._strict = strict
        self._timeout_s = timeout_ms / 1000
        self.last_policy_rev: str | None = None

    @property
    def enabled(self) -> bool:
        return self._stub is not None

    def local(self, request: router_pb2.RouteRequest) -> PlanResult:
        plan = local_plan(
            request.alias,
            request.api,
            self._rules,
            openai_base_url=self._openai_base_url,
            upstream_mode=self._upstream_mode,
        )
        return PlanResult(plan, plan.policy.id, None, None)  # type: ignore[arg-type]

    async def plan(self, request: router_pb2.RouteRequest) -> PlanResult:
        if self._stub is None:
            return self.local(request)
        cache = self.cache if self.cache is not None and self.cache.enabled else None
        key = plan_cache_key(request) if cache is not None else None
        if cache is not None and key is not None:
            cached = cache.fresh(key)
            if cached is not None:
                return PlanResult(cached, "router", "hit", None, from_edge_cache=True)
        started = time.perf_counter()
        try:
            call = self._stub.Plan(request, timeout=self._timeout_s)
            plan = await call
            metadata = dict(await call.initial_metadata() or ())
        except grpc.aio.AioRpcError as exc:
            typed = _typed_error(exc)
            if typed is not None:
                raise route_error_to_api(typed) from None
            return self._untyped_failure(request, key, _classify(exc), exc.code().name)
        latency_ms = (time.perf_counter() - started) * 1000
        if not _is_well_formed(plan):
            return self._untyped_failure(request, key, "malformed", "incomplete plan")
        route_cache = "hit" if metadata.get("x-route-cache") == "hit" else "miss"
        result = PlanResult(plan, "router", route_cache, latency_ms)
        self.last_policy_rev = result.policy_rev or self.last_policy_rev
        if cache is not None and key is not None:
            self._update_cache(cache, key, plan, metadata)
        return result

    @staticmethod
    def _update_cache(
        cache: PlanCache, key: bytes, plan: router_pb2.RoutePlan, metadata: dict[str, object]
    ) -> None:
        """Revision first (it may purge), then the router's invalidations, then the new plan."""
        revision = metadata.get("config-revision")
        cache.observe_revision(revision if isinstance(revision, str) else None)
        invalidate = metadata.get("x-route-invalidate")
        if isinstance(invalidate, str):
            cache.invalidate(parse_invalidate_header(invalidate))
        cache.store(key, plan)

    def _untyped_failure(
        self,
        request: router_pb2.RouteRequest,
        key: bytes | None,
        failure: Failure,
        detail: str,
    ) -> PlanResult:
        log.warning(
            "router plan failed",
            extra={"failure": failure, "detail": detail, "strict": self._strict},
        )
        if self._strict:
            status, code, message = _STRICT[failure]
            raise ApiError(status, code, message, retry_after=1)
        if self.cache is not None and key is not None:
            stale = self.cache.stale(key)
            if stale is not None:
                return PlanResult(stale, "router", "stale", None, from_edge_cache=True)
        return self.local(request)
