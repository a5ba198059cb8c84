"""Online learning: feedback quality adds or updates examples, bounded and persisted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.router.knn import KnnPolicy
from services.router.knn_scorer.artifacts import build_index, load_scorer
from services.router.knn_scorer.online import ONLINE_LOG, OnlineExamples, RouteMemory
from services.router.knn_scorer.scorer import SPEC_METHOD, LearnedDecision
from services.router.resolution import PlanContext
from tests.router.conftest import GPT4, MIXTRAL
from tests.router.knn.conftest import CachedEmbedder, request

NOVEL = "Translate 'good morning' into Klingon and explain the grammar."


async def test_feedback_quality_becomes_a_neighbour_and_survives_a_restart(
    tmp_path: Path,
    subset_file: Path,
    cached_embedder: CachedEmbedder,
    context: PlanContext,
) -> None:
    out = tmp_path / "idx"
    build_index(subset_file, [GPT4, MIXTRAL], cached_embedder, out, SPEC_METHOD)
    scorer = load_scorer(out, cached_embedder)
    trained = scorer.examples
    query = KnnPolicy(scorer).scorer
    decision = await query.decide(_query(scorer, context))
    assert isinstance(decision, LearnedDecision) and decision.pending is not None

    scorer.remember("rte_0000000000000001", decision)
    assert scorer.learn("rte_0000000000000001", 1.0, GPT4)
    assert scorer.examples == trained + 1
    nearest = scorer.neighbours(cached_embedder.embed([NOVEL])[0], 10)
    assert nearest.ids[0].startswith("fb_") and nearest.similarities[0] == pytest.approx(1.0)
    assert nearest.scores[0].tolist()[scorer.models.index(GPT4)] == 1.0
    assert np.isnan(nearest.scores[0][scorer.models.index(MIXTRAL)])

    # The same query again updates the same example: the mean of the qualities seen.
    scorer.remember("rte_0000000000000002", decision)
    assert scorer.learn("rte_0000000000000002", 0.0, GPT4)
    assert scorer.learn("rte_0000000000000002", 0.5, MIXTRAL)
    assert scorer.examples == trained + 1
    row = scorer.neighbours(cached_embedder.embed([NOVEL])[0], 1).scores[0]
    assert row[scorer.models.index(GPT4)] == 0.5 and row[scorer.models.index(MIXTRAL)] == 0.5

    # Unknown routes, unknown models and out-of-range qualities teach nothing.
    assert not scorer.learn("rte_unknown", 1.0)
    assert not scorer.learn("rte_0000000000000002", 1.0, "some-other-model")
    assert not scorer.learn("rte_0000000000000002", 1.5)

    restarted = load_scorer(out, cached_embedder)
    assert restarted.examples == trained + 1
    again = restarted.neighbours(cached_embedder.embed([NOVEL])[0], 1)
    assert again.ids == nearest.ids[:1]
    assert np.array_equal(again.scores[0], row)


def _query(scorer, context):
    from services.router.knn import KnnQuery, cost_candidates

    alias = context.config.aliases["auto"]
    entries = [context.config.catalog.get(m) for m in alias.candidates]
    return KnnQuery("auto", alias, request(NOVEL), cost_candidates(entries, 100, 256), 0.5, 0.5)


def test_capacity_evicts_the_oldest_example_and_the_log_is_compacted(tmp_path: Path) -> None:
    log = tmp_path / ONLINE_LOG
    online = OnlineExamples(["a", "b"], 2, capacity=2, log_path=log)
    vectors = {"k1": [1.0, 0.0], "k2": [0.0, 1.0], "k3": [0.6, 0.8]}
    for key, vector in vectors.items():
        assert online.observe(key, np.array(vector, np.float32), "a", 1.0)
    assert len(online) == 2
    sims, rows = online.search(np.array([1.0, 0.0], np.float32), 5)
    assert online.ids(rows) == [f"fb_{'k3'[:16]}", f"fb_{'k2'[:16]}"]  # k1 was evicted
    assert sims.tolist() == pytest.approx([0.6, 0.0])
    # Many updates of one example: the log is rewritten instead of growing without bound.
    for _ in range(50):
        online.observe("k3", np.array(vectors["k3"], np.float32), "b", 0.0)
    assert len(log.read_bytes().splitlines()) <= 2 * 2 * 2 + 1
    replayed = OnlineExamples(["a", "b"], 2, capacity=2, log_path=log)
    assert sorted(replayed.ids(np.arange(2))) == sorted(online.ids(np.arange(2)))
    k3 = replayed.search(np.array(vectors["k3"], np.float32), 1)[1]
    assert replayed.scores(k3).tolist() == [[1.0, 0.0]]


def test_route_memory_is_bounded() -> None:
    memory = RouteMemory(size=2)
    pending = LearnedDecision(chosen=None, fallback_reason=None).pending
    assert pending is None
    from services.router.knn_scorer.online import PendingRoute

    for i in range(3):
        memory.remember(f"r{i}", PendingRoute(str(i), np.zeros(2, np.float32), "a"))
    assert len(memory) == 2 and memory.get("r0") is None and memory.get("r2") is not None


def test_a_corrupt_log_line_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / ONLINE_LOG
    OnlineExamples(["a"], 2, log_path=log).observe("k", np.array([1.0, 0.0], np.float32), "a", 1.0)
    with log.open("ab") as handle:
        handle.write(b"not json\n")
    assert len(OnlineExamples(["a"], 2, log_path=log)) == 1
