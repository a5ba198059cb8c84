"""Building, reusing and loading an index dir; what `build-index`, `eval` and the service share."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import orjson

from services.router.catalog import parse_catalog
from services.router.knn_scorer.calibration import MAX_RADIUS, Calibration, neighbour_features
from services.router.knn_scorer.embedder import Embedder
from services.router.knn_scorer.index import (
    HNSW_THRESHOLD,
    ExampleIndex,
    IndexLoadError,
    IndexManifest,
)
from services.router.knn_scorer.lexical import LEXICAL_FILE, LexicalModel, out_of_fold
from services.router.knn_scorer.online import ONLINE_LOG, OnlineExamples, RouteMemory
from services.router.knn_scorer.scorer import LearnedKnnScorer, ScoringMethod
from services.router.knn_scorer.training_data import (
    IdFilter,
    TrainingSet,
    file_sha256,
    load_training_set,
)

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
CALIBRATION_FILE = "calibration.json"


def catalog_models(models_path: Path) -> list[str]:
    """The catalog ids of a models.json; training scores for other models are ignored."""
    return sorted(parse_catalog(models_path.read_bytes()).entries)


def build_from_set(
    data: TrainingSet,
    embedder: Embedder,
    method: ScoringMethod,
    *,
    threshold: int = HNSW_THRESHOLD,
    progress: Progress | None = None,
    vectors: np.ndarray | None = None,
) -> tuple[ExampleIndex, Calibration | None]:
    """Embed (unless `vectors` are given), index, and fit the calibration the method needs."""
    if len(data) == 0:
        raise ValueError("no usable training examples")
    if vectors is None:
        vectors = embed_texts(embedder, data.prompts, progress)
    extra = {"method": asdict(method), "rejected": dict(data.rejected)}
    index = ExampleIndex.build(
        vectors,
        data.ids,
        data.score_matrix(),
        models=data.models,
        embedding_model=embedder.name,
        train_sha256=data.sha256,
        threshold=threshold,
        extra=extra,
    )
    calibration = None
    if method.kind == "calibrated":
        calibration = fit_calibration(index, vectors, data.prompts)
    return index, calibration


def fit_calibration(index: ExampleIndex, vectors: np.ndarray, prompts: list[str]) -> Calibration:
    """Fit on leave-one-out neighbours and out-of-fold lexical predictions, so each example
    is scored as an unseen query would be."""
    scores = index.scores
    fallback = np.nan_to_num(np.nanmean(scores, axis=0))
    lexical = out_of_fold(prompts, scores, index.models)
    sims, rows = index.search(vectors, min(MAX_RADIUS + 1, len(index)))
    features = []
    for i in range(len(vectors)):
        others = rows[i] != i
        if others.all():
            others[-1] = False
        mine = rows[i][others]
        valid = mine >= 0
        features.append(
            neighbour_features(
                sims[i][others][valid], scores[mine[valid]], prompts[i], fallback, lexical[i]
            )
        )
    model = LexicalModel.fit(prompts, scores, index.models)
    return Calibration.fit(np.asarray(features), scores, index.models, model)


def embed_texts(
    embedder: Embedder, texts: list[str], progress: Progress | None = None
) -> np.ndarray:
    embed_many = getattr(embedder, "embed_many", None)
    if embed_many is not None:
        return embed_many(texts, progress=progress)
    vectors = embedder.embed(texts)
    if progress is not None:
        progress(len(texts))
    return vectors


def build_index(
    train_path: Path,
    models: Iterable[str] | None,
    embedder: Embedder,
    out: Path,
    method: ScoringMethod,
    *,
    threshold: int = HNSW_THRESHOLD,
    progress: Progress | None = None,
    keep: IdFilter | None = None,
) -> ExampleIndex:
    """Build and persist an index dir (keeping its online examples' log, if any).

    With `keep`, only the selected ids are indexed and the manifest says so (`subset`), so
    the service never mistakes such an index for one of the whole file."""
    started = time.perf_counter()
    data = load_training_set(train_path, models, keep)
    index, calibration = build_from_set(
        data, embedder, method, threshold=threshold, progress=progress
    )
    if keep is not None:
        index.manifest.extra["subset"] = "filtered"
    carried = {}
    if (out / ONLINE_LOG).is_file():
        carried[ONLINE_LOG] = (out / ONLINE_LOG).read_bytes()
    if calibration is not None:
        carried[CALIBRATION_FILE] = orjson.dumps(calibration.to_json())
        if calibration.lexical is not None:
            carried[LEXICAL_FILE] = calibration.lexical.to_bytes()
    index.save(out, carried)
    log.info(
        "knn index built",
        extra={
            "examples": len(index),
            "index_type": index.manifest.index_type,
            "rejected": dict(data.rejected),
            "seconds": round(time.perf_counter() - started, 1),
            "out": str(out),
        },
    )
    return index


def index_is_current(index_dir: Path, train_path: Path, embedder: Embedder) -> bool:
    """Whether `index_dir` was built from this training file with this embedder."""
    try:
        manifest = IndexManifest.read(index_dir)
    except IndexLoadError:
        return False
    return "subset" not in manifest.extra and manifest.matches(
        embedder.name, embedder.dim, file_sha256(train_path)
    )


def load_calibration(index_dir: Path) -> Calibration | None:
    """The index dir's calibration (and lexical model), if it was built with one."""
    if not (index_dir / CALIBRATION_FILE).is_file():
        return None
    try:
        lexical = None
        if (index_dir / LEXICAL_FILE).is_file():
            lexical = LexicalModel.from_bytes((index_dir / LEXICAL_FILE).read_bytes())
        doc = orjson.loads((index_dir / CALIBRATION_FILE).read_bytes())
        return Calibration.from_json(doc, lexical)
    except (OSError, KeyError, ValueError, orjson.JSONDecodeError) as exc:
        raise IndexLoadError(f"{index_dir}: unreadable calibration: {exc}") from exc


def load_scorer(
    index_dir: Path,
    embedder: Embedder,
    *,
    method: ScoringMethod | None = None,
    online_capacity: int | None = None,
    memory: RouteMemory | None = None,
    learn: bool = True,
) -> LearnedKnnScorer:
    """The scorer over a persisted index dir, with its online examples replayed
    (`learn=False`: the training examples alone, nothing written)."""
    index = ExampleIndex.load(index_dir)
    manifest = index.manifest
    if manifest.embedding_model != embedder.name or manifest.dim != embedder.dim:
        raise IndexLoadError(
            f"{index_dir} was built with {manifest.embedding_model} ({manifest.dim}-d), "
            f"not {embedder.name} ({embedder.dim}-d)"
        )
    method = method or ScoringMethod.from_dict(manifest.extra.get("method", {}))
    calibration = load_calibration(index_dir)
    online = None
    if learn:
        online = OnlineExamples(
            index.models,
            manifest.dim,
            log_path=index_dir / ONLINE_LOG,
            **({"capacity": online_capacity} if online_capacity else {}),
        )
    return LearnedKnnScorer(
        embedder, index, method=method, calibration=calibration, online=online, memory=memory
    )
