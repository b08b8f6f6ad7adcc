"""A Pulse Oximeter (0x1822): PLX Continuous Measurement 0x2A5F notified every period
(1 s by default) with measurement status, device & sensor status and PAI, and the PLX
Features 0x2A60 that announce them.

With the probe off the device keeps sending its stale values, flagged with device &
sensor status bit 11 "sensor unconnected to user" and without "validated".
"""

from __future__ import annotations

import struct

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from firmware_sim.devices.peripheral import ScenarioClock, SimulatedPeripheral
from firmware_sim.encoding import sfloat
from firmware_sim.scenarios import oximeter_at

DEFAULT_ADDRESS = "F0:00:00:00:00:02"

PLX_CONTINUOUS_MEASUREMENT = UUID.from_16_bits(0x2A5F, "PLX Continuous Measurement")
PLX_FEATURES = UUID.from_16_bits(0x2A60, "PLX Features")

# Continuous measurement flags: status fields and PAI present.
_MEASUREMENT_STATUS_PRESENT = 0x04
_DEVICE_STATUS_PRESENT = 0x08
_PAI_PRESENT = 0x10
_VALIDATED = 1 << 7  # measurement status
_SENSOR_UNCONNECTED = 1 << 11  # device & sensor status

# Features: measurement status, device & sensor status and PAI supported, followed by
# the status bits this device may set.
_FEATURES = struct.pack("<HH", 0x0001 | 0x0002 | 0x0040, _VALIDATED) + (
    _SENSOR_UNCONNECTED.to_bytes(3, "little")
)


class PlxOximeter(SimulatedPeripheral):
    def __init__(
        self,
        link: LocalLink,
        address: str = DEFAULT_ADDRESS,
        *,
        scenario: str,
        clock: ScenarioClock,
        period: float = 1.0,
        malformed_every: int | None = None,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        measurement = gatt.Characteristic[bytes](
            PLX_CONTINUOUS_MEASUREMENT,
            gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.Permissions(0),
        )
        features = gatt.Characteristic[bytes](
            PLX_FEATURES,
            gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE,
            _FEATURES,
        )
        super().__init__(
            link,
            address,
            name="Sim Oximeter",
            model="SIM-PLX-1",
            service_uuid=gatt.GATT_PULSE_OXIMETER_SERVICE,
            measurement=measurement,
            services=[gatt.Service(gatt.GATT_PULSE_OXIMETER_SERVICE, [measurement, features])],
            scenario=scenario,
            clock=clock,
            period=period,
            malformed_every=malformed_every,
            advertising_interval_ms=advertising_interval_ms,
        )

    def reading(self, t: float) -> bytes:
        sample = oximeter_at(self.scenario, t)
        measurement_status = 0 if sample.probe_off else _VALIDATED
        device_status = _SENSOR_UNCONNECTED if sample.probe_off else 0
        return (
            bytes([_MEASUREMENT_STATUS_PRESENT | _DEVICE_STATUS_PRESENT | _PAI_PRESENT])
            + sfloat(sample.spo2)
            + sfloat(sample.pulse_rate)
            + struct.pack("<H", measurement_status)
            + device_status.to_bytes(3, "little")
            + sfloat(sample.perfusion_index, -1)
        )
