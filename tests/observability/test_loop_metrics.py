"""The lock-free edge metrics expose exactly what prometheus-client's Counter/Histogram would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from services.common.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
OBSERVED = (0.0, 0.0005, 0.001, 0.05, 0.1, 3.0, 1000.0)


def _page(registry: CollectorRegistry) -> str:
    """The text page with creation timestamps blanked (the two families are made apart)."""
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", generate_latest(registry).decode())


def test_counter_and_histogram_pages_match_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counters = (
        LoopCounter("x_requests", "Requests", ["endpoint", "status"], registry=ours),
        Counter("x_requests", "Requests", ["endpoint", "status"], registry=theirs),
    )
    plain = (
        LoopCounter("x_fallbacks", "Fallbacks", registry=ours),
        Counter("x_fallbacks", "Fallbacks", registry=theirs),
    )
    histograms = (
        LoopHistogram("x_seconds", "Latency", ["endpoint"], buckets=BUCKETS, registry=ours),
        Histogram("x_seconds", "Latency", ["endpoint"], buckets=BUCKETS, registry=theirs),
    )
    for counter in counters:
        counter.labels("/v1/chat", "200").inc()
        counter.labels("/v1/chat", "200").inc(2.5)
        counter.labels("/v1/responses", "502").inc()
    for fallbacks in plain:
        fallbacks.inc()
    for histogram in histograms:
        for value in OBSERVED:
            histogram.labels("/v1/chat").observe(value)
        histogram.labels("/v1/responses").observe(0.01)
    assert _page(ours) == _page(theirs)
    assert 'x_seconds_bucket{endpoint="/v1/chat",le="0.001"} 3.0' in _page(ours)


def test_unlabelled_counter_is_exported_at_zero_and_labels_are_checked() -> None:
    registry = CollectorRegistry()
    LoopCounter("x_dropped", "Dropped", registry=registry)
    assert "x_dropped_total 0.0" in _page(registry)
    labelled = LoopCounter("x_by_kind", "By kind", ["kind"], registry=registry)
    with pytest.raises(ValueError, match="expected labels"):
        labelled.labels("a", "b")
