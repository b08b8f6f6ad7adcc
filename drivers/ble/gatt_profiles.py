"""The GATT profiles a `GattSession` speaks, as data: the service, what to do with each
of its characteristics, and where the measurement site comes from.

A characteristic is one of:
- a measurement: each notification or indication is one packet, parsed on its own;
- a live value: parsed the same way, shown but never kept (a thermometer settling);
- a stream: a byte stream whose notifications do not align with its packets, decoded by
  a fresh stateful decoder per connection and reduced to one reading per second;
- device information: read once and reported with the device's identity.

A device kind names its profile in `drivers/kinds.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Flag
from typing import Any, Generic, TypeVar

from drivers.ble import uuids
from drivers.ble.berrymed import BciSample, BciStreamDecoder
from drivers.ble.hts import (
    parse_intermediate_temperature,
    parse_temperature_measurement,
    parse_temperature_type,
)
from drivers.ble.pc60fw import Pc60fwStreamDecoder
from drivers.ble.plx import parse_plx_continuous, parse_plx_features, parse_plx_spot_check
from drivers.errors import MalformedPacket
from drivers.measurement import Measurement, Site
from drivers.packet_stream import StreamDecoder

T = TypeVar("T")

#: Decodes one notification or indication; the site is the device's default one.
MeasurementParser = Callable[[bytes, Site | None], list[Measurement]]
#: Decodes a characteristic read once into device-information entries.
InfoParser = Callable[[bytes], dict[str, str]]


@dataclass(frozen=True, slots=True)
class SiteSource:
    """A characteristic, read once per connection, that names the measurement site."""

    uuid: str
    parse: Callable[[bytes], Site]


class MeasurementStream(Generic[T]):
    """One connection's stream decoder, giving the measurements of each decoded packet.

    Never raises on device bytes; the decoder's counters say what was thrown away.
    """

    def __init__(
        self, decoder: StreamDecoder[T], measurements: Callable[[T], list[Measurement]]
    ) -> None:
        self._decoder = decoder
        self._measurements = measurements

    def feed(self, data: bytes) -> list[list[Measurement]]:
        """The measurements of each packet completed by `data`, in order."""
        return [self._measurements(packet) for packet in self._decoder.feed(data)]

    @property
    def garbage_bytes(self) -> int:
        return self._decoder.garbage_bytes

    @property
    def bad_packets(self) -> int:
        return self._decoder.bad_packets

    @property
    def last_error(self) -> MalformedPacket | None:
        return self._decoder.last_error

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a packet."""
        return self._decoder.pending


@dataclass(frozen=True, slots=True)
class GattProfile:
    name: str
    service_uuid: str
    #: Characteristic UUID -> parser of each packet. The session subscribes to each one
    #: the device has, and needs at least one of these or of `streams`.
    measurements: Mapping[str, MeasurementParser] = field(default_factory=dict)
    #: Characteristic UUID -> parser of values to show but never keep.
    live: Mapping[str, MeasurementParser] = field(default_factory=dict)
    #: Characteristic UUID -> a new decoder for each connection.
    streams: Mapping[str, Callable[[], MeasurementStream[Any]]] = field(default_factory=dict)
    site: SiteSource | None = None
    #: Characteristic UUID -> parser of a value read once, reported as device information.
    info: Mapping[str, InfoParser] = field(default_factory=dict)


def _without_site(parse: Callable[[bytes], list[Measurement]]) -> MeasurementParser:
    return lambda data, _site: parse(data)


def _words(flags: Flag | None) -> list[str]:
    """The names of the set bits, lower-case: `validated`, `sensor_unconnected`."""
    return [str(bit.name).lower() for bit in flags or ()]


def describe_plx_features(data: bytes) -> dict[str, str]:
    """0x2A60 as device information: the optional fields the oximeter supports, and every
    status bit it can ever set (a bit it cannot set says nothing when it is clear)."""
    features = parse_plx_features(data)
    status = _words(features.measurement_status_support)
    status += _words(features.device_sensor_status_support)
    return {
        "plx_features": ", ".join(_words(features.supported)) or "none",
        "plx_status_support": ", ".join(status) or "none",
    }


def _bci_stream() -> MeasurementStream[BciSample]:
    return MeasurementStream(BciStreamDecoder(), lambda sample: sample.measurements)


def _pc60fw_stream() -> MeasurementStream[list[Measurement]]:
    return MeasurementStream(Pc60fwStreamDecoder(), lambda frame: frame)


HEALTH_THERMOMETER = GattProfile(
    name="hts",
    service_uuid=uuids.HEALTH_THERMOMETER_SERVICE,
    measurements={uuids.TEMPERATURE_MEASUREMENT: parse_temperature_measurement},
    live={uuids.INTERMEDIATE_TEMPERATURE: parse_intermediate_temperature},
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
    info={uuids.PLX_FEATURES: describe_plx_features},
)

BERRYMED = GattProfile(
    name="berrymed",
    service_uuid=uuids.BERRYMED_SERVICE,
    streams={uuids.BERRYMED_NOTIFY: _bci_stream},
)

PC60FW = GattProfile(
    name="pc60fw",
    service_uuid=uuids.NORDIC_UART_SERVICE,
    streams={uuids.NORDIC_UART_NOTIFY: _pc60fw_stream},
)
