"""The scorer behind the router's real KNN policy frame: §6 end to end, explain_detail,
fallback reasons, and the calibrated method on real prompts."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from services.common.pb import router_pb2
from services.router.knn import KnnPolicy
from services.router.knn_scorer.artifacts import build_from_set
from services.router.knn_scorer.embedder import OnnxEmbedder, StaticEmbedder
from services.router.knn_scorer.index import ExampleIndex
from services.router.knn_scorer.scorer import (
    CALIBRATED_METHOD,
    SPEC_METHOD,
    LearnedKnnScorer,
)
from services.router.knn_scorer.training_data import TrainingSet
from services.router.resolution import PlanContext, Resolution
from tests.router.conftest import GPT4, MIXTRAL
from tests.router.knn.conftest import CachedEmbedder, request

DIM = 4
C_MIXTRAL = (100 * 600_000 + 256 * 600_000) / (100 * 10_000_000 + 256 * 30_000_000)


class FixedEmbedder:
    """Every text is the first axis: neighbours' similarities are then their first coordinate."""

    name, dim = "sentence-transformers/all-MiniLM-L6-v2", DIM

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.tile(np.eye(DIM, dtype=np.float32)[0], (len(texts), 1))


def unit(similarity: float, axis: int) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[0], vector[axis] = similarity, np.sqrt(1 - similarity**2)
    return vector


class ThreadNotingEmbedder(FixedEmbedder):
    """Notes the thread each embedding runs on."""

    def __init__(self, inline: bool) -> None:
        self.inline = inline
        self.threads: list[int] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.threads.append(threading.get_ident())
        return super().embed(texts)


def synthetic_scorer(embedder: FixedEmbedder | None = None) -> LearnedKnnScorer:
    """Neighbours at similarity 0.9, 0.8, 0.5 and 0.1 (the last below min_similarity)."""
    vectors = np.stack([unit(0.9, 1), unit(0.8, 2), unit(0.5, 3), unit(0.1, 1)])
    scores = np.array([[1, 0], [1, 1], [1, 0], [0, 1]], dtype=np.float32)  # [gpt4, mixtral]
    index = ExampleIndex.build(
        vectors,
        ["n1", "n2", "n3", "n4"],
        scores,
        models=[GPT4, MIXTRAL],
        embedding_model=FixedEmbedder.name,
        train_sha256="x",
    )
    return LearnedKnnScorer(embedder or FixedEmbedder(), index, method=SPEC_METHOD)


async def plan(
    scorer: LearnedKnnScorer, req: router_pb2.RouteRequest, ctx: PlanContext
) -> Resolution:
    resolution = await KnnPolicy(scorer).resolve(req, ctx)
    assert resolution is not None
    return resolution


async def test_spec_algorithm_end_to_end_with_explain_detail(context: PlanContext) -> None:
    res = await plan(synthetic_scorer(), request(), context)
    detail = res.explain_detail
    assert res.matched == GPT4 and res.content_used == "summary"
    assert detail["fallback_reason"] is None and detail["chosen"] == GPT4
    assert (detail["k"], detail["kept"], detail["lambda"], detail["tradeoff"]) == (10, 3, 0.5, 0.5)
    assert [n["id"] for n in detail["neighbors"]] == ["n1", "n2", "n3", "n4"]
    assert [n["similarity"] for n in detail["neighbors"]] == pytest.approx([0.9, 0.8, 0.5, 0.1])
    gpt4, mixtral = detail["candidates"]
    assert gpt4["model"] == GPT4 and gpt4["predicted_quality"] == pytest.approx(1.0)
    assert gpt4["normalized_cost"] == 1.0 and gpt4["score"] == pytest.approx(0.5)
    assert mixtral["predicted_quality"] == pytest.approx(0.8 / 2.2)
    assert mixtral["normalized_cost"] == pytest.approx(C_MIXTRAL, abs=1e-6)
    assert mixtral["score"] == pytest.approx(0.8 / 2.2 - 0.5 * C_MIXTRAL, abs=1e-6)
    assert (gpt4["support"], mixtral["support"]) == (3, 3)
    assert gpt4["est_cost_micro"] == 8680 and mixtral["est_cost_micro"] == 214
    assert detail["confidence"] == pytest.approx(1.4 / 2.2, abs=1e-6)
    assert set(detail["timings_ms"]) == {"embed", "search", "total"}
    assert res.explain.startswith("knn k=10 kept=3 t=0.50 lambda=0.50 -> gpt-4-1106-preview")
    assert [f.model_id for f in res.fallbacks] == ["mistralai/Mixtral-8x7B-Instruct-v0.1"]


