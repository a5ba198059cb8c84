"""Calibrated predicted quality: a per-model logistic model over named neighbour features.

Plain §6 predicts a model's quality as the similarity-weighted mean of 10 neighbours' scores:
noisy (10 binary labels) and blind to how hard the prompt itself looks. Here the same
neighbour means at three radii (k = 10, 30, 100, for every model), how close the neighbours
are, and two properties of the prompt text (length, share of digits) feed one logistic
regression per model, fitted on leave-one-out neighbours of the training set. With a lexical
model (lexical.py), its out-of-fold prediction for every model is a feature too (`lex:<model>`).
Every term is a named number, so `explain_detail` can list what pushed a prediction up or down.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.router.knn_scorer.lexical import LexicalModel

RADII = (10, 30, 100)
MAX_RADIUS = max(RADII)
L2 = 1.0
NEWTON_STEPS = 25
_DIGIT = re.compile(r"\d")
_MATH_DIGIT_SHARE = 0.02


LEXICAL_PREFIX = "lex:"


def feature_names(models: Sequence[str], lexical: bool = False) -> list[str]:
    names = [f"knn{k}:{m}" for k in RADII for m in models]
    lex = [f"{LEXICAL_PREFIX}{m}" for m in models] if lexical else []
    return [
        *names,
        "sim_top1",
        "sim_mean10",
        "log_chars",
        "digit_share",
        "log_chars*digit_share",
        "log_chars^2",
        "numeric",
        "numeric*log_chars",
        *lex,
    ]


def neighbour_features(
    similarities: np.ndarray,
    scores: np.ndarray,
    text: str,
    fallback: np.ndarray,
    lexical: np.ndarray | None = None,
) -> np.ndarray:
    """One query's features; a model no neighbour scores takes `fallback` (its global mean);
    `lexical` is the lexical model's prediction per model, when the calibration uses one."""
    parts: list[float] = []
    for k in RADII:
        sims, block = similarities[:k], scores[:k]
        scored = ~np.isnan(block)
        mass = (sims[:, None] * scored).sum(axis=0)
        total = (sims[:, None] * np.where(scored, block, 0.0)).sum(axis=0)
        parts.extend(np.where(mass > 0, total / np.where(mass > 0, mass, 1.0), fallback))
    top1 = float(similarities[0]) if len(similarities) else 0.0
    mean10 = float(similarities[:10].mean()) if len(similarities) else 0.0
    log_chars = float(np.log1p(len(text)))
    digits = len(_DIGIT.findall(text)) / max(len(text), 1)
    numeric = float(digits > _MATH_DIGIT_SHARE)
    parts += [
        top1,
        mean10,
        log_chars,
        digits,
        log_chars * digits,
        log_chars**2,
        numeric,
        numeric * log_chars,
    ]
    if lexical is not None:
        parts.extend(lexical)
    return np.asarray(parts, dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method; `y` may be fractional in [0,1]."""
    design = np.hstack([x, np.ones((len(x), 1))])
    weights = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(design @ weights)
        gradient = design.T @ (p - y) + penalty * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-8:
            break
    return weights[:-1], float(weights[-1])


@dataclass(frozen=True)
class Calibration:
    models: list[str]
    names: list[str]
    mean: np.ndarray  # (F,) standardisation
    std: np.ndarray  # (F,)
    coef: np.ndarray  # (M, F) on standardised features
    intercept: np.ndarray  # (M,)
    fallback: np.ndarray  # (M,) global mean quality per model

    lexical: LexicalModel | None = None  # persisted beside the JSON (lexical.py)

    def features(self, similarities: np.ndarray, scores: np.ndarray, text: str) -> np.ndarray:
        """A query's features, the lexical model's predictions included when fitted with them."""
        lexical = None if self.lexical is None else self.lexical.predict([text])[0]
        return neighbour_features(similarities, scores, text, self.fallback, lexical)

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        scores: np.ndarray,
        models: Sequence[str],
        lexical: LexicalModel | None = None,
    ) -> Calibration:
        """One logistic model per column of `scores` (rows with NaN for that model skipped)."""
        mean, std = features.mean(axis=0), features.std(axis=0)
        std = np.where(std > 1e-9, std, 1.0)
        x = (features - mean) / std
        coef = np.zeros((len(models), features.shape[1]))
        intercept = np.zeros(len(models))
        for j in range(len(models)):
            rows = ~np.isnan(scores[:, j])
            if rows.any():
                coef[j], intercept[j] = fit_logistic(x[rows], scores[rows, j])
        fallback = np.array(
            [
                np.nanmean(scores[:, j]) if (~np.isnan(scores[:, j])).any() else 0.0
                for j in range(len(models))
            ]
        )
        names = feature_names(models, lexical is not None)
        if len(names) != features.shape[1]:
            raise ValueError(f"{features.shape[1]} feature columns for {len(names)} names")
        return cls(list(models), names, mean, std, coef, intercept, fallback, lexical)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Calibrated quality per model, in [0,1]."""
        x = (features - self.mean) / self.std
        return _sigmoid(x @ self.coef.T + self.intercept)

    def contributions(self, features: np.ndarray, model: str, top: int = 4) -> dict[str, float]:
        """The `top` features that moved this model's logit most (signed, in logit units)."""
        j = self.models.index(model)
        terms = (features - self.mean) / self.std * self.coef[j]
        order = np.argsort(-np.abs(terms))[:top]
        return {self.names[i]: round(float(terms[i]), 4) for i in order}

    def to_json(self) -> dict[str, object]:
        return {
            "models": self.models,
            "names": self.names,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "fallback": self.fallback.tolist(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, object], lexical: LexicalModel | None = None) -> Calibration:
        """`lexical` must be given exactly when the calibration was fitted with one."""
        arrays = {
            k: np.asarray(doc[k], dtype=np.float64)
            for k in ("mean", "std", "coef", "intercept", "fallback")
        }
        models, names = list(doc["models"]), list(doc["names"])  # type: ignore[call-overload]
        wants = any(name.startswith(LEXICAL_PREFIX) for name in names)
        if wants != (lexical is not None):
            raise ValueError("calibration and lexical model do not belong together")
        if lexical is not None and lexical.models != models:
            raise ValueError(f"lexical model scores {lexical.models}, calibration {models}")
        return cls(models, names, lexical=lexical, **arrays)
