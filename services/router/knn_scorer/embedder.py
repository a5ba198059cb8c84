"""The serving embedder: int8 ONNX MiniLM through ONNX Runtime, tokenised by `tokenizers`.

Nothing here imports torch, so the router image does not ship it. Mean pooling and L2
normalisation happen in numpy exactly as sentence-transformers' Pooling + Normalize modules do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import orjson
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

MODEL_FILE = "model_int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
MODEL_MANIFEST = "embedder.json"
SLOWER_FUSIONS = ["SkipLayerNormFusion"]


class Embedder(Protocol):
    """Text → unit vectors; the ONNX embedder serves, sentence-transformers is the reference."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class EmbedderError(RuntimeError):
    """The model dir is missing or unusable (run `signalbox-router export-model`)."""


@dataclass(frozen=True)
class EmbedderInfo:
    """`embedder.json`, written by the export step and checked against index manifests."""

    embedding_model: str
    dim: int
    max_seq_length: int
    quantization: str

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
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EmbedderError(f"{path}: not an exported model dir ({exc})") from exc

    @property
    def vector_space(self) -> str:
        """What index vectors must match: the model and how much of a prompt it reads (an
        index embedded from 256 tokens is not searched with 64-token queries)."""
        return f"{self.embedding_model}@{self.max_seq_length}"

    def write(self, model_dir: Path) -> None:
        (model_dir / MODEL_MANIFEST).write_bytes(
            orjson.dumps(self.__dict__, option=orjson.OPT_INDENT_2)
        )


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over tokens, then unit length (sentence-transformers Pooling + Normalize)."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


class OnnxEmbedder:
    """Thread-safe: ONNX Runtime sessions and `tokenizers` encoders may be shared across threads."""

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        self.info = EmbedderInfo.read(model_dir)
        model, tokenizer = model_dir / MODEL_FILE, model_dir / TOKENIZER_FILE
        for path in (model, tokenizer):
            if not path.is_file():
                raise EmbedderError(f"{path} is missing (run `signalbox-router export-model`)")
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(self.info.max_seq_length)
        self.tokenizer.enable_padding()
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

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def name(self) -> str:
        return self.info.vector_space

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
