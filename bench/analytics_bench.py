"""Analytics throughput: gRPC ingest into Postgres, Aggregate over N rows, sink submit() cost.

`python -m bench.analytics_bench [--rows 200000 | --million] [--ingest-events 100000]`

The service runs as a real `python -m services.analytics` process on a scratch Postgres database
(created and dropped here), so client and server do not share a GIL. Ingest reports sustained
events/s over the whole run, the load average around it, and the CPU each party spent per event
(psutil): this client, the service process, the Postgres backends of the scratch database and
Postgres' shared writers (WAL writer, checkpointer, background writer: shared with any other
database on the server). Prints a table and writes `bench/results/analytics.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
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
import psutil
from google.protobuf import json_format

from services.common.grpc_client import check_health, open_channel
from services.common.pb import analytics_pb2, analytics_pb2_grpc
from services.common.pricing import PriceTable
from services.edge.analytics_sink import AnalyticsSink, encode_all
from services.edge.events import RequestRecord, Usage, build_event

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "analytics.json"
ADMIN_URL = os.environ.get(
    "SIGNALBOX_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BATCH = 500
# The live sender awaits the queue and takes what is there (up to 500): a backlog stays short.
SENDER_BATCH = 100
NOW = int(time.time())
PRICES = PriceTable.load(None, None)


def sample_event(i: int) -> dict[str, Any]:
    """A realistic §1 event (what the edge submits)."""
    return {
        "id": str(uuid.uuid4()),
        "request_id": f"req_{i:012x}",
        "timestamp": NOW - 3000 + i * 0.001,
        "request": {
            "endpoint": "/v1/chat/completions",
            "method": "POST",
            "model": "auto",
            "stream": i % 2 == 0,
            "size_bytes": 900,
            "message_count": 3,
            "input_tokens": 120,
            "user_agent": "bench",
            "client_ip": "10.0.0.1",
        },
        "response": {"status_code": 200, "size_bytes": 2000, "output_tokens": 300, "success": True},
        "performance": {"duration_ms": 800.0 + i % 400, "ttfb_ms": 120.0, "tokens_per_second": 90},
        "auth": {"authenticated": True, "api_key_id": "key_1", "auth_method": "managed"},
        "routing": {
            "backend": "router",
            "upstream_mode": "chat",
            "strategy": "knn",
            "resolved_model": ("gpt-4o", "gpt-4o-mini", "mixtral-8x7b-instruct")[i % 3],
            "fallback_used": False,
            "attempts": 1,
            "route_cache": "hit",
        },
        "token_usage": {
            "prompt_tokens": 120,
            "completion_tokens": 300,
            "total_tokens": 420,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
        },
        # The edge prices each event itself (events.build_event); the service only stores it.
        "cost": PRICES.cost(
            ("gpt-4o", "gpt-4o-mini", "mixtral-8x7b-instruct")[i % 3], 120, 300, 0, 0
        ),
    }


def wire_batches(total: int, wire: str = "events") -> list[analytics_pb2.EventBatch]:
    """Pre-built batches, so the client's CPU is only gRPC's: `events` as messages (the template
    parsed once, copies with fresh ids and timestamps) or `documents` as the edge sends them."""
    template = json_format.ParseDict(sample_event(0), analytics_pb2.AnalyticsEvent())
    raw = template.SerializeToString()
    document = sample_event(0)
    batches = []
    for start in range(0, total, BATCH):
        batch = analytics_pb2.EventBatch()
        for i in range(start, min(start + BATCH, total)):
            event_id, timestamp = str(uuid.uuid4()), NOW - 3000 + i * 0.001
            if wire == "documents":
                batch.documents.append(
                    orjson.dumps({**document, "id": event_id, "timestamp": timestamp})
                )
                continue
            event = batch.events.add()
            event.ParseFromString(raw)
            event.id, event.timestamp = event_id, timestamp
        batches.append(batch)
    return batches


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def database_url(name: str) -> str:
    return f"{ADMIN_URL.rpartition('/')[0]}/{name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_serving(channel: Any) -> None:
    for _ in range(600):
        if (await check_health(channel, timeout=0.5))[0]:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("analytics service did not become SERVING")


# Postgres processes that work for every database: their CPU is charged to the run, but another
# database's writes during the run would show up here too.
PG_SHARED = ("walwriter", "checkpointer", "background writer")


async def postgres_pids(database: str) -> dict[str, list[int]]:
    """The scratch database's backends and the server's shared writers, by pg_stat_activity."""
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        rows = await conn.fetch(
            "SELECT pid, datname, backend_type FROM pg_stat_activity"
            " WHERE datname = $1 OR backend_type = any($2::text[])",
            database,
            list(PG_SHARED),
        )
    finally:
        await conn.close()
    return {
        "postgres_backends": [r["pid"] for r in rows if r["datname"] == database],
        "postgres_shared": [r["pid"] for r in rows if r["backend_type"] in PG_SHARED],
    }


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """user+system CPU seconds per live pid (a pid gone in between counts as nothing)."""
    seconds = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            seconds[pid] = times.user + times.system
    return seconds


class CpuMeter:
    """CPU per party between `start` and `stop`; a backend born during the run starts at 0."""

    def __init__(self, database: str, service_pid: int) -> None:
        self.database = database
        self.fixed = {"client": [os.getpid()], "service": [service_pid]}
        self.before: dict[int, float] = {}

    async def _pids(self) -> dict[str, list[int]]:
        return {**self.fixed, **(await postgres_pids(self.database))}

    async def start(self) -> None:
        self.before = cpu_seconds([p for pids in (await self._pids()).values() for p in pids])
        self.load_before = os.getloadavg()[0]

    async def stop(self, events: int) -> dict[str, float]:
        """Microseconds of CPU per event, per party."""
        figures = {}
        for party, pids in (await self._pids()).items():
            after = cpu_seconds(pids)
            spent = sum(after[p] - self.before.get(p, 0.0) for p in after)
            figures[f"cpu_us_per_event_{party}"] = spent * 1e6 / events
        figures["load_avg_1m_before"] = self.load_before
        figures["load_avg_1m_after"] = os.getloadavg()[0]
        return figures


async def bench_ingest(
    stub: Any, meter: CpuMeter, total: int, streams: int, wire: str
) -> dict[str, Any]:
    """Sustained events/s over the whole run (every batch acknowledged), then the same batches
    replayed (all duplicates)."""
    batches = wire_batches(total, wire)
    per_stream = [batches[i::streams] for i in range(streams)]
    await meter.start()
    started = time.perf_counter()
    acks = await asyncio.gather(*(stub.Ingest(iter(part)) for part in per_stream if part))
    elapsed = time.perf_counter() - started
    cpu = await meter.stop(total)
    accepted = sum(ack.accepted for ack in acks)
    if accepted != total:
        raise RuntimeError(f"ingest accepted {accepted} of {total}")
    replay_started = time.perf_counter()
    dup = await asyncio.gather(*(stub.Ingest(iter(part)) for part in per_stream if part))
    replay = time.perf_counter() - replay_started
    assert sum(a.duplicates for a in dup) == total
    return {
        "events": total,
        "streams": streams,
        "wire": wire,
        "seconds": elapsed,
        "events_per_s": total / elapsed,
        **cpu,
        "duplicate_replay_events_per_s": total / replay,
    }


async def bulk_rows(url: str, rows: int) -> None:
    """Server-side generated rows (same columns the service extracts) for the aggregate bench."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO analytics_events (id, timestamp, event, endpoint, model_key, backend,
                strategy, success, fallback_used, duration_ms, tokens_per_second, prompt_tokens,
                completion_tokens, cached_tokens, reasoning_tokens, total_cost)
            SELECT 'bulk-' || g, $1 - 7200 + g * (7000.0 / $2), '{"id":"bulk"}'::json,
                CASE WHEN g % 4 = 0 THEN '/v1/responses' ELSE '/v1/chat/completions' END,
                'model-' || (g % 7), 'router',
                CASE WHEN g % 5 = 0 THEN 'knn' ELSE 'alias_table' END,
                g % 50 <> 0, g % 20 = 0, 100 + (g % 997), 50 + (g % 89), 100 + g % 300,
                200 + g % 500, g % 30, 0, 0.0001 * (g % 13)
            FROM generate_series(1, $2) AS g
            """,
            float(NOW),
            rows,
        )
        await conn.execute("ANALYZE analytics_events")
    finally:
        await conn.close()


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int = 3) -> float:
    """Median wall time in ms."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def bench_queries(stub: Any, rows: int) -> dict[str, float]:
    window = {"start": NOW - 7200, "end": NOW}
    agg = await stub.Aggregate(analytics_pb2.AggregateRequest(**window))
    if agg.total_requests < rows:
        raise RuntimeError(f"aggregate saw {agg.total_requests} rows, expected >= {rows}")
    return {
        "rows": agg.total_requests,
        "aggregate_ms": await timed(
            lambda: stub.Aggregate(analytics_pb2.AggregateRequest(**window))
        ),
        "query_1000_ms": await timed(
            lambda: stub.Query(analytics_pb2.QueryRequest(limit=1000, **window))
        ),
        "stats_ms": await timed(lambda: stub.Stats(analytics_pb2.StatsRequest())),
    }


