"""A BerryMed BM1000-family oximeter behind a Microchip "transparent UART" module: BCI
packets of 5 bytes at 100 Hz (docs/protocols.md 4.1), forwarded in 18-byte notifications,
so that most packets straddle two notifications.

Finger in: signal strength 5, the pulse wave as pleth and bar graph, the beep bit on the
first packet of each beat, the scenario's SpO2 and pulse rate. Probe off: what the
vendor's document shows, `A0 00 70 7F 7F`: probe unplugged, no finger, pulse searching,
SpO2 127 and PR 255 (no reading). The Battery Level can be read but is not notified.
"""

from __future__ import annotations

from bumble import gatt
from bumble.core import UUID
from bumble.link import LocalLink

from drivers.ble import uuids
from drivers.ble.berrymed import PR_INVALID, SPO2_INVALID, SYNC
from firmware_sim.devices.peripheral import (
    ScenarioClock,
    StreamingPeripheral,
    uart_characteristics,
)
from firmware_sim.scenarios import beats_at, oximeter_at, pulse_wave_at

DEFAULT_ADDRESS = "F0:00:00:00:00:03"
PACKET_RATE_HZ = 100.0
NOTIFICATION_SIZE = 18

SERVICE = UUID(uuids.BERRYMED_SERVICE, "BerryMed transparent UART")
NOTIFY = UUID(uuids.BERRYMED_NOTIFY, "BerryMed data")
WRITE = UUID(uuids.BERRYMED_WRITE, "BerryMed command")

_SIGNAL_STRENGTH = 5
_BEEP = 0x40
_PROBE_UNPLUGGED = 0x20  # byte 1
_NO_FINGER = 0x10  # byte 3
_SEARCHING = 0x20  # byte 3
_PR_BIT_7 = 0x40  # byte 3


def bci_packet(spo2: int, pulse_rate: int, pleth: int, beep: bool) -> bytes:
    """A packet with the finger in; pleth 1-100."""
    bar_graph = max(1, round(pleth * 15 / 100))
    return bytes(
        [
            SYNC | (_BEEP if beep else 0) | _SIGNAL_STRENGTH,
            pleth,
            bar_graph | (_PR_BIT_7 if pulse_rate & 0x80 else 0),
            pulse_rate & 0x7F,
            spo2,
        ]
    )


#: No finger in the probe: flags and invalid values only.
PROBE_OFF_PACKET = bytes(
    [
        SYNC | _PROBE_UNPLUGGED,
        0,
        _NO_FINGER | _SEARCHING | (_PR_BIT_7 if PR_INVALID & 0x80 else 0),
        PR_INVALID & 0x7F,
        SPO2_INVALID,
    ]
)


class BerryMedOximeter(StreamingPeripheral):
    default_address = DEFAULT_ADDRESS

    #: A false sync byte and two strays: a decoder drops exactly these three.
    garbage = bytes([0xFF, 0x13, 0x37])

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
        self._beat = -1
        super().__init__(
            link,
            address,
            stream=stream,
            packet_rate=PACKET_RATE_HZ,
            notification_size=NOTIFICATION_SIZE,
            garbage_every=garbage_every,
            name="BerryMed",
            model="BM1000C",
            service_uuid=SERVICE,
            services=[gatt.Service(SERVICE, [stream, commands])],
            scenario=scenario,
            clock=clock,
            advertising_interval_ms=advertising_interval_ms,
            battery="read",
        )

    def packet(self, index: int, t: float) -> bytes:
        sample = oximeter_at(self.scenario, t)
        if sample.probe_off:
            return PROBE_OFF_PACKET
        beat = int(beats_at(self.scenario, t))
        beep, self._beat = beat != self._beat, beat
        pleth = max(1, round(pulse_wave_at(self.scenario, t) * 100))
        return bci_packet(sample.spo2, sample.pulse_rate, pleth, beep)
