"""Contec CMS50D+/CMS50E over USB serial (docs/protocols.md 4.2): packet parsers, stream
decoders and the `decode` command's capture decoders, for both firmware generations.

- Legacy (firmware <= 4.5): 19200 baud, 8 data bits, odd parity; streams ~60 Hz
  unprompted. 5-byte packets; only the first byte has bit 7 set (the sync bit).
- v4.6 (firmware 4.6+): 115200 8N1; streams after `V46_START`, stops unless
  `V46_KEEPALIVE` is resent. 9-byte packets: `01` then eight bytes with bit 7 set.

Pure code: no I/O. Sentinels and impossible values never become readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from drivers.errors import (
    ChecksumMismatch,
    ImplausibleValue,
    TruncatedPacket,
    length_mismatch,
)
from drivers.measurement import Measurement, Metric, Quality
from drivers.packet_stream import StreamDecoder

LEGACY_PACKET_LEN = 5
V46_PACKET_LEN = 9

#: v4.6: start live data, then resend the keep-alive periodically or the device stops.
V46_START = bytes.fromhex("7D81A1808080808080")
V46_KEEPALIVE = bytes.fromhex("7D81AF808080808080")
#: Legacy: request the stored recording / stop sending it.
STORED_DATA_REQUEST = bytes.fromhex("F5F5")
STORED_DATA_STOP = bytes.fromhex("F6F6F6")

_V46_HEADER = 0x01
_V46_VALID = 0xE0
_V46_WAVEFORM_ONLY = 0xE1
_V46_NO_DATA = 0xE2


class Generation(StrEnum):
    LEGACY = "legacy"
    V46 = "v46"


@dataclass(frozen=True, slots=True)
class LegacyFrame:
    """Every field of a legacy packet, before quality gating."""

    signal: int  # 0-15; 0 = no usable signal
    finger_out: bool
    spo2_dropping: bool
    beep: bool
    pleth: int
    bar: int
    probe_error: bool
    searching: bool
    pulse_rate: int
    spo2: int


@dataclass(frozen=True, slots=True)
class V46Frame:
    status: int  # 0xE0 valid, 0xE1 waveform only, 0xE2 no valid data
    pleth: int
    pulse_rate: int
    spo2: int


def decode_legacy_frame(packet: bytes) -> LegacyFrame:
    if len(packet) != LEGACY_PACKET_LEN:
        raise length_mismatch(
            f"CMS50 legacy packet is {LEGACY_PACKET_LEN} bytes, got {len(packet)}",
            len(packet),
            LEGACY_PACKET_LEN,
        )
    if not _is_legacy_frame(packet):
        raise ChecksumMismatch(
            "CMS50 legacy packet must have bit 7 set in byte 1 only, got " + packet.hex(" ")
        )
    b1, b2, b3, b4, b5 = packet
    return LegacyFrame(
        signal=b1 & 0x0F,
        finger_out=bool(b1 & 0x10),
        spo2_dropping=bool(b1 & 0x20),
        beep=bool(b1 & 0x40),
        pleth=b2,
        bar=b3 & 0x0F,
        probe_error=bool(b3 & 0x10),
        searching=bool(b3 & 0x20),
        pulse_rate=((b3 & 0x40) << 1) | b4,
        spo2=b5,
    )


def parse_cms50_legacy_packet(packet: bytes) -> list[Measurement]:
    """SpO2 and pulse rate of one 5-byte packet, flagged from the status bits."""
    frame = decode_legacy_frame(packet)
    flags: set[Quality] = set()
    if frame.finger_out or frame.probe_error:
        flags.add(Quality.PROBE_OFF)
    if frame.searching or frame.spo2_dropping:
        flags.add(Quality.PROVISIONAL)
    if frame.signal == 0:
        flags.add(Quality.POOR_SIGNAL)
    return _readings(frame.spo2, frame.pulse_rate, frozenset(flags), pr_sentinel=255)


def decode_v46_frame(packet: bytes) -> V46Frame:
    if len(packet) != V46_PACKET_LEN:
        raise length_mismatch(
            f"CMS50 v4.6 packet is {V46_PACKET_LEN} bytes, got {len(packet)}",
            len(packet),
            V46_PACKET_LEN,
        )
    if not _is_v46_frame(packet):
        raise ChecksumMismatch(
            "CMS50 v4.6 packet must be 01 followed by 8 bytes with bit 7 set, got "
            + packet.hex(" ")
        )
    if packet[1] not in (_V46_VALID, _V46_WAVEFORM_ONLY, _V46_NO_DATA):
        raise ImplausibleValue(f"CMS50 v4.6 status byte {packet[1]:02X} is not E0, E1 or E2")
    return V46Frame(
        status=packet[1],
        pleth=packet[3] & 0x7F,
        pulse_rate=packet[5] & 0x7F,
        spo2=packet[6] & 0x7F,
    )


def parse_cms50_v46_packet(packet: bytes) -> list[Measurement]:
    """SpO2 and pulse rate of one 9-byte packet; only status E0 carries readings.

    How a pulse rate above 127 is encoded is undocumented; the masked byte 0xFF (127)
    is the filler value, so it is treated as a sentinel rather than 127/min.
    """
    frame = decode_v46_frame(packet)
    if frame.status != _V46_VALID:
        return []
    return _readings(frame.spo2, frame.pulse_rate, frozenset(), pr_sentinel=0x7F)


def _readings(
    spo2: int, pulse_rate: int, flags: frozenset[Quality], *, pr_sentinel: int
) -> list[Measurement]:
    out: list[Measurement] = []
    if 0 < spo2 <= 100:  # 127 = invalid; 101-126 cannot be a saturation
        out.append(Measurement(Metric.SPO2, spo2, flags))
    if pulse_rate not in (0, pr_sentinel):
        out.append(Measurement(Metric.PULSE_RATE, pulse_rate, flags))
    return out


def _is_legacy_frame(packet: bytes) -> bool:
    return bool(packet[0] & 0x80) and not any(b & 0x80 for b in packet[1:])


def _is_v46_frame(packet: bytes) -> bool:
    return packet[0] == _V46_HEADER and all(b & 0x80 for b in packet[1:])


_FRAMING = {
    Generation.LEGACY: (LEGACY_PACKET_LEN, _is_legacy_frame, parse_cms50_legacy_packet),
    Generation.V46: (V46_PACKET_LEN, _is_v46_frame, parse_cms50_v46_packet),
}


class Cms50StreamDecoder(StreamDecoder[list[Measurement]]):
    """Cuts one generation's byte stream into packets, resynchronising on the framing:
    one measurement list per complete packet (empty when it carries no value).

    A byte that cannot start a packet is dropped and counted in `garbage_bytes`; an
    incomplete packet at the end of a read waits for the next read. `bad_packets`:
    framed packets that still failed to parse (an unknown v4.6 status byte).
    """

    def __init__(self, generation: Generation) -> None:
        super().__init__()
        self.generation = generation
        self.packet_len, self._could_start, self._parse = _FRAMING[generation]

    def _split(self, buffer: bytes) -> tuple[int, int]:
        size = self.packet_len
        start = next(
            (i for i in range(len(buffer)) if self._could_start(buffer[i : i + size])),
            len(buffer),
        )
        if start:
            return start, 0
        return 0, size if len(buffer) >= size else 0  # a plausible partial packet: wait

    def _decode(self, packet: bytes) -> list[Measurement]:
        return self._parse(packet)


# --- the `decode` command: `bedside-gateway decode cms50-legacy|cms50-v46 HEX` --------


def decode_cms50_legacy(data: bytes) -> list[Measurement]:
    """A captured byte string, which may hold many packets and start or end mid-packet
    as a serial read does: the samples of every complete packet, in order."""
    return _decode_capture(
        Generation.LEGACY, "5 bytes, the first with bit 7 set and the other four without", data
    )


def decode_cms50_v46(data: bytes) -> list[Measurement]:
    """As `decode_cms50_legacy`, for the v4.6 framing."""
    return _decode_capture(
        Generation.V46, "9 bytes, 01 then eight bytes with bit 7 set and status E0-E2", data
    )


def _decode_capture(generation: Generation, framing: str, data: bytes) -> list[Measurement]:
    decoder = Cms50StreamDecoder(generation)
    packets = decoder.feed(data)
    if packets:
        return [m for packet in packets for m in packet]
    if len(data) == decoder.packet_len:
        return decoder._parse(data)  # exactly one packet's worth: the parser says what is wrong
    # Bytes that never framed failed the framing check; otherwise a packet is incomplete.
    raise (ChecksumMismatch if decoder.garbage_bytes else TruncatedPacket)(
        f"no complete CMS50 {generation.value} packet in {len(data)} bytes (expected {framing})"
    )
