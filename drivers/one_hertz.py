"""Reduce a fast sample stream (an oximeter at 60-100 Hz) to one reading per second
per metric.

Within each one-second window, per metric: the median of the clean samples when there
is at least one; otherwise the median of the flagged samples, carrying the union of
their flags. A sample that has no value (sentinel, NaN) never reaches the reducer.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from drivers.measurement import Measurement, Metric, Quality


class OneHertzReducer:
    """Feed samples with a monotonic timestamp; get back the closed windows' readings."""

    def __init__(self, window_s: float = 1.0) -> None:
        self._window_s = window_s
        self._window_start: float | None = None
        self._samples: list[Measurement] = []

    def add(self, now: float, samples: Iterable[Measurement]) -> list[Measurement]:
        """Add samples seen at `now`; returns readings of a window that closed, if any."""
        out: list[Measurement] = []
        if self._window_start is None:
            self._window_start = now
        elif now - self._window_start >= self._window_s:
            out = self.flush()
            self._window_start = now
        self._samples.extend(samples)
        return out

    def flush(self) -> list[Measurement]:
        """Close the current window now (e.g. on disconnect) and return its readings."""
        by_metric: dict[Metric, list[Measurement]] = {}
        for sample in self._samples:
            by_metric.setdefault(sample.metric, []).append(sample)
        self._samples = []
        self._window_start = None
        return [_reduce(metric, items) for metric, items in by_metric.items()]


def _reduce(metric: Metric, items: list[Measurement]) -> Measurement:
    clean = [m for m in items if not m.quality]
    chosen = clean or items
    flags: frozenset[Quality] = frozenset().union(*(m.quality for m in chosen))
    values = [float(m.value) for m in chosen]
    return Measurement(
        metric, statistics.median_low(values), flags, chosen[0].site, chosen[-1].measured_at
    )
