"""KNN fixtures: the exported ONNX and static models (each exported once, and again when an
export default changes) and real prompts, embedded once per session so every test can build
small indexes over real MiniLM vectors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import struct_pb2

from services.common.pb import router_pb2
from services.router.catalog import Catalog, parse_catalog
from services.router.health import ModelHealth
from services.router.knn_scorer.embedder import (
    MODEL_MANIFEST,
    ONNX_KIND,
    STATIC_KIND,
    EmbedderError,
    EmbedderInfo,
    OnnxEmbedder,
    StaticEmbedder,
)
from services.router.knn_scorer.embedding_cache import CachingEmbedder
from services.router.knn_scorer.export import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_PCA_DIMS,
    DEFAULT_STATIC_MAX_TOKENS,
    export_model,
    export_static,
)
from services.router.knn_scorer.training_data import TrainingSet, load_training_set
from services.router.resolution import PlanContext
from services.router.routing_config import load_routing_config
from services.router.settings import RouterSettings
from tests.router.conftest import REFERENCE_CATALOG

TRAIN_FILE = REFERENCE_CATALOG.parent / "train.jsonl"
REPO = Path(__file__).resolve().parents[3]
SUBSET_EVERY = 40  # ~300 real prompts, every 40th line of the reference file


def _exported_with_defaults(path: Path, kind: str, tokens: int, dim: int | None = None) -> bool:
    """Whether `path` holds an export made with today's defaults: a changed default (token
    limit, dimensions) re-exports the gitignored dir instead of testing a stale one."""
    try:
        info = EmbedderInfo.read(path)
    except EmbedderError:
        return False
    return info.kind == kind and info.max_seq_length == tokens and dim in (None, info.dim)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """`SIGNALBOX_KNN_MODEL_DIR` as given, else `build/knn-model` (gitignored), exported when
    missing or stale, so a clean clone pays the export (~15 s of CPU) once."""
    given = os.environ.get("SIGNALBOX_KNN_MODEL_DIR")
    if given:  # the caller's own export, used as it is
        path = Path(given)
        current = (path / MODEL_MANIFEST).is_file()
    else:
        path = REPO / "build" / "knn-model"
        current = _exported_with_defaults(path, ONNX_KIND, DEFAULT_MAX_TOKENS)
    if not current:
        export_model(path)
    return path


@pytest.fixture(scope="session")
def embedder(model_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(model_dir, threads=1)


@pytest.fixture(scope="session")
def static_model_dir() -> Path:
    """`build/knn-model-static` (gitignored, beside the ONNX export); distilled when missing or
    stale (~40-80 s of CPU for the whole vocabulary), so later sessions reuse it."""
    path = REPO / "build" / "knn-model-static"
    if not _exported_with_defaults(path, STATIC_KIND, DEFAULT_STATIC_MAX_TOKENS, DEFAULT_PCA_DIMS):
        export_static(path)
    return path


@pytest.fixture(scope="session")
def static_embedder(static_model_dir: Path) -> StaticEmbedder:
    return StaticEmbedder(static_model_dir)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return parse_catalog(REFERENCE_CATALOG.read_bytes())


@pytest.fixture(scope="session")
def real_subset(catalog: Catalog) -> TrainingSet:
    full = load_training_set(TRAIN_FILE, catalog.entries)
    return full.subset(range(0, len(full), SUBSET_EVERY))


@pytest.fixture(scope="session")
def real_vectors(model_dir: Path, embedder: OnnxEmbedder, real_subset: TrainingSet) -> np.ndarray:
    """Embedded one per run by the serving embedder; kept in `build/` for the next session
    (its own cache dir: these are one-thread vectors, bit-identical to serving ones)."""
    cache = CachingEmbedder(embedder, model_dir, REPO / "build" / "knn-embeddings-tests")
    return cache.embed_many(real_subset.prompts)


@pytest.fixture
def subset_file(tmp_path: Path, real_subset: TrainingSet) -> Iterator[Path]:
    """The subset as a JSONL training file of its own."""
    import orjson

    path = tmp_path / "train.jsonl"
    with path.open("wb") as handle:
        for e in real_subset.examples:
            record = {"id": e.id, "source": e.source, "prompt": e.prompt, "scores": e.scores}
            handle.write(orjson.dumps(record) + b"\n")
    yield path


class CachedEmbedder:
    """The real ONNX embedder, answering known prompts from the session's vectors (which are
    bit-identical: texts are embedded one per run), so tests can rebuild indexes cheaply."""

    def __init__(self, inner: OnnxEmbedder, texts: list[str], vectors: np.ndarray) -> None:
        self.inner = inner
        self.cache = dict(zip(texts, vectors, strict=True))
        self.name, self.dim = inner.name, inner.dim
        self.misses = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            vector = self.cache.get(text)
            if vector is None:
                self.misses += 1
                vector = self.cache[text] = self.inner.embed([text])[0]
            out[i] = vector
        return out


@pytest.fixture
def cached_embedder(
    embedder: OnnxEmbedder, real_subset: TrainingSet, real_vectors: np.ndarray
) -> CachedEmbedder:
    return CachedEmbedder(embedder, real_subset.prompts, real_vectors)


@pytest.fixture
def context(router_settings: Callable[..., RouterSettings]) -> PlanContext:
    return PlanContext(load_routing_config(router_settings()), ModelHealth())


def request(
    text: str | None = "Which planet is largest?",
    *,
    alias: str = "auto",
    privacy: str = "summary",
    tradeoff: float | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> router_pb2.RouteRequest:
    req = router_pb2.RouteRequest(alias=alias, privacy_mode=privacy)
    req.estimates.prompt_tokens = 100
    req.estimates.max_output_tokens = 256
    if text is not None:
        req.conversation.summary = text
    for message in messages or ():
        struct = struct_pb2.Struct()
        struct.update(message)
        req.conversation.recent_messages.append(struct)
    if tradeoff is not None:
        req.overrides.update({"quality_cost_tradeoff": tradeoff})
    return req


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first KNN test may pay the session's model export and prompt embedding (a minute
    of CPU on a clean clone, more on a busy machine): give these tests room beyond 120 s."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.timeout(600))
