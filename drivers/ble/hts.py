"""Health Thermometer Service 0x1809: Temperature Measurement (0x2A1C), Temperature Type
(0x2A1D), Intermediate Temperature (0x2A1E) and Measurement Interval (0x2A21)."""

from __future__ import annotations

from enum import IntFlag

from drivers.ble.fields import FieldReader
from drivers.errors import ImplausibleValue, length_mismatch
from drivers.measurement import Measurement, Metric, Quality, Site


class TemperatureFlags(IntFlag):
    FAHRENHEIT = 1 << 0
    TIMESTAMP = 1 << 1
    TEMPERATURE_TYPE = 1 << 2


#: Temperature Type codes; 0 and 10-255 are reserved. There is no forehead code.
SITE_CODES: dict[int, Site] = {
    1: Site.AXILLARY,
    2: Site.BODY,
    3: Site.EAR,
    4: Site.FINGER,
    5: Site.GASTROINTESTINAL,
    6: Site.ORAL,
    7: Site.RECTAL,
    8: Site.TOE,
    9: Site.TYMPANIC,
}

PLAUSIBLE_CELSIUS = (20.0, 50.0)


def parse_temperature_measurement(
    data: bytes, default_site: Site | None = None
) -> list[Measurement]:
    """0x2A1C, the final reading. `default_site` (configured per device) applies when the
    packet has no Temperature Type field."""
    return _parse_temperature(data, default_site, "Temperature Measurement", frozenset())


def parse_intermediate_temperature(
    data: bytes, default_site: Site | None = None
) -> list[Measurement]:
    """0x2A1E: in-progress display values, flagged INTERMEDIATE so nothing alarms on them."""
    return _parse_temperature(
        data, default_site, "Intermediate Temperature", frozenset({Quality.INTERMEDIATE})
    )


def parse_temperature_type(data: bytes) -> Site:
    """0x2A1D: the device-level measurement site."""
    if len(data) != 1:
        raise length_mismatch(
            f"Temperature Type: needs exactly 1 byte, packet is {len(data)} bytes", len(data), 1
        )
    return _site(data[0], "Temperature Type")


def _parse_temperature(
    data: bytes, default_site: Site | None, name: str, quality: frozenset[Quality]
) -> list[Measurement]:
    reader = FieldReader(data, name)
    flags = TemperatureFlags(reader.uint(1, "Flags"))
    reader.what = f"{name} (flags 0x{flags:02X})"
    value = reader.float32("Temperature")
    measured_at = reader.date_time("Time Stamp") if TemperatureFlags.TIMESTAMP in flags else None
    site = default_site
    if TemperatureFlags.TEMPERATURE_TYPE in flags:
        site = _site(reader.uint(1, "Temperature Type"), reader.what)
    reader.end()
    if value is None:
        return []
    if TemperatureFlags.FAHRENHEIT in flags:
        value = round((value - 32) * 5 / 9, 2)
    low, high = PLAUSIBLE_CELSIUS
    if not low <= value <= high:
        raise ImplausibleValue(
            f"{reader.what}: implausible body temperature {value} degC (outside {low:g}-{high:g})"
        )
    return [Measurement(Metric.BODY_TEMPERATURE, value, quality, site, measured_at)]


def _site(code: int, what: str) -> Site:
    try:
        return SITE_CODES[code]
    except KeyError:
        raise ImplausibleValue(f"{what}: reserved temperature type code {code}") from None
