"""The KNN policy frame (router-schema §6): candidates, costs, trade-off, default model, plan.

The learned part (embedding, index, neighbour scoring) is a `KnnScorer` plugged into
`KnnPolicy`. Without one the policy still filters candidates and answers with the alias's
default model, `fallback_reason: "knn_unavailable"`, so `"policy":"knn"` aliases work from
day one and the scorer only has to rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.common.pb import router_pb2
from services.router.catalog import CatalogEntry
from services.router.config_models import KnnAlias
from services.router.errors import ErrorCode, RouteFailure
from services.router.resolution import PlanContext, Resolution
from services.router.route_request import (
    budget_micro,
    latency_target_ms,
    output_tokens,
    prompt_tokens,
    tradeoff_override,
)

KNN_UNAVAILABLE = "knn_unavailable"


@dataclass(frozen=True)
class Candidate:
    entry: CatalogEntry
    cost_units: int
    est_cost_micro: int | None
    normalized_cost: float

    @property
    def id(self) -> str:
        return self.entry.id


@dataclass(frozen=True)
class KnnQuery:
    """Everything a scorer needs; candidates are already filtered and costed."""

    alias: str
    entry: KnnAlias
    request: router_pb2.RouteRequest
    candidates: Sequence[Candidate]
    tradeoff: float
    lam: float


@dataclass(frozen=True)
class KnnDecision:
    """A scorer's verdict. `chosen=None` means: use the default model (§6 step 8)."""

    chosen: str | None
    fallback_reason: str | None
    ranking: Sequence[str] = ()  # candidate ids, best first
    content_used: str = "none"
    detail: dict[str, Any] = field(default_factory=dict)  # k, kept, neighbors, candidates, …


_UNAVAILABLE = KnnDecision(chosen=None, fallback_reason=KNN_UNAVAILABLE)


class KnnScorer(Protocol):
    """The learned half of the KNN policy (embedding model + FAISS index)."""

    examples: int

    async def decide(self, query: KnnQuery) -> KnnDecision: ...

    async def warm(self, entry: KnnAlias) -> None: ...


def _exclusion_reasons(
    entry: CatalogEntry, request: router_pb2.RouteRequest, prompt: int, out: int
) -> list[str]:
    reasons = []
    if entry.missing_caps(request.caps):
        reasons.append("caps")
    context = entry.context_tokens
    if context is not None and prompt + out > context:
        reasons.append("context")
    budget, cost = budget_micro(request), entry.est_cost_micro(prompt, out)
    if budget is not None and cost is not None and cost > budget:
        reasons.append("budget")
    target, slos = latency_target_ms(request), entry.model.slos
    if target is not None and slos.HasField("target_p95_ms") and slos.target_p95_ms > target:
        reasons.append("latency")
    return reasons


def filter_candidates(
    alias: KnnAlias, request: router_pb2.RouteRequest, ctx: PlanContext, out: int
) -> tuple[list[CatalogEntry], list[dict[str, str]]]:
    """§6 step 1: C and the excluded models with the first reason each."""
    catalog, prompt = ctx.config.catalog, prompt_tokens(request)
    models = [e for e in (catalog.get(m) for m in alias.candidates) if e is not None]
    skip_degraded = not ctx.health.all_degraded(e.id for e in models)
    kept: list[CatalogEntry] = []
    excluded: list[dict[str, str]] = []
    all_reasons: list[list[str]] = []
    for entry in models:
        reasons = _exclusion_reasons(entry, request, prompt, out)
        if skip_degraded and ctx.health.is_degraded(entry.id):
            reasons.insert(0, "degraded")
        if reasons:
            excluded.append({"model": entry.id, "reason": reasons[0]})
            all_reasons.append(reasons)
        else:
            kept.append(entry)
    if not kept:
        if all_reasons and all(reasons == ["budget"] for reasons in all_reasons):
            raise RouteFailure(
                ErrorCode.BUDGET_EXCEEDED, "every candidate costs more than the budget"
            )
        summary = ", ".join(f"{e['model']}: {e['reason']}" for e in excluded)
        raise RouteFailure(ErrorCode.NO_ROUTE, f"every candidate was filtered out ({summary})")
    return kept, excluded


def cost_candidates(entries: Sequence[CatalogEntry], prompt: int, out: int) -> list[Candidate]:
    """§6 step 3: absolute and max-normalised cost per candidate."""
    units = [entry.cost_units(prompt, out) for entry in entries]
    top = max(units, default=0)
    return [
        Candidate(
            entry=entry,
            cost_units=cost,
            est_cost_micro=entry.est_cost_micro(prompt, out),
            normalized_cost=cost / top if top else 0.0,
        )
        for entry, cost in zip(entries, units, strict=True)
    ]


def _cheapest_first(candidates: Sequence[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.cost_units, c.id))


