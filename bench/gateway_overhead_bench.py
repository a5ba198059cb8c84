"""Edge overhead: direct-to-mock vs Signalbox vs LiteLLM, same load generator, same run.

Every target sits in front of one fast mock upstream (`bench/mock_upstream_fast.py`, its
own process) and gets the same scenarios, one target at a time (the others stopped):
closed loop at concurrency 1/10/50 on the 0 ms and 50 ms mock, an open-loop rate sweep on
the 50 ms mock (stopped early once the target saturates), and streaming (time to first
token, inter-chunk gap). Each run also charges CPU-ms per request and RSS to the gateway's
processes (psutil). Before that, the test suite's mock and the fast mock are measured
directly so the mock's own cost is on record.

Writes `bench/results/gateway_overhead.json` and PNG plots beside it.
Run: `.venv/bin/python -m bench.gateway_overhead_bench [--quick] [--postgres]
[--targets direct,signalbox,litellm]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import uvloop

from bench import litellm_env, plots
from bench.gateways import (
    CHAT_PATH,
    Direct,
    Gateway,
    LiteLLM,
    Server,
    Signalbox,
    fast_mock,
    suite_mock,
)
from bench.load import RunStats, Target, closed_loop, open_loop
from bench.process_tree import Snapshot, Usage, cpu_ms_per_request, snapshot, tree, usage

RESULTS_DIR = Path(__file__).parent / "results"
RESULT_FILE = RESULTS_DIR / "gateway_overhead.json"
DEFAULT_PG_ADMIN_URL = os.environ.get(
    "SIGNALBOX_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TARGETS = ("direct", "signalbox", "litellm")
PROMPT = [{"role": "user", "content": "Say hello in one short sentence."}]
STREAM_CHUNKS = 16
STREAM_GAP_MS = 10.0
HEADLINE_SCENARIO = "closed-c10-lat50"
THROUGHPUT_SCENARIO = "closed-c50-lat0"
STREAM_SCENARIO = "stream-c10-lat50"
SUSTAINED_SHARE = 0.85


@dataclass(frozen=True)
class Plan:
    """How long and how hard: every run stops at `duration_s` or `max_requests`."""

    duration_s: float
    warmup_s: float
    max_requests: int
    rates: tuple[float, ...]
    concurrencies: tuple[int, ...] = (1, 10, 50)
    latencies_ms: tuple[int, ...] = (0, 50)
    stream_concurrency: int = 10
    max_inflight: int = 256


FULL = Plan(duration_s=5.0, warmup_s=2.0, max_requests=20_000, rates=(50, 100, 200, 400, 800))
QUICK = Plan(duration_s=1.5, warmup_s=0.5, max_requests=5_000, rates=(50, 200))


def payload(latency_ms: int, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": f"bench-lat{latency_ms}", "messages": PROMPT}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


class RunRecord(RunStats):
    """A run plus what it cost: the gateway's processes, the mock, the load generator."""

    scenario: str
    upstream_latency_ms: int
    gateway: Usage | None
    upstream_cpu_ms_per_request: float
    client_cpu_ms_per_request: float


