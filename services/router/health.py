"""Per-model health from feedback and probes (router-schema §10, §7 invalidation).

A model turns `degraded` at error_rate ≥ 0.5 over ≥ 20 samples and `healthy` again below 0.2
(hysteresis, so one lucky request does not flap it). Every status change lists the model's
freeze keys for 60 s so edges drop plans cached for it.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from services.common.pb import router_pb2

HEALTHY, DEGRADED = "healthy", "degraded"
WINDOW_SAMPLES = 200
WINDOW_SECONDS = 300.0
MIN_SAMPLES = 20
DEGRADE_AT = 0.5
RECOVER_BELOW = 0.2
INVALIDATE_SECONDS = 60.0
MAX_TRACKED = 10_000


@dataclass(frozen=True)
class Sample:
    at: float
    success: bool
    duration_ms: float | None
    completion_tokens: int | None


@dataclass
class _ModelState:
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=WINDOW_SAMPLES))
    status: str = HEALTHY
    reason: str | None = None
    from_probe: bool = False
    freeze_keys: set[str] = field(default_factory=set)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile; the window is small, so no interpolation is needed."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class ModelHealth:
    """Health windows keyed by model (catalog id, else upstream model_id)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._models: OrderedDict[str, _ModelState] = OrderedDict()
        self._invalidate_until: dict[str, float] = {}

    def _state(self, model: str) -> _ModelState:
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = _ModelState()
            if len(self._models) > MAX_TRACKED:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(model)
        return state

    def _prune(self, state: _ModelState, now: float) -> None:
        while state.samples and now - state.samples[0].at > WINDOW_SECONDS:
            state.samples.popleft()
        if state.status == DEGRADED and not state.from_probe and not state.samples:
            self._change(state, HEALTHY, "feedback window expired", now)

    def _change(self, state: _ModelState, status: str, reason: str | None, now: float) -> None:
        changed = state.status != status
        state.status, state.reason = status, reason
        if changed:
            for key in state.freeze_keys:
                self._invalidate_until[key] = now + INVALIDATE_SECONDS

    def remember_freeze_key(self, model: str, freeze_key: str) -> None:
        self._state(model).freeze_keys.add(freeze_key)

    def record(
        self,
        model: str,
        *,
        success: bool,
        duration_ms: float | None = None,
        completion_tokens: int | None = None,
    ) -> None:
        now = self._clock()
        state = self._state(model)
        state.samples.append(Sample(now, success, duration_ms, completion_tokens))
        state.from_probe = False
        self._prune(state, now)
        errors = sum(not s.success for s in state.samples)
        rate = errors / len(state.samples)
        if state.status == HEALTHY and len(state.samples) >= MIN_SAMPLES and rate >= DEGRADE_AT:
            self._change(
                state, DEGRADED, f"error_rate {rate:.2f} over {len(state.samples)} samples", now
            )
        elif state.status == DEGRADED and rate < RECOVER_BELOW:
            self._change(state, HEALTHY, None, now)

    def record_probe(self, model: str, *, ok: bool, detail: str) -> None:
        """A `/models` probe (prefetch) sets the status directly until feedback says otherwise."""
        state = self._state(model)
        state.from_probe = not ok
        self._change(state, HEALTHY if ok else DEGRADED, None if ok else detail, self._clock())

    def status(self, model: str) -> tuple[str, str | None]:
        state = self._models.get(model)
        if state is None:
            return HEALTHY, None
        self._prune(state, self._clock())
        return state.status, state.reason

    def is_degraded(self, model: str) -> bool:
        return self.status(model)[0] == DEGRADED

    def all_degraded(self, models: Iterable[str]) -> bool:
        return all(self.is_degraded(model) for model in models)

    def recent(self, model: str) -> router_pb2.RecentSlo | None:
        state = self._models.get(model)
        if state is None:
            return None
        self._prune(state, self._clock())
        if not state.samples:
            return None
        samples = list(state.samples)
        slo = router_pb2.RecentSlo(
            error_rate=round(sum(not s.success for s in samples) / len(samples), 4)
        )
        durations = sorted(s.duration_ms for s in samples if s.duration_ms is not None)
        if durations:
            slo.p50_ms = _percentile(durations, 0.50)
            slo.p95_ms = _percentile(durations, 0.95)
        timed = [s for s in samples if s.completion_tokens is not None and s.duration_ms]
        seconds = sum(s.duration_ms or 0.0 for s in timed) / 1000
        if timed and seconds > 0:
            slo.tokens_per_sec = round(sum(s.completion_tokens or 0 for s in timed) / seconds, 2)
        return slo

    def invalidations(self) -> list[str]:
        """Freeze keys whose model changed status within the last 60 s."""
        now = self._clock()
        expired = [key for key, until in self._invalidate_until.items() if until <= now]
        for key in expired:
            del self._invalidate_until[key]
        return sorted(self._invalidate_until)
