"""Router-schema §6 steps 2 and 5-7 as pure numpy functions over one query's neighbours.

With `quality=None` this is the spec verbatim: predicted quality is the similarity-weighted
mean of the kept neighbours' scores. A calibrated method passes its own `quality` per model;
kept neighbours, support, the score, ties and confidence are still computed as §6 says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

TOO_FEW_NEIGHBORS = "too_few_neighbors"
LOW_CONFIDENCE = "low_confidence"

Weighting = Literal["similarity", "softmax"]


@dataclass(frozen=True)
class ScoringParams:
    k: int = 10
    min_neighbors: int = 3
    min_similarity: float = 0.2
    confidence_floor: float = 0.6
    weighting: Weighting = "similarity"
    temperature: float = 0.05  # softmax only: w_i ∝ exp((sim_i - sim_max) / T)


@dataclass(frozen=True)
class CandidateScore:
    model: str
    predicted_quality: float
    support: int
    score: float


@dataclass(frozen=True)
class Scored:
    """The outcome for one query; `chosen=None` defers to the default model (step 8)."""

    chosen: str | None
    fallback_reason: str | None
    kept: int
    weights: np.ndarray
    candidates: list[CandidateScore]  # best first
    confidence: float | None


def neighbour_weights(similarities: np.ndarray, params: ScoringParams) -> np.ndarray:
    """Step 2's `w_i` for the kept neighbours: the similarity itself, or a softmax over it."""
    if params.weighting == "softmax" and len(similarities):
        shifted = (similarities - similarities.max()) / max(params.temperature, 1e-6)
        return np.exp(shifted)
    return similarities.astype(np.float64)


def _order(
    values: np.ndarray, costs: np.ndarray, models: Sequence[str], allowed: np.ndarray
) -> list[int]:
    """Indices of allowed models, best first: higher value, then lower cost, then smaller id."""
    idx = [j for j in range(len(models)) if allowed[j]]
    return sorted(idx, key=lambda j: (-values[j], costs[j], models[j]))


def score_neighbours(
    similarities: np.ndarray,
    neighbour_scores: np.ndarray,
    *,
    models: Sequence[str],
    normalized_cost: np.ndarray,
    cost_units: np.ndarray,
    lam: float,
    params: ScoringParams,
    quality: np.ndarray | None = None,
) -> Scored:
    """§6 steps 2, 5, 6, 7 for one query.

    `similarities` (n,) are the top-k search results, best first; `neighbour_scores` (n, M) the
    neighbours' scores for the candidate `models` (NaN = not scored); `quality` (M,) replaces
    the weighted mean when a calibrated method supplies it.
    """
    keep = similarities >= params.min_similarity
    sims, scores = similarities[keep], neighbour_scores[keep]
    weights = neighbour_weights(sims, params)
    if len(sims) < max(params.min_neighbors, 1) or weights.sum() <= 0:
        return Scored(None, TOO_FEW_NEIGHBORS, len(sims), weights, [], None)
    scored = ~np.isnan(scores)
    support = scored.sum(axis=0)
    mass = (weights[:, None] * scored).sum(axis=0)
    total = (weights[:, None] * np.where(scored, scores, 0.0)).sum(axis=0)
    if quality is None:
        quality = np.divide(total, mass, out=np.zeros_like(total), where=mass > 0)
    alive = support > 0
    if not alive.any():
        return Scored(None, TOO_FEW_NEIGHBORS, len(sims), weights, [], None)
    score = quality - lam * normalized_cost
    ranked = _order(score, cost_units, models, alive)
    best = ranked[0]
    candidates = [
        CandidateScore(models[j], float(quality[j]), int(support[j]), float(score[j]))
        for j in ranked
    ]
    confidence = _agreement(scores, weights, alive, normalized_cost, cost_units, models, lam, best)
    if confidence < params.confidence_floor:
        return Scored(None, LOW_CONFIDENCE, len(sims), weights, candidates, confidence)
    return Scored(models[best], None, len(sims), weights, candidates, confidence)


def _agreement(
    scores: np.ndarray,
    weights: np.ndarray,
    alive: np.ndarray,
    normalized_cost: np.ndarray,
    cost_units: np.ndarray,
    models: Sequence[str],
    lam: float,
    chosen: int,
) -> float:
    """Step 7: the weight share of neighbours whose own best model is the chosen one."""
    agree = 0.0
    for row, weight in zip(scores, weights, strict=True):
        allowed = alive & ~np.isnan(row)
        if not allowed.any():
            continue
        own = _order(row - lam * normalized_cost, cost_units, models, allowed)[0]
        if own == chosen:
            agree += weight
    return float(agree / weights.sum())
