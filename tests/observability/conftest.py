"""Observability tests reuse the edge's in-process fixtures (edge, router, keys, mock upstream)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.edge.conftest import (  # noqa: F401 (pytest fixtures)
    keys_service,
    make_edge,
    router_service,
)
from tests.mock_upstream.fixture import (  # noqa: F401 (pytest fixtures)
    mock_upstream,
    mock_upstream_server,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)
