"""The GATT profiles a `GattSession` speaks, as data: the service, the characteristics
to subscribe to with the parser of each, and where the measurement site comes from.

Adding a device family that sends one measurement per notification is adding a
`GattProfile` to `PROFILES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from drivers.ble import uuids
from drivers.ble.hts import parse_temperature_measurement, parse_temperature_type
from drivers.ble.plx import parse_plx_continuous, parse_plx_spot_check
from drivers.measurement import Measurement, Site

#: Decodes one notification or indication; the site is the device's default one.
MeasurementParser = Callable[[bytes, Site | None], list[Measurement]]


@dataclass(frozen=True, slots=True)
class SiteSource:
    """A characteristic, read once per connection, that names the measurement site."""

    uuid: str
    parse: Callable[[bytes], Site]


@dataclass(frozen=True, slots=True)
class GattProfile:
    name: str
    service_uuid: str
    #: Characteristic UUID -> parser. The session subscribes to each one the device has,
    #: and needs at least one.
    measurements: Mapping[str, MeasurementParser]
    site: SiteSource | None = None


def _without_site(parse: Callable[[bytes], list[Measurement]]) -> MeasurementParser:
    return lambda data, _site: parse(data)


HEALTH_THERMOMETER = GattProfile(
    name="hts",
    service_uuid=uuids.HEALTH_THERMOMETER_SERVICE,
    measurements={uuids.TEMPERATURE_MEASUREMENT: parse_temperature_measurement},
    site=SiteSource(uuids.TEMPERATURE_TYPE, parse_temperature_type),
)

PULSE_OXIMETER = GattProfile(
    name="plx",
    service_uuid=uuids.PULSE_OXIMETER_SERVICE,
    # The service has at least one of the two.
    measurements={
        uuids.PLX_CONTINUOUS_MEASUREMENT: _without_site(parse_plx_continuous),
        uuids.PLX_SPOT_CHECK_MEASUREMENT: _without_site(parse_plx_spot_check),
    },
)

PROFILES: dict[str, GattProfile] = {p.name: p for p in (HEALTH_THERMOMETER, PULSE_OXIMETER)}
