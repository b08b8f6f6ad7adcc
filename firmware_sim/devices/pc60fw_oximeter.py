"""A Viatom/Wellue PC-60FW fingertip oximeter on Nordic UART (docs/protocols.md 4.3): frames
`AA 55 0F len payload CRC-8/MAXIM`, ten per scenario second: a pleth frame (type 02,
five samples) every time, the readings (type 01: SpO2, PR, PI) once a second before it,
and the battery bars (type 03) every 10 s. The bytes go out in 20-byte notifications
that cut across frames. It has no Battery Service: the battery is in the stream.

With the probe off, readings carry 0 for SpO2, PR and PI (no reading) and the pleth
is flat.
"""

from __future__ import annotations

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from drivers.ble import uuids
from drivers.ble.pc60fw import SYNC, TYPE_BATTERY, TYPE_READINGS, crc8_maxim
from firmware_sim.devices.peripheral import (
    ScenarioClock,
    StreamingPeripheral,
    uart_characteristics,
)
from firmware_sim.scenarios import oximeter_at, pulse_wave_at

DEFAULT_ADDRESS = "F0:00:00:00:00:04"
FRAMES_PER_SECOND = 10
NOTIFICATION_SIZE = 20
PLETH_SAMPLES = 5
BATTERY_EVERY = 100  # frames

SERVICE = UUID(uuids.NORDIC_UART_SERVICE, "Nordic UART")
NOTIFY = UUID(uuids.NORDIC_UART_NOTIFY, "Nordic UART TX")
WRITE = UUID(uuids.NORDIC_UART_WRITE, "Nordic UART RX")

_DEVICE_TO_HOST = 0x0F
_TYPE_PLETH = 0x02
#: The two bytes after PI in a captured readings frame; the gateway does not decode them.
_STATUS = bytes([0x00, 0xC0])


def frame(payload: bytes) -> bytes:
    """Sync, direction, length (payload + CRC), payload, CRC of all before it."""
    head = SYNC + bytes([_DEVICE_TO_HOST, len(payload) + 1]) + payload
    return head + bytes([crc8_maxim(head)])


def readings_frame(spo2: int, pulse_rate: int, perfusion_tenths: int) -> bytes:
    payload = bytes([TYPE_READINGS, spo2]) + pulse_rate.to_bytes(2, "little")
    return frame(payload + bytes([perfusion_tenths]) + _STATUS)


class Pc60fwOximeter(StreamingPeripheral):
    default_address = DEFAULT_ADDRESS

    #: A false start of frame: a decoder drops exactly these three bytes.
    garbage = bytes([0xAA, 0x13, 0x37])

    def __init__(
        self,
        link: LocalLink,
        address: str = DEFAULT_ADDRESS,
        *,
        scenario: str,
        clock: ScenarioClock,
        garbage_every: int | None = None,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        stream, commands = uart_characteristics(NOTIFY, WRITE)
        super().__init__(
            link,
            address,
            stream=stream,
            packet_rate=FRAMES_PER_SECOND,
            notification_size=NOTIFICATION_SIZE,
            garbage_every=garbage_every,
            name=f"PC-60F_SN{address.replace(':', '')[-6:]}",
            model="PC-60FW",
            service_uuid=None,  # known by its name; the 128-bit UUID would not fit
            services=[gatt.Service(SERVICE, [stream, commands])],
            scenario=scenario,
            clock=clock,
            advertising_interval_ms=advertising_interval_ms,
            battery=None,
        )

    def packet(self, index: int, t: float) -> bytes:
        out = b""
        if index % FRAMES_PER_SECOND == 0:
            sample = oximeter_at(self.scenario, t)
            if sample.probe_off:
                out += readings_frame(0, 0, 0)
            else:
                perfusion = round(sample.perfusion_index * 10)
                out += readings_frame(sample.spo2, sample.pulse_rate, perfusion)
        if index % BATTERY_EVERY == 0:
            out += frame(bytes([TYPE_BATTERY, round(self.battery_level() * 3 / 100)]))
        step = 1 / (FRAMES_PER_SECOND * PLETH_SAMPLES)
        pleth = [
            round(pulse_wave_at(self.scenario, t + i * step) * 100) for i in range(PLETH_SAMPLES)
        ]
        return out + frame(bytes([_TYPE_PLETH, *pleth]))
