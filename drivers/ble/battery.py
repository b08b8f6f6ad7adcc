"""Battery Level 0x2A19, and the battery-percentage check shared by advert parsers."""

from __future__ import annotations

from drivers.errors import ImplausibleValue, length_mismatch
from drivers.measurement import Measurement, Metric


def battery_measurement(percent: int, source: str) -> Measurement:
    """A battery reading; 101-255 are reserved values, not overcharge."""
    if not 0 <= percent <= 100:
        raise ImplausibleValue(f"{source}: battery level {percent} % outside 0-100 (reserved)")
    return Measurement(Metric.BATTERY, float(percent))


def parse_battery_level(data: bytes) -> list[Measurement]:
    """0x2A19: one unsigned byte, percent."""
    if len(data) != 1:
        raise length_mismatch(
            f"Battery Level: needs exactly 1 byte, packet is {len(data)} bytes", len(data), 1
        )
    return [battery_measurement(data[0], "Battery Level")]
