"""Edge CPU per request, this tree against a baseline tree, alternating in the same run.

On a shared 2-core box two runs minutes apart differ by more than most hot-path fixes, so
this bench starts one full stack (router, keys, analytics, fast mock) and two edges in front
of it: one from this checkout, one from `--baseline` (a source tree of an older commit, e.g.
`git archive <rev> | tar -x -C /tmp/edge-base` plus `make protos` there, or a copy of
`services/common/pb`). Rounds alternate baseline/current in ABBA order so a slow spell of
the machine hits both; each round is a closed loop on the same payload and charges the
edge process's user+system CPU (psutil) to the requests it answered.

Writes `bench/results/edge_ab_c<concurrency>_lat<ms>[_stream].json`. Not a `*_bench.py` module:
`make bench` has no baseline tree to give it.
Run: `.venv/bin/python -m bench.edge_ab --baseline /tmp/edge-base [--rounds 4]
[--concurrency 10] [--latency-ms 0] [--duration 2]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import psutil
import uvloop

from bench.gateway_overhead_bench import STREAM_CHUNKS, STREAM_GAP_MS, payload
from bench.gateways import CHAT_PATH, Server, Signalbox, fast_mock
from bench.load import RunStats, Target, closed_loop
from deploy.local.stack import LocalStack, free_port

RESULTS_DIR = Path(__file__).parent / "results"
BUILDS = ("baseline", "current")
MAX_REQUESTS = 50_000


def _baseline_edge(stack: LocalStack, source: Path, log_dir: Path) -> Server:
    """The baseline edge: same services and environment, code imported from `source`."""
    port = free_port()
    env = {**stack.service_env(), "SIGNALBOX_EDGE_BIND": f"127.0.0.1:{port}"}
    argv = [sys.executable, "-m", "services.edge"]
    return Server("edge-baseline", argv, port, "/_health/ready", log_dir, env=env, cwd=source)


def _edge_process(stack: LocalStack) -> psutil.Process:
    return psutil.Process(stack.pid("edge"))


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _round(target: Target, process: psutil.Process, args: argparse.Namespace) -> dict:
    body = payload(args.latency_ms, stream=args.stream)
    before = _cpu_s(process)
    stats: RunStats = await closed_loop(target, body, args.concurrency, args.duration, MAX_REQUESTS)
    spent = _cpu_s(process) - before
    latency = stats.latency
    return {
        "ok": stats.ok,
        "errors": stats.errors,
        "rps": stats.rps,
        "edge_cpu_ms_per_request": round(spent * 1000 / max(stats.ok, 1), 3),
        "p50_ms": latency.p50_ms if latency else None,
        "p99_ms": latency.p99_ms if latency else None,
    }


def _order(rounds: int) -> list[str]:
    """ABBA ABBA …: each build goes first as often as second."""
    pairs = [BUILDS if i % 2 == 0 else BUILDS[::-1] for i in range(rounds)]
    return [build for pair in pairs for build in pair]


def _summary(runs: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for build, rows in runs.items():
        cpu = [r["edge_cpu_ms_per_request"] for r in rows]
        out[build] = {
            "edge_cpu_ms_per_request_median": round(statistics.median(cpu), 3),
            "edge_cpu_ms_per_request_range": [min(cpu), max(cpu)],
            "rps_median": round(statistics.median(r["rps"] for r in rows), 1),
            "p50_ms_median": round(statistics.median(r["p50_ms"] or 0 for r in rows), 3),
            "p99_ms_median": round(statistics.median(r["p99_ms"] or 0 for r in rows), 3),
        }
    base = out["baseline"]["edge_cpu_ms_per_request_median"]
    out["cpu_ratio_current_over_baseline"] = round(
        out["current"]["edge_cpu_ms_per_request_median"] / base, 3
    )
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edge-ab-") as tmp:
        work = Path(tmp)
        async with fast_mock(work, STREAM_CHUNKS, STREAM_GAP_MS) as upstream:
            signalbox = Signalbox(upstream, work, None)
            current = await signalbox.__aenter__()
            try:
                assert signalbox.stack is not None
                async with _baseline_edge(signalbox.stack, args.baseline, work) as server:
                    baseline = Target("baseline", server.url + CHAT_PATH, current.headers)
                    targets = {
                        "baseline": (baseline, server.ps()),
                        "current": (current, _edge_process(signalbox.stack)),
                    }
                    return await _measure(targets, args)
            finally:
                await signalbox.__aexit__()


async def _measure(
    targets: Mapping[str, tuple[Target, psutil.Process]], args: argparse.Namespace
) -> dict[str, Any]:
    for target, _ in targets.values():  # pools, key cache, plan cache
        await closed_loop(target, payload(0), args.concurrency, 1.0, MAX_REQUESTS)
    runs: dict[str, list[dict[str, Any]]] = {build: [] for build in BUILDS}
    for build in _order(args.rounds):
        target, process = targets[build]
        row = await _round(target, process, args)
        runs[build].append(row)
        print(f"{build:9} {row}", flush=True)
    return {
        "scenario": {
            "concurrency": args.concurrency,
            "upstream_latency_ms": args.latency_ms,
            "stream": args.stream,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "baseline": str(args.baseline),
        },
        "load_average": list(psutil.getloadavg()),
        "runs": runs,
        "summary": _summary(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="baseline source tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--latency-ms", type=int, default=0, choices=(0, 50))
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    result = uvloop.run(run(args))
    print(orjson.dumps(result["summary"], option=orjson.OPT_INDENT_2).decode())
    name = f"edge_ab_c{args.concurrency}_lat{args.latency_ms}{'_stream' if args.stream else ''}"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
