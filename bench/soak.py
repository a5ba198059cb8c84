"""Soak runs for RELIABILITY.md: many held SSE streams, and long mixed traffic, with RSS sampled.

Not part of `make bench` (they take minutes by design). Loopback only, bounded in count and time:

    python -m bench.soak streams --streams 1000 --seconds 60
    python -m bench.soak mixed --seconds 600 --rate 50

`streams` holds N chat streams open through one edge of the full stack (managed key, router,
analytics on) for the given time: the fast mock sends one chunk a second. Every stream must end
with `[DONE]` and the expected chunk count. `mixed` sends JSON and streamed requests at a fixed
rate and samples the edge's RSS every few seconds; the report is the curve and its growth after
warm-up. Both write `bench/results/soak_<mode>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.gateways import Signalbox, fast_mock
from bench.load import Target

RESULTS = Path(__file__).parent / "results"
MODEL = "bench-lat0"
SAMPLE_EVERY_S = 2.0


def edge_process(gateway: Signalbox) -> psutil.Process:
    [root, *_] = gateway.processes()["edge"]
    return root


async def sample_rss(process: psutil.Process, samples: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    while True:
        samples.append((round(time.monotonic() - started, 1), process.memory_info().rss))
        await asyncio.sleep(SAMPLE_EVERY_S)


async def _failure(response: aiohttp.ClientResponse) -> str:
    """`http_<status>:<error code>` from an OpenAI-style error body."""
    try:
        code = (await response.json(content_type=None))["error"]["code"]
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        code = "?"
    return f"http_{response.status}:{code}"


async def one_stream(session: aiohttp.ClientSession, target: Target, chunks_expected: int) -> str:
    """'ok', or what went wrong; a stream must deliver every chunk and then [DONE]."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hold"}]}
    try:
        async with session.post(target.url, json=body, headers=target.headers) as response:
            if response.status != 200:
                return await _failure(response)
            chunks, done = 0, False
            async for raw in response.content:
                line = raw.strip()
                if line == b"data: [DONE]":
                    done = True
                elif line.startswith(b"data: ") and b'"content"' in line:
                    chunks += 1
            if not done:
                return "no_done"
            return "ok" if chunks >= chunks_expected else f"short_{chunks}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def one_json(session: aiohttp.ClientSession, target: Target) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with session.post(target.url, json=body, headers=target.headers) as response:
            if response.status != 200:
                return await _failure(response)
            await response.read()
            return "ok"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


def _mib(samples: list[tuple[float, int]]) -> list[tuple[float, float]]:
    return [(t, round(rss / 2**20, 1)) for t, rss in samples]


async def run_with_stack(
    chunks: int, chunk_gap_ms: float, body: Callable[[Target, psutil.Process], Awaitable[dict]]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="signalbox-soak-") as tmp:
        work = Path(tmp)
        async with fast_mock(work, chunks, chunk_gap_ms) as mock:
            gateway = Signalbox(mock, work, postgres_admin_url=None)
            target = await gateway.__aenter__()
            try:
                return await body(target, edge_process(gateway))
            finally:
                await gateway.__aexit__()


async def streams(count: int, seconds: int) -> dict[str, Any]:
    async def body(target: Target, edge: psutil.Process) -> dict[str, Any]:
        samples: list[tuple[float, int]] = []
        sampler = asyncio.create_task(sample_rss(edge, samples))
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=seconds * 3 + 120)
        started = time.monotonic()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            outcomes = await asyncio.gather(
                *(one_stream(session, target, seconds) for _ in range(count))
            )
        elapsed = time.monotonic() - started
        sampler.cancel()
        rss = _mib(samples)
        return {
            "streams": count,
            "seconds_per_stream": seconds,
            "wall_s": round(elapsed, 1),
            "outcomes": dict(Counter(outcomes)),
            "errors": count - outcomes.count("ok"),
            "edge_rss_mib": {"max": max(r for _, r in rss), "samples": rss},
        }

    return await run_with_stack(seconds, 1000.0, body)


async def mixed(seconds: int, rate: float) -> dict[str, Any]:
    async def body(target: Target, edge: psutil.Process) -> dict[str, Any]:
        samples: list[tuple[float, int]] = []
        sampler = asyncio.create_task(sample_rss(edge, samples))
        outcomes: Counter[str] = Counter()
        pending: set[asyncio.Task[str]] = set()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                work = (
                    one_stream(session, target, 4)
                    if random.random() < 0.5
                    else one_json(session, target)
                )
                task = asyncio.create_task(work)
                pending.add(task)
                task.add_done_callback(
                    lambda t: (pending.discard(t), outcomes.update([t.result()]))
                )
                await asyncio.sleep(random.expovariate(rate))
            await asyncio.gather(*pending)
        sampler.cancel()
        rss = _mib(samples)
        warm = [r for t, r in rss if t >= min(60.0, seconds / 5)]
        return {
            "seconds": seconds,
            "rate_per_s": rate,
            "requests": sum(outcomes.values()),
            "outcomes": dict(outcomes),
            "errors": sum(outcomes.values()) - outcomes["ok"],
            "edge_rss_mib": {
                "after_warmup_min": min(warm) if warm else None,
                "after_warmup_max": max(warm) if warm else None,
                "growth_after_warmup": round(warm[-1] - warm[0], 1) if warm else None,
                "samples": rss,
            },
        }

    return await run_with_stack(4, 5.0, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("streams")
    s.add_argument("--streams", type=int, default=1000)
    s.add_argument("--seconds", type=int, default=60)
    m = sub.add_parser("mixed")
    m.add_argument("--seconds", type=int, default=600)
    m.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    if args.mode == "streams":
        report = asyncio.run(streams(args.streams, args.seconds))
    else:
        report = asyncio.run(mixed(args.seconds, args.rate))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak_{args.mode}.json").write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report.items() if k != "edge_rss_mib"}
    rss = {k: v for k, v in report["edge_rss_mib"].items() if k != "samples"}
    print(json.dumps({**summary, "edge_rss_mib": rss}, indent=2))


if __name__ == "__main__":
    main()
