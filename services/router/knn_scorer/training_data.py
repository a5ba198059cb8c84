"""KNN training data (config-files §3): JSONL lines validated into a score matrix.

Bad lines are counted and logged, never fatal: one broken line must not keep the router from
learning from the other twelve thousand.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    id: str
    source: str
    prompt: str
    scores: dict[str, float]


@dataclass
class TrainingSet:
    """Examples plus the `(n, models)` score matrix; NaN marks a model an example does not score."""

    examples: list[Example]
    models: list[str]
    sha256: str
    rejected: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @property
    def prompts(self) -> list[str]:
        return [e.prompt for e in self.examples]

    def score_matrix(self) -> np.ndarray:
        return score_matrix(self.examples, self.models)

    def subset(self, keep: Sequence[int]) -> TrainingSet:
        return TrainingSet([self.examples[i] for i in keep], self.models, self.sha256)


def score_matrix(examples: Sequence[Example], models: Sequence[str]) -> np.ndarray:
    matrix = np.full((len(examples), len(models)), np.nan, dtype=np.float32)
    column = {m: j for j, m in enumerate(models)}
    for i, example in enumerate(examples):
        for model, score in example.scores.items():
            matrix[i, column[model]] = score
    return matrix


def _parse_line(raw: bytes, known: set[str] | None) -> Example | str:
    """An Example, or the reason the line is rejected / skipped."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "invalid_json"
    if not isinstance(doc, dict):
        return "not_an_object"
    ex_id, prompt, scores = doc.get("id"), doc.get("prompt"), doc.get("scores")
    if not isinstance(ex_id, str) or not ex_id:
        return "missing_id"
    if not isinstance(prompt, str) or not prompt.strip():
        return "empty_prompt"
    if not isinstance(scores, dict):
        return "missing_scores"
    kept: dict[str, float] = {}
    for model, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "score_out_of_range"
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            return "score_out_of_range"
        if known is None or model in known:
            kept[model] = float(value)
    if not kept:
        return "no_catalog_scores"
    source = doc.get("source")
    return Example(ex_id, source if isinstance(source, str) else "", prompt, kept)


IdFilter = Callable[[str], bool]


def parse_lines(
    lines: Iterable[bytes],
    known_models: Iterable[str] | None = None,
    keep: IdFilter | None = None,
) -> TrainingSet:
    """Validate JSONL lines; `known_models` (the catalog ids) filters score keys when given,
    `keep` selects valid examples by id (the sha256 is still the whole input's)."""
    known = set(known_models) if known_models is not None else None
    digest = hashlib.sha256()
    examples: list[Example] = []
    seen: set[str] = set()
    rejected: Counter[str] = Counter()
    for number, raw in enumerate(lines, 1):
        digest.update(raw)
        if not raw.strip():
            continue
        parsed = _parse_line(raw, known)
        if isinstance(parsed, Example) and parsed.id in seen:
            parsed = "duplicate_id"
        if isinstance(parsed, str):
            rejected[parsed] += 1
            log.warning("training line rejected", extra={"line": number, "reason": parsed})
            continue
        seen.add(parsed.id)
        if keep is None or keep(parsed.id):
            examples.append(parsed)
    models = sorted({m for e in examples for m in e.scores})
    if rejected:
        log.warning("training lines rejected", extra={"rejected": dict(rejected)})
    return TrainingSet(examples, models, digest.hexdigest(), rejected)


def load_training_set(
    path: Path, known_models: Iterable[str] | None = None, keep: IdFilter | None = None
) -> TrainingSet:
    with path.open("rb") as handle:
        return parse_lines(handle, known_models, keep)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bucket(example_id: str) -> int:
    """A 64-bit hash of the id: splits are stable across runs and machines."""
    return int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:8], "big")


def held_out(example_id: str, test_share: float = 0.2) -> bool:
    """Deterministic 80/20 split by a hash of the id."""
    return _bucket(example_id) / 2**64 < test_share


def fold_of(example_id: str, folds: int) -> int:
    """Deterministic cross-validation fold of an id, in `range(folds)`."""
    return _bucket(example_id) % folds


def split(data: TrainingSet, test_share: float = 0.2) -> tuple[TrainingSet, TrainingSet]:
    """(train, test) by `held_out`."""
    test = [i for i, e in enumerate(data.examples) if held_out(e.id, test_share)]
    test_set = set(test)
    train = [i for i in range(len(data)) if i not in test_set]
    return data.subset(train), data.subset(test)
