"""A Health Thermometer (0x1809): Temperature Measurement 0x2A1C indicated every period,
with the device's time stamp, and Temperature Type 0x2A1D = armpit.

With `intermediate=N` it also has Intermediate Temperature 0x2A1E and, before each final
reading, notifies N in-progress values that climb towards it 0.1 degC at a time, spread
evenly over the period, as a thermometer settling on the skin shows them.

The type is given once by 0x2A1D, so the measurements leave it out, as the Health
Thermometer Service requires when that characteristic is present.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from firmware_sim.devices.peripheral import ScenarioClock, SimulatedPeripheral, TwinOptions, pushed
from firmware_sim.encoding import date_time, float32
from firmware_sim.scenarios import thermometer_at

DEFAULT_ADDRESS = "F0:00:00:00:00:01"
TEMPERATURE_TYPE_ARMPIT = 1
#: How far below the final reading each earlier intermediate value is.
SETTLING_STEP_C = 0.1

TEMPERATURE_MEASUREMENT = UUID.from_16_bits(0x2A1C, "Temperature Measurement")
TEMPERATURE_TYPE = UUID.from_16_bits(0x2A1D, "Temperature Type")
INTERMEDIATE_TEMPERATURE = UUID.from_16_bits(0x2A1E, "Intermediate Temperature")

_FAHRENHEIT = 0x01
_TIME_STAMP_PRESENT = 0x02


class HealthThermometer(SimulatedPeripheral):
    default_address = DEFAULT_ADDRESS

    @classmethod
    def own_options(cls, options: TwinOptions) -> dict[str, Any]:
        return {
            "interval": options.interval,
            "fahrenheit": options.fahrenheit,
            "intermediate": options.intermediate,
            "malformed_every": options.malformed_every,
        }

    def __init__(
        self,
        link: LocalLink,
        address: str = DEFAULT_ADDRESS,
        *,
        scenario: str,
        clock: ScenarioClock,
        interval: float = 5.0,
        fahrenheit: bool = False,
        intermediate: int = 0,
        malformed_every: int | None = None,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        if intermediate < 0:
            raise ValueError(f"intermediate must not be negative, not {intermediate}")
        self.fahrenheit = fahrenheit
        self.intermediate = intermediate
        self._steps = 0
        self._measurement = pushed(TEMPERATURE_MEASUREMENT, indicate=True)
        self._intermediate = pushed(INTERMEDIATE_TEMPERATURE)
        temperature_type = gatt.Characteristic[bytes](
            TEMPERATURE_TYPE,
            gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE,
            bytes([TEMPERATURE_TYPE_ARMPIT]),
        )
        characteristics = [self._measurement, temperature_type]
        if intermediate:
            characteristics.append(self._intermediate)
        super().__init__(
            link,
            address,
            name="Sim Thermometer",
            model="SIM-HTS-1",
            service_uuid=gatt.GATT_HEALTH_THERMOMETER_SERVICE,
            services=[gatt.Service(gatt.GATT_HEALTH_THERMOMETER_SERVICE, characteristics)],
            scenario=scenario,
            clock=clock,
            period=interval / (intermediate + 1),
            malformed_every=malformed_every,
            advertising_interval_ms=advertising_interval_ms,
        )

    async def send_due(self, t: float) -> None:
        """Each period is `intermediate` settling steps, then the final reading."""
        below_final = self.intermediate - self._steps % (self.intermediate + 1)
        self._steps += 1
        celsius = thermometer_at(self.scenario, t).celsius - below_final * SETTLING_STEP_C
        characteristic = self._intermediate if below_final else self._measurement
        await self.send_packet(characteristic, self.reading(celsius))

    def reading(self, celsius: float) -> bytes:
        """A 0x2A1C or 0x2A1E packet, stamped with the device's clock."""
        if self.fahrenheit:
            value = float32(celsius * 9 / 5 + 32, -2)
        else:
            value = float32(celsius, -1)
        flags = _TIME_STAMP_PRESENT | (_FAHRENHEIT if self.fahrenheit else 0)
        return bytes([flags]) + value + date_time(datetime.now())
