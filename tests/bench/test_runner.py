"""`python -m bench`: which benchmarks run, and what SUMMARY.md says about their results."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import bench.__main__ as runner

GATEWAY_RESULT = {
    "meta": {"when": "2026-01-01T00:00:00+00:00", "cpus": 2},
    "failures": {"litellm": "CalledProcessError: pip install failed"},
    "headline": {
        "direct": {"c10_lat50_p50_ms": 51.0, "max_sustained_open_rate": 800},
        "signalbox": {
            "c10_lat50_p50_ms": 52.5,
            "overhead_c10_lat50_p50_ms": 1.5,
            "c50_lat0_rps": 900.0,
        },
        "litellm": {"measured": False, "why": "CalledProcessError: pip install failed"},
        "targets": {"overhead_p50_le_1ms": False, "rps_vs_litellm": None},
    },
    "runs": [{"target": "direct"}],
}


def test_every_bench_module_is_discovered_and_the_suffix_is_optional() -> None:
    found = runner.discover()
    assert "gateway_overhead" in found
    assert all(not name.endswith("_bench") for name in found)
    assert runner.resolve(["gateway_overhead_bench", "gateway_overhead"]) == [
        "gateway_overhead",
        "gateway_overhead",
    ]
    assert runner.resolve([]) == found
    with pytest.raises(SystemExit, match="unknown benchmark"):
        runner.resolve(["no_such"])


def test_summary_tables_flag_failures_and_unmeasured_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    (tmp_path / "gateway_overhead.json").write_bytes(orjson.dumps(GATEWAY_RESULT))
    (tmp_path / "keys.json").write_bytes(
        orjson.dumps({"meta": {"cpus": 2}, "cached": {"p50_us": 3.25}, "rows": [1, 2]})
    )

    summary = runner.summarise({"gateway_overhead": "ok (100s)", "keys": "timed out after 240s"})

    assert "**FAILED: keys** (timed out after 240s)" in summary
    assert "| figure | direct | signalbox | litellm |" in summary
    assert "| p50 latency, c=10, 50 ms mock (ms) | 51 | 52.5 | n/a |" in summary
    assert "| overhead vs direct, p50 (ms) | n/a | 1.5 | n/a |" in summary
    assert "**litellm FAILED: CalledProcessError: pip install failed**" in summary
    assert "overhead_p50_le_1ms = False" in summary
    assert "## gateway_overhead (2026-01-01T00:00:00+00:00)" in summary
    # Other results: every scalar, flattened; meta and lists stay out.
    assert "| cached.p50_us | 3.25 |" in summary
    assert "cpus" not in summary.split("## keys")[1]
    assert "rows" not in summary


def test_a_subset_run_keeps_the_other_benchmarks_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Result JSON files are not committed: a fresh checkout that runs one benchmark must not
    wipe the committed figures of the rest."""
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    (tmp_path / "keys.json").write_bytes(orjson.dumps({"cached": {"p50_us": 3.25}}))
    (tmp_path / "plan_cache.json").write_bytes(orjson.dumps({"hit": {"p50_ms": 0.02}}))
    first = runner.summarise({"keys": "ok (20s)", "plan_cache": "ok (4s)"})
    (tmp_path / "keys.json").unlink()  # another machine: only plan_cache's result is here
    (tmp_path / "plan_cache.json").write_bytes(orjson.dumps({"hit": {"p50_ms": 0.03}}))

    summary = runner.summarise({"plan_cache": "ok (5s)"}, first)

    assert "| keys | ok (20s) |" in summary and "| plan_cache | ok (5s) |" in summary
    assert "| cached.p50_us | 3.25 |" in summary.split("## keys")[1]
    assert "| hit.p50_ms | 0.03 |" in summary and "0.02" not in summary
    assert summary.index("## keys") < summary.index("## plan_cache")
    assert runner.summarise({}, summary).split("\n", 1)[1] == summary.split("\n", 1)[1]
