"""BerryMed "BCI" protocol (BM1000 family): 5-byte packets at 100 Hz, the first byte
marked by bit 7 = 1, the other four by bit 7 = 0.

Sentinels (SpO2 127, PR 255, pleth 0) give no value. SpO2 0 and PR 0 are never
physiological and are sent while searching, so they give no value either.
Reduce the 100 Hz samples to 1 Hz with `drivers.one_hertz.OneHertzReducer`.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.errors import ChecksumMismatch, ImplausibleValue, length_mismatch
from drivers.measurement import Measurement, Metric, Quality
from drivers.packet_stream import StreamDecoder

PACKET_LENGTH = 5
SYNC = 0x80
SPO2_INVALID = 0x7F
PR_INVALID = 0xFF


@dataclass(frozen=True, slots=True)
class BciSample:
    """One decoded packet: the readings plus the waveform and display data."""

    measurements: list[Measurement]
    pleth: int | None  # 1-100; None when invalid
    bar_graph: int | None  # 1-15; None when invalid
    signal_strength: int  # 0-8
    beep: bool


def decode_bci_packet(packet: bytes) -> BciSample:
    if len(packet) != PACKET_LENGTH:
        raise length_mismatch(
            f"BCI: packet must be {PACKET_LENGTH} bytes, got {len(packet)}",
            len(packet),
            PACKET_LENGTH,
        )
    if not packet[0] & SYNC or any(b & SYNC for b in packet[1:]):
        raise ChecksumMismatch(
            f"BCI: bad sync bits in {packet.hex(' ')} (byte 1 needs bit 7 set, bytes 2-5 clear)"
        )
    b1, b2, b3, b4, b5 = packet
    quality: set[Quality] = set()
    if b1 & 0x20 or b3 & 0x10:  # probe unplugged, no finger
        quality.add(Quality.PROBE_OFF)
    if b3 & 0x20:  # pulse searching
        quality.add(Quality.PROVISIONAL)
    signal = b1 & 0x0F
    if b1 & 0x10 or signal <= 1:  # "no signal" bit, or strength 0-1 of 8
        quality.add(Quality.POOR_SIGNAL)
    spo2 = b5 & 0x7F
    pulse = ((b3 & 0x40) << 1) | (b4 & 0x7F)
    if 100 < spo2 < SPO2_INVALID:
        raise ImplausibleValue(f"BCI: implausible SpO2 {spo2} % in {packet.hex(' ')}")
    flags = frozenset(quality)
    measurements = [
        Measurement(metric, float(value), flags)
        for metric, value, invalid in (
            (Metric.SPO2, spo2, SPO2_INVALID),
            (Metric.PULSE_RATE, pulse, PR_INVALID),
        )
        if value not in (0, invalid)
    ]
    return BciSample(
        measurements=measurements,
        pleth=(b2 & 0x7F) or None,
        bar_graph=(b3 & 0x0F) or None,
        signal_strength=signal,
        beep=bool(b1 & 0x40),
    )


class BciStreamDecoder(StreamDecoder[BciSample]):
    """Resynchronises on a sync byte followed by four non-sync bytes."""

    def _split(self, buffer: bytes) -> tuple[int, int]:
        start = next((i for i, b in enumerate(buffer) if b & SYNC), len(buffer))
        if start:
            return start, 0
        # A sync bit inside the next four bytes means this start was garbage.
        clash = next((i for i, b in enumerate(buffer[1:PACKET_LENGTH], 1) if b & SYNC), 0)
        return clash, PACKET_LENGTH

    def _decode(self, packet: bytes) -> BciSample:
        return decode_bci_packet(packet)
