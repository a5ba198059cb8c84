"""KNN decision latency (embedding included) on one core, index recall, and index load time.

Queries are real prompts from the reference training file, embedded by the int8 ONNX model
through the router's real `KnnPolicy` frame (candidate filtering, costing, scoring,
explain_detail). Index sizes beyond the embedded sample are synthetic but clustered like real
data: each synthetic vector is a real MiniLM vector plus small Gaussian noise, renormalised.
ONNX Runtime and FAISS both run with one thread. Writes `bench/results/router_knn.json`.
Run: `.venv/bin/python -m bench.router_knn_bench` (needs `signalbox-router export-model`;
`SIGNALBOX_KNN_MODEL_DIR`, default `data/knn-model`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import orjson

from services.common.pb import router_pb2
from services.router.health import ModelHealth
from services.router.knn import KnnPolicy
from services.router.knn_scorer.artifacts import fit_calibration
from services.router.knn_scorer.embedder import OnnxEmbedder
from services.router.knn_scorer.index import ExampleIndex, make_faiss_index
from services.router.knn_scorer.scorer import CALIBRATED_METHOD, LearnedKnnScorer
from services.router.knn_scorer.training_data import TrainingSet, load_training_set
from services.router.resolution import PlanContext
from services.router.routing_config import load_routing_config
from services.router.settings import RouterSettings

DATA = Path(os.environ.get("SIGNALBOX_ROUTING_DATA", "/work/shared/data/routing"))
MODEL_DIR = Path(os.environ.get("SIGNALBOX_KNN_MODEL_DIR", "data/knn-model"))
RESULTS = Path(__file__).parent / "results" / "router_knn.json"
SIZES = tuple(
    int(s) for s in os.environ.get("SIGNALBOX_BENCH_KNN_SIZES", "10000,100000").split(",")
)
SAMPLE_EVERY = 12  # ~1000 real prompts: ~800 seed the index, ~200 are queries
QUERIES = 200
NOISE = 0.35  # per-vector Gaussian noise (relative to a unit vector's norm)
RECALL_QUERIES = 200


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def synthetic(
    seed_vectors: np.ndarray, seed_scores: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """`n` clustered vectors around the real ones, each inheriting its seed's scores."""
    rng = np.random.default_rng(7)
    seeds = rng.integers(0, len(seed_vectors), n)
    noise = rng.normal(0, NOISE / np.sqrt(seed_vectors.shape[1]), (n, seed_vectors.shape[1]))
    vectors = seed_vectors[seeds] + noise.astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), seed_scores[seeds]


def recall_at_10(vectors: np.ndarray, queries: np.ndarray, index: faiss.Index) -> float:
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))


def context(tmp: Path) -> PlanContext:
    aliases = tmp / "aliases.json"
    aliases.write_bytes(
        orjson.dumps(
            {
                "auto": {
                    "policy": "knn",
                    "candidates": ["mixtral-8x7b-instruct", "gpt-4-1106-preview"],
                    "default_model": "mixtral-8x7b-instruct",
                }
            }
        )
    )
    settings = RouterSettings(router_aliases=aliases, catalog_path=DATA / "models.json")
    return PlanContext(load_routing_config(settings), ModelHealth())


def request(text: str) -> router_pb2.RouteRequest:
    req = router_pb2.RouteRequest(alias="auto", privacy_mode="summary")
    req.conversation.summary = text
    req.estimates.prompt_tokens = len(text) // 4
    return req


async def decision_latency(scorer: LearnedKnnScorer, ctx: PlanContext, texts: list[str]) -> dict:
    policy = KnnPolicy(scorer)
    for text in texts[:10]:  # warm-up
        await policy.resolve(request(text), ctx)
    samples, embed, search = [], [], []
    for text in texts:
        started = time.perf_counter()
        res = await policy.resolve(request(text), ctx)
        samples.append((time.perf_counter() - started) * 1000)
        embed.append(res.explain_detail["timings_ms"]["embed"])
        search.append(res.explain_detail["timings_ms"]["search"])
    return {
        **percentiles(samples),
        "embed_p50_ms": round(statistics.median(embed), 3),
        "search_p50_ms": round(statistics.median(search), 3),
        "search_p99_ms": percentiles(search)["p99_ms"],
    }


def load_time(index: ExampleIndex, tmp: Path) -> float:
    index.save(tmp / "idx")
    started = time.perf_counter()
    ExampleIndex.load(tmp / "idx")
    return round(time.perf_counter() - started, 3)


async def main() -> int:
    faiss.omp_set_num_threads(1)
    embedder = OnnxEmbedder(MODEL_DIR, threads=1)
    full = load_training_set(DATA / "train.jsonl")
    sample: TrainingSet = full.subset(range(0, len(full), SAMPLE_EVERY))
    print(f"embedding {len(sample)} real prompts (one thread)...", flush=True)
    vectors = embedder.embed_many(sample.prompts)
    seed_vectors, query_vectors = vectors[:-QUERIES], vectors[-QUERIES:]
    seed_set = sample.subset(range(len(sample) - QUERIES))
    query_texts = sample.prompts[-QUERIES:]
    seed_scores = seed_set.score_matrix()
    small = ExampleIndex.build(
        seed_vectors,
        seed_set.ids,
        seed_scores,
        models=sample.models,
        embedding_model=embedder.name,
        train_sha256=sample.sha256,
    )
    calibration = fit_calibration(small, seed_vectors, seed_set.prompts)
    results: dict[str, object] = {"threads": 1, "queries": QUERIES, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ctx = context(tmp)
        for size in SIZES:
            started = time.perf_counter()
            syn_vectors, syn_scores = synthetic(seed_vectors, seed_scores, size)
            index = ExampleIndex.build(
                syn_vectors,
                [f"s{i}" for i in range(size)],
                syn_scores,
                models=sample.models,
                embedding_model=embedder.name,
                train_sha256="synthetic",
            )
            built = round(time.perf_counter() - started, 1)
            scorer = LearnedKnnScorer(
                embedder, index, method=CALIBRATED_METHOD, calibration=calibration
            )
            figures = {
                "index_type": index.manifest.index_type,
                "build_s": built,
                "load_s": load_time(index, tmp),
                "decision": await decision_latency(scorer, ctx, query_texts),
            }
            approx = (
                index.index
                if index.manifest.index_type == "hnsw"
                else make_faiss_index(syn_vectors, 0)
            )
            figures["hnsw_recall_at_10"] = round(
                recall_at_10(syn_vectors, query_vectors, approx), 4
            )
            results["sizes"][str(size)] = figures  # type: ignore[index]
            print(size, orjson.dumps(figures).decode(), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
