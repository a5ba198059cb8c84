"""The service's scorer from settings: built at start, reused while the manifest matches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from services.router.health import ModelHealth
from services.router.knn import KnnPolicy
from services.router.knn_scorer.embedder import OnnxEmbedder, StaticEmbedder
from services.router.knn_scorer.export import DEFAULT_PCA_DIMS
from services.router.knn_scorer.index import IndexManifest
from services.router.knn_scorer.startup import MODEL_DIR_ENV, open_scorer
from services.router.resolution import PlanContext
from services.router.routing_config import load_routing_config
from services.router.settings import RouterSettings
from tests.router.conftest import GPT4, MIXTRAL
from tests.router.knn.conftest import request


@pytest.fixture
def small_train(tmp_path: Path, subset_file: Path) -> Path:
    path = tmp_path / "small.jsonl"
    path.write_bytes(b"".join(subset_file.read_bytes().splitlines(keepends=True)[:60]))
    return path


def test_built_at_start_then_reused_then_rebuilt_when_the_data_changes(
    tmp_path: Path,
    small_train: Path,
    model_dir: Path,
    router_settings: Callable[..., RouterSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    settings = router_settings(knn_train_path=small_train, knn_index_dir=tmp_path / "knn")
    scorer = open_scorer(settings)
    assert scorer is not None and scorer.examples == 60 and scorer.method.kind == "calibrated"
    built_at = IndexManifest.read(tmp_path / "knn").built_at
    again = open_scorer(settings, previous=scorer)
    assert again is not None and again.memory is scorer.memory
    assert IndexManifest.read(tmp_path / "knn").built_at == built_at  # reused, not rebuilt
    small_train.write_bytes(b"".join(small_train.read_bytes().splitlines(keepends=True)[:50]))
    rebuilt = open_scorer(settings)
    assert rebuilt is not None and rebuilt.examples == 50
    # Without a training file the persisted index is served as it is.
    served = open_scorer(router_settings(knn_index_dir=tmp_path / "knn"))
    assert served is not None and served.examples == 50


def test_unavailable_without_data_or_model(
    tmp_path: Path,
    small_train: Path,
    router_settings: Callable[..., RouterSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert open_scorer(router_settings(knn_index_dir=tmp_path / "none")) is None
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "no-model"))
    settings = router_settings(knn_train_path=small_train, knn_index_dir=tmp_path / "knn")
    assert open_scorer(settings) is None


async def test_cold_start_learns_from_feedback_and_keeps_it(
    tmp_path: Path,
    model_dir: Path,
    router_settings: Callable[..., RouterSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spec README: with neither training file nor index, KNN memory starts empty (default
    model) and grows from feedback, persisted in the index dir."""
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    settings = router_settings(knn_index_dir=tmp_path / "knn")
    scorer = open_scorer(settings)
    assert scorer is not None and scorer.examples == 0
    context = PlanContext(load_routing_config(settings), ModelHealth())
    policy = KnnPolicy(scorer)
    text = "Summarise the causes of the French Revolution."
    first = await policy.resolve(request(text), context)
    assert first is not None and first.explain_detail["fallback_reason"] == "too_few_neighbors"
    assert first.matched == MIXTRAL  # the alias's default model
    for n in range(3):
        route_id = f"rte_{n:016x}"
        first.on_planned(route_id)  # type: ignore[misc]
        assert scorer.learn(route_id, 1.0 - n / 10, GPT4)
    assert scorer.examples == 1  # one query, three observations
    restarted = open_scorer(settings)
    assert restarted is not None and restarted.examples == 1
    assert (tmp_path / "knn" / "online.jsonl").is_file()


def test_an_index_of_the_other_embedder_kind_is_rebuilt_or_refused(
    tmp_path: Path,
    small_train: Path,
    model_dir: Path,
    static_model_dir: Path,
    router_settings: Callable[..., RouterSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ONNX and static vectors live in different spaces: with the training file the index is
    rebuilt for the embedder the service starts with; without it, it is not searched."""
    index_dir = tmp_path / "knn"
    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    onnx = open_scorer(router_settings(knn_train_path=small_train, knn_index_dir=index_dir))
    assert onnx is not None and isinstance(onnx.embedder, OnnxEmbedder)
    onnx_space = IndexManifest.read(index_dir).embedding_model

    monkeypatch.setenv(MODEL_DIR_ENV, str(static_model_dir))
    static = open_scorer(router_settings(knn_train_path=small_train, knn_index_dir=index_dir))
    assert static is not None and isinstance(static.embedder, StaticEmbedder)
    manifest = IndexManifest.read(index_dir)
    assert manifest.embedding_model == static.embedder.name != onnx_space
    assert manifest.dim == static.embedder.dim == DEFAULT_PCA_DIMS and static.examples == 60

    monkeypatch.setenv(MODEL_DIR_ENV, str(model_dir))
    assert open_scorer(router_settings(knn_index_dir=index_dir)) is None  # refused, not searched
