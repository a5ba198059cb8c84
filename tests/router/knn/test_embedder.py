"""The serving embedder (int8 ONNX, no torch) against the sentence-transformers reference."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from services.router.knn_scorer.embedder import (
    MODEL_FILE,
    EmbedderError,
    OnnxEmbedder,
    mean_pool_normalize,
)
from services.router.knn_scorer.training_data import TrainingSet

AGREEMENT_PROMPTS = 120
# per-channel int8 weights, ORT 1.32: measured min 0.9898 on AVX-512 VNNI (Xeon), 0.9845 on AVX2
# (EPYC), where u8 x s8 products go through vpmaddubsw, whose int16 pair sums can saturate
MIN_COSINE = 0.98


def test_onnx_agrees_with_sentence_transformers(
    embedder: OnnxEmbedder, real_subset: TrainingSet, real_vectors: np.ndarray
) -> None:
    from services.router.knn_scorer.export import reference_model

    prompts = real_subset.prompts[:AGREEMENT_PROMPTS]
    model = reference_model()
    model.max_seq_length = embedder.info.max_seq_length  # both read the same prefix
    reference = model.encode(prompts, normalize_embeddings=True, batch_size=32)
    cosines = np.sum(reference * real_vectors[:AGREEMENT_PROMPTS], axis=1)
    print(
        f"ONNX int8 vs sentence-transformers: min cosine {cosines.min():.4f}, "
        f"mean {cosines.mean():.4f} over {len(prompts)} real prompts"
    )
    assert cosines.min() >= MIN_COSINE
    # Neighbourhoods survive quantisation: top-10 neighbour sets mostly coincide.
    onnx = real_vectors[:AGREEMENT_PROMPTS]
    ref_top = np.argsort(-(reference @ reference.T), axis=1)[:, 1:11]
    onnx_top = np.argsort(-(onnx @ onnx.T), axis=1)[:, 1:11]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref_top, onnx_top, strict=True)])
    assert overlap >= 0.8


def test_a_prompt_is_embedded_from_its_first_max_tokens(embedder: OnnxEmbedder) -> None:
    from services.router.knn_scorer.export import DEFAULT_MAX_TOKENS

    assert embedder.info.max_seq_length == DEFAULT_MAX_TOKENS, "stale export: re-run export-model"
    assert embedder.name == f"sentence-transformers/all-MiniLM-L6-v2@{DEFAULT_MAX_TOKENS}"
    head = " ".join(f"word{i}" for i in range(200))
    long, longer = embedder.embed([head, head + " and then a different ending entirely"])
    assert np.allclose(long, longer)
    short, shorter = embedder.embed(["a short prompt", "a short prompt, changed"])
    assert not np.allclose(short, shorter)


def test_export_leaves_out_the_slow_cpu_fusions(model_dir: Path) -> None:
    """SkipLayerNormalization / BiasGelu cost ~20 % more CPU per query than the ops they fuse."""
    import onnx

    ops = {node.op_type for node in onnx.load(str(model_dir / MODEL_FILE)).graph.node}
    assert {"QAttention", "QEmbedLayerNormalization", "MatMulInteger", "Gelu"} <= ops
    assert not ops & {"SkipLayerNormalization", "BiasGelu"}, "stale export: re-run export-model"


def test_index_vectors_are_exactly_the_serving_vectors(
    embedder: OnnxEmbedder, real_subset: TrainingSet, real_vectors: np.ndarray
) -> None:
    assert real_vectors.shape == (len(real_subset), 384)
    assert np.allclose(np.linalg.norm(real_vectors, axis=1), 1.0, atol=1e-5)
    single = embedder.embed([real_subset.prompts[3]])[0]
    assert np.array_equal(single, real_vectors[3])
    assert embedder.embed([]).shape == (0, 384)


def test_mean_pooling_ignores_padding() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    assert np.allclose(mean_pool_normalize(hidden, mask), [[1.0, 0.0]])


def test_serving_path_never_imports_torch(model_dir: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from services.router.knn_scorer.artifacts import load_scorer
        from services.router.knn_scorer.embedder import OnnxEmbedder
        from services.router.knn_scorer import cli, scorer
        OnnxEmbedder(Path({str(model_dir)!r})).embed(["hello"])
        assert "torch" not in sys.modules, "torch imported"
        assert "sentence_transformers" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="not an exported model dir"):
        OnnxEmbedder(tmp_path)


def test_cached_vectors_are_keyed_by_the_token_limit_too(model_dir: Path, tmp_path: Path) -> None:
    """Re-exporting with another --max-tokens keeps the ONNX file but changes every vector."""
    import shutil

    from services.router.knn_scorer.embedder import EmbedderInfo
    from services.router.knn_scorer.embedding_cache import model_fingerprint

    other = tmp_path / "model"
    shutil.copytree(model_dir, other)
    info = EmbedderInfo.read(other)
    EmbedderInfo(info.embedding_model, info.dim, info.max_seq_length * 2, info.quantization).write(
        other
    )
    assert model_fingerprint(other) != model_fingerprint(model_dir)
    assert OnnxEmbedder(other).name != OnnxEmbedder(model_dir).name