async def bench_sink(tmp: Path, n: int) -> dict[str, float]:
    """submit() is what the request path pays; encoding is paid later in a worker thread."""
    sink = AnalyticsSink(
        "127.0.0.1:9", internal_token=None, spool_dir=tmp / "spool", queue_size=n + 1
    )
    events = [sample_event(i) for i in range(n)]
    started = time.perf_counter_ns()
    for event in events:
        sink.submit(event)
    submit_ns = (time.perf_counter_ns() - started) / n
    # Everything the request path pays for analytics: build the §1 event (incl. pricing), submit.
    # The live sender drains the queue as events arrive, so each `SENDER_BATCH` chunk of events is
    # let go before the next (5,000 undrained events would bill the request path for
    # garbage-collector passes over a backlog the edge never holds).
    records = [
        RequestRecord(f"req_{i}", "/v1/chat/completions", "POST", "bench", "10.0.0.1")
        for i in range(5000)
    ]
    for record in records:
        record.model, record.status_code = "gpt-4o-mini", 200
        record.usage = Usage(120, 300, 420, 0, 0)
    edge_ns = 0
    for chunk in range(0, len(records), SENDER_BATCH):
        edge_sink = AnalyticsSink(
            "127.0.0.1:9", internal_token=None, spool_dir=tmp / "spool2", queue_size=SENDER_BATCH
        )
        started = time.perf_counter_ns()
        for record in records[chunk : chunk + SENDER_BATCH]:
            edge_sink.submit(build_event(record, PRICES))
        edge_ns += time.perf_counter_ns() - started
    edge_ms = edge_ns / len(records) / 1e6
    sample = events[:2000]
    started = time.perf_counter_ns()
    encode_all(sample)
    encode_us = (time.perf_counter_ns() - started) / len(sample) / 1000
    started = time.perf_counter_ns()
    lines = [orjson.dumps(e) for e in sample]
    spool_line_us = (time.perf_counter_ns() - started) / len(sample) / 1000
    assert len(lines) == len(sample)
    return {
        "edge_ms_per_request": edge_ms,
        # The worker thread's encoding is the edge's CPU too, just not on the request path.
        "edge_ms_per_request_incl_encode": edge_ms + encode_us / 1000,
        "submit_ns_per_event": submit_ns,
        "encode_us_per_event": encode_us,
        "spool_line_us_per_event": spool_line_us,
    }


