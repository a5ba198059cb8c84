"""The scorer the router service runs, from its settings (router-schema §6 "Index").

At start, and on reload: the index dir is reused while its manifest matches the training file
and the exported embedder; otherwise it is rebuilt from `SIGNALBOX_KNN_TRAIN_PATH` and
persisted there. With no training file, an existing index dir is served as built (for
example by `signalbox-router build-index`). Nothing usable → `None` (`knn_unavailable`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from services.router.catalog import parse_catalog
from services.router.knn_scorer.artifacts import build_index, index_is_current, load_scorer
from services.router.knn_scorer.embedder import EmbedderError, OnnxEmbedder
from services.router.knn_scorer.index import MANIFEST_FILE, IndexLoadError
from services.router.knn_scorer.scorer import CALIBRATED_METHOD, LearnedKnnScorer
from services.router.settings import RouterSettings

log = logging.getLogger(__name__)

MODEL_DIR_ENV = "SIGNALBOX_KNN_MODEL_DIR"


def model_dir(settings: RouterSettings) -> Path:
    """`SIGNALBOX_KNN_MODEL_DIR`, else `knn-model` beside the index dir."""
    configured = os.environ.get(MODEL_DIR_ENV, "").strip()
    return Path(configured) if configured else settings.knn_index_dir.parent / "knn-model"


def open_scorer(
    settings: RouterSettings, previous: object | None = None
) -> LearnedKnnScorer | None:
    """Blocking (embedding a training file takes minutes): call it off the event loop.

    On reload, `previous` (the scorer being replaced) hands over its route memory, so
    feedback for routes planned before the swap still teaches the new index."""
    memory = previous.memory if isinstance(previous, LearnedKnnScorer) else None
    index_dir, train = settings.knn_index_dir, settings.knn_train_path
    if train is None and not (index_dir / MANIFEST_FILE).is_file():
        log.info("knn: no training file and no index; knn aliases use their default model")
        return None
    started = time.perf_counter()
    try:
        embedder = OnnxEmbedder(model_dir(settings), threads=1)
        if embedder.name != settings.embedding_model:
            raise EmbedderError(
                f"exported model is {embedder.name}, SIGNALBOX_EMBEDDING_MODEL is "
                f"{settings.embedding_model}"
            )
        if train is not None and not index_is_current(index_dir, train, embedder):
            models = None
            if settings.catalog_path is not None:
                models = sorted(parse_catalog(settings.catalog_path.read_bytes()).entries)
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
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return scorer