@pytest.mark.parametrize("inline", [True, False])
async def test_a_cheap_embedder_runs_on_the_event_loop_and_onnx_in_a_worker_thread(
    context: PlanContext, inline: bool
) -> None:
    # The static embedder's gather costs less than the hand-off to a worker thread.
    assert StaticEmbedder.inline and not OnnxEmbedder.inline
    embedder = ThreadNotingEmbedder(inline)
    await plan(synthetic_scorer(embedder), request(), context)
    assert (embedder.threads == [threading.get_ident()]) is inline


async def test_cost_weight_from_the_request_and_low_confidence_default(
    context: PlanContext,
) -> None:
    # t = 0 -> lambda = 1: mixtral scores best, but only neighbour n2 agrees (0.8 / 2.2).
    res = await plan(synthetic_scorer(), request(alias="auto-short", tradeoff=0.0), context)
    detail = res.explain_detail
    assert detail["lambda"] == 1.0
    assert detail["candidates"][0]["model"] == MIXTRAL
    assert detail["confidence"] == pytest.approx(0.8 / 2.2, abs=1e-6)
    assert detail["fallback_reason"] == "low_confidence"
    assert res.matched == GPT4  # auto-short's default_model


@pytest.mark.parametrize(
    ("req", "reason", "content_used"),
    [
        (request(privacy="features_only"), "privacy_features_only", "none"),
        (request(None), "no_query_text", "none"),
        (request("   "), "no_query_text", "none"),
    ],
)
async def test_no_text_falls_back_to_the_default_model(
    context: PlanContext, req: router_pb2.RouteRequest, reason: str, content_used: str
) -> None:
    res = await plan(synthetic_scorer(), req, context)
    assert res.explain_detail["fallback_reason"] == reason
    assert res.content_used == content_used and res.matched == MIXTRAL


async def test_full_privacy_reads_the_last_user_message(context: PlanContext) -> None:
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "the last question"}]},
    ]
    scorer = synthetic_scorer()
    seen: list[str] = []
    scorer.embedder.embed = lambda texts: seen.extend(texts) or FixedEmbedder().embed(texts)  # type: ignore[method-assign]
    res = await plan(scorer, request("a summary", privacy="full", messages=messages), context)
    assert res.content_used == "full" and seen == ["the last question"]


async def test_too_few_neighbours_with_support(context: PlanContext) -> None:
    scorer = synthetic_scorer()
    scorer.index.scores[:3] = np.nan  # n1..n3 score nothing: no model has support
    res = await plan(scorer, request(), context)
    assert res.explain_detail["fallback_reason"] == "too_few_neighbors"
    assert res.matched == MIXTRAL


async def test_calibrated_method_on_real_prompts(
    context: PlanContext, real_subset: TrainingSet, cached_embedder: CachedEmbedder
) -> None:
    vectors = cached_embedder.embed(real_subset.prompts)
    index, calibration = build_from_set(
        real_subset, cached_embedder, CALIBRATED_METHOD, vectors=vectors
    )
    assert calibration is not None and calibration.names[0].startswith("knn10:")
    assert calibration.lexical is not None and calibration.names[-1] == f"lex:{MIXTRAL}"
    scorer = LearnedKnnScorer(
        cached_embedder, index, method=CALIBRATED_METHOD, calibration=calibration
    )
    example = real_subset.examples[7]
    res = await plan(scorer, request(example.prompt, tradeoff=1.0), context)
    detail = res.explain_detail
    assert detail["method"] == "calibrated" and detail["k"] == 10
    assert detail["neighbors"][0]["id"] == example.id
    assert detail["neighbors"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    calibrated = detail["calibration"]
    assert set(calibrated) == {GPT4, MIXTRAL}
    for candidate in detail["candidates"]:
        assert 0.0 < candidate["predicted_quality"] < 1.0
        assert candidate["predicted_quality"] == pytest.approx(
            calibrated[candidate["model"]]["quality"], abs=1e-6
        )
        assert len(calibrated[candidate["model"]]["top_terms"]) == 4
