"""Router-schema §6 steps 2 and 5-7 on hand-checkable numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.router.knn_scorer.scoring import (
    LOW_CONFIDENCE,
    TOO_FEW_NEIGHBORS,
    Scored,
    ScoringParams,
    neighbour_weights,
    score_neighbours,
)

NAN = math.nan
MODELS = ["cheap", "strong"]
# Neighbours best first; the last one is below min_similarity (0.2) and must be ignored.
SIMS = np.array([0.9, 0.8, 0.5, 0.1])
SPEC_PARAMS = ScoringParams()
SCORES = np.array([[0, 1], [1, 1], [0, 1], [1, 0]], dtype=np.float32)


def score(
    lam: float,
    params: ScoringParams = SPEC_PARAMS,
    *,
    sims: np.ndarray = SIMS,
    scores: np.ndarray = SCORES,
    models: list[str] = MODELS,
    cost_units: np.ndarray | None = None,
    quality: np.ndarray | None = None,
) -> Scored:
    return score_neighbours(
        sims,
        scores,
        models=models,
        normalized_cost=np.array([0.1, 1.0]),
        cost_units=np.array([10.0, 100.0]) if cost_units is None else cost_units,
        lam=lam,
        params=params,
        quality=quality,
    )


def test_quality_is_the_similarity_weighted_mean_of_kept_neighbours() -> None:
    result = score(0.5)
    quality = {c.model: c.predicted_quality for c in result.candidates}
    assert result.kept == 3
    assert quality["cheap"] == pytest.approx(0.8 / 2.2)
    assert quality["strong"] == pytest.approx(1.0)
    assert [c.support for c in result.candidates] == [3, 3]


def test_score_subtracts_lambda_times_normalized_cost_and_confidence_is_agreement() -> None:
    result = score(0.5)
    scores = {c.model: c.score for c in result.candidates}
    assert scores["strong"] == pytest.approx(1.0 - 0.5)
    assert scores["cheap"] == pytest.approx(0.8 / 2.2 - 0.05)
    assert result.chosen == "strong" and result.fallback_reason is None
    # Neighbours 1 and 3 prefer strong (1 - 0.5 > 0 - 0.05); neighbour 2 prefers cheap.
    assert result.confidence == pytest.approx((0.9 + 0.5) / 2.2)


def test_full_cost_weight_flips_the_choice_and_confidence_falls_below_the_floor() -> None:
    result = score(1.0)
    assert [c.model for c in result.candidates] == ["cheap", "strong"]
    assert result.candidates[0].score == pytest.approx(0.8 / 2.2 - 0.1)
    assert result.candidates[1].score == pytest.approx(0.0)
    assert result.confidence == pytest.approx(0.8 / 2.2)
    assert result.chosen is None and result.fallback_reason == LOW_CONFIDENCE


def test_confidence_floor_is_the_alias_parameter() -> None:
    assert score(0.5, ScoringParams(confidence_floor=0.7)).fallback_reason == LOW_CONFIDENCE
    assert score(0.5, ScoringParams(confidence_floor=0.6)).chosen == "strong"


def test_too_few_neighbours_above_min_similarity() -> None:
    result = score(0.5, sims=np.array([0.9, 0.15, 0.1]), scores=SCORES[:3])
    assert result.kept == 1
    assert result.chosen is None and result.fallback_reason == TOO_FEW_NEIGHBORS
    assert result.candidates == []
    lenient = score(
        0.5, ScoringParams(min_neighbors=1), sims=np.array([0.9, 0.15, 0.1]), scores=SCORES[:3]
    )
    assert lenient.chosen == "strong" and lenient.kept == 1


def test_ties_go_to_the_lower_cost_then_the_smaller_id() -> None:
    sims, scores = np.array([0.9, 0.9, 0.9]), np.full((3, 2), 0.5, dtype=np.float32)
    models = ["m2", "m1"]
    same_cost = score(0.0, sims=sims, scores=scores, models=models, cost_units=np.array([5.0, 5.0]))
    assert [c.model for c in same_cost.candidates] == ["m1", "m2"]
    cheaper_m2 = score(
        0.0, sims=sims, scores=scores, models=models, cost_units=np.array([5.0, 9.0])
    )
    assert cheaper_m2.chosen == "m2"
    assert cheaper_m2.confidence == pytest.approx(1.0)  # every neighbour ties the same way


def test_models_without_support_are_dropped_and_partial_support_averages_what_exists() -> None:
    scores = np.array([[NAN, 1], [1, 0], [NAN, 1]], dtype=np.float32)
    result = score(0.0, sims=np.array([0.9, 0.8, 0.5]), scores=scores)
    by_model = {c.model: c for c in result.candidates}
    assert by_model["cheap"].support == 1 and by_model["cheap"].predicted_quality == 1.0
    assert by_model["strong"].predicted_quality == pytest.approx(1.4 / 2.2)
    unscored = np.array([[NAN, 1], [NAN, 0], [NAN, 1]], dtype=np.float32)
    only_strong = score(0.0, sims=np.array([0.9, 0.8, 0.5]), scores=unscored)
    assert [c.model for c in only_strong.candidates] == ["strong"]


def test_softmax_weighting_and_supplied_quality() -> None:
    weights = neighbour_weights(
        np.array([0.9, 0.8]), ScoringParams(weighting="softmax", temperature=0.1)
    )
    assert weights == pytest.approx([1.0, math.exp(-1.0)])
    supplied = score(0.5, quality=np.array([0.95, 0.2]))
    assert supplied.chosen is None  # cheap wins on quality but only neighbour 2 agrees
    assert supplied.candidates[0].model == "cheap"
    assert supplied.candidates[0].predicted_quality == pytest.approx(0.95)
    assert supplied.fallback_reason == LOW_CONFIDENCE