class Runner:
    """Runs scenarios against one target, charging CPU to the right processes."""

    def __init__(self, gateway: Gateway, target: Target, upstream: Server, plan: Plan) -> None:
        self.gateway, self.target, self.upstream, self.plan = gateway, target, upstream, plan
        self.records: list[RunRecord] = []

    def _snapshot(self) -> Snapshot:
        groups = dict(self.gateway.processes())
        groups["upstream"] = tree(self.upstream.ps())
        groups["client"] = [psutil.Process()]
        return snapshot(groups)

    async def _measure(self, scenario: str, latency: int, run: Awaitable[RunStats]) -> RunRecord:
        names = list(self.gateway.processes())
        before = self._snapshot()
        stats = await run
        after = self._snapshot()
        record = RunRecord(
            **stats.model_dump(),
            scenario=scenario,
            upstream_latency_ms=latency,
            gateway=usage(before, after, names, stats.ok) if names else None,
            upstream_cpu_ms_per_request=cpu_ms_per_request(before, after, "upstream", stats.ok),
            client_cpu_ms_per_request=cpu_ms_per_request(before, after, "client", stats.ok),
        )
        self.records.append(record)
        print(_row(record), flush=True)
        return record

    async def warm_up(self) -> None:
        """Fill connection pools and caches (key cache, plan cache) before measuring."""
        await closed_loop(self.target, payload(0), 10, self.plan.warmup_s, self.plan.max_requests)

    async def closed(self, concurrency: int, latency: int) -> RunRecord:
        p = self.plan
        run = closed_loop(self.target, payload(latency), concurrency, p.duration_s, p.max_requests)
        return await self._measure(f"closed-c{concurrency}-lat{latency}", latency, run)

    async def stream(self, concurrency: int, latency: int) -> RunRecord:
        p = self.plan
        body = payload(latency, stream=True)
        run = closed_loop(self.target, body, concurrency, p.duration_s, p.max_requests)
        return await self._measure(f"stream-c{concurrency}-lat{latency}", latency, run)

    async def sweep(self, latency: int) -> None:
        """Open loop at rising rates; stop once the target falls behind the offered rate."""
        for rate in self.plan.rates:
            run = open_loop(
                self.target, payload(latency), rate, self.plan.duration_s, self.plan.max_inflight
            )
            record = await self._measure(f"open-r{rate:g}-lat{latency}", latency, run)
            if not sustained(record):
                print(f"  {self.target.name} saturated at {rate:g} req/s; sweep stops", flush=True)
                return

    async def all(self) -> list[RunRecord]:
        await self.warm_up()
        for latency in self.plan.latencies_ms:
            for concurrency in self.plan.concurrencies:
                await self.closed(concurrency, latency)
        await self.sweep(50)
        await self.stream(self.plan.stream_concurrency, 50)
        return self.records


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:8.2f}"


def _row(r: RunRecord) -> str:
    lat = r.latency
    cpu = r.gateway.cpu_ms_per_request if r.gateway else None
    rss = f"{r.gateway.rss_mb:7.0f}" if r.gateway else "      -"
    line = (
        f"  {r.target:<10} {r.scenario:<18} ok={r.ok:<6} err={r.errors:<4} rps={r.rps:8.1f} "
        f"p50={_ms(lat and lat.p50_ms)} p95={_ms(lat and lat.p95_ms)} "
        f"p99={_ms(lat and lat.p99_ms)} cpu-ms/req={_ms(cpu)} rss-MB={rss} "
        f"mock-cpu-ms/req={r.upstream_cpu_ms_per_request:.3f} "
        f"client-cpu-ms/req={r.client_cpu_ms_per_request:.3f}"
    )
    if r.ttft and r.chunk_gap:
        line += f" ttft-p50={_ms(r.ttft.p50_ms)} gap-p99={_ms(r.chunk_gap.p99_ms)}"
    return line


async def measure_mocks(work_dir: Path, plan: Plan) -> dict[str, Any]:
    """The two candidate mocks' own cost, direct: why the bench uses the fast one."""
    figures: dict[str, Any] = {}
    for mock in (suite_mock(work_dir), fast_mock(work_dir, STREAM_CHUNKS, STREAM_GAP_MS)):
        async with mock:
            target = Target(mock.name, mock.url + CHAT_PATH)
            runner = Runner(Direct(mock), target, mock, plan)
            await runner.warm_up()
            for concurrency in (1, 10):
                record = await runner.closed(concurrency, 0)
                figures.setdefault(mock.name, {})[f"c{concurrency}"] = {
                    "rps": record.rps,
                    "p50_ms": record.latency.p50_ms if record.latency else None,
                    "p99_ms": record.latency.p99_ms if record.latency else None,
                    "mock_cpu_ms_per_request": record.upstream_cpu_ms_per_request,
                }
    return figures


def _by_scenario(records: Sequence[RunRecord], target: str) -> dict[str, RunRecord]:
    return {r.scenario: r for r in records if r.target == target}


