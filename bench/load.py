"""The load generator: an asyncio HTTP client recording into HDR histograms.

Two shapes, both bounded in time and in request count:
- closed loop: `concurrency` workers, each sending its next request when the last answered;
- open loop: requests start on a fixed schedule at `rate`/s whatever the server does, and
  latency counts from the *scheduled* start, so a stalled server shows up in the tail
  instead of silently slowing the client down (no coordinated omission).
Streaming requests also record time to first token (first chunk with content) and the gap
between consecutive chunks. Latencies are recorded in microseconds, 1 µs to 60 s, 3
significant digits.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from hdrh.histogram import HdrHistogram
from pydantic import BaseModel

MAX_LATENCY_US = 60_000_000
REQUEST_TIMEOUT_S = 30.0
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Target:
    """Where to send: a chat completions URL and the headers (auth) it needs."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_LATENCY_US, 3)


class Distribution(BaseModel):
    """Percentiles of one histogram, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, histogram: HdrHistogram) -> Distribution | None:
        if not histogram.get_total_count():
            return None
        at = {p: histogram.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
        return cls(
            count=histogram.get_total_count(),
            mean_ms=round(histogram.get_mean_value() / 1000, 3),
            p50_ms=round(at[50], 3),
            p95_ms=round(at[95], 3),
            p99_ms=round(at[99], 3),
            max_ms=round(histogram.get_max_value() / 1000, 3),
        )


class RunStats(BaseModel):
    """One load run against one target: throughput, latency and (streams) chunk timing."""

    target: str
    mode: str
    concurrency: int | None = None
    offered_rate: float | None = None
    stream: bool
    duration_s: float
    ok: int
    errors: int
    error_kinds: dict[str, int]
    rps: float
    latency: Distribution | None
    ttft: Distribution | None = None
    chunk_gap: Distribution | None = None


class _Recorder:
    def __init__(self) -> None:
        self.latency = _histogram()
        self.ttft = _histogram()
        self.gap = _histogram()
        self.ok = 0
        self.errors: Counter[str] = Counter()

    def fail(self, kind: str) -> None:
        self.errors[kind] += 1

    def stats(self, target: Target, mode: str, stream: bool, elapsed: float) -> dict[str, Any]:
        return {
            "target": target.name,
            "mode": mode,
            "stream": stream,
            "duration_s": round(elapsed, 3),
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "rps": round(self.ok / elapsed, 1) if elapsed else 0.0,
            "latency": Distribution.of(self.latency),
            "ttft": Distribution.of(self.ttft) if stream else None,
            "chunk_gap": Distribution.of(self.gap) if stream else None,
        }


def _us(seconds: float) -> int:
    return min(MAX_LATENCY_US, max(1, round(seconds * 1_000_000)))


def _has_content(data: bytes) -> bool:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    return bool(choices) and bool((choices[0].get("delta") or {}).get("content"))


async def _read_stream(response: aiohttp.ClientResponse, started: float, rec: _Recorder) -> str:
    """Consume an SSE body; '' when it ended with `[DONE]`, else why it is a failure."""
    first_token: float | None = None
    previous: float | None = None
    async for line in response.content:
        if not line.startswith(b"data:"):
            continue
        now = time.perf_counter()
        data = line[5:].strip()
        if data == b"[DONE]":
            return ""
        if previous is not None:
            rec.gap.record_value(_us(now - previous))
        previous = now
        if first_token is None and _has_content(data):
            first_token = now
            rec.ttft.record_value(_us(now - started))
    return "stream ended without [DONE]"


async def _request(
    session: aiohttp.ClientSession,
    target: Target,
    body: bytes,
    stream: bool,
    started: float,
    rec: _Recorder,
) -> None:
    """One request; latency counts from `started` (the scheduled start in open loop)."""
    try:
        async with session.post(target.url, data=body, headers=target.headers) as response:
            if response.status != 200:
                await response.read()
                rec.fail(f"http {response.status}")
                return
            failure = await _read_stream(response, started, rec) if stream else ""
            if not stream:
                await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        rec.fail(type(exc).__name__)
        return
    if failure:
        rec.fail(failure)
        return
    rec.latency.record_value(_us(time.perf_counter() - started))
    rec.ok += 1


def _session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    headers = {"content-type": "application/json"}
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)


async def closed_loop(
    target: Target,
    payload: Mapping[str, Any],
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> RunStats:
    """`concurrency` workers back to back until `duration_s` or `max_requests` is reached."""
    body, stream = orjson.dumps(payload), payload.get("stream") is True
    rec = _Recorder()
    sent = 0
    async with _session(concurrency) as session:
        started = time.perf_counter()
        deadline = started + duration_s

        async def worker() -> None:
            nonlocal sent
            while sent < max_requests and time.perf_counter() < deadline:
                sent += 1
                await _request(session, target, body, stream, time.perf_counter(), rec)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return RunStats(concurrency=concurrency, **rec.stats(target, "closed", stream, elapsed))


async def open_loop(
    target: Target,
    payload: Mapping[str, Any],
    rate: float,
    duration_s: float,
    max_inflight: int,
) -> RunStats:
    """Start requests every 1/`rate` s for `duration_s`; over `max_inflight` a start is dropped.

    A dropped start is counted as an error (`client inflight cap`): the server is saturated
    and the rate is past what it sustains.
    """
    body, stream = orjson.dumps(payload), payload.get("stream") is True
    rec = _Recorder()
    total = max(1, round(rate * duration_s))
    inflight: set[asyncio.Task[None]] = set()
    async with _session(max_inflight) as session:
        started = time.perf_counter()
        for index in range(total):
            scheduled = started + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(inflight) >= max_inflight:
                rec.fail("client inflight cap")
                continue
            task = asyncio.create_task(_request(session, target, body, stream, scheduled, rec))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            _, unfinished = await asyncio.wait(set(inflight), timeout=REQUEST_TIMEOUT_S)
            for task in unfinished:
                task.cancel()
                rec.fail("unfinished at end of run")
        elapsed = time.perf_counter() - started
    return RunStats(offered_rate=rate, **rec.stats(target, "open", stream, elapsed))
