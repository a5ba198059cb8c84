"""Online learning: feedback with a quality signal becomes (or updates) a searchable example.

The router plans before a `route_id` exists, so a `RouteMemory` keeps, for a bounded number
of recent routes, the query's vector and a fingerprint of its text (never the text). When
`RouteFeedback.quality` arrives for that route, `OnlineExamples` records it: the same query
text again updates the same example (mean of the qualities seen per model); a new one takes
the oldest slot once `capacity` is reached. Every observation is appended to a JSONL log and
replayed at start; the log is compacted to one line per (example, model) when it doubles.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

log = logging.getLogger(__name__)

ONLINE_LOG = "online.jsonl"
DEFAULT_CAPACITY = 10_000
DEFAULT_PENDING = 20_000


def query_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PendingRoute:
    key: str
    vector: np.ndarray
    model: str  # the model the route was planned to


class RouteMemory:
    """route_id → the query that produced it, for the most recent `size` KNN routes."""

    def __init__(self, size: int = DEFAULT_PENDING) -> None:
        self._routes: OrderedDict[str, PendingRoute] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def remember(self, route_id: str, route: PendingRoute) -> None:
        with self._lock:
            self._routes[route_id] = route
            self._routes.move_to_end(route_id)
            while len(self._routes) > self._size:
                self._routes.popitem(last=False)

    def get(self, route_id: str) -> PendingRoute | None:
        with self._lock:
            return self._routes.get(route_id)

    def __len__(self) -> int:
        return len(self._routes)


def _encode(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()


def _decode(text: str, dim: int) -> np.ndarray | None:
    vector = np.frombuffer(base64.b64decode(text), dtype=np.float32)
    return vector if vector.shape == (dim,) else None


class OnlineExamples:
    """A bounded, persisted set of examples learned from feedback; exact search (small)."""

    def __init__(
        self,
        models: Sequence[str],
        dim: int,
        *,
        capacity: int = DEFAULT_CAPACITY,
        log_path: Path | None = None,
    ) -> None:
        self.models = list(models)
        self.dim = dim
        self.capacity = capacity
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
        self.sums = np.zeros((capacity, len(self.models)), dtype=np.float64)
        self.counts = np.zeros((capacity, len(self.models)), dtype=np.int64)
        self.keys: list[str | None] = [None] * capacity
        self._slots: OrderedDict[str, int] = OrderedDict()  # key → slot, oldest first
        self._column = {m: j for j, m in enumerate(self.models)}
        self._lock = threading.Lock()
        self._log_path = log_path
        self._log_lines = 0
        if log_path is not None and log_path.exists():
            self._replay(log_path)

    def __len__(self) -> int:
        return len(self._slots)

    def ids(self, rows: np.ndarray) -> list[str]:
        return [f"fb_{(self.keys[r] or '')[:16]}" for r in rows]

    def scores(self, rows: np.ndarray) -> np.ndarray:
        sums, counts = self.sums[rows], self.counts[rows]
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)

    def observe(self, key: str, vector: np.ndarray, model: str, quality: float) -> bool:
        """Record one quality for `model` on the query `key`; False if the model is unknown."""
        if model not in self._column or not 0.0 <= quality <= 1.0:
            return False
        with self._lock:
            self._apply(key, vector, model, quality, 1)
            self._append({"key": key, "model": model, "sum": quality, "n": 1, "v": _encode(vector)})
            if self._log_lines > 2 * self.capacity * max(len(self.models), 1):
                self._compact()
        return True

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, rows) by inner product, best first."""
        with self._lock:
            rows = np.fromiter(self._slots.values(), dtype=np.int64, count=len(self._slots))
            if len(rows) == 0 or k <= 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            sims = self.vectors[rows] @ np.asarray(query, dtype=np.float32)
        top = np.argsort(-sims, kind="stable")[:k]
        return sims[top], rows[top]

    # ------------------------------------------------------------------ internals

    def _slot_for(self, key: str) -> int:
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            return slot
        if len(self._slots) < self.capacity:
            slot = len(self._slots)
        else:
            _, slot = self._slots.popitem(last=False)
        self._slots[key] = slot
        self.keys[slot] = key
        self.sums[slot] = 0.0
        self.counts[slot] = 0
        return slot

    def _apply(self, key: str, vector: np.ndarray, model: str, total: float, n: int) -> None:
        slot = self._slot_for(key)
        self.vectors[slot] = vector
        column = self._column[model]
        self.sums[slot, column] += total
        self.counts[slot, column] += n

    def _append(self, record: dict[str, object]) -> None:
        if self._log_path is None:
            return
        with self._log_path.open("ab") as handle:
            handle.write(orjson.dumps(record) + b"\n")
        self._log_lines += 1

    def _replay(self, path: Path) -> None:
        bad = 0
        with path.open("rb") as handle:
            for line in handle:
                self._log_lines += 1
                try:
                    rec = orjson.loads(line)
                    vector = _decode(rec["v"], self.dim)
                    if vector is None or rec["model"] not in self._column:
                        raise ValueError("vector or model does not fit this index")
                    self._apply(rec["key"], vector, rec["model"], float(rec["sum"]), int(rec["n"]))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    bad += 1
        if bad:
            log.warning("online examples: log lines skipped", extra={"skipped": bad})
        log.info("online examples loaded", extra={"examples": len(self), "path": str(path)})

    def _compact(self) -> None:
        """Rewrite the log as one line per (example, model), oldest example first."""
        assert self._log_path is not None
        tmp = self._log_path.with_suffix(".tmp")
        lines = 0
        with tmp.open("wb") as handle:
            for key, slot in self._slots.items():
                encoded = _encode(self.vectors[slot])
                for model, column in self._column.items():
                    n = int(self.counts[slot, column])
                    if n:
                        record = {"key": key, "model": model, "sum": float(self.sums[slot, column])}
                        record.update(n=n, v=encoded)
                        handle.write(orjson.dumps(record) + b"\n")
                        lines += 1
        os.replace(tmp, self._log_path)
        self._log_lines = lines
