"""Cost of an edge plan-cache hit vs a router round trip (`python -m bench.plan_cache_bench`).

The hit is the whole `Planner.plan()` call as the proxy makes it: key (SHA-256 over the
decision fields), LRU lookup, a copy of the plan with a new route_id. The baseline, in the
same run, is the same call with the cache off against a real router on loopback gRPC.
Target (issue 4): a hit costs ≤ 0.1 ms. Writes bench/results/plan_cache.json.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.local_router import local_router
from services.common.grpc_client import open_channel
from services.edge.plan_cache import PlanCache
from services.edge.route_request import RoutingHeaders, build_route_request
from services.edge.routing import Planner

RESULTS = Path(__file__).parent / "results" / "plan_cache.json"
TARGET_HIT_MS = 0.1
HITS = 20_000
MISSES = 1_000
WARMUP = 200
ALIASES = {
    "fast": {
        "base_url": "http://127.0.0.1:9/v1",
        "mode": "chat",
        "model_id": "mock-model-a",
        "fallbacks": [{"base_url": "http://127.0.0.1:9/v1", "mode": "chat", "model_id": "b"}],
        "system_overlay": "Be brief.",
    }
}
BODY: dict[str, Any] = {
    "model": "fast",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Summarise the plot of Hamlet in two sentences. " * 4},
    ],
    "temperature": 0.2,
    "max_tokens": 200,
}


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {
        "p50_ms": round(pick(0.50), 5),
        "p99_ms": round(pick(0.99), 5),
        "mean_ms": round(statistics.fmean(ordered) / 1e6, 5),
    }


async def _time_calls(planner: Planner, request: Any, count: int) -> list[int]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        await planner.plan(request)
        samples.append(time.perf_counter_ns() - started)
    return samples


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        router = local_router(Path(tmp), ALIASES)
        await router.start()
        channel = open_channel(f"127.0.0.1:{router.grpc_port}")
        request = build_route_request(
            api="chat",
            body=BODY,
            request_id="req_bench",
            headers=RoutingHeaders(tradeoff=0.5),
            privacy_mode="features_only",
            key=None,
        )

        def planner(cache: PlanCache | None) -> Planner:
            return Planner(
                channel,
                rules=(),
                openai_base_url="http://127.0.0.1:9/v1",
                upstream_mode="chat",
                strict=True,
                timeout_ms=5000,
                cache=cache,
            )

        try:
            uncached = planner(None)
            await _time_calls(uncached, request, WARMUP)
            misses = await _time_calls(uncached, request, MISSES)
            cache = PlanCache(default_ttl_ms=15_000, stale_ms=60_000)
            cached = planner(cache)
            first = await cached.plan(request)
            assert first.route_cache == "miss", first
            await _time_calls(cached, request, WARMUP)
            hits = await _time_calls(cached, request, HITS)
            assert cache.stats.hits == WARMUP + HITS, cache.stats
        finally:
            await channel.close()
            await router.stop()
    hit, miss = _percentiles(hits), _percentiles(misses)
    return {
        "hit": hit,
        "router_round_trip": miss,
        "hits_measured": HITS,
        "misses_measured": MISSES,
        "speedup_p50": round(miss["p50_ms"] / hit["p50_ms"], 1),
        "target_hit_ms": TARGET_HIT_MS,
        "hit_p50_within_target": hit["p50_ms"] <= TARGET_HIT_MS,
    }


def main() -> None:
    result = asyncio.run(run())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    hit, miss = result["hit"], result["router_round_trip"]
    print(
        f"plan-cache hit   p50 {hit['p50_ms']:.4f} ms  p99 {hit['p99_ms']:.4f} ms"
        f"  (target ≤ {TARGET_HIT_MS} ms: {'ok' if result['hit_p50_within_target'] else 'MISSED'})"
    )
    print(f"router round trip p50 {miss['p50_ms']:.4f} ms  p99 {miss['p99_ms']:.4f} ms")
    print(f"speed-up at p50: {result['speedup_p50']}x  -> {RESULTS}")


if __name__ == "__main__":
    main()
