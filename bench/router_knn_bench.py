"""KNN routing figures: decision latency (embedding included) at 10k / 100k / 1M examples,
exact vs approximate recall@10, and PlanBatch(64) vs 64 single Plan calls over gRPC.

- Embedding is the real int8 ONNX MiniLM on one thread (`router_knn_static_bench` runs the same
  measurements with the static embedder); queries are real prompts from the
  reference training file, run through the router's `KnnPolicy` (filtering, costing, scoring,
  explain_detail). Two query sets: the prompts as they are (MMLU/GSM8K questions, ~95 tokens)
  and their first 120 characters (a chat-sized message).
- Index sizes beyond the data are synthetic but clustered like it: each vector is a real MiniLM
  vector plus Gaussian noise, renormalised, inheriting that example's scores. 10k is exact
  (`IndexFlatIP`), 100k HNSW, 1M IVF-flat, as the router would build them.
- Recall@10 of the approximate index against exact search is measured on the synthetic sets
  and, when `build/knn-embeddings` holds all 12k reference vectors (after `build-index`), on
  the real vectors too.
- PlanBatch: one in-process router (gRPC on loopback, the 10k index), 64 KNN requests as one
  `PlanBatch` vs 64 sequential `Plan` calls; per-plan time, median of rounds.

FAISS and ONNX Runtime use one thread while measuring (index builds may use every core). Wall
times and this process's CPU time are both recorded: on a busy machine the CPU figures are the
steadier ones. Writes `bench/results/router_knn.json`.
Run: `.venv/bin/python -m bench.router_knn_bench` (~2-3 min; needs `signalbox-router
export-model --out build/knn-model`, or `SIGNALBOX_KNN_MODEL_DIR`).
Sizes: `SIGNALBOX_BENCH_KNN_SIZES=10000,100000,1000000`.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson

from services.common.grpc_client import open_channel
from services.common.pb import router_pb2, router_pb2_grpc
from services.router.app import RouterApp
from services.router.health import ModelHealth
from services.router.knn import KnnPolicy
from services.router.knn_scorer.artifacts import fit_calibration
from services.router.knn_scorer.embedder import load_embedder
from services.router.knn_scorer.embedding_cache import DEFAULT_CACHE_DIR, CachingEmbedder
from services.router.knn_scorer.index import ExampleIndex, make_faiss_index
from services.router.knn_scorer.scorer import CALIBRATED_METHOD, LearnedKnnScorer
from services.router.knn_scorer.training_data import TrainingSet, load_training_set
from services.router.resolution import PlanContext
from services.router.routing_config import load_routing_config
from services.router.settings import RouterSettings

DATA = Path(os.environ.get("SIGNALBOX_ROUTING_DATA", "/work/shared/data/routing"))
MODEL_DIR = Path(os.environ.get("SIGNALBOX_KNN_MODEL_DIR", "build/knn-model"))
RESULTS = Path(__file__).parent / "results" / "router_knn.json"
SIZES = tuple(
    int(s) for s in os.environ.get("SIGNALBOX_BENCH_KNN_SIZES", "10000,100000,1000000").split(",")
)
SAMPLE_EVERY = 12  # ~1000 real prompts: ~900 seed the synthetic sets, 100 are queries
QUERIES = 100
SHORT_CHARS = 120
NOISE = 0.35  # per-vector Gaussian noise (relative to a unit vector's norm)
RECALL_QUERIES = 200
BATCH = 64
BATCH_ROUNDS = 3
DECISION_ROUNDS = 3  # each query decided 3 times: 300 samples, so p99 is not just the maximum
ALIASES = {
    "auto": {
        "policy": "knn",
        "candidates": ["mixtral-8x7b-instruct", "gpt-4-1106-preview"],
        "default_model": "mixtral-8x7b-instruct",
        "sticky_turns": 0,
    }
}


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[max(0, int(np.ceil(len(ordered) * 0.99)) - 1)], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def synthetic(
    seed_vectors: np.ndarray, seed_scores: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """`n` clustered vectors around the real ones (float32, built in chunks to bound memory)."""
    rng = np.random.default_rng(7)
    seeds = rng.integers(0, len(seed_vectors), n)
    dim = seed_vectors.shape[1]
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        rows = seeds[start : start + 100_000]
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32) * (NOISE / np.sqrt(dim))
        block = seed_vectors[rows] + noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start : start + len(rows)] = block
    return vectors, seed_scores[seeds]


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Ground truth by brute force, chunked (no second copy of a million vectors)."""
    best_sims = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 10), dtype=np.int64)
    for start in range(0, len(vectors), 200_000):
        sims = queries @ vectors[start : start + 200_000].T
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        merged_sims = np.hstack([best_sims, np.take_along_axis(sims, top, 1)])
        merged_rows = np.hstack([best_rows, top + start])
        keep = np.argsort(-merged_sims, axis=1)[:, :10]
        best_sims = np.take_along_axis(merged_sims, keep, 1)
        best_rows = np.take_along_axis(merged_rows, keep, 1)
    return best_rows