def rank_candidates(
    alias: KnnAlias, candidates: Sequence[Candidate], decision: KnnDecision
) -> list[Candidate]:
    """Chosen model first (§6 step 8 when the scorer defers), then score order, then cost."""
    by_id = {c.id: c for c in candidates}
    scored = [by_id[m] for m in decision.ranking if m in by_id]
    if decision.chosen in by_id:
        chosen = by_id[decision.chosen]
    elif alias.default_model in by_id:
        chosen = by_id[alias.default_model]
    elif scored:
        chosen = scored[0]
    else:
        chosen = _cheapest_first(candidates)[0]
    order = dict.fromkeys(c.id for c in [*scored, *_cheapest_first(candidates)])
    return [chosen, *(by_id[m] for m in order if m != chosen.id)]


def _explain(alias: KnnAlias, t: float, lam: float, chosen: str, decision: KnnDecision) -> str:
    detail = decision.detail
    line = (
        f"knn k={detail.get('k', alias.k)} kept={detail.get('kept', 0)} "
        f"t={t:.2f} lambda={lam:.2f} -> {chosen}"
    )
    score = next(
        (c.get("score") for c in detail.get("candidates", ()) if c.get("model") == chosen), None
    )
    if score is not None:
        line += f" score={score:.3f}"
    if detail.get("confidence") is not None:
        line += f" conf={detail['confidence']:.2f}"
    if decision.fallback_reason:
        line += f" default ({decision.fallback_reason})"
    return line


class KnnPolicy:
    name = "knn"

    def __init__(self, scorer: KnnScorer | None = None) -> None:
        self.scorer = scorer

    async def warm(self, alias: KnnAlias) -> None:
        if self.scorer is not None:
            await self.scorer.warm(alias)

    async def resolve(
        self, request: router_pb2.RouteRequest, ctx: PlanContext
    ) -> Resolution | None:
        alias = ctx.config.aliases.get(request.alias)
        if not isinstance(alias, KnnAlias):
            return None
        started = time.perf_counter()
        out = output_tokens(request, alias.default_output_tokens)
        kept, excluded = filter_candidates(alias, request, ctx, out)
        candidates = cost_candidates(kept, prompt_tokens(request), out)
        override = tradeoff_override(request)
        t = alias.default_tradeoff if override is None else override
        lam = alias.lambda_max * (1 - t)
        query = KnnQuery(request.alias, alias, request, candidates, t, lam)
        decision = await self.scorer.decide(query) if self.scorer else _UNAVAILABLE
        ranked = rank_candidates(alias, candidates, decision)
        chosen = ranked[0]
        detail: dict[str, Any] = {
            "strategy": self.name,
            "alias": request.alias,
            "k": alias.k,
            "kept": 0,
            "tradeoff": t,
            "lambda": lam,
            "neighbors": [],
            "candidates": [
                {
                    "model": c.id,
                    "predicted_quality": None,
                    "support": 0,
                    "est_cost_micro": c.est_cost_micro,
                    "normalized_cost": round(c.normalized_cost, 6),
                    "score": None,
                }
                for c in candidates
            ],
            "excluded": excluded,
            "confidence": None,
            "confidence_floor": alias.confidence_floor,
            "timings_ms": {"embed": 0.0, "search": 0.0},
            **decision.detail,
            "chosen": chosen.id,
            "fallback_reason": decision.fallback_reason,
        }
        detail["timings_ms"] = {
            **detail["timings_ms"],
            "total": round((time.perf_counter() - started) * 1000, 3),
        }
        upstream = router_pb2.Upstream()
        upstream.CopyFrom(chosen.entry.upstream)
        return Resolution(
            strategy=self.name,
            alias=request.alias,
            matched=chosen.id,
            upstream=upstream,
            health_key=chosen.id,
            catalog_entry=chosen.entry,
            fallbacks=[
                _fallback(c.entry, f"knn_rank_{rank}") for rank, c in enumerate(ranked[1:], 2)
            ],
            cache_ttl_ms=0,
            output_tokens=out,
            content_used=decision.content_used,
            sticky_turns=alias.sticky_turns,
            limits=alias.limits,
            explain=_explain(alias, t, lam, chosen.id, decision),
            explain_detail=detail,
            on_planned=_remembering(self.scorer, decision),
        )


def _remembering(scorer: KnnScorer | None, decision: KnnDecision) -> Callable[[str], None] | None:
    """Scorers that learn from feedback (`remember(route_id, decision)`) get the route_id."""
    remember = getattr(scorer, "remember", None)
    if remember is None:
        return None
    return lambda route_id: remember(route_id, decision)


def _fallback(entry: CatalogEntry, reason: str) -> router_pb2.Fallback:
    up = entry.upstream
    fallback = router_pb2.Fallback(
        base_url=up.base_url, mode=up.mode, model_id=up.model_id, reason=reason
    )
    if up.HasField("auth_env"):
        fallback.auth_env = up.auth_env
    return fallback
