"""RouteLLM's routing metrics for a strong/weak model pair.

A router is summarised by one number per query, its preference for the strong model. Sending
the top share `c` of queries to the strong model traces the quality/cost curve:
PGR(c) = (acc(c) - acc_weak) / (acc_strong - acc_weak); APGR = ∫₀¹ PGR(c) dc (trapezoid on a
1 % grid); CPT(x) = the least strong-call share with PGR ≥ x. Tied preferences are spread
evenly (the expectation under random tie-breaking), so a constant router scores exactly the
random baseline: APGR 0.5, CPT(x) = x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

GRID = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class CurvePoint:
    strong_share: float
    accuracy: float
    pgr: float
    cost_per_query_usd: float | None = None


@dataclass(frozen=True)
class RoutingReport:
    name: str
    apgr: float
    cpt50: float
    cpt80: float
    acc_strong: float
    acc_weak: float
    curve: list[CurvePoint]
    apgr_sd: float | None = None  # bootstrap sampling error, when measured
    cpt80_sd: float | None = None

    def row(self) -> dict[str, float | str | None]:
        return {
            "router": self.name,
            "apgr": round(float(self.apgr), 4),
            "cpt50": round(float(self.cpt50), 4),
            "cpt80": round(float(self.cpt80), 4),
            "apgr_sd": None if self.apgr_sd is None else round(self.apgr_sd, 4),
            "cpt80_sd": None if self.cpt80_sd is None else round(self.cpt80_sd, 4),
        }


def _tie_averaged(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each value replaced by the mean over its run of equal (already sorted) keys."""
    out = values.astype(np.float64).copy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    for start, end in zip(starts, ends, strict=True):
        out[start:end] = values[start:end].mean()
    return out


def cumulative_gain(preference: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """G[n] = expected gain of sending the n most-preferred queries to the strong model."""
    order = np.argsort(-preference, kind="stable")
    averaged = _tie_averaged(gain[order], preference[order])
    return np.r_[0.0, np.cumsum(averaged)]


def _interp(cum: np.ndarray, shares: np.ndarray) -> np.ndarray:
    n = len(cum) - 1
    return np.interp(shares * n, np.arange(n + 1), cum)


def cpt(pgr_at_n: np.ndarray, target: float) -> float:
    """Least share (interpolated between whole queries) whose PGR reaches `target`."""
    n = len(pgr_at_n) - 1
    hits = np.flatnonzero(pgr_at_n >= target - 1e-12)
    if len(hits) == 0:
        return 1.0
    first = int(hits[0])
    if first == 0:
        return 0.0
    lo, hi = pgr_at_n[first - 1], pgr_at_n[first]
    frac = (target - lo) / (hi - lo) if hi > lo else 1.0
    return (first - 1 + frac) / n


def evaluate_router(
    name: str,
    preference: np.ndarray,
    strong: np.ndarray,
    weak: np.ndarray,
    *,
    cost_strong: np.ndarray | None = None,
    cost_weak: np.ndarray | None = None,
) -> RoutingReport:
    """Curve and summary of a router given per-query strong/weak correctness (and costs)."""
    strong, weak = strong.astype(np.float64), weak.astype(np.float64)
    total = len(strong)
    acc_strong, acc_weak = strong.mean(), weak.mean()
    span = acc_strong - acc_weak
    if total == 0 or span <= 0:
        raise ValueError("the strong model must beat the weak one on the evaluation set")
    cum = cumulative_gain(preference, strong - weak)
    pgr_at_n = cum / total / span
    accuracy = acc_weak + _interp(cum, GRID) / total
    costs = None
    if cost_strong is not None and cost_weak is not None:
        cum_cost = cumulative_gain(preference, cost_strong - cost_weak)
        costs = (cost_weak.sum() + _interp(cum_cost, GRID)) / total
    pgr = (accuracy - acc_weak) / span
    curve = [
        CurvePoint(float(c), float(a), float(p), None if costs is None else float(costs[i]))
        for i, (c, a, p) in enumerate(zip(GRID, accuracy, pgr, strict=True))
    ]
    return RoutingReport(
        name=name,
        apgr=float(np.trapezoid(pgr, GRID)),
        cpt50=float(cpt(pgr_at_n, 0.5)),
        cpt80=float(cpt(pgr_at_n, 0.8)),
        acc_strong=float(acc_strong),
        acc_weak=float(acc_weak),
        curve=curve,
    )


def with_bootstrap(
    report: RoutingReport,
    preference: np.ndarray,
    strong: np.ndarray,
    weak: np.ndarray,
    rounds: int = 200,
    seed: int = 0,
) -> RoutingReport:
    """`report` with the sd of APGR and CPT(80%) over query sets resampled with replacement:
    on a few thousand prompts the sampling error alone is a few points of APGR."""
    rng = np.random.default_rng(seed)
    apgr, cpt80 = [], []
    for _ in range(rounds):
        pick = rng.integers(0, len(strong), len(strong))
        if strong[pick].mean() <= weak[pick].mean():
            continue
        sample = evaluate_router("", preference[pick], strong[pick], weak[pick])
        apgr.append(sample.apgr)
        cpt80.append(sample.cpt80)
    if len(apgr) < 2:
        return report
    return replace(report, apgr_sd=float(np.std(apgr)), cpt80_sd=float(np.std(cpt80)))


def baselines(
    strong: np.ndarray, weak: np.ndarray, **costs: np.ndarray | None
) -> list[RoutingReport]:
    """Random (constant preference) and oracle (strong only where it alone is right)."""
    oracle = strong.astype(np.float64) - weak.astype(np.float64)
    return [
        evaluate_router("random", np.zeros(len(strong)), strong, weak, **costs),
        evaluate_router("oracle", oracle, strong, weak, **costs),
    ]


def report_json(report: RoutingReport) -> dict[str, object]:
    return {**report.row(), "curve": [asdict(p) for p in curve_rows(report)]}


def curve_rows(report: RoutingReport, shares: Sequence[float] = GRID[::10]) -> list[CurvePoint]:
    wanted = {round(s, 2) for s in shares}
    return [p for p in report.curve if round(p.strong_share, 2) in wanted]