def recall_at_10(truth: np.ndarray, index: faiss.Index, queries: np.ndarray) -> float:
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))


def settings(tmp: Path) -> RouterSettings:
    aliases = tmp / "aliases.json"
    aliases.write_bytes(orjson.dumps(ALIASES))
    return RouterSettings(
        router_aliases=aliases,
        catalog_path=DATA / "models.json",
        router_bind="127.0.0.1:0",
        router_http_bind="127.0.0.1:0",
        knn_index_dir=tmp / "unused",
    )


def route_request(text: str) -> router_pb2.RouteRequest:
    req = router_pb2.RouteRequest(alias="auto", privacy_mode="summary")
    req.conversation.summary = text
    req.estimates.prompt_tokens = len(text) // 4
    return req


async def decision_latency(scorer: LearnedKnnScorer, ctx: PlanContext, texts: list[str]) -> dict:
    policy = KnnPolicy(scorer)
    for text in texts[:5]:  # warm-up
        await policy.resolve(route_request(text), ctx)
    samples, cpu, embed, search = [], [], [], []
    for text in texts * DECISION_ROUNDS:
        started, cpu_started = time.perf_counter(), time.process_time()
        res = await policy.resolve(route_request(text), ctx)
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
        embed.append(res.explain_detail["timings_ms"]["embed"])
        search.append(res.explain_detail["timings_ms"]["search"])
    return {
        **percentiles(samples),
        "cpu": percentiles(cpu),  # this process's CPU: less sensitive to a busy machine
        "embed": percentiles(embed),
        "search": percentiles(search),
    }


def load_time(index: ExampleIndex, tmp: Path) -> float:
    index.save(tmp / "idx")
    started = time.perf_counter()
    ExampleIndex.load(tmp / "idx")
    return round(time.perf_counter() - started, 3)


async def plan_batch_vs_singles(
    scorer: LearnedKnnScorer, tmp: Path, texts: list[str]
) -> dict[str, Any]:
    """Per-plan wall time over gRPC: 64 sequential `Plan` calls vs one `PlanBatch` of 64."""
    app = RouterApp(settings(tmp), knn_scorer=scorer)
    await app.start()
    requests = [route_request(texts[i % len(texts)]) for i in range(BATCH)]
    singles, batches, singles_cpu, batches_cpu = [], [], [], []
    try:
        async with open_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            await stub.PlanBatch(router_pb2.PlanBatchRequest(plans=requests[:4]))  # warm-up
            for _ in range(BATCH_ROUNDS):
                started, cpu_started = time.perf_counter(), time.process_time()
                for request in requests:
                    await stub.Plan(request)
                singles.append((time.perf_counter() - started) * 1000 / BATCH)
                singles_cpu.append((time.process_time() - cpu_started) * 1000 / BATCH)
                started, cpu_started = time.perf_counter(), time.process_time()
                reply = await stub.PlanBatch(router_pb2.PlanBatchRequest(plans=requests))
                batches.append((time.perf_counter() - started) * 1000 / BATCH)
                batches_cpu.append((time.process_time() - cpu_started) * 1000 / BATCH)
                assert all(item.HasField("plan") for item in reply.plans)
    finally:
        await app.stop()
    single, batch = statistics.median(singles), statistics.median(batches)
    return {
        "plans": BATCH,
        "rounds": BATCH_ROUNDS,
        "single_ms_per_plan": round(single, 3),
        "batch_ms_per_plan": round(batch, 3),
        "batch_over_single": round(batch / single, 3),
        # client + server CPU (one process) per plan
        "single_cpu_ms_per_plan": round(statistics.median(singles_cpu), 3),
        "batch_cpu_ms_per_plan": round(statistics.median(batches_cpu), 3),
    }


