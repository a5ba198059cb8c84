"""`make bench`: run every `bench/*_bench.py` in its own process, then summarise the results."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson

BENCH_DIR = Path(__file__).parent
RESULTS = BENCH_DIR / "results"


def _flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def summarise() -> str:
    """A markdown table of every scalar figure in bench/results/*.json."""
    lines = ["| benchmark | figure | value |", "|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        figures: dict[str, object] = {}
        _flatten("", orjson.loads(path.read_bytes()), figures)
        for name, value in figures.items():
            if isinstance(value, int | float | str | bool):
                shown = f"{value:.4g}" if isinstance(value, float) else value
                lines.append(f"| {path.stem} | {name} | {shown} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in BENCH_DIR.glob("*_bench.py"))
    failed = []
    for name in names:
        print(f"\n=== {name}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(f"=== {name}: exit {code} in {time.monotonic() - started:.1f}s", flush=True)
        if code != 0:
            failed.append(name)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "SUMMARY.md").write_text(summarise())
    print(f"\nsummary: {RESULTS / 'SUMMARY.md'}")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
