"""The serving embedders, both tokenised by `tokenizers`: int8 ONNX MiniLM through ONNX Runtime
(the default), or a static per-token table distilled from the same MiniLM (`export-model --static`).

Nothing here imports torch, so the router image does not ship it; ONNX Runtime is imported only
when an ONNX model dir is opened. Mean pooling and L2 normalisation happen in numpy exactly as
sentence-transformers' Pooling + Normalize modules do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

MODEL_FILE = "model_int8.onnx"
STATIC_FILE = "static.npy"
TOKENIZER_FILE = "tokenizer.json"
MODEL_MANIFEST = "embedder.json"
SLOWER_FUSIONS = ["SkipLayerNormFusion"]
ONNX_KIND, STATIC_KIND = "onnx", "static"
STATIC_BATCH = 1024


class Embedder(Protocol):
    """Text → unit vectors; the ONNX embedder serves, sentence-transformers is the reference."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class BatchEmbedder(Embedder, Protocol):
    """An exported model dir's embedder: its manifest, and `embed_many` for the offline tools
    (a whole training file at once)."""

    @property
    def info(self) -> EmbedderInfo: ...

    def embed_many(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray: ...


class EmbedderError(RuntimeError):
    """The model dir is missing or unusable (run `signalbox-router export-model`)."""


@dataclass(frozen=True)
class EmbedderInfo:
    """`embedder.json`, written by the export step and checked against index manifests."""

    embedding_model: str
    dim: int
    max_seq_length: int
    quantization: str
    kind: str = ONNX_KIND  # manifests from before the static embedder are ONNX ones

    @classmethod
    def read(cls, model_dir: Path) -> EmbedderInfo:
        path = model_dir / MODEL_MANIFEST
        try:
            doc = orjson.loads(path.read_bytes())
            return cls(
                embedding_model=str(doc["embedding_model"]),
                dim=int(doc["dim"]),
                max_seq_length=int(doc["max_seq_length"]),
                quantization=str(doc["quantization"]),
                kind=str(doc.get("kind", ONNX_KIND)),
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EmbedderError(f"{path}: not an exported model dir ({exc})") from exc

    @property
    def vector_space(self) -> str:
        """What index vectors must match: the model and how much of a prompt it reads (an
        index embedded from 256 tokens is not searched with 64-token queries); a static table
        is a space of its own (`…@static128:128`: 128 dims, 128 tokens), never mixed with ONNX
        vectors."""
        if self.kind == STATIC_KIND:
            return f"{self.embedding_model}@{STATIC_KIND}{self.dim}:{self.max_seq_length}"
        return f"{self.embedding_model}@{self.max_seq_length}"

    def write(self, model_dir: Path) -> None:
        (model_dir / MODEL_MANIFEST).write_bytes(
            orjson.dumps(self.__dict__, option=orjson.OPT_INDENT_2)
        )


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row (a text without tokens) stays zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over tokens, then unit length (sentence-transformers Pooling + Normalize)."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    return unit_rows(summed / np.clip(weights.sum(axis=1), 1e-9, None))


class _ExportedEmbedder:
    """What both embedders share: the manifest, the weights file and the tokenizer it names."""

    def __init__(self, model_dir: Path, weights: str) -> None:
        self.info = EmbedderInfo.read(model_dir)
        for path in (model_dir / weights, model_dir / TOKENIZER_FILE):
            if not path.is_file():
                raise EmbedderError(f"{path} is missing (run `signalbox-router export-model`)")
        self.tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(self.info.max_seq_length)

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def name(self) -> str:
        return self.info.vector_space


class OnnxEmbedder(_ExportedEmbedder):
    """Thread-safe: ONNX Runtime sessions and `tokenizers` encoders may be shared across threads."""

    inline = False  # milliseconds of CPU: the router embeds in a worker thread

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort  # not on the static embedder's path

        super().__init__(model_dir, MODEL_FILE)
        self.tokenizer.enable_padding()
        model = model_dir / MODEL_FILE
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model),
            options,
            providers=["CPUExecutionProvider"],
            # Add + LayerNormalization beats ORT's SkipLayerNormalization CPU kernel (~3x)
            disabled_optimizers=SLOWER_FUSIONS,
        )
        self._inputs = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """`(len(texts), dim)` float32, unit rows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encoded = self.tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feeds)[0]
        return mean_pool_normalize(hidden, mask)

    def embed_many(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """One text per run, exactly as a query is embedded at serve time: dynamic int8
        quantises activations per tensor, so a text's vector would otherwise depend on the
        other texts (and the padding) in its batch."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.embed([text])[0]
            if progress is not None:
                progress(1)
        return out


class StaticEmbedder(_ExportedEmbedder):
    """Model2Vec-style static embeddings (`export.export_static`): a prompt's vector is the mean
    of its tokens' rows in a table distilled from the same MiniLM, so embedding costs a
    tokenisation and a gather instead of a transformer run (of the first `max_seq_length`
    tokens, 128 by default). Thread-safe: the table is read-only."""

    # Cheaper than the hand-off to a worker thread (~0.3 ms): the router embeds on its event loop.
    inline = True

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir, STATIC_FILE)
        self.tokenizer.no_padding()
        try:
            table = np.load(model_dir / STATIC_FILE)
        except (OSError, ValueError) as exc:
            raise EmbedderError(f"{model_dir / STATIC_FILE}: unreadable ({exc})") from exc
        if table.ndim != 2 or table.shape[1] != self.dim:
            raise EmbedderError(f"{model_dir / STATIC_FILE}: shape {table.shape}, dim {self.dim}")
        self.table = table.astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """`(len(texts), dim)` float32, unit rows (zero for a text without tokens)."""
        encoded = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        pooled = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, encoding in zip(pooled, encoded, strict=True):
            if encoding.ids:
                row[:] = self.table[encoding.ids].mean(axis=0)
        return unit_rows(pooled)

    def embed_many(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """In batches: a static vector does not depend on the other texts in its batch."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), STATIC_BATCH):
            chunk = texts[start : start + STATIC_BATCH]
            out[start : start + len(chunk)] = self.embed(chunk)
            if progress is not None:
                progress(len(chunk))
        return out


def load_embedder(model_dir: Path, *, threads: int = 1) -> BatchEmbedder:
    """The embedder an exported model dir's `embedder.json` names (`kind`); `threads` is ONNX
    Runtime's intra-op pool (the static embedder needs none)."""
    kind = EmbedderInfo.read(model_dir).kind
    if kind == STATIC_KIND:
        return StaticEmbedder(model_dir)
    if kind == ONNX_KIND:
        return OnnxEmbedder(model_dir, threads=threads)
    raise EmbedderError(f"{model_dir / MODEL_MANIFEST}: unknown embedder kind {kind!r}")
