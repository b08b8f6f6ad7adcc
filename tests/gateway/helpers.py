"""Builders for readings used by the store and rules tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drivers.measurement import Measurement, Metric, Quality, Site
from gateway.model import ClockState, Reading

T0 = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)


def reading(
    seq: int,
    metric: Metric = Metric.SPO2,
    value: float = 97,
    at_s: float = 0.0,
    quality: frozenset[Quality] = frozenset(),
    site: Site | None = None,
    device: str = "plx-f00000000002",
    subject: str | None = "bed-1",
) -> Reading:
    return Reading(
        seq=seq,
        id=f"gw-test-{seq}",
        device=device,
        subject=subject,
        measurement=Measurement(metric, value, quality, site),
        received_at=T0 + timedelta(seconds=at_s),
        clock=ClockState.SYNCED,
    )
