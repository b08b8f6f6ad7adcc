"""A Pulse Oximeter (0x1822): PLX Continuous Measurement 0x2A5F notified every period
(1 s by default) with measurement status, device & sensor status and PAI, and the PLX
Features 0x2A60 that announce them.

With `spot_check_interval` it also offers PLX Spot-check Measurement 0x2A5E, indicated
every so many scenario seconds with every optional field: the device's time stamp,
both statuses and PAI; its Features then announce the time stamp too.

With the probe off the device keeps sending its stale values, flagged with device &
sensor status bit 11 "sensor unconnected to user" and without "validated".
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

from bumble import gatt
from bumble.core import UUID
from bumble.device import Connection
from bumble.link import LocalLink

from firmware_sim.devices.peripheral import ScenarioClock, SimulatedPeripheral, TwinOptions, pushed
from firmware_sim.encoding import date_time, sfloat
from firmware_sim.scenarios import OximeterSample, oximeter_at

DEFAULT_ADDRESS = "F0:00:00:00:00:02"

PLX_SPOT_CHECK_MEASUREMENT = UUID.from_16_bits(0x2A5E, "PLX Spot-check Measurement")
PLX_CONTINUOUS_MEASUREMENT = UUID.from_16_bits(0x2A5F, "PLX Continuous Measurement")
PLX_FEATURES = UUID.from_16_bits(0x2A60, "PLX Features")

# Continuous measurement flags: status fields and PAI present.
_MEASUREMENT_STATUS_PRESENT = 0x04
_DEVICE_STATUS_PRESENT = 0x08
_PAI_PRESENT = 0x10
# Spot-check flags: time stamp, both status fields and PAI present.
_SPOT_CHECK_ALL_FIELDS = 0x01 | 0x02 | 0x04 | 0x08
_VALIDATED = 1 << 7  # measurement status
_SENSOR_UNCONNECTED = 1 << 11  # device & sensor status

# Features: measurement status, device & sensor status and PAI supported (and the spot-
# check time stamp when offered), followed by the status bits this device may set.
_SUPPORTED = 0x0001 | 0x0002 | 0x0040
_SPOT_CHECK_TIMESTAMP = 0x0008


class PlxOximeter(SimulatedPeripheral):
    default_address = DEFAULT_ADDRESS

    @classmethod
    def own_options(cls, options: TwinOptions) -> dict[str, Any]:
        return {
            "spot_check_interval": options.spot_check_interval,
            "malformed_every": options.malformed_every,
        }

    def __init__(
        self,
        link: LocalLink,
        address: str = DEFAULT_ADDRESS,
        *,
        scenario: str,
        clock: ScenarioClock,
        period: float = 1.0,
        spot_check_interval: float | None = None,
        malformed_every: int | None = None,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        if spot_check_interval is not None and spot_check_interval <= 0:
            raise ValueError(f"spot_check_interval must be positive, not {spot_check_interval}")
        self._spot_check_interval = spot_check_interval
        self._next_spot_check = 0.0
        #: Reads of PLX Features so far: a gateway needs it once.
        self.features_reads = 0
        supported = _SUPPORTED | (_SPOT_CHECK_TIMESTAMP if spot_check_interval else 0)
        self._features = struct.pack("<HH", supported, _VALIDATED) + (
            _SENSOR_UNCONNECTED.to_bytes(3, "little")
        )
        self._continuous = pushed(PLX_CONTINUOUS_MEASUREMENT)
        self._spot_check = pushed(PLX_SPOT_CHECK_MEASUREMENT, indicate=True)
        features = gatt.Characteristic[bytes](
            PLX_FEATURES,
            gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE,
            gatt.CharacteristicValue(read=self._read_features),
        )
        characteristics = [self._continuous, features]
        if spot_check_interval:
            characteristics.append(self._spot_check)
        super().__init__(
            link,
            address,
            name="Sim Oximeter",
            model="SIM-PLX-1",
            service_uuid=gatt.GATT_PULSE_OXIMETER_SERVICE,
            services=[gatt.Service(gatt.GATT_PULSE_OXIMETER_SERVICE, characteristics)],
            scenario=scenario,
            clock=clock,
            period=period,
            malformed_every=malformed_every,
            advertising_interval_ms=advertising_interval_ms,
        )

    def _read_features(self, _connection: Connection) -> bytes:
        self.features_reads += 1
        return self._features

    async def send_due(self, t: float) -> None:
        sample = oximeter_at(self.scenario, t)
        await self.send_packet(self._continuous, self.reading(sample))
        if self._spot_check_interval and t >= self._next_spot_check:
            self._next_spot_check = t + self._spot_check_interval
            await self.send_packet(self._spot_check, self.spot_check(sample, datetime.now()))

    def reading(self, sample: OximeterSample) -> bytes:
        """A 0x2A5F packet."""
        return (
            bytes([_MEASUREMENT_STATUS_PRESENT | _DEVICE_STATUS_PRESENT | _PAI_PRESENT])
            + sfloat(sample.spo2)
            + sfloat(sample.pulse_rate)
            + _statuses(sample)
            + sfloat(sample.perfusion_index, -1)
        )

    def spot_check(self, sample: OximeterSample, taken: datetime) -> bytes:
        """A 0x2A5E packet with every optional field."""
        return (
            bytes([_SPOT_CHECK_ALL_FIELDS])
            + sfloat(sample.spo2)
            + sfloat(sample.pulse_rate)
            + date_time(taken)
            + _statuses(sample)
            + sfloat(sample.perfusion_index, -1)
        )


def _statuses(sample: OximeterSample) -> bytes:
    """Measurement status u16, then device & sensor status u24."""
    measurement_status = 0 if sample.probe_off else _VALIDATED
    device_status = _SENSOR_UNCONNECTED if sample.probe_off else 0
    return struct.pack("<H", measurement_status) + device_status.to_bytes(3, "little")
