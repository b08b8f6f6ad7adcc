"""Viatom/Wellue PC-60FW fingertip oximeter over Nordic UART (reverse-engineered).

Frame: `AA 55 | 0F or F0 | len | payload (len - 1 bytes) | CRC-8/MAXIM`; the CRC
covers every preceding byte, so a whole good frame CRCs to 0. Payload types:
01 readings (SpO2 u8, PR u16, PI u8 x 0.1 %, then status bytes not decoded),
02 five pleth samples (no reading), 03 battery level 0-3. Other types are ignored.

Sentinels give no value: SpO2 0/127/255, PR 0/255/65535, PI 0/255.
"""

from __future__ import annotations

from drivers.ble.battery import battery_measurement
from drivers.errors import ChecksumMismatch, ImplausibleValue, TruncatedPacket, length_mismatch
from drivers.measurement import Measurement, Metric
from drivers.packet_stream import StreamDecoder

SYNC = b"\xaa\x55"
HEADER_LENGTH = 4  # sync, direction byte, length
DIRECTIONS = (0x0F, 0xF0)
TYPE_READINGS = 0x01
TYPE_BATTERY = 0x03

SPO2_SENTINELS = frozenset({0, 0x7F, 0xFF})
PR_SENTINELS = frozenset({0, 0xFF, 0xFFFF})
PI_SENTINELS = frozenset({0, 0xFF})


def crc8_maxim(data: bytes) -> int:
    """CRC-8/MAXIM (Dallas 1-Wire): polynomial 0x31 reflected, init 0, no final XOR."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


def battery_percent(level: int) -> int:
    """The device reports 0-3 bars; map them evenly to 0, 33, 67, 100 %."""
    return round(level * 100 / 3)


def parse_pc60fw_frame(frame: bytes) -> list[Measurement]:
    """One whole frame (sync to CRC) -> readings; [] for pleth and unknown payload types."""
    shown = frame[:16].hex(" ") + (" ..." if len(frame) > 16 else "")
    if len(frame) < HEADER_LENGTH + 2:
        raise TruncatedPacket(f"PC-60FW: frame of {len(frame)} bytes is too short: {shown}")
    if frame[:2] != SYNC or frame[2] not in DIRECTIONS:
        raise ChecksumMismatch(f"PC-60FW: frame does not start AA 55 0F/F0: {shown}")
    if len(frame) != HEADER_LENGTH + frame[3]:
        raise length_mismatch(
            f"PC-60FW: length byte says {HEADER_LENGTH + frame[3]} bytes, frame is {len(frame)}",
            len(frame),
            HEADER_LENGTH + frame[3],
        )
    if crc8_maxim(frame):
        raise ChecksumMismatch(f"PC-60FW: CRC mismatch: {shown}")
    payload = frame[HEADER_LENGTH:-1]
    kind = payload[0]
    if kind == TYPE_READINGS:
        if len(payload) < 5:
            raise TruncatedPacket(f"PC-60FW: readings payload of {len(payload)} bytes, needs 5")
        return _readings(payload[1], int.from_bytes(payload[2:4], "little"), payload[4])
    if kind == TYPE_BATTERY:
        not_battery = f"PC-60FW: battery payload {payload.hex(' ')} is not 03 00-03"
        if len(payload) != 2:
            raise length_mismatch(not_battery, len(payload), 2)
        if payload[1] > 3:
            raise ImplausibleValue(not_battery)
        return [battery_measurement(battery_percent(payload[1]), "PC-60FW")]
    return []


def _readings(spo2: int, pulse: int, pi: int) -> list[Measurement]:
    if spo2 not in SPO2_SENTINELS and spo2 > 100:
        raise ImplausibleValue(f"PC-60FW: implausible SpO2 {spo2} % (outside 0-100)")
    if pulse not in PR_SENTINELS and pulse > 300:
        raise ImplausibleValue(f"PC-60FW: implausible pulse rate {pulse} /min (outside 0-300)")
    out = []
    if spo2 not in SPO2_SENTINELS:
        out.append(Measurement(Metric.SPO2, float(spo2)))
    if pulse not in PR_SENTINELS:
        out.append(Measurement(Metric.PULSE_RATE, float(pulse)))
    if pi not in PI_SENTINELS:
        out.append(Measurement(Metric.PERFUSION_INDEX, pi / 10))
    return out


class Pc60fwStreamDecoder(StreamDecoder[list[Measurement]]):
    """Resynchronises on AA 55; a frame with a bad CRC is counted in `bad_packets` and
    scanning resumes one byte later, so a corrupt length byte loses no good frame."""

    def _split(self, buffer: bytes) -> tuple[int, int]:
        start = buffer.find(SYNC)
        if start < 0:  # keep a trailing AA: it may be half of the next sync
            return len(buffer) - buffer.endswith(SYNC[:1]), 0
        if start:
            return start, 0
        if len(buffer) < HEADER_LENGTH:
            return 0, 0
        if buffer[2] not in DIRECTIONS or buffer[3] < 2:
            return 1, 0
        size = HEADER_LENGTH + buffer[3]
        if len(buffer) >= size and crc8_maxim(buffer[:size]):
            self._reject(ChecksumMismatch(f"PC-60FW: CRC mismatch: {buffer[:size].hex(' ')}"))
            return 1, 0
        return 0, size

    def _decode(self, packet: bytes) -> list[Measurement]:
        return parse_pc60fw_frame(packet)
