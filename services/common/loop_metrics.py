"""Lock-free Prometheus counters and histograms for metrics written from one thread only.

prometheus-client's children take a mutex per update and re-check observability on every call:
≈ 2 to 5 µs each on this box, and the edge makes ~10 of them per request. The edge updates its
per-request metrics only on its event loop, so these children are plain slots (an increment is
an attribute add, an observation a `bisect` and two adds). A scrape, from any thread, reads a
snapshot: at worst it misses the update being made at that instant, never a torn value.
Writers on more than one thread would lose increments: use prometheus-client's metrics there.

Exposition is the same as prometheus-client's `Counter` / `Histogram` (names, `_total`,
`_bucket`/`_count`/`_sum`, `_created`), through a collector on the given registry.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import metrics as client_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import INF, floatToGoString


def _use_created() -> bool:
    """prometheus-client's own switch (`PROMETHEUS_DISABLE_CREATED_SERIES`), read per scrape."""
    return bool(getattr(client_metrics, "_use_created", True))


class CounterChild:
    """One label set's running total."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    """One label set's bucket counts (not cumulative; the scrape sums them) and sum."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # The first bound >= amount: prometheus-client's `amount <= bound` bucket.
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount


ChildT = TypeVar("ChildT", CounterChild, HistogramChild)


class _Family(ABC, Generic[ChildT]):
    """Children by label values; registered on `registry` like a prometheus-client metric."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], ChildT] = {}
        if not self.labelnames:
            self.labels()  # an unlabelled metric is exported (at zero) from the start
        if registry is not None:
            registry.register(self)

    @abstractmethod
    def _new_child(self) -> ChildT: ...

    @abstractmethod
    def _family(self) -> Metric:
        """An empty family of this metric's name, type and labels."""

    @abstractmethod
    def _add(self, family: Metric, labels: tuple[str, ...], child: ChildT) -> None:
        """Append one child's samples to `family`."""

    def labels(self, *values: str) -> ChildT:
        """The child of these label values (positional, in `labelnames` order)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            child = self._children[values] = self._new_child()
        return child

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for labels, child in list(self._children.items()):
            self._add(family, labels, child)
        yield family


class LoopCounter(_Family[CounterChild]):
    """A counter (`<name>_total`) whose children are updated from one thread."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def inc(self, amount: float = 1.0) -> None:
        """Only for an unlabelled counter."""
        self.labels().inc(amount)

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, labels: tuple[str, ...], child: CounterChild) -> None:
        created = child.created if _use_created() else None
        family.add_metric(labels, child.value, created=created)  # type: ignore[attr-defined]


class LoopHistogram(_Family[HistogramChild]):
    """A histogram whose children are updated from one thread."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        self.bounds = tuple(bounds if bounds[-1] == INF else [*bounds, INF])
        self._le = tuple(floatToGoString(b) for b in self.bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, labels: tuple[str, ...], child: HistogramChild) -> None:
        total = child.sum
        buckets, running = [], 0
        for le, count in zip(self._le, list(child.counts), strict=True):
            running += count
            buckets.append((le, running))
        family.add_metric(labels, buckets, total)  # type: ignore[attr-defined]
        if _use_created():
            names = dict(zip(self.labelnames, labels, strict=True))
            family.samples.append(Sample(f"{self.name}_created", names, child.created))
