"""The static (Model2Vec-style distilled) embedder: its table, its agreement with the ONNX
embedder, its own vector space and cache key, and a serving path without ONNX Runtime or torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import orjson
from scipy.stats import spearmanr

from services.router.knn_scorer.embedder import (
    MODEL_MANIFEST,
    STATIC_FILE,
    EmbedderInfo,
    OnnxEmbedder,
    StaticEmbedder,
    load_embedder,
)
from services.router.knn_scorer.embedding_cache import model_fingerprint
from services.router.knn_scorer.export import (
    DEFAULT_PCA_DIMS,
    DEFAULT_STATIC_MAX_TOKENS,
    pca_fit_transform,
    sif_weights,
)
from services.router.knn_scorer.training_data import TrainingSet

AGREEMENT_PROMPTS = 200  # all 19,900 pairs of them: 200 random pairs swing by ±0.1
# Static cosines sit high for every pair (mean ~0.6 vs ONNX's ~0.07), so over unrelated prompts
# they rank pairs only loosely like the ONNX ones: measured 0.274 (0.26-0.27 over 100-305 prompts).
MIN_SPEARMAN = 0.22


def test_the_table_is_vocabulary_by_pca_dims_and_a_token_embeds_as_its_row(
    static_model_dir: Path, static_embedder: StaticEmbedder
) -> None:
    table = np.load(static_model_dir / STATIC_FILE)
    vocabulary = static_embedder.tokenizer.get_vocab_size()
    assert table.dtype == np.float16 and table.shape == (vocabulary, DEFAULT_PCA_DIMS)
    assert static_embedder.info.max_seq_length == DEFAULT_STATIC_MAX_TOKENS
    token = static_embedder.tokenizer.token_to_id("planet")
    row = table[token].astype(np.float32)
    one, twice = static_embedder.embed(["planet", "planet planet"])
    assert np.allclose(one, row / np.linalg.norm(row), atol=1e-6)
    assert np.allclose(twice, one, atol=1e-6)  # a mean, not a sum: no [CLS]/[SEP] rows either


def test_a_text_without_tokens_is_a_zero_vector(static_embedder: StaticEmbedder) -> None:
    vectors = static_embedder.embed(["\u200b", "Which planet is largest?"])
    assert not vectors[0].any()
    assert np.isclose(np.linalg.norm(vectors[1]), 1.0, atol=1e-5)
    assert static_embedder.embed([]).shape == (0, DEFAULT_PCA_DIMS)


def test_embed_many_matches_embed_one_by_one(
    static_embedder: StaticEmbedder, real_subset: TrainingSet
) -> None:
    prompts = real_subset.prompts[:40]
    done: list[int] = []
    many = static_embedder.embed_many(prompts, progress=done.append)
    assert sum(done) == len(prompts)
    single = np.vstack([static_embedder.embed([p]) for p in prompts])
    assert np.allclose(many, single, atol=1e-6)


def test_static_similarities_agree_with_onnx_ones(
    static_embedder: StaticEmbedder, real_subset: TrainingSet, real_vectors: np.ndarray
) -> None:
    onnx = real_vectors[:AGREEMENT_PROMPTS]
    static = static_embedder.embed_many(real_subset.prompts[:AGREEMENT_PROMPTS])
    pairs = np.triu_indices(AGREEMENT_PROMPTS, 1)
    rho = spearmanr((onnx @ onnx.T)[pairs], (static @ static.T)[pairs]).statistic
    print(f"static vs ONNX cosines: Spearman {rho:.3f} over {len(pairs[0])} real prompt pairs")
    assert rho >= MIN_SPEARMAN


def test_pca_keeps_the_leading_axes_each_with_a_fixed_sign() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 3.0
    projected = pca_fit_transform(data, 4)
    assert np.all(np.diff(projected.var(axis=0)) < 0)  # leading axes first
    assert np.allclose(np.corrcoef(projected.T), np.eye(4), atol=1e-8)  # decorrelated
    _, _, svd_axes = np.linalg.svd(data - data.mean(axis=0), full_matrices=False)
    assert np.allclose(np.abs(projected), np.abs((data - data.mean(axis=0)) @ svd_axes[:4].T))
    for sample in (data, data * np.array([-1, 1, -1, 1, 1, -1])):
        centred = sample - sample.mean(axis=0)
        axes = np.linalg.lstsq(centred, pca_fit_transform(sample, 4), rcond=None)[0]
        assert np.all(axes[np.abs(axes).argmax(axis=0), range(4)] > 0)  # no mirrored re-export


def test_sif_weights_follow_model2vec() -> None:
    weights = sif_weights(4, 1e-4)
    ranks = 1 / np.arange(2, 6)
    assert np.allclose(weights, 1e-4 / (1e-4 + ranks / ranks.sum()))
    assert np.all(np.diff(weights) > 0)  # frequent (low-id) tokens weigh least


def test_each_kind_is_its_own_vector_space_and_cache_key(
    model_dir: Path, static_model_dir: Path, tmp_path: Path
) -> None:
    static, onnx = load_embedder(static_model_dir), load_embedder(model_dir)
    assert isinstance(static, StaticEmbedder) and isinstance(onnx, OnnxEmbedder)
    space = f"static{DEFAULT_PCA_DIMS}:{DEFAULT_STATIC_MAX_TOKENS}"
    assert static.name == f"sentence-transformers/all-MiniLM-L6-v2@{space}"
    assert onnx.name == "sentence-transformers/all-MiniLM-L6-v2@64"
    assert model_fingerprint(static_model_dir) != model_fingerprint(model_dir)
    # The table itself is part of the key, not only embedder.json.
    other = tmp_path / "static"
    shutil.copytree(static_model_dir, other)
    table = np.load(other / STATIC_FILE)
    table[5] += np.float16(0.5)
    np.save(other / STATIC_FILE, table)
    assert model_fingerprint(other) != model_fingerprint(static_model_dir)


def test_a_manifest_without_kind_is_an_onnx_one(model_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    doc = orjson.loads((old / MODEL_MANIFEST).read_bytes())
    doc.pop("kind", None)
    (old / MODEL_MANIFEST).write_bytes(orjson.dumps(doc))
    assert EmbedderInfo.read(old).kind == "onnx"
    assert isinstance(load_embedder(old), OnnxEmbedder)
    assert load_embedder(old).name == load_embedder(model_dir).name  # old indexes stay valid


def test_static_serving_path_imports_neither_onnxruntime_nor_torch(
    static_model_dir: Path,
) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from services.router.app import RouterApp
        from services.router.knn_scorer import artifacts, cli, scorer, startup
        from services.router.knn_scorer.embedder import load_embedder
        vectors = load_embedder(Path({str(static_model_dir)!r})).embed(["hello"])
        assert vectors.shape == (1, {DEFAULT_PCA_DIMS})
        for module in ("onnxruntime", "torch", "sentence_transformers"):
            assert module not in sys.modules, f"{{module}} imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
