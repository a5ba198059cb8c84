"""Feedback windows (router-schema §10) and freeze-key invalidation (§7)."""

from __future__ import annotations

import pytest

from services.router.health import ModelHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> ModelHealth:
    return ModelHealth(clock=clock)


def test_degrades_only_after_twenty_samples(health: ModelHealth) -> None:
    for _ in range(19):
        health.record("m", success=False)
    assert health.status("m")[0] == "healthy"
    health.record("m", success=False)
    status, reason = health.status("m")
    assert status == "degraded"
    assert reason == "error_rate 1.00 over 20 samples"


def test_threshold_and_hysteresis(health: ModelHealth) -> None:
    for i in range(40):
        health.record("m", success=i % 2 == 0)  # exactly 0.5
    assert health.is_degraded("m")
    # Recovers only below 0.2: 20 errors in 100 samples is 0.2, not below.
    for _ in range(60):
        health.record("m", success=True)
    assert health.is_degraded("m")
    health.record("m", success=True)  # 20 errors in 101 samples
    assert not health.is_degraded("m")


def test_window_holds_200_samples(health: ModelHealth) -> None:
    for _ in range(200):
        health.record("m", success=False)
    for _ in range(200):
        health.record("m", success=True)
    recent = health.recent("m")
    assert recent is not None and recent.error_rate == 0


def test_samples_older_than_five_minutes_drop(health: ModelHealth, clock: Clock) -> None:
    for _ in range(20):
        health.record("m", success=False)
    assert health.is_degraded("m")
    clock.now += 301
    assert health.status("m") == ("healthy", "feedback window expired")
    assert health.recent("m") is None


def test_recent_slo(health: ModelHealth) -> None:
    for ms in range(1, 101):
        health.record("m", success=ms > 10, duration_ms=float(ms * 10), completion_tokens=ms)
    recent = health.recent("m")
    assert recent is not None
    assert recent.p50_ms == 500 and recent.p95_ms == 950
    assert recent.error_rate == 0.1
    assert recent.tokens_per_sec == 100.0


def test_status_change_lists_freeze_keys_for_sixty_seconds(
    health: ModelHealth, clock: Clock
) -> None:
    health.remember_freeze_key("m", "frz_aaaaaaaaaaaa")
    health.remember_freeze_key("m", "frz_bbbbbbbbbbbb")
    health.remember_freeze_key("other", "frz_cccccccccccc")
    assert health.invalidations() == []
    for _ in range(20):
        health.record("m", success=False)
    assert health.invalidations() == ["frz_aaaaaaaaaaaa", "frz_bbbbbbbbbbbb"]
    clock.now += 59
    assert len(health.invalidations()) == 2
    clock.now += 1
    assert health.invalidations() == []


def test_probe_sets_status(health: ModelHealth) -> None:
    health.record_probe("m", ok=False, detail="probe failed: ConnectError")
    assert health.status("m") == ("degraded", "probe failed: ConnectError")
    health.record_probe("m", ok=True, detail="probe: HTTP 200")
    assert health.status("m") == ("healthy", None)
