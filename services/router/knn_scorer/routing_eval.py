"""`signalbox-router eval`: the index's router vs plain §6 KNN, random and oracle.

A query's preference for the strong model is the predicted quality gap `q̂_strong - q̂_weak`
from the scorer's own code (neighbours, weights, calibration); §6 sends the query to the strong
model exactly when that gap exceeds `λ·(ĉ_strong - ĉ_weak)`, so sweeping λ sweeps the curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from services.router.catalog import Catalog
from services.router.config_models import KnnAlias
from services.router.knn import cost_candidates
from services.router.knn_scorer.artifacts import build_from_set
from services.router.knn_scorer.embedder import Embedder
from services.router.knn_scorer.evaluation import (
    RoutingReport,
    baselines,
    curve_rows,
    evaluate_router,
    with_bootstrap,
)
from services.router.knn_scorer.scorer import (
    CALIBRATED_METHOD,
    SPEC_METHOD,
    LearnedKnnScorer,
    ScoringMethod,
)
from services.router.knn_scorer.training_data import TrainingSet, fold_of

CHARS_PER_TOKEN = 4
DEFAULT_OUTPUT_TOKENS = 256


@dataclass(frozen=True)
class EvalSet:
    vectors: np.ndarray
    data: TrainingSet
    strong: np.ndarray
    weak: np.ndarray
    cost_strong: np.ndarray  # USD per query at catalog prices
    cost_weak: np.ndarray


def eval_set(
    data: TrainingSet, vectors: np.ndarray, catalog: Catalog, strong: str, weak: str
) -> EvalSet:
    """Queries that score both models, with their costs (prompt ≈ chars/4, 256 output)."""
    keep = [i for i, e in enumerate(data.examples) if strong in e.scores and weak in e.scores]
    subset = data.subset(keep)
    costs = {m: [] for m in (strong, weak)}
    for example in subset.examples:
        prompt = len(example.prompt) // CHARS_PER_TOKEN
        for model in costs:
            entry = catalog.get(model)
            units = entry.cost_units(prompt, DEFAULT_OUTPUT_TOKENS) if entry else 0
            costs[model].append(units / 1e12)
    return EvalSet(
        vectors=vectors[keep],
        data=subset,
        strong=np.array([e.scores[strong] for e in subset.examples]),
        weak=np.array([e.scores[weak] for e in subset.examples]),
        cost_strong=np.array(costs[strong]),
        cost_weak=np.array(costs[weak]),
    )


def preferences(
    scorer: LearnedKnnScorer,
    vectors: np.ndarray,
    texts: Sequence[str],
    catalog: Catalog,
    strong: str,
    weak: str,
    method: ScoringMethod | None = None,
) -> np.ndarray:
    """Predicted `q̂_strong - q̂_weak` per query (0 when the scorer defers without a guess)."""
    if method is not None:
        scorer = scorer.with_method(method)
    entries = [catalog.get(strong), catalog.get(weak)]
    if None in entries:
        raise ValueError(f"{strong} and {weak} must both be catalog models")
    candidates = cost_candidates(entries, 0, 0)
    alias = KnnAlias(policy="knn", candidates=[strong, weak], default_model=weak)
    params = replace(scorer.method.params(alias), confidence_floor=0.0)
    out = np.zeros(len(vectors))
    search_k = scorer.method.search_k(params)
    for i, (vector, text) in enumerate(zip(vectors, texts, strict=True)):
        neighbours = scorer.neighbours(vector, search_k)
        scored, _ = scorer.score(text, neighbours, candidates, 0.0, params)
        quality = {c.model: c.predicted_quality for c in scored.candidates}
        if strong in quality and weak in quality:
            out[i] = quality[strong] - quality[weak]
    return out


def _methods(learned: ScoringMethod) -> list[tuple[str, ScoringMethod]]:
    return [("knn-spec (§6, k=10)", SPEC_METHOD), ("knn-learned", learned)]


def _reports(test: EvalSet, named: Sequence[tuple[str, np.ndarray]]) -> list[RoutingReport]:
    """Random and oracle, then each named router's preferences, with bootstrap errors."""
    costs = {"cost_strong": test.cost_strong, "cost_weak": test.cost_weak}
    reports = baselines(test.strong, test.weak, **costs)
    for name, pref in named:
        report = evaluate_router(name, pref, test.strong, test.weak, **costs)
        reports.append(with_bootstrap(report, pref, test.strong, test.weak))
    return reports


def compare(
    scorer: LearnedKnnScorer,
    test: EvalSet,
    catalog: Catalog,
    strong: str,
    weak: str,
    extra_methods: Sequence[tuple[str, ScoringMethod]] = (),
) -> list[RoutingReport]:
    """Random, oracle, plain §6 KNN, the index's method, and any `extra_methods`."""
    named = [
        (name, preferences(scorer, test.vectors, test.data.prompts, catalog, strong, weak, method))
        for name, method in [*_methods(scorer.method), *extra_methods]
    ]
    return _reports(test, named)


def cross_validate(
    data: TrainingSet,
    vectors: np.ndarray,
    embedder: Embedder,
    catalog: Catalog,
    strong: str,
    weak: str,
    folds: int,
) -> list[RoutingReport]:
    """Every prompt scored by an index (and calibration) built without its fold, pooled: the
    whole file is test data, so the figures carry about half the sampling error of a 20 %
    hold-out."""
    test = eval_set(data, vectors, catalog, strong, weak)
    fold = np.array([fold_of(e.id, folds) for e in test.data.examples])
    methods = _methods(CALIBRATED_METHOD)
    pooled = {name: np.zeros(len(fold)) for name, _ in methods}
    for f in range(folds):
        train = [i for i, e in enumerate(data.examples) if fold_of(e.id, folds) != f]
        index, calibration = build_from_set(
            data.subset(train), embedder, CALIBRATED_METHOD, vectors=vectors[train]
        )
        scorer = LearnedKnnScorer(
            embedder, index, method=CALIBRATED_METHOD, calibration=calibration
        )
        rows = np.flatnonzero(fold == f)
        texts = [test.data.prompts[i] for i in rows]
        for name, method in methods:
            pooled[name][rows] = preferences(
                scorer, test.vectors[rows], texts, catalog, strong, weak, method
            )
    return _reports(test, list(pooled.items()))


def format_reports(reports: Sequence[RoutingReport], curve_of: str = "knn-learned") -> str:
    lines = [
        f"strong acc {reports[0].acc_strong:.4f}, weak acc {reports[0].acc_weak:.4f}",
        "",
        f"{'router':28s} {'APGR':>7s} {'CPT(50%)':>9s} {'CPT(80%)':>9s}  sd (bootstrap)",
    ]
    for r in reports:
        line = f"{r.name:28s} {r.apgr:7.4f} {r.cpt50:9.4f} {r.cpt80:9.4f}"
        if r.apgr_sd is not None and r.cpt80_sd is not None:
            line += f"  ±{r.apgr_sd:.4f}, ±{r.cpt80_sd:.4f}"
        lines.append(line)
    chosen = next((r for r in reports if r.name == curve_of), reports[-1])
    lines += [
        "",
        f"quality/cost curve ({chosen.name})",
        f"{'strong share':>12s} {'accuracy':>9s} {'PGR':>7s} {'USD/1k queries':>15s}",
    ]
    for p in curve_rows(chosen):
        cost = "" if p.cost_per_query_usd is None else f"{p.cost_per_query_usd * 1000:15.4f}"
        lines.append(f"{p.strong_share:12.2f} {p.accuracy:9.4f} {p.pgr:7.4f} {cost}")
    return "\n".join(lines)