def real_recall(cache: CachingEmbedder, full: TrainingSet) -> dict[str, Any] | None:
    """HNSW and IVF recall@10 on all reference vectors, when `build-index` has cached them."""
    vectors = cache.cached(full.prompts)
    if vectors is None:
        return None
    base, queries = vectors[RECALL_QUERIES:], vectors[:RECALL_QUERIES]
    truth = exact_top10(base, queries)
    figures: dict[str, Any] = {"examples": len(base)}
    for name, kwargs in (("hnsw", {"threshold": 0}), ("ivf", {"threshold": 0, "ivf_threshold": 0})):
        figures[f"{name}_recall_at_10"] = round(
            recall_at_10(truth, make_faiss_index(base, **kwargs), queries), 4
        )
    return figures


def machine() -> dict[str, Any]:
    """CPU model, whether it has AVX-512 VNNI (int8 GEMM kernels) and the load average: the
    figures move with both, so they travel with the results."""
    cpuinfo = Path("/proc/cpuinfo")
    info = cpuinfo.read_text() if cpuinfo.exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    return {
        "cpu": model.group(1) if model else "",
        "cpus": os.cpu_count(),
        "avx512_vnni": "avx512_vnni" in info,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def measure(model_dir: Path) -> dict[str, Any]:
    """Every measurement, with the embedder exported in `model_dir`."""
    faiss.omp_set_num_threads(1)
    embedder = load_embedder(model_dir, threads=1)
    cache = CachingEmbedder(embedder, model_dir, DEFAULT_CACHE_DIR)
    full = load_training_set(DATA / "train.jsonl")
    sample: TrainingSet = full.subset(range(0, len(full), SAMPLE_EVERY))
    print(f"embedding {len(sample)} real prompts (cached in {cache.dir})...", flush=True)
    vectors = cache.embed_many(sample.prompts)
    seed_vectors, query_vectors = vectors[:-QUERIES], vectors[-QUERIES:]
    seed_set = sample.subset(range(len(sample) - QUERIES))
    texts = sample.prompts[-QUERIES:]
    short_texts = [t[:SHORT_CHARS] for t in texts]
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
    tokens = [len(embedder.tokenizer.encode(t).ids) for t in texts]
    short_tokens = [len(embedder.tokenizer.encode(t).ids) for t in short_texts]
    results: dict[str, Any] = {
        "machine_at_start": machine(),
        "embedder": embedder.name,
        "threads": 1,
        "queries": QUERIES,
        "query_tokens_mean": {
            "full": round(statistics.fmean(tokens), 1),
            "short": round(statistics.fmean(short_tokens), 1),
        },
        "sizes": {},
    }
    recall_queries = np.vstack([query_vectors, seed_vectors[: RECALL_QUERIES - QUERIES]])
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ctx = PlanContext(load_routing_config(settings(tmp)), ModelHealth())
        for size in SIZES:
            started = time.perf_counter()
            faiss.omp_set_num_threads(os.cpu_count() or 1)  # builds may use every core
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
            faiss.omp_set_num_threads(1)  # measurements: one core
            scorer = LearnedKnnScorer(
                embedder, index, method=CALIBRATED_METHOD, calibration=calibration
            )
            truth = exact_top10(syn_vectors, recall_queries)
            figures: dict[str, Any] = {
                "index_type": index.manifest.index_type,
                "build_s": built,
                "load_s": load_time(index, tmp),
                "decision_full_prompt": await decision_latency(scorer, ctx, texts),
                "decision_short_prompt": await decision_latency(scorer, ctx, short_texts),
                "recall_at_10": round(recall_at_10(truth, index.index, recall_queries), 4),
            }
            print(size, orjson.dumps(figures).decode(), flush=True)
            results["sizes"][str(size)] = figures
            if size == min(SIZES):
                results["plan_batch"] = await plan_batch_vs_singles(scorer, tmp, short_texts)
                print("plan_batch", orjson.dumps(results["plan_batch"]).decode(), flush=True)
            del syn_vectors, syn_scores, index, scorer
    results["real_vectors"] = real_recall(cache, full)
    print("real vectors", orjson.dumps(results["real_vectors"]).decode(), flush=True)
    results["load_average_at_end"] = machine()["load_average"]
    return results


def main(model_dir: Path, results_path: Path) -> int:
    results = asyncio.run(measure(model_dir))
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(MODEL_DIR, RESULTS))
