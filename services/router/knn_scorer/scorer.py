"""`LearnedKnnScorer`: the `KnnScorer` the router's `KnnPolicy` plugs in (router-schema §6).

Embeds the query text (ONNX, off the event loop), searches the training index and the online
examples together, and applies `scoring.score_neighbours`. `ScoringMethod` holds the
scorer-wide choices (spec or calibrated quality, default `k`, weighting); an alias's
explicitly set `k` wins, and its `min_neighbors`, `min_similarity` and `confidence_floor` apply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from services.common import metrics
from services.common.pb import router_pb2
from services.router.config_models import KnnAlias
from services.router.knn import Candidate, KnnDecision, KnnQuery
from services.router.knn_scorer.calibration import MAX_RADIUS, Calibration
from services.router.knn_scorer.embedder import Embedder
from services.router.knn_scorer.index import ExampleIndex
from services.router.knn_scorer.online import (
    OnlineExamples,
    PendingRoute,
    RouteMemory,
    query_key,
)
from services.router.knn_scorer.scoring import Scored, ScoringParams, score_neighbours

log = logging.getLogger(__name__)

PRIVACY_FEATURES_ONLY = "privacy_features_only"
NO_QUERY_TEXT = "no_query_text"


@dataclass(frozen=True)
class ScoringMethod:
    """How predicted quality is estimated: `spec` is §6 verbatim, `calibrated` adds the
    per-model logistic calibration the index was built with (see calibration.py)."""

    kind: Literal["spec", "calibrated"] = "spec"
    k: int = 10
    weighting: Literal["similarity", "softmax"] = "similarity"
    temperature: float = 0.05

    def params(self, alias: KnnAlias) -> ScoringParams:
        return ScoringParams(
            k=alias.k if "k" in alias.model_fields_set else self.k,
            min_neighbors=alias.min_neighbors,
            min_similarity=alias.min_similarity,
            confidence_floor=alias.confidence_floor,
            weighting=self.weighting,
            temperature=self.temperature,
        )

    def search_k(self, params: ScoringParams) -> int:
        return max(params.k, MAX_RADIUS) if self.kind == "calibrated" else params.k

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringMethod:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


SPEC_METHOD = ScoringMethod()
CALIBRATED_METHOD = ScoringMethod(kind="calibrated")


def query_text(request: router_pb2.RouteRequest) -> tuple[str | None, str]:
    """(text, content_used) per §6: the last user message under `full`, `summary` otherwise."""
    conversation = request.conversation
    if request.privacy_mode == "full":
        for message in reversed(conversation.recent_messages):
            role = message.fields.get("role")
            if role is None or role.string_value != "user":
                continue
            text = _message_text(message.fields.get("content"))
            if text.strip():
                return text, "full"
    if request.privacy_mode in ("full", "summary") and conversation.summary.strip():
        return conversation.summary, "summary"
    return None, "none"


def _message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if content is None:
        return ""
    kind = content.WhichOneof("kind")
    if kind == "string_value":
        return content.string_value
    if kind == "list_value":
        parts = []
        for part in content.list_value.values:
            if part.WhichOneof("kind") == "struct_value":
                text = part.struct_value.fields.get("text")
                if text is not None and text.WhichOneof("kind") == "string_value":
                    parts.append(text.string_value)
            elif part.WhichOneof("kind") == "string_value":
                parts.append(part.string_value)
        return "\n".join(parts)
    return ""


@dataclass(frozen=True)
class Neighbours:
    ids: list[str]
    similarities: np.ndarray
    scores: np.ndarray  # (n, len(models)) over the index's models


@dataclass(frozen=True)
class LearnedDecision(KnnDecision):
    """A KnnDecision that also carries what online learning needs once the route has an id."""

    pending: PendingRoute | None = None


class LearnedKnnScorer:
    def __init__(
        self,
        embedder: Embedder,
        index: ExampleIndex,
        *,
        method: ScoringMethod = SPEC_METHOD,
        calibration: Calibration | None = None,
        online: OnlineExamples | None = None,
        memory: RouteMemory | None = None,
    ) -> None:
        if embedder.dim != index.manifest.dim:
            raise ValueError(f"embedder dim {embedder.dim} != index dim {index.manifest.dim}")
        if method.kind == "calibrated" and calibration is None:
            raise ValueError("the calibrated method needs the index's calibration")
        self.embedder = embedder
        self.index = index
        self.method = method
        self.calibration = calibration
        self.online = online
        self.memory = memory if memory is not None else RouteMemory()

    def with_method(self, method: ScoringMethod) -> LearnedKnnScorer:
        """The same index and online examples, scored another way (for evaluation)."""
        return LearnedKnnScorer(
            self.embedder,
            self.index,
            method=method,
            calibration=self.calibration,
            online=self.online,
            memory=self.memory,
        )

    @property
    def examples(self) -> int:
        return len(self.index) + (len(self.online) if self.online is not None else 0)

    @property
    def models(self) -> list[str]:
        return self.index.models

    # ------------------------------------------------------------------ KnnScorer

    async def warm(self, entry: KnnAlias) -> None:
        await asyncio.to_thread(self.embedder.embed, ["warm-up"])

    async def decide(self, query: KnnQuery) -> KnnDecision:
        if query.request.privacy_mode == "features_only":
            return KnnDecision(chosen=None, fallback_reason=PRIVACY_FEATURES_ONLY)
        text, content_used = query_text(query.request)
        if text is None:
            return KnnDecision(chosen=None, fallback_reason=NO_QUERY_TEXT)
        started = time.perf_counter()
        vector = (await self._embed(text))[0]
        embedded = time.perf_counter()
        params = self.method.params(query.entry)
        neighbours = self.neighbours(vector, self.method.search_k(params))
        searched = time.perf_counter()
        metrics.KNN_EMBED.observe(embedded - started)
        metrics.KNN_SEARCH.observe(searched - embedded)
        scored, calibrated = self.score(text, neighbours, query.candidates, query.lam, params)
        timings = {
            "embed": round((embedded - started) * 1000, 3),
            "search": round((searched - embedded) * 1000, 3),
        }
        detail = self._detail(query, params, neighbours, scored, timings)
        if calibrated is not None:
            detail["calibration"] = calibrated
        return LearnedDecision(
            chosen=scored.chosen,
            fallback_reason=scored.fallback_reason,
            ranking=[c.model for c in scored.candidates],
            content_used=content_used,
            detail=detail,
            pending=PendingRoute(
                query_key(text), vector, scored.chosen or query.entry.default_model
            ),
        )

    # ------------------------------------------------------------------ pieces

    async def _embed(self, text: str) -> np.ndarray:
        """On the event loop when the embedder says it is cheap (`inline`), else in a thread."""
        if getattr(self.embedder, "inline", False):
            return self.embedder.embed([text])
        return await asyncio.to_thread(self.embedder.embed, [text])

    def neighbours(self, vector: np.ndarray, k: int) -> Neighbours:
        """Top-k over the training index and the online examples together, best first."""
        sims, rows = np.zeros(0, np.float32), np.zeros(0, np.int64)
        if len(self.index) and k > 0:
            found_sims, found_rows = self.index.search(vector[None, :], min(k, len(self.index)))
            valid = found_rows[0] >= 0
            sims, rows = found_sims[0][valid], found_rows[0][valid]
        ids = [self.index.ids[r] for r in rows]
        scores = self.index.scores[rows]
        if self.online is not None and len(self.online):
            o_sims, o_rows = self.online.search(vector, k)
            sims = np.concatenate([sims, o_sims.astype(np.float32)])
            ids = ids + self.online.ids(o_rows)
            scores = np.concatenate([scores, self.online.scores(o_rows)])
            top = np.argsort(-sims, kind="stable")[:k]
            sims, scores, ids = sims[top], scores[top], [ids[i] for i in top]
        return Neighbours(ids, sims, scores)

    def score(
        self,
        text: str,
        neighbours: Neighbours,
        candidates: Sequence[Candidate],
        lam: float,
        params: ScoringParams,
    ) -> tuple[Scored, dict[str, Any] | None]:
        """Steps 2, 5-7 over the `params.k` nearest; the calibrated method sees all of them."""
        models = [c.id for c in candidates]
        column = {m: j for j, m in enumerate(self.models)}
        cols = [column.get(m) for m in models]
        nearest = neighbours.scores[: params.k]
        matrix = np.full((len(nearest), len(models)), np.nan, dtype=np.float32)
        for j, col in enumerate(cols):
            if col is not None:
                matrix[:, j] = nearest[:, col]
        quality, explained = None, None
        if self.method.kind == "calibrated" and self.calibration is not None:
            calibration = self.calibration
            features = calibration.features(neighbours.similarities, neighbours.scores, text)
            predicted = calibration.predict(features)
            quality = np.array([predicted[c] if c is not None else np.nan for c in cols])
            explained = {
                m: {
                    "quality": round(float(predicted[c]), 6),
                    "top_terms": calibration.contributions(features, m),
                }
                for m, c in zip(models, cols, strict=True)
                if c is not None
            }
        scored = score_neighbours(
            neighbours.similarities[: params.k],
            matrix,
            models=models,
            normalized_cost=np.array([c.normalized_cost for c in candidates], dtype=np.float64),
            cost_units=np.array([c.cost_units for c in candidates], dtype=np.float64),
            lam=lam,
            params=params,
            quality=quality,
        )
        return scored, explained

    def _detail(
        self,
        query: KnnQuery,
        params: ScoringParams,
        neighbours: Neighbours,
        scored: Scored,
        timings: dict[str, float],
    ) -> dict[str, Any]:
        by_model = {c.model: c for c in scored.candidates}
        ordered = [*by_model, *(c.id for c in query.candidates if c.id not in by_model)]
        costs = {c.id: c for c in query.candidates}
        candidates = []
        for model in ordered:
            score = by_model.get(model)
            candidates.append(
                {
                    "model": model,
                    "predicted_quality": None
                    if score is None
                    else round(score.predicted_quality, 6),
                    "support": 0 if score is None else score.support,
                    "est_cost_micro": costs[model].est_cost_micro,
                    "normalized_cost": round(costs[model].normalized_cost, 6),
                    "score": None if score is None else round(score.score, 6),
                }
            )
        return {
            "k": params.k,
            "kept": scored.kept,
            "neighbors": [
                {"id": i, "similarity": round(float(s), 6)}
                for i, s in zip(
                    neighbours.ids[: params.k], neighbours.similarities[: params.k], strict=True
                )
            ],
            "candidates": candidates,
            "confidence": None if scored.confidence is None else round(scored.confidence, 6),
            "confidence_floor": params.confidence_floor,
            "method": self.method.kind,
            "timings_ms": timings,
        }

    # ------------------------------------------------------------------ online learning

    def remember(self, route_id: str, decision: KnnDecision) -> None:
        """Called once the plan has its route_id, so feedback can find the query."""
        if isinstance(decision, LearnedDecision) and decision.pending is not None:
            self.memory.remember(route_id, decision.pending)

    def learn(self, route_id: str, quality: float, model: str | None = None) -> bool:
        """Feedback with a quality signal: add or update the route's query as an example."""
        if self.online is None:
            return False
        pending = self.memory.get(route_id)
        if pending is None:
            return False
        return self.online.observe(pending.key, pending.vector, model or pending.model, quality)
