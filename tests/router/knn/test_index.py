"""FAISS index: exact vs HNSW recall on real MiniLM vectors, persistence and manifest reuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from services.router.knn_scorer.artifacts import build_index, index_is_current, load_scorer
from services.router.knn_scorer.embedder import OnnxEmbedder
from services.router.knn_scorer.index import (
    MANIFEST_FILE,
    ExampleIndex,
    IndexLoadError,
    IndexManifest,
    make_faiss_index,
)
from services.router.knn_scorer.online import ONLINE_LOG
from services.router.knn_scorer.scorer import SPEC_METHOD
from services.router.knn_scorer.training_data import TrainingSet
from tests.router.knn.conftest import CachedEmbedder

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def recall_at(k: int, exact: np.ndarray, approx: np.ndarray) -> float:
    return float(np.mean([len(set(e) & set(a)) / k for e, a in zip(exact, approx, strict=True)]))


def test_hnsw_recall_at_10_against_exact_search_on_real_vectors(real_vectors: np.ndarray) -> None:
    base, queries = real_vectors[:-50], real_vectors[-50:]
    exact = make_faiss_index(base, threshold=len(base))
    approx = make_faiss_index(base, threshold=0)
    assert type(exact).__name__ == "IndexFlatIP" and "HNSW" in type(approx).__name__
    _, exact_rows = exact.search(queries, 10)
    _, approx_rows = approx.search(queries, 10)
    assert recall_at(10, exact_rows, approx_rows) >= 0.95


def small_index(data: TrainingSet, vectors: np.ndarray, sha: str = "abc") -> ExampleIndex:
    return ExampleIndex.build(
        vectors,
        data.ids,
        data.score_matrix(),
        models=data.models,
        embedding_model=MODEL,
        train_sha256=sha,
    )


def test_saved_index_loads_with_the_same_answers(
    tmp_path: Path, real_subset: TrainingSet, real_vectors: np.ndarray
) -> None:
    index = small_index(real_subset, real_vectors)
    index.save(tmp_path / "idx")
    names = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert names == ["ids.json", "index.faiss", "manifest.json", "scores.npy"]
    manifest = orjson.loads((tmp_path / "idx" / MANIFEST_FILE).read_bytes())
    assert manifest["count"] == len(real_subset) and manifest["dim"] == 384
    assert manifest["embedding_model"] == MODEL and manifest["train_sha256"] == "abc"
    loaded = ExampleIndex.load(tmp_path / "idx")
    assert loaded.ids == index.ids and np.array_equal(loaded.scores, index.scores, equal_nan=True)
    assert np.array_equal(
        loaded.search(real_vectors[:5], 10)[1], index.search(real_vectors[:5], 10)[1]
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_broken_or_partial_dirs_are_clear_errors(
    tmp_path: Path, real_subset: TrainingSet, real_vectors: np.ndarray
) -> None:
    with pytest.raises(IndexLoadError, match="manifest"):
        ExampleIndex.load(tmp_path)
    small_index(real_subset, real_vectors).save(tmp_path / "idx")
    (tmp_path / "idx" / "scores.npy").unlink()
    with pytest.raises(IndexLoadError, match="incomplete"):
        ExampleIndex.load(tmp_path / "idx")


def test_index_is_reused_while_the_manifest_matches_and_rebuilt_when_not(
    tmp_path: Path, subset_file: Path, cached_embedder: CachedEmbedder, real_subset: TrainingSet
) -> None:
    out = tmp_path / "idx"
    models = real_subset.models
    assert not index_is_current(out, subset_file, cached_embedder)
    build_index(subset_file, models, cached_embedder, out, SPEC_METHOD)
    assert index_is_current(out, subset_file, cached_embedder)
    # Online examples survive a rebuild; a changed training file makes the index stale.
    (out / ONLINE_LOG).write_bytes(b"")
    with subset_file.open("ab") as handle:
        extra = {"id": "extra", "prompt": "What is 2+2?", "scores": {"gpt-4-1106-preview": 1}}
        handle.write(orjson.dumps(extra) + b"\n")
    assert not index_is_current(out, subset_file, cached_embedder)
    rebuilt = build_index(subset_file, models, cached_embedder, out, SPEC_METHOD)
    assert len(rebuilt) == len(real_subset) + 1 and (out / ONLINE_LOG).exists()
    assert index_is_current(out, subset_file, cached_embedder)
    assert IndexManifest.read(out).extra["method"]["kind"] == "spec"
    assert load_scorer(out, cached_embedder).examples == len(real_subset) + 1


def test_an_index_of_another_embedder_is_refused(
    tmp_path: Path, real_subset: TrainingSet, real_vectors: np.ndarray, embedder: OnnxEmbedder
) -> None:
    index = small_index(real_subset, real_vectors)
    other = IndexManifest(**{**index.manifest.__dict__, "embedding_model": "other/model"})
    ExampleIndex(index.index, index.ids, index.scores, other).save(tmp_path / "idx")
    with pytest.raises(IndexLoadError, match="built with other/model"):
        load_scorer(tmp_path / "idx", embedder)
