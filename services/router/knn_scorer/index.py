"""The persisted example index: FAISS vectors, example ids, their score matrix, a manifest.

Layout of an index dir (router-schema §6 plus the scores the policy needs):
`index.faiss`, `ids.json`, `scores.npy` (n x models, NaN = not scored), `manifest.json`
`{embedding_model, dim, train_sha256, count, models, index_type, ...}`. Exact inner product
(`IndexFlatIP`) up to `HNSW_THRESHOLD` examples, HNSW above it, IVF-flat past
`IVF_THRESHOLD`. A dir is written beside the target and renamed into place, so a reader sees
either the old index or the new one.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
HNSW_THRESHOLD = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
# 100k clustered bench vectors, k = 100, one core: recall@10 0.974 (ONNX) / 0.990 (static),
# search p50 0.63 / 0.46 ms; efSearch 384 gave 0.984 / 0.998 for +0.27 ms / +0.22 ms
HNSW_EF_SEARCH = 256
IVF_THRESHOLD = 250_000
IVF_NPROBE = 48  # of ~1024 lists at 1M: recall@10 >= 0.95 on clustered vectors (bench)
IVF_TRAIN_POINTS_PER_LIST = 48
IVF_TRAIN_ITERATIONS = 12
ADD_CHUNK = 65_536

INDEX_FILE, IDS_FILE, SCORES_FILE, MANIFEST_FILE = (
    "index.faiss",
    "ids.json",
    "scores.npy",
    "manifest.json",
)


class IndexLoadError(RuntimeError):
    """An index dir is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class IndexManifest:
    embedding_model: str
    dim: int
    train_sha256: str
    count: int
    models: list[str]
    index_type: str  # "flat" | "hnsw" | "ivf"
    format_version: int = FORMAT_VERSION
    built_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def matches(self, embedding_model: str, dim: int, train_sha256: str) -> bool:
        """Whether this index was built from that training file with that embedder."""
        return (
            self.format_version == FORMAT_VERSION
            and self.embedding_model == embedding_model
            and self.dim == dim
            and self.train_sha256 == train_sha256
        )

    @classmethod
    def read(cls, index_dir: Path) -> IndexManifest:
        path = index_dir / MANIFEST_FILE
        try:
            return cls(**orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError, TypeError) as exc:
            raise IndexLoadError(f"{path}: unreadable manifest ({exc})") from exc


def ivf_lists(n: int) -> int:
    """IVF list count: ~sqrt(n), a power of two, at least 64."""
    return max(64, 1 << round(np.log2(max(n, 1)) / 2))


def _ivf(vectors: np.ndarray) -> faiss.Index:
    """IVF-flat trained on a sample (k-means on all of a million vectors takes minutes)."""
    dim, lists = vectors.shape[1], ivf_lists(len(vectors))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_LIST
    index.cp.niter = IVF_TRAIN_ITERATIONS
    rng = np.random.default_rng(0)
    sample = rng.choice(len(vectors), min(len(vectors), lists * IVF_TRAIN_POINTS_PER_LIST), False)
    index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
    index.nprobe = IVF_NPROBE
    return index


def make_faiss_index(
    vectors: np.ndarray, threshold: int = HNSW_THRESHOLD, ivf_threshold: int = IVF_THRESHOLD
) -> faiss.Index:
    """Exact search for small sets; HNSW (inner product) once exact search gets slow; IVF
    past `ivf_threshold`, where building an HNSW graph would take many minutes."""
    dim = vectors.shape[1]
    if len(vectors) <= threshold:
        index: faiss.Index = faiss.IndexFlatIP(dim)
    elif len(vectors) <= ivf_threshold:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        index = _ivf(vectors)
    for start in range(0, len(vectors), ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    return index


def index_type(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    return "ivf" if isinstance(index, faiss.IndexIVF) else "flat"


def tune_for_search(index: faiss.Index) -> None:
    """Search-time knobs are not all persisted by `write_index`; set ours after a load."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = IVF_NPROBE


@dataclass
class ExampleIndex:
    """The searchable training examples; immutable once built (online ones live elsewhere)."""

    index: faiss.Index
    ids: list[str]
    scores: np.ndarray
    manifest: IndexManifest

    def __post_init__(self) -> None:
        n = self.index.ntotal
        if len(self.ids) != n or self.scores.shape != (n, len(self.manifest.models)):
            raise IndexLoadError(
                f"inconsistent index: {n} vectors, {len(self.ids)} ids, scores {self.scores.shape}"
            )

    @property
    def models(self) -> list[str]:
        return self.manifest.models

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows), best first; rows of -1 (fewer than k examples) are dropped."""
        sims, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return sims, rows

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Sequence[str],
        scores: np.ndarray,
        *,
        models: Sequence[str],
        embedding_model: str,
        train_sha256: str,
        threshold: int = HNSW_THRESHOLD,
        extra: dict[str, Any] | None = None,
    ) -> ExampleIndex:
        index = make_faiss_index(vectors, threshold)
        manifest = IndexManifest(
            embedding_model=embedding_model,
            dim=int(vectors.shape[1]),
            train_sha256=train_sha256,
            count=len(ids),
            models=list(models),
            index_type=index_type(index),
            extra=extra or {},
        )
        return cls(index, list(ids), np.asarray(scores, dtype=np.float32), manifest)

    def save(self, out: Path, extra_files: Mapping[str, bytes] | None = None) -> None:
        """Write into a sibling temp dir (with `extra_files`), then swap it in for `out`."""
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-new-"))
        try:
            faiss.write_index(self.index, str(work / INDEX_FILE))
            (work / IDS_FILE).write_bytes(orjson.dumps(self.ids))
            np.save(work / SCORES_FILE, self.scores)
            for name, data in (extra_files or {}).items():
                (work / name).write_bytes(data)
            (work / MANIFEST_FILE).write_bytes(
                orjson.dumps(asdict(self.manifest), option=orjson.OPT_INDENT_2)
            )
            replace_dir(work, out)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    @classmethod
    def load(cls, index_dir: Path) -> ExampleIndex:
        manifest = IndexManifest.read(index_dir)
        try:
            index = faiss.read_index(str(index_dir / INDEX_FILE))
            ids = orjson.loads((index_dir / IDS_FILE).read_bytes())
            scores = np.load(index_dir / SCORES_FILE)
        except (OSError, RuntimeError, ValueError, orjson.JSONDecodeError) as exc:
            raise IndexLoadError(f"{index_dir}: incomplete index ({exc})") from exc
        tune_for_search(index)
        if index.d != manifest.dim or index.ntotal != manifest.count:
            raise IndexLoadError(f"{index_dir}: index does not match its manifest")
        return cls(index, ids, scores, manifest)


def replace_dir(new: Path, target: Path) -> None:
    """Swap `new` into `target`'s place; the old dir is removed only after the swap."""
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}-old-{time.time_ns()}")
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
