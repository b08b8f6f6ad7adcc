"""Builders for readings, a device that is never plugged in, and waiting in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from drivers.measurement import Measurement, Metric, Quality, Site
from gateway.model import ClockState, Reading

T0 = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)

#: A configured CMS50 whose port never appears: in-process tests hand the pipeline
#: measurements "from" it directly.
PORT_PATH = "/dev/serial/by-id/usb-absent-cms50"
DEVICE = f'[[devices]]\nkind = "cms50"\nport = "{PORT_PATH}"\nsubject = "bed-9"\n'


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


async def until(predicate: Callable[[], object], within_s: float = 20.0, what: str = "") -> None:
    try:
        async with asyncio.timeout(within_s):
            while not predicate():  # noqa: ASYNC110 - state set by broker threads
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_s} s waiting for {what}") from None