def overheads(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Each gateway run against the direct run of the same scenario."""
    direct = _by_scenario(records, "direct")
    rows = []
    for r in records:
        base = direct.get(r.scenario)
        if r.target == "direct" or base is None or not (r.latency and base.latency):
            continue
        row: dict[str, Any] = {
            "target": r.target,
            "scenario": r.scenario,
            "p50_ms": round(r.latency.p50_ms - base.latency.p50_ms, 3),
            "p95_ms": round(r.latency.p95_ms - base.latency.p95_ms, 3),
            "p99_ms": round(r.latency.p99_ms - base.latency.p99_ms, 3),
            "rps_vs_direct": round(r.rps / base.rps, 3) if base.rps else None,
        }
        if r.ttft and base.ttft and r.chunk_gap and base.chunk_gap:
            row["ttft_p50_ms"] = round(r.ttft.p50_ms - base.ttft.p50_ms, 3)
            row["ttft_p99_ms"] = round(r.ttft.p99_ms - base.ttft.p99_ms, 3)
            row["chunk_gap_p99_ms"] = round(r.chunk_gap.p99_ms - base.chunk_gap.p99_ms, 3)
        rows.append(row)
    return rows


def sustained(record: RunRecord) -> bool:
    """An open-loop rate is sustained when every request was answered and the answers kept up.

    `rps` counts until the last answer, so a backlog that drains after the schedule ends
    pulls it under the offered rate.
    """
    offered = record.offered_rate or 0.0
    return not record.errors and record.rps >= SUSTAINED_SHARE * offered


def _max_sustained_rate(records: Sequence[RunRecord], target: str) -> float | None:
    rates = [
        r.offered_rate
        for r in records
        if r.target == target and r.mode == "open" and r.offered_rate and sustained(r)
    ]
    return max(rates, default=None)


def headline(records: Sequence[RunRecord], over: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The scalars a reader looks for first (what SUMMARY.md shows), per target."""
    out: dict[str, Any] = {}
    for target in TARGETS:
        runs = _by_scenario(records, target)
        if not runs:
            continue
        figures: dict[str, Any] = {}
        if (h := runs.get(HEADLINE_SCENARIO)) and h.latency:
            figures |= {"c10_lat50_p50_ms": h.latency.p50_ms, "c10_lat50_p99_ms": h.latency.p99_ms}
        if t := runs.get(THROUGHPUT_SCENARIO):
            figures["c50_lat0_rps"] = t.rps
            if t.gateway:
                figures["c50_lat0_cpu_ms_per_request"] = t.gateway.cpu_ms_per_request
                figures["rss_mb"] = t.gateway.rss_mb
        if (s := runs.get(STREAM_SCENARIO)) and s.ttft and s.chunk_gap:
            figures |= {"ttft_p50_ms": s.ttft.p50_ms, "chunk_gap_p99_ms": s.chunk_gap.p99_ms}
        figures["max_sustained_open_rate"] = _max_sustained_rate(records, target)
        for row in over:
            if row["target"] == target and row["scenario"] == HEADLINE_SCENARIO:
                figures["overhead_c10_lat50_p50_ms"] = row["p50_ms"]
                figures["overhead_c10_lat50_p99_ms"] = row["p99_ms"]
        out[target] = figures
    out["targets"] = _targets(out)
    return out


def _targets(figures: dict[str, Any]) -> dict[str, Any]:
    """Where Signalbox stands against the issue's goals (None: not measured in this run)."""
    sb, ll = figures.get("signalbox", {}), figures.get("litellm", {})
    p50, p99 = sb.get("overhead_c10_lat50_p50_ms"), sb.get("overhead_c10_lat50_p99_ms")
    rps_ratio = cpu_ratio = None
    if sb.get("c50_lat0_rps") and ll.get("c50_lat0_rps"):
        rps_ratio = round(sb["c50_lat0_rps"] / ll["c50_lat0_rps"], 2)
    if sb.get("c50_lat0_cpu_ms_per_request") and ll.get("c50_lat0_cpu_ms_per_request"):
        cpu_ratio = round(ll["c50_lat0_cpu_ms_per_request"] / sb["c50_lat0_cpu_ms_per_request"], 2)
    return {
        "overhead_p50_le_1ms": None if p50 is None else p50 <= 1.0,
        "overhead_p99_le_5ms": None if p99 is None else p99 <= 5.0,
        "rps_vs_litellm": rps_ratio,
        "cpu_efficiency_vs_litellm": cpu_ratio,
        "rps_ge_10x_litellm": None if rps_ratio is None else rps_ratio >= 10,
    }


def make_gateway(name: str, upstream: Server, work_dir: Path, pg_url: str | None) -> Gateway:
    if name == "signalbox":
        return Signalbox(upstream, work_dir, pg_url)
    if name == "litellm":
        return LiteLLM(upstream, work_dir)
    return Direct(upstream)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    work_dir = Path(tempfile.mkdtemp(prefix="signalbox-bench-"))
    pg_url = args.postgres or None
    print(f"work dir (logs): {work_dir}", flush=True)
    result: dict[str, Any] = {"meta": _meta(args, plan), "failures": {}}
    result["mock_self_cost"] = await measure_mocks(work_dir, plan)
    records: list[RunRecord] = []
    async with fast_mock(work_dir, STREAM_CHUNKS, STREAM_GAP_MS) as mock:
        for name in args.targets:
            print(f"--- {name}", flush=True)
            gateway = make_gateway(name, mock, work_dir, pg_url)
            try:
                async with gateway as target:  # type: ignore[attr-defined]
                    records += await Runner(gateway, target, mock, plan).all()
            except Exception as exc:  # one broken target must not lose the others' figures
                traceback.print_exc()
                result["failures"][name] = f"{type(exc).__name__}: {exc}"
                _shout(f"{name} NOT MEASURED: {result['failures'][name]}")
    over = overheads(records)
    result["headline"] = headline(records, over)
    for name, why in result["failures"].items():  # a missing column says why, in the JSON too
        result["headline"][name] = {"measured": False, "why": why}
    result["overhead_vs_direct"] = over
    result["runs"] = [r.model_dump() for r in records]
    result["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    result["meta"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _meta(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "storage": "postgres" if args.postgres else "sqlite",
        "targets": ",".join(args.targets),
        "litellm": litellm_env.REQUIREMENT,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "plan": {
            "duration_s": plan.duration_s,
            "max_requests": plan.max_requests,
            "rates": list(plan.rates),
            "stream_chunks": STREAM_CHUNKS,
            "stream_gap_ms": STREAM_GAP_MS,
        },
    }


def _shout(message: str) -> None:
    """A failure nobody can scroll past: framed, on stdout and stderr."""
    frame = "!" * min(100, len(message) + 8)
    for stream in (sys.stdout, sys.stderr):
        print(f"\n{frame}\n!!! {message}\n{frame}\n", file=stream, flush=True)


def _print_summary(result: dict[str, Any]) -> None:
    print("\noverhead vs direct (ms; rps ratio):")
    for row in result["overhead_vs_direct"]:
        extra = ""
        if "ttft_p50_ms" in row:
            extra = f" ttft-p50 +{row['ttft_p50_ms']} gap-p99 +{row['chunk_gap_p99_ms']}"
        print(
            f"  {row['target']:<10} {row['scenario']:<18} p50 +{row['p50_ms']} "
            f"p99 +{row['p99_ms']} rps x{row['rps_vs_direct']}{extra}"
        )
    print("\nheadline:", orjson.dumps(result["headline"], option=orjson.OPT_INDENT_2).decode())
    for name, why in result["failures"].items():
        _shout(f"FAILED {name}: {why}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, fewer rates")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=DEFAULT_PG_ADMIN_URL,
        default=None,
        metavar="ADMIN_URL",
        help="Signalbox on a throwaway Postgres database (default: embedded SQLite)",
    )
    parser.add_argument(
        "--targets",
        type=lambda s: [t.strip() for t in s.split(",") if t.strip()],
        default=list(TARGETS),
        help="comma-separated subset of direct,signalbox,litellm (direct is always run first)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    args.targets = ["direct", *[t for t in TARGETS[1:] if t in args.targets]]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = uvloop.run(run(args))
    RESULTS_DIR.mkdir(exist_ok=True)
    RESULT_FILE.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    _print_summary(result)
    for path in plots.render(result, RESULTS_DIR):
        print(f"plot: {path}")
    print(f"results: {RESULT_FILE}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
