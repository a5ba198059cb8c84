"""Lexical quality model: per-model ridge regression over hashed word n-gram TF-IDF.

A MiniLM vector places a prompt by topic; the words it uses ("EXCEPT", "how many", units,
the answer options) also say how hard it is, and a 384-d average drops most of that. For each
model, a ridge regression on the prompt's unigram+bigram TF-IDF predicts that model's
correctness, and the prediction is one more calibration feature (`lex:<model>`). The
calibration is fitted on out-of-fold predictions, so it weighs the feature as it behaves on
unseen prompts. Hashing (no vocabulary) keeps the artifact one fixed-size file and the
transform stateless; the model is refitted by `build-index`, not by online feedback.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import Ridge

LEXICAL_FILE = "lexical.npz"
N_FEATURES = 2**18
ALPHA = 10.0
FOLDS = 5
_HASHER = HashingVectorizer(
    ngram_range=(1, 2), n_features=N_FEATURES, alternate_sign=False, norm=None
)


def _counts(texts: Sequence[str]) -> sparse.csr_matrix:
    return _HASHER.transform(texts)


def _idf(counts: sparse.csr_matrix) -> np.ndarray:
    """Smoothed inverse document frequency, as scikit-learn's TfidfTransformer defines it."""
    df = np.bincount(counts.indices, minlength=N_FEATURES)
    return (np.log((1 + counts.shape[0]) / (1 + df)) + 1).astype(np.float32)


def _tfidf(counts: sparse.csr_matrix, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per stored entry: sublinear term frequency times idf, divided by its row's norm; and
    the entry's row. Plain arrays: a one-prompt scipy/sklearn round trip costs ~0.6 ms."""
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    weights = (1 + np.log(counts.data)) * idf[counts.indices]
    norms = np.sqrt(np.bincount(rows, weights=weights**2, minlength=counts.shape[0]))
    return weights / np.where(norms > 0, norms, 1.0)[rows], rows


@dataclass(frozen=True)
class LexicalModel:
    models: list[str]
    idf: np.ndarray  # (N_FEATURES,)
    coef: np.ndarray  # (N_FEATURES, M): one row gathered per hashed n-gram
    intercept: np.ndarray  # (M,)

    @classmethod
    def fit(cls, texts: Sequence[str], scores: np.ndarray, models: Sequence[str]) -> LexicalModel:
        """One ridge regression per column of `scores` (rows with NaN for that model skipped);
        a model nothing scores predicts 0."""
        counts = _counts(texts)
        idf = _idf(counts)
        weights, _ = _tfidf(counts, idf)
        x = sparse.csr_matrix((weights, counts.indices, counts.indptr), shape=counts.shape)
        coef = np.zeros((N_FEATURES, len(models)), dtype=np.float32)
        intercept = np.zeros(len(models), dtype=np.float32)
        for j in range(len(models)):
            rows = ~np.isnan(scores[:, j])
            if rows.any():
                ridge = Ridge(alpha=ALPHA).fit(x[rows], scores[rows, j])
                coef[:, j], intercept[j] = ridge.coef_, ridge.intercept_
        return cls(list(models), idf, coef, intercept)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """`(len(texts), M)` predicted correctness (unclipped ridge outputs)."""
        counts = _counts(texts)
        weights, rows = _tfidf(counts, self.idf)
        terms = self.coef[counts.indices] * weights[:, None]
        sums = [
            np.bincount(rows, weights=terms[:, j], minlength=len(texts))
            for j in range(len(self.models))
        ]
        return np.stack(sums, axis=1) + self.intercept

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            models=np.asarray(self.models),
            idf=self.idf,
            coef=self.coef,
            intercept=self.intercept,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LexicalModel:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            coef = arrays["coef"]
            if coef.shape[0] != N_FEATURES:
                raise ValueError(f"lexical model has {coef.shape[0]} features, not {N_FEATURES}")
            return cls([str(m) for m in arrays["models"]], arrays["idf"], coef, arrays["intercept"])


def out_of_fold(texts: Sequence[str], scores: np.ndarray, models: Sequence[str]) -> np.ndarray:
    """Each text's predictions from a model fitted on the other folds: what the calibration
    trains on, so the feature looks to it as it will for a new prompt."""
    folds = np.arange(len(texts)) % FOLDS
    np.random.default_rng(0).shuffle(folds)
    out = np.zeros((len(texts), len(models)))
    if len(texts) < FOLDS:
        return out
    for fold in range(FOLDS):
        held = folds == fold
        model = LexicalModel.fit(
            [t for t, h in zip(texts, held, strict=True) if not h], scores[~held], models
        )
        out[held] = model.predict([t for t, h in zip(texts, held, strict=True) if h])
    return out
