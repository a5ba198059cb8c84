"""Keys service throughput and latency through real gRPC and a real Postgres.

Starts `python -m services.keys` against a throwaway Postgres database and measures:
uncached `Verify` round trips (VALID and unknown-id NOT_FOUND, p50/p99), Verify/s and
Generate/s under concurrency, and the edge's cached verification (the hot path: bearer
parsing plus a `VerifiedKeyCache` hit inside `Authenticator.authenticate`).
Targets (issue 5): cached verify ≤ 0.05 ms, uncached Verify p50 ≤ 2 ms, Generate ≥ 500/s.
Run: `.venv/bin/python -m bench.keys_bench`.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_client import open_channel
from services.common.pb import keys_pb2, keys_pb2_grpc
from services.edge.auth import Authenticator, VerifiedKeyCache
from services.keys.service import SERVICE_NAME

PG_ADMIN_URL = os.environ.get(
    "SIGNALBOX_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RESULTS = Path(__file__).parent / "results" / "keys.json"
PORT = int(os.environ.get("SIGNALBOX_BENCH_KEYS_PORT", "50152"))
KEYS = 200
VERIFY_SEQUENTIAL = 2000
CONCURRENCY = 32
CONCURRENT_CALLS = 4000
GENERATE_CALLS = 2000
CACHED_VERIFY_CALLS = 50_000
TARGETS = {"cached_verify_ms": 0.05, "verify_valid_p50_ms": 2.0, "generate_per_second": 500.0}


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


async def _timed_sequential(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _rate(call: Callable[[], Awaitable[object]], n: int, concurrency: int) -> float:
    """Calls per second with `concurrency` callers sharing `n` calls."""
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return round(n / (time.perf_counter() - started), 1)


async def _wait_serving(addr: str) -> None:
    async with open_channel(addr) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), wait_for_ready=True, timeout=60
        )
        async for reply in call:
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                call.cancel()
                return


async def _measure(addr: str) -> dict[str, object]:
    async with open_channel(addr) as channel:
        stub = keys_pb2_grpc.KeysStub(channel)

        def generate() -> Awaitable[keys_pb2.GeneratedKey]:
            return stub.Generate(keys_pb2.GenerateRequest(label="bench"))

        for _ in range(50):  # warm the connection pool and the server
            await generate()
        generated = [await generate() for _ in range(KEYS)]
        tokens = [g.token for g in generated]
        verified = await stub.Verify(keys_pb2.VerifyRequest(token=tokens[0]))
        unknown = [f"sk_{uuid.uuid4().hex}.{t.split('.')[1]}" for t in tokens]

        def verify(pool: list[str]) -> Callable[[], Awaitable[object]]:
            return lambda: stub.Verify(keys_pb2.VerifyRequest(token=random.choice(pool)))

        valid = await _timed_sequential(verify(tokens), VERIFY_SEQUENTIAL)
        not_found = await _timed_sequential(verify(unknown), VERIFY_SEQUENTIAL)
        generate_seq = await _timed_sequential(generate, GENERATE_CALLS // 4)
        return {
            "cached_verify": await cached_verify(tokens[0], verified.key),
            "verify_valid": _percentiles(valid),
            "verify_not_found": _percentiles(not_found),
            "generate_sequential": _percentiles(generate_seq),
            "verify_per_second": await _rate(verify(tokens), CONCURRENT_CALLS, CONCURRENCY),
            "generate_per_second": await _rate(generate, GENERATE_CALLS, CONCURRENCY),
        }


async def cached_verify(token: str, key: keys_pb2.KeyInfo) -> dict[str, float]:
    """The edge's per-request cost for a key verified within `SIGNALBOX_KEYS_CACHE_MS`."""
    cache = VerifiedKeyCache(ttl_ms=60_000)
    cache.put(token, key)
    auth = Authenticator("managed", None, cache)
    header = f"Bearer {token}"
    for _ in range(1000):
        await auth.authenticate(header)
    batches = []
    per_batch = 1000
    for _ in range(CACHED_VERIFY_CALLS // per_batch):
        started = time.perf_counter()
        for _ in range(per_batch):
            await auth.authenticate(header)
        batches.append((time.perf_counter() - started) * 1000 / per_batch)
    return {
        "p50_ms": round(statistics.median(batches), 5),
        "mean_ms": round(statistics.fmean(batches), 5),
    }


def _targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    measured = {
        "cached_verify_ms": result["cached_verify"]["p50_ms"],
        "verify_valid_p50_ms": result["verify_valid"]["p50_ms"],
        "generate_per_second": result["generate_per_second"],
    }
    return {
        name: {
            "target": target,
            "measured": measured[name],
            "met": measured[name] >= target
            if name.endswith("per_second")
            else measured[name] <= target,
        }
        for name, target in TARGETS.items()
    }


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run() -> dict[str, Any]:
    name = f"sbbench_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    addr = f"127.0.0.1:{PORT}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBOX_")}
    env.update(
        SIGNALBOX_KEYS_BIND=addr,
        SIGNALBOX_DATABASE_URL=f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}",
        SIGNALBOX_LOG_LEVEL="WARNING",
    )
    with tempfile.TemporaryFile() as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.keys", env=env, stdout=log, stderr=log
        )
        try:
            await _wait_serving(addr)
            figures = await _measure(addr)
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    result: dict[str, Any] = {
        "backend": "postgres",
        "concurrency": CONCURRENCY,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **figures,
    }
    result["targets"] = _targets(result)
    return result


def _print_table(result: dict[str, object]) -> None:
    print(f"{'figure':<28}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name in ("verify_valid", "verify_not_found", "generate_sequential"):
        row = result[name]
        assert isinstance(row, dict)
        print(f"{name:<28}{row['p50_ms']:>10}{row['p99_ms']:>10}{row['mean_ms']:>10}")
    print(f"{'verify/s (x' + str(CONCURRENCY) + ')':<28}{result['verify_per_second']:>10}")
    print(f"{'generate/s (x' + str(CONCURRENCY) + ')':<28}{result['generate_per_second']:>10}")
    cached = result["cached_verify"]
    assert isinstance(cached, dict)
    print(f"{'cached verify (edge)':<28}{cached['p50_ms']:>10}{'':>10}{cached['mean_ms']:>10}")
    targets = result["targets"]
    assert isinstance(targets, dict)
    for name, row in targets.items():
        verdict = "met" if row["met"] else "MISSED"
        print(f"target {name:<21} {row['measured']} vs {row['target']}: {verdict}")


def main() -> None:
    result = asyncio.run(run())
    _print_table(result)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
