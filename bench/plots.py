"""PNG plots of `bench/results/gateway_overhead.json` (matplotlib, headless).

Pure functions of the result dict, so a saved result can be re-plotted without re-running:
`.venv/bin/python -m bench.plots` redraws every plot from the JSON files present.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import orjson
from matplotlib.axes import Axes
from matplotlib.figure import Figure

RESULTS_DIR = Path(__file__).parent / "results"
GATEWAY_RESULT = "gateway_overhead.json"
COLORS = {"direct": "#7f7f7f", "signalbox": "#1f77b4", "litellm": "#d62728"}
Run = dict[str, Any]


def _targets(runs: Sequence[Run]) -> list[str]:
    return [t for t in COLORS if any(r["target"] == t for r in runs)]


def _closed(runs: Sequence[Run], target: str, latency: int) -> list[Run]:
    chosen = [
        r
        for r in runs
        if r["target"] == target
        and r["mode"] == "closed"
        and not r["stream"]
        and r["upstream_latency_ms"] == latency
        and r["latency"]
    ]
    return sorted(chosen, key=lambda r: r["concurrency"])


def _latency_vs_concurrency(runs: Sequence[Run]) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, pct in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        for target in _targets(runs):
            chosen = _closed(runs, target, 50)
            ax.plot(
                [r["concurrency"] for r in chosen],
                [r["latency"][pct] for r in chosen],
                marker="o",
                label=target,
                color=COLORS[target],
            )
        ax.set(
            xscale="log",
            xlabel="concurrency (closed loop)",
            ylabel=f"{pct[:3]} latency (ms)",
            title=f"{pct[:3]} latency, 50 ms mock",
        )
        ax.grid(True, alpha=0.3)
        ax.legend()
    return fig


def _throughput_and_cost(runs: Sequence[Run]) -> Figure:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    targets = _targets(runs)
    width = 0.8 / max(len(targets), 1)
    for index, target in enumerate(targets):
        chosen = _closed(runs, target, 0)
        xs = [i + index * width for i in range(len(chosen))]
        axes[0].bar(xs, [r["rps"] for r in chosen], width, label=target, color=COLORS[target])
        axes[0].set_xticks(
            [i + width * (len(targets) - 1) / 2 for i in range(len(chosen))],
            [f"c={r['concurrency']}" for r in chosen],
        )
    axes[0].set(title="throughput, 0 ms mock", ylabel="req/s")
    axes[0].legend()
    axes[0].grid(True, axis="y", alpha=0.3)
    costs = [(t, _closed(runs, t, 0)[-1]) for t in targets if t != "direct" and _closed(runs, t, 0)]
    costs = [(t, r) for t, r in costs if r["gateway"]]
    _stacked(axes[1], costs, "cpu_ms_per_request_by_process", "gateway CPU per request", "CPU ms")
    _stacked(axes[2], costs, "rss_mb_by_process", "gateway RSS", "MB")
    return fig


def _stacked(ax: Axes, costs: Sequence[tuple[str, Run]], field: str, title: str, unit: str) -> None:
    """One bar per gateway, split by its processes (edge/router/keys/analytics)."""
    for target, run in costs:
        bottom = 0.0
        for process, value in run["gateway"][field].items():
            ax.bar(target, value, bottom=bottom, color=COLORS[target], edgecolor="white")
            if value > 0:
                ax.text(target, bottom + value / 2, process, ha="center", va="center", fontsize=7)
            bottom += value
        ax.text(target, bottom, f"{bottom:.3g}", ha="center", va="bottom")
    ax.set(title=f"{title} (c=50, 0 ms mock)", ylabel=unit)
    ax.grid(True, axis="y", alpha=0.3)


def _open_loop(runs: Sequence[Run]) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for target in _targets(runs):
        chosen = sorted(
            (r for r in runs if r["target"] == target and r["mode"] == "open"),
            key=lambda r: r["offered_rate"],
        )
        offered = [r["offered_rate"] for r in chosen]
        p99 = [r["latency"]["p99_ms"] if r["latency"] else float("nan") for r in chosen]
        axes[0].plot(offered, p99, marker="o", label=target, color=COLORS[target])
        axes[1].plot(offered, [r["rps"] for r in chosen], marker="o", color=COLORS[target])
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="offered req/s",
        ylabel="p99 latency (ms)",
        title="open loop, 50 ms mock: p99 from scheduled start",
    )
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="offered req/s",
        ylabel="answered req/s",
        title="open loop: answered vs offered",
    )
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    return fig


def _streaming(runs: Sequence[Run]) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    streams = {r["target"]: r for r in runs if r["stream"] and r["ttft"]}
    labels = [t for t in COLORS if t in streams]
    for ax, key, title in ((axes[0], "ttft", "time to first token"), (axes[1], "chunk_gap", "")):
        width = 0.38
        xs = range(len(labels))
        for offset, pct in ((0.0, "p50_ms"), (width, "p99_ms")):
            values = [streams[t][key][pct] for t in labels]
            bars = ax.bar(
                [x + offset for x in xs],
                values,
                width,
                label=pct[:3],
                color=[COLORS[t] for t in labels],
                alpha=1.0 if offset == 0 else 0.55,
            )
            ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_xticks([x + width / 2 for x in xs], labels)
        ax.set(title=title or "gap between chunks", ylabel="ms")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(title="solid p50, light p99")
    fig.suptitle("streaming, c=10, 50 ms mock to first byte, 16 chunks")
    return fig


PLOTS: dict[str, Callable[[Sequence[Run]], Figure]] = {
    "gateway_overhead_latency.png": _latency_vs_concurrency,
    "gateway_overhead_throughput.png": _throughput_and_cost,
    "gateway_overhead_open_loop.png": _open_loop,
    "gateway_overhead_streaming.png": _streaming,
}


def render(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write every plot the result has data for; returns the files written."""
    runs = result.get("runs") or []
    if not runs:
        return []
    written = []
    for name, draw in PLOTS.items():
        fig = draw(runs)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def render_saved(results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Re-plot from the JSON on disk (what `make bench` does after every bench ran)."""
    path = results_dir / GATEWAY_RESULT
    if not path.is_file():
        return []
    return render(orjson.loads(path.read_bytes()), results_dir)


def main() -> int:
    written = render_saved()
    for path in written:
        print(f"plot: {path}")
    if not written:
        print(f"no {GATEWAY_RESULT} in {RESULTS_DIR}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
