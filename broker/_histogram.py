"""A latency histogram cheap enough for every request: fixed buckets, counts, a sum.

Components keep their own (no metrics library on the hot path, none needed to run);
``broker.metrics`` exports them as Prometheus histograms.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

__all__ = ["LATENCY_BUCKETS", "HistogramSnapshot", "LatencyHistogram"]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds in seconds, 100 µs to 10 s (``+Inf`` is implied)."""


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Observations so far: cumulative counts per upper bound, their count and sum."""

    buckets: tuple[tuple[float, int], ...]
    """(upper bound in seconds, observations at or below it), ending with ``inf``."""
    count: int
    sum: float


class LatencyHistogram:
    """Observations of durations in seconds, counted per bucket (one event loop writes)."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def snapshot(self) -> HistogramSnapshot:
        """The cumulative counts so far."""
        cumulative = []
        total = 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            total += count
            cumulative.append((bound, total))
        return HistogramSnapshot(tuple(cumulative), total, self._sum)
