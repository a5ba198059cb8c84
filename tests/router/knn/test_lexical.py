"""The lexical quality model: learns word cues, never sees a prompt's own label out of fold,
and round-trips through its file."""

from __future__ import annotations

import numpy as np
import pytest

from services.router.knn_scorer.calibration import Calibration, feature_names
from services.router.knn_scorer.lexical import LexicalModel, out_of_fold

MODELS = ["strong", "weak"]


def cue_set(n: int = 200) -> tuple[list[str], np.ndarray]:
    """Prompts that say "integral" are the weak model's failures; topics vary otherwise."""
    rng = np.random.default_rng(1)
    topics = ["history of rome", "cell biology", "tax law", "poetry meter", "plate tectonics"]
    texts, scores = [], []
    for i in range(n):
        hard = i % 2 == 0
        cue = "evaluate the integral" if hard else "name the author"
        texts.append(f"{topics[rng.integers(len(topics))]} question {i}: {cue}")
        scores.append([1.0, 0.0 if hard else 1.0])
    return texts, np.asarray(scores)


def test_learns_a_word_cue_per_model() -> None:
    texts, scores = cue_set()
    model = LexicalModel.fit(texts, scores, MODELS)
    hard, easy = model.predict(
        ["plate tectonics: evaluate the integral", "tax law: name the author"]
    )
    assert hard[1] < 0.3 < 0.7 < easy[1]  # the weak model's cue
    assert hard[0] == pytest.approx(easy[0], abs=0.05)  # the strong model has none


def test_unscored_rows_are_skipped_and_an_unscored_model_predicts_zero() -> None:
    texts, scores = cue_set()
    scores = np.column_stack([scores, np.full(len(texts), np.nan)])
    scores[::3, 1] = np.nan
    model = LexicalModel.fit(texts, scores, [*MODELS, "new"])
    predicted = model.predict(["cell biology: evaluate the integral"])[0]
    assert predicted[1] < 0.3 and predicted[2] == 0.0


def test_out_of_fold_predictions_ignore_the_prompt_own_label() -> None:
    texts, scores = cue_set()
    texts[0] = "a prompt with words seen nowhere else"
    before = out_of_fold(texts, scores, MODELS)
    flipped = scores.copy()
    flipped[0] = 1.0 - flipped[0]
    after = out_of_fold(texts, flipped, MODELS)
    np.testing.assert_allclose(before[0], after[0])
    assert not np.allclose(before[1:], after[1:])  # others did learn from it


def test_bytes_round_trip_and_a_calibration_needs_its_own_lexical_model() -> None:
    texts, scores = cue_set()
    model = LexicalModel.fit(texts, scores, MODELS)
    loaded = LexicalModel.from_bytes(model.to_bytes())
    np.testing.assert_allclose(loaded.predict(texts[:5]), model.predict(texts[:5]), rtol=1e-6)

    columns = len(feature_names(MODELS, lexical=True))
    features = np.random.default_rng(0).normal(size=(len(texts), columns))
    calibration = Calibration.fit(features, scores, MODELS, model)
    assert calibration.names[-2:] == ["lex:strong", "lex:weak"]
    doc = calibration.to_json()
    assert Calibration.from_json(doc, loaded).lexical is loaded
    with pytest.raises(ValueError, match="do not belong together"):
        Calibration.from_json(doc)
    other = LexicalModel.fit(texts, scores[:, ::-1], ["weak", "strong"])
    with pytest.raises(ValueError, match="lexical model scores"):
        Calibration.from_json(doc, other)
    with pytest.raises(ValueError, match="feature columns"):
        Calibration.fit(features[:, :-2], scores, MODELS, model)


def test_tfidf_weights_are_scikit_learns() -> None:
    from sklearn.feature_extraction.text import TfidfTransformer

    from services.router.knn_scorer.lexical import _counts, _idf, _tfidf

    texts, _ = cue_set(50)
    counts = _counts(texts)
    weights, _ = _tfidf(counts, _idf(counts))
    reference = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    np.testing.assert_allclose(weights, reference.data, rtol=1e-5)
