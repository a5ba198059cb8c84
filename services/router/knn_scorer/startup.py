"""The scorer the router service runs, from its settings (router-schema §6 "Index").

At start, and on reload: the index dir is reused while its manifest matches the training file
and the exported embedder; otherwise it is rebuilt from `SIGNALBOX_KNN_TRAIN_PATH` and
persisted there. With no training file, an existing index dir is served as built (for
example by `signalbox-router build-index`); with neither, the scorer starts empty and learns
from feedback (spec README). No exported model → `None` (`knn_unavailable`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from services.router.catalog import parse_catalog
from services.router.knn_scorer.artifacts import build_index, index_is_current, load_scorer
from services.router.knn_scorer.embedder import (
    MODEL_MANIFEST,
    Embedder,
    EmbedderError,
    load_embedder,
)
from services.router.knn_scorer.index import MANIFEST_FILE, ExampleIndex, IndexLoadError
from services.router.knn_scorer.online import ONLINE_LOG, OnlineExamples, RouteMemory
from services.router.knn_scorer.scorer import CALIBRATED_METHOD, LearnedKnnScorer
from services.router.settings import RouterSettings

log = logging.getLogger(__name__)

MODEL_DIR_ENV = "SIGNALBOX_KNN_MODEL_DIR"


def model_dir(settings: RouterSettings) -> Path:
    """`SIGNALBOX_KNN_MODEL_DIR`, else `knn-model` beside the index dir."""
    configured = settings.knn_model_dir
    return configured if configured is not None else settings.knn_index_dir.parent / "knn-model"


def open_scorer(
    settings: RouterSettings, previous: object | None = None
) -> LearnedKnnScorer | None:
    """Blocking (embedding a training file takes minutes): call it off the event loop.

    On reload, `previous` (the scorer being replaced) hands over its route memory, so
    feedback for routes planned before the swap still teaches the new index."""
    memory = previous.memory if isinstance(previous, LearnedKnnScorer) else None
    index_dir, train = settings.knn_index_dir, settings.knn_train_path
    fresh = train is None and not (index_dir / MANIFEST_FILE).is_file()
    if fresh and not (model_dir(settings) / MODEL_MANIFEST).is_file():
        log.info("knn: no training file, index or model; knn aliases use their default model")
        return None
    started = time.perf_counter()
    try:
        embedder = load_embedder(model_dir(settings), threads=1)
        if embedder.info.embedding_model != settings.embedding_model:
            raise EmbedderError(
                f"exported model is {embedder.info.embedding_model}, SIGNALBOX_EMBEDDING_MODEL is "
                f"{settings.embedding_model}"
            )
        models = None
        if settings.catalog_path is not None:
            models = sorted(parse_catalog(settings.catalog_path.read_bytes()).entries)
        if fresh:
            return cold_start(index_dir, embedder, models, memory)
        if train is not None and not index_is_current(index_dir, train, embedder):
            log.info("knn: building the index", extra={"train": str(train), "out": str(index_dir)})
            build_index(train, models, embedder, index_dir, CALIBRATED_METHOD)
        scorer = load_scorer(index_dir, embedder, memory=memory)
    except (EmbedderError, IndexLoadError, OSError, ValueError) as exc:
        log.error("knn unavailable", extra={"error": str(exc), "index_dir": str(index_dir)})
        return None
    log.info(
        "knn ready",
        extra={
            "examples": scorer.examples,
            "method": scorer.method.kind,
            "index_type": scorer.index.manifest.index_type,
            "embedder": embedder.name,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return scorer


def cold_start(
    index_dir: Path, embedder: Embedder, models: list[str] | None, memory: RouteMemory | None
) -> LearnedKnnScorer | None:
    """No training file and no index: an empty example set that grows from feedback quality
    (persisted in `index_dir/online.jsonl`); until neighbours exist, plans use the default
    model (`too_few_neighbors`). Needs the catalog to know which models feedback may score."""
    if not models:
        log.info("knn: no training file, index or catalog; knn aliases use their default model")
        return None
    index_dir.mkdir(parents=True, exist_ok=True)
    empty = ExampleIndex.build(
        np.zeros((0, embedder.dim), dtype=np.float32),
        [],
        np.zeros((0, len(models)), dtype=np.float32),
        models=models,
        embedding_model=embedder.name,
        train_sha256="",
        extra={"cold_start": True},
    )
    online = OnlineExamples(models, embedder.dim, log_path=index_dir / ONLINE_LOG)
    log.info("knn: cold start, learning from feedback", extra={"online_examples": len(online)})
    return LearnedKnnScorer(embedder, empty, online=online, memory=memory)
