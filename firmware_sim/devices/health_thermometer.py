"""A Health Thermometer (0x1809): Temperature Measurement 0x2A1C indicated every period,
with the device's time stamp, and Temperature Type 0x2A1D = armpit.

The type is given once by 0x2A1D, so the measurements leave it out, as the Health
Thermometer Service requires when that characteristic is present.
"""

from __future__ import annotations

from datetime import datetime

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from firmware_sim.devices.peripheral import ScenarioClock, SimulatedPeripheral
from firmware_sim.encoding import date_time, float32
from firmware_sim.scenarios import thermometer_at

DEFAULT_ADDRESS = "F0:00:00:00:00:01"
TEMPERATURE_TYPE_ARMPIT = 1

TEMPERATURE_MEASUREMENT = UUID.from_16_bits(0x2A1C, "Temperature Measurement")
TEMPERATURE_TYPE = UUID.from_16_bits(0x2A1D, "Temperature Type")

_FAHRENHEIT = 0x01
_TIME_STAMP_PRESENT = 0x02


class HealthThermometer(SimulatedPeripheral):
    def __init__(
        self,
        link: LocalLink,
        address: str = DEFAULT_ADDRESS,
        *,
        scenario: str,
        clock: ScenarioClock,
        interval: float = 5.0,
        fahrenheit: bool = False,
        malformed_every: int | None = None,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        self.fahrenheit = fahrenheit
        measurement = gatt.Characteristic[bytes](
            TEMPERATURE_MEASUREMENT,
            gatt.Characteristic.Properties.INDICATE,
            gatt.Characteristic.Permissions(0),
        )
        temperature_type = gatt.Characteristic[bytes](
            TEMPERATURE_TYPE,
            gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE,
            bytes([TEMPERATURE_TYPE_ARMPIT]),
        )
        super().__init__(
            link,
            address,
            name="Sim Thermometer",
            model="SIM-HTS-1",
            service_uuid=gatt.GATT_HEALTH_THERMOMETER_SERVICE,
            measurement=measurement,
            services=[
                gatt.Service(gatt.GATT_HEALTH_THERMOMETER_SERVICE, [measurement, temperature_type])
            ],
            scenario=scenario,
            clock=clock,
            period=interval,
            malformed_every=malformed_every,
            advertising_interval_ms=advertising_interval_ms,
        )

    def reading(self, t: float) -> bytes:
        celsius = thermometer_at(self.scenario, t).celsius
        if self.fahrenheit:
            value = float32(celsius * 9 / 5 + 32, -2)
        else:
            value = float32(celsius, -1)
        flags = _TIME_STAMP_PRESENT | (_FAHRENHEIT if self.fahrenheit else 0)
        return bytes([flags]) + value + date_time(datetime.now())
