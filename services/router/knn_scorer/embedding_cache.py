"""A disk cache of prompt vectors for the offline tools (`build-index`, `eval`, the bench).

Embedding the 12k reference prompts one per run takes about a minute of CPU; rebuilding an
index or re-running an evaluation should not pay it again. Vectors are keyed by the sha256 of
the exported model file and of each text, so a re-exported (different) model never reuses
stale vectors. The serving path does not use this: queries are new texts.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import orjson

from services.router.knn_scorer.embedder import (
    MODEL_FILE,
    MODEL_MANIFEST,
    STATIC_FILE,
    BatchEmbedder,
)

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("./build/knn-embeddings")
VECTORS_FILE, KEYS_FILE = "vectors.npy", "keys.json"
SAVE_EVERY = 256


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    """The weights (ONNX model or static table, whichever the dir holds) and `embedder.json`
    (the token limit and the embedder kind change the vectors too)."""
    digest = hashlib.sha256()
    for name in (MODEL_FILE, STATIC_FILE):
        if (model_dir / name).is_file():
            with (model_dir / name).open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    digest.update((model_dir / MODEL_MANIFEST).read_bytes())
    return digest.hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


class CachingEmbedder:
    """An exported model's embedder with `embed_many` answered from (and saved to) a per-model
    cache dir."""

    def __init__(self, inner: BatchEmbedder, model_dir: Path, cache_dir: Path) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.dir = cache_dir / model_fingerprint(model_dir)
        self._vectors = np.zeros((0, inner.dim), dtype=np.float32)
        self._rows: dict[str, int] = {}
        self.hits = self.misses = 0
        self._load()

    def _load(self) -> None:
        try:
            keys = orjson.loads((self.dir / KEYS_FILE).read_bytes())
            vectors = np.load(self.dir / VECTORS_FILE)
        except (OSError, ValueError, orjson.JSONDecodeError):
            return
        if vectors.shape != (len(keys), self.dim):
            log.warning("embedding cache inconsistent; ignored", extra={"dir": str(self.dir)})
            return
        self._vectors, self._rows = vectors, {k: i for i, k in enumerate(keys)}

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._rows, key=self._rows.__getitem__)
        buffer = io.BytesIO()
        np.save(buffer, self._vectors)
        _atomic_write(self.dir / VECTORS_FILE, buffer.getvalue())
        _atomic_write(self.dir / KEYS_FILE, orjson.dumps(keys))

    def cached(self, texts: Sequence[str]) -> np.ndarray | None:
        """The vectors of `texts` if every one is cached already, else None (nothing embedded)."""
        rows = [self._rows.get(text_key(t)) for t in texts]
        return None if None in rows else self._vectors[rows]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed(texts)

    def embed_many(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Cached vectors where known; the rest embedded exactly as the inner `embed_many`."""
        keys = [text_key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
        self.hits += len(keys) - len(missing)
        if progress is not None:
            progress(len(keys) - len(missing))
        by_key = {k: t for k, t in zip(keys, texts, strict=True)}
        for start in range(0, len(missing), SAVE_EVERY):  # an interrupted run keeps its work
            chunk = missing[start : start + SAVE_EVERY]
            fresh = self.inner.embed_many([by_key[k] for k in chunk], progress)
            base = len(self._vectors)
            self._vectors = np.concatenate([self._vectors, fresh])
            self._rows.update((k, base + i) for i, k in enumerate(chunk))
            self.misses += len(chunk)
            self._save()
        return self._vectors[[self._rows[k] for k in keys]]