async def run(
    rows: int, ingest_events: int, streams: int, wire: str, service_root: Path
) -> dict[str, Any]:
    name = f"sbbench_{uuid.uuid4().hex[:12]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix=name))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBOX_")}
    env.update(
        SIGNALBOX_DATABASE_URL=url,
        SIGNALBOX_ANALYTICS_BIND=f"127.0.0.1:{port}",
        SIGNALBOX_DATA_DIR=str(tmp),
        SIGNALBOX_LOG_LEVEL="WARNING",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.analytics", cwd=service_root, env=env
    )
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
            stub = analytics_pb2_grpc.AnalyticsStub(channel)
            meter = CpuMeter(name, proc.pid)
            ingest = await bench_ingest(stub, meter, ingest_events, streams, wire)
            await stub.Clear(analytics_pb2.ClearRequest())
            loaded = time.perf_counter()
            await bulk_rows(url, rows)
            load_s = time.perf_counter() - loaded
            queries = await bench_queries(stub, rows)
            queries["bulk_load_s"] = load_s
        sink = await bench_sink(tmp, 100_000)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=30)
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)
    return {"ingest": ingest, "aggregate": queries, "sink": sink, "cpus": os.cpu_count()}


def print_table(results: dict[str, Any]) -> None:
    print(f"{'figure':<44}{'value':>16}")
    for section in ("ingest", "aggregate", "sink"):
        for key, value in results[section].items():
            shown = (
                f"{value:,.2f}"
                if isinstance(value, float)
                else f"{value:,}"
                if isinstance(value, int)
                else str(value)
            )
            print(f"{section + '.' + key:<44}{shown:>16}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows for the aggregate bench")
    parser.add_argument("--million", action="store_true", help="aggregate over 1,000,000 rows")
    parser.add_argument("--ingest-events", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=4, help="concurrent Ingest streams")
    parser.add_argument(
        "--wire", choices=("documents", "events"), default="documents", help="batch encoding"
    )
    parser.add_argument(
        "--service-root",
        type=Path,
        default=REPO,
        help="checkout whose service runs (e.g. an older commit, for a before/after pair)",
    )
    args = parser.parse_args(argv)
    rows = 1_000_000 if args.million else args.rows
    results = asyncio.run(
        run(rows, args.ingest_events, args.streams, args.wire, args.service_root.resolve())
    )
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
