"""`make bench`: run every `bench/*_bench.py` in its own process, then summarise and plot.

`python -m bench` runs them all; `python -m bench gateway_overhead keys` runs a subset (the
`_bench` suffix is optional). Each benchmark writes `bench/results/<name>.json`; this runner then
writes `bench/results/SUMMARY.md` (one section per result, the gateway comparison as a table)
and the PNG plots. A benchmark that fails or overruns its time limit is named at the top of the
summary and makes the exit status 1; the others' figures are kept.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import plots

BENCH_DIR = Path(__file__).parent
RESULTS = BENCH_DIR / "results"
SUFFIX = "_bench"
# Seconds per benchmark before it is stopped; together they keep `make bench` near 15 minutes.
TIME_LIMIT_S = {"gateway_overhead": 600.0}
DEFAULT_TIME_LIMIT_S = 240.0
GATEWAY = "gateway_overhead"
# Headline figures of the gateway bench, in table order: (key, label).
GATEWAY_ROWS = (
    ("c10_lat50_p50_ms", "p50 latency, c=10, 50 ms mock (ms)"),
    ("c10_lat50_p99_ms", "p99 latency, c=10, 50 ms mock (ms)"),
    ("overhead_c10_lat50_p50_ms", "overhead vs direct, p50 (ms)"),
    ("overhead_c10_lat50_p99_ms", "overhead vs direct, p99 (ms)"),
    ("c50_lat0_rps", "throughput, c=50, 0 ms mock (req/s)"),
    ("c50_lat0_cpu_ms_per_request", "gateway CPU per request (ms)"),
    ("rss_mb", "gateway RSS (MB)"),
    ("ttft_p50_ms", "streaming time to first token, p50 (ms)"),
    ("chunk_gap_p99_ms", "streaming inter-chunk gap, p99 (ms)"),
    ("max_sustained_open_rate", "max sustained open-loop rate (req/s)"),
)


def discover() -> list[str]:
    return sorted(p.stem.removesuffix(SUFFIX) for p in BENCH_DIR.glob(f"*{SUFFIX}.py"))


def _flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def _shown(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _gateway_section(result: dict[str, Any]) -> list[str]:
    headline = result.get("headline", {})
    targets = [t for t in ("direct", "signalbox", "litellm") if t in headline]
    lines = [
        "| figure | " + " | ".join(targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for key, label in GATEWAY_ROWS:
        values = [headline[t].get(key) for t in targets]
        if any(v is not None for v in values):
            lines.append(f"| {label} | " + " | ".join(_shown(v) for v in values) + " |")
    goals = headline.get("targets", {})
    if goals:
        lines += ["", "Targets: " + ", ".join(f"{k} = {_shown(v)}" for k, v in goals.items())]
    for name, why in result.get("failures", {}).items():
        lines += ["", f"**{name} FAILED: {why}**"]
    return lines


def _generic_section(result: dict[str, Any]) -> list[str]:
    figures: dict[str, object] = {}
    _flatten("", {k: v for k, v in result.items() if k != "meta"}, figures)
    lines = ["| figure | value |", "|---|---|"]
    lines += [
        f"| {name} | {_shown(value)} |"
        for name, value in figures.items()
        if isinstance(value, int | float | str | bool) or value is None
    ]
    return lines


def _earlier(summary: str) -> tuple[dict[str, str], dict[str, str]]:
    """An earlier SUMMARY.md's outcome rows and sections, by benchmark name."""
    head, *blocks = re.split(r"(?m)^(?=## )", summary)
    outcomes = dict(re.findall(r"(?m)^\| (\w+) \| (.+) \|$", head))
    outcomes.pop("benchmark", None)
    sections = {block.split(maxsplit=2)[1]: block.rstrip("\n") + "\n" for block in blocks}
    return outcomes, sections


def summarise(runs: dict[str, str] | None = None, earlier: str = "") -> str:
    """Markdown: outcomes, then every result file in bench/results/. Results not on this
    machine (the JSON files are not committed) keep their outcome and section from `earlier`,
    so running a subset never drops the figures of the others."""
    kept_outcomes, sections = _earlier(earlier)
    runs = {**{k: v for k, v in kept_outcomes.items() if k not in (runs or {})}, **(runs or {})}
    lines = [f"# Benchmark summary ({datetime.now(UTC).isoformat(timespec='seconds')})", ""]
    failed = {name: how for name, how in runs.items() if not how.startswith("ok")}
    if failed:
        lines += [f"**FAILED: {name}** ({how})" for name, how in failed.items()] + [""]
    if runs:
        lines += ["| benchmark | outcome |", "|---|---|"]
        lines += [f"| {name} | {runs[name]} |" for name in sorted(runs)] + [""]
    for path in sorted(RESULTS.glob("*.json")):
        result = orjson.loads(path.read_bytes())
        if not isinstance(result, dict):
            continue
        meta = result.get("meta")
        when = meta.get("when") if isinstance(meta, dict) else None
        section = _gateway_section(result) if path.stem == GATEWAY else _generic_section(result)
        title = f"## {path.stem}" + (f" ({when})" if when else "")
        sections[path.stem] = "\n".join([title, "", *section, ""])
    return "\n".join([*lines, *(sections[name] for name in sorted(sections))])


def run_one(name: str) -> str:
    """Run `bench.<name>_bench` in its own process; returns its outcome for the summary."""
    limit = TIME_LIMIT_S.get(name, DEFAULT_TIME_LIMIT_S)
    print(f"\n=== {name} (limit {limit:.0f}s)", flush=True)
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", f"bench.{name}{SUFFIX}"])
    try:
        code = process.wait(limit)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        outcome = f"timed out after {limit:.0f}s"
    else:
        outcome = "ok" if code == 0 else f"exit {code}"
    took = time.monotonic() - started
    print(f"=== {name}: {outcome} in {took:.1f}s", flush=True)
    return f"{outcome} ({took:.0f}s)"


def resolve(names: Iterable[str]) -> list[str]:
    known = discover()
    chosen = [n.removesuffix(SUFFIX) for n in names] or known
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    runs = {name: run_one(name) for name in resolve(args.names)}
    RESULTS.mkdir(exist_ok=True)
    summary = RESULTS / "SUMMARY.md"
    earlier = summary.read_text() if summary.is_file() else ""
    summary.write_text(summarise(runs, earlier))
    print(f"\nsummary: {RESULTS / 'SUMMARY.md'}")
    for path in plots.render_saved(RESULTS):
        print(f"plot: {path}")
    failed = [name for name, how in runs.items() if not how.startswith("ok")]
    if failed:
        print("FAILED: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
