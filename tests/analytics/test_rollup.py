"""Per-minute roll-ups: aggregates over any window equal a brute-force pass over the events,
through duplicates, retention deletes and migrations; big windows use the duration histogram."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from services.analytics import rollup
from services.analytics.store import Window
from services.common.pb import analytics_pb2
from tests.analytics.conftest import NOW, RunningAnalytics, StartAnalytics, batch, make_event

MODELS = ("m-a", "m-b", None)


def random_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        duration = None if rng.random() < 0.1 else round(rng.uniform(5, 5000), 3)
        events.append(
            make_event(
                NOW - rng.uniform(0, 1800),
                routing={
                    "resolved_model": rng.choice(MODELS),
                    "fallback_used": rng.random() < 0.2,
                    "strategy": rng.choice(("knn", "alias_table")),
                },
                request={"model": "alias-x", "endpoint": rng.choice(("/v1/responses", None))},
                response={"success": rng.random() < 0.9},
                performance={"duration_ms": duration},
                token_usage=None if rng.random() < 0.2 else {"prompt_tokens": rng.randint(1, 999)},
            )
        )
    return events


def expected(events: list[dict[str, Any]], start: int, end: int) -> dict[str, Any]:
    inside = [e for e in events if start <= e["timestamp"] < end + 1]
    models: dict[str, int] = {}
    endpoints: dict[str, int] = {}
    for e in inside:
        key = e["routing"]["resolved_model"] or e["request"]["model"]
        models[key] = models.get(key, 0) + 1
        if e["request"]["endpoint"]:
            endpoints[e["request"]["endpoint"]] = endpoints.get(e["request"]["endpoint"], 0) + 1
    durations = [e["performance"]["duration_ms"] for e in inside]
    durations = [d for d in durations if d is not None]
    usage = [e["token_usage"] for e in inside if e["token_usage"]]
    return {
        "total_requests": len(inside),
        "successful_requests": sum(e["response"]["success"] for e in inside),
        "fallbacks_used": sum(e["routing"]["fallback_used"] for e in inside),
        "total_input_tokens": sum(u["prompt_tokens"] for u in usage),
        "models_used": models,
        "endpoints_hit": endpoints,
        "avg_duration_ms": statistics.fmean(durations) if durations else None,
        "durations": sorted(durations),
    }


def quantile(values: list[float], p: float) -> float:
    position = (len(values) - 1) * p
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


async def aggregate(svc: RunningAnalytics, start: int, end: int) -> Any:
    return await svc.stub.Aggregate(analytics_pb2.AggregateRequest(start=start, end=end))


async def ingest_all(svc: RunningAnalytics, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 250):
        await svc.ingest(batch(*events[i : i + 250]))


WINDOWS = [
    (NOW - 1800, NOW),  # many whole minutes plus two partial ones
    (NOW - 1799, NOW - 1741),  # inside one or two minutes only: all raw
    (NOW - 1200 + 17, NOW - 600 + 3),
    (NOW - 60 * 20, NOW - 60 * 10 - 1),  # aligned on minutes exactly
]


async def test_rollup_aggregates_equal_a_brute_force_pass(
    database_url: str, start_analytics: StartAnalytics
) -> None:
    svc = await start_analytics(database_url)
    events = random_events(1500)
    await ingest_all(svc, events)
    await ingest_all(svc, events[:400])  # replays: duplicates must not count twice
    for start, end in WINDOWS:
        want = expected(events, start, end)
        agg = await aggregate(svc, start, end)
        assert agg.total_requests == want["total_requests"]
        assert agg.successful_requests == want["successful_requests"]
        assert agg.fallbacks_used == want["fallbacks_used"]
        assert agg.total_input_tokens == want["total_input_tokens"]
        assert dict(agg.models_used) == want["models_used"]
        assert dict(agg.endpoints_hit) == want["endpoints_hit"]
        assert agg.avg_duration_ms == pytest.approx(want["avg_duration_ms"])
        # Small windows: percentiles are exact.
        assert agg.p50_duration_ms == pytest.approx(quantile(want["durations"], 0.5))
        assert agg.p95_duration_ms == pytest.approx(quantile(want["durations"], 0.95))
    stats = await svc.stub.Stats(analytics_pb2.StatsRequest())
    assert stats.total_events == 1500


async def test_retention_deletes_leave_rollups_exact(
    database_url: str, start_analytics: StartAnalytics
) -> None:
    svc = await start_analytics(database_url)
    events = random_events(800, seed=3)
    await ingest_all(svc, events)
    assert svc.app.store is not None
    cutoff = NOW - 900.5  # mid-minute: the roll-up of that minute is decremented, not dropped
    deleted = await svc.app.store.delete_older_than(cutoff)
    kept = [e for e in events if e["timestamp"] >= cutoff]
    assert deleted == len(events) - len(kept)
    agg = await aggregate(svc, NOW - 1800, NOW)
    want = expected(kept, NOW - 1800, NOW)
    assert agg.total_requests == want["total_requests"]
    assert dict(agg.models_used) == want["models_used"]
    assert agg.total_input_tokens == want["total_input_tokens"]
    assert (await svc.stub.Stats(analytics_pb2.StatsRequest())).total_events == len(kept)
    await svc.stub.Clear(analytics_pb2.ClearRequest())
    assert (await aggregate(svc, NOW - 1800, NOW)).total_requests == 0


async def test_large_windows_take_percentiles_from_the_histogram(
    database_url: str, start_analytics: StartAnalytics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.analytics.store.EXACT_PERCENTILE_MAX", 10)
    svc = await start_analytics(database_url)
    events = random_events(1000, seed=11)
    await ingest_all(svc, events)
    want = expected(events, NOW - 1800, NOW)
    agg = await aggregate(svc, NOW - 1800, NOW)
    # Within one bin (1 %) of the exact percentile_cont.
    assert agg.p50_duration_ms == pytest.approx(quantile(want["durations"], 0.5), rel=0.011)
    assert agg.p95_duration_ms == pytest.approx(quantile(want["durations"], 0.95), rel=0.011)


async def test_rollups_are_backfilled_by_the_migration(pg_url: str) -> None:
    """A database that has events from before the roll-ups gets them rolled up on upgrade."""
    from services.analytics.events import to_stored
    from services.analytics.store import MIGRATIONS, EventStore
    from services.common.db import connect, migrate
    from services.common.pricing import PriceTable
    from tests.analytics.conftest import to_pb

    db = await connect(pg_url, None)
    try:
        await migrate(db, "analytics", MIGRATIONS[:1])
        events = random_events(300, seed=5)
        prices = PriceTable.load(None, None)
        store = EventStore(db)
        await store.ingest([to_stored(to_pb(e), prices) for e in events])
        await store.migrate()
        agg = await store.aggregate(Window(NOW - 1800, NOW))
        assert agg.total_requests == 300
        assert agg.models_used == expected(events, NOW - 1800, NOW)["models_used"]
    finally:
        await db.close()


def test_histogram_percentile_interpolates_between_neighbours() -> None:
    low, high = rollup.bin_value(10), rollup.bin_value(20)
    assert rollup.hist_percentile([], 0.5) is None
    assert rollup.hist_percentile([(10, 1)], 0.95) == pytest.approx(low)
    # Two values: percentile_cont(0.5) is their midpoint.
    assert rollup.hist_percentile([(10, 1), (20, 1)], 0.5) == pytest.approx((low + high) / 2)
    assert rollup.hist_percentile([(10, 3), (20, 1)], 0.5) == pytest.approx(low)
