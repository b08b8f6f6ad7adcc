"""Viatom/Wellue PC-60FW frames and stream (docs/protocols.md section 4.3)."""

from __future__ import annotations

import pytest

from drivers.ble.pc60fw import Pc60fwStreamDecoder, crc8_maxim, parse_pc60fw_frame
from drivers.errors import ChecksumMismatch, ImplausibleValue, MalformedPacket, TruncatedPacket
from drivers.measurement import Measurement, Metric

SPO2, PR, PI, BATTERY = Metric.SPO2, Metric.PULSE_RATE, Metric.PERFUSION_INDEX, Metric.BATTERY
EXAMPLE = "AA 55 0F 08 01 60 3E 00 50 00 C0 08"


def frame(payload_hex: str, direction: int = 0x0F) -> bytes:
    """A well-formed frame around a payload, with its CRC."""
    payload = bytes.fromhex(payload_hex)
    head = bytes([0xAA, 0x55, direction, len(payload) + 1]) + payload
    return head + bytes([crc8_maxim(head)])


def values(measurements: list[Measurement]) -> dict[Metric, float | bool]:
    return {m.metric: m.value for m in measurements}


def test_crc8_maxim_check_value() -> None:
    assert crc8_maxim(b"123456789") == 0xA1  # the catalogued CRC-8/MAXIM check value
    assert crc8_maxim(bytes.fromhex(EXAMPLE)) == 0  # a whole good frame CRCs to 0


@pytest.mark.parametrize(
    ("frame_bytes", "expected"),
    [
        (bytes.fromhex(EXAMPLE), {SPO2: 96, PR: 62, PI: 8.0}),  # worked example
        (frame("01 61 48 00 2D"), {SPO2: 97, PR: 72, PI: 4.5}),  # no trailing status bytes
        (frame("01 5A 2C 01 05 00 C0"), {SPO2: 90, PR: 300, PI: 0.5}),  # PR high byte
        # Sentinels and zeros give no value for that metric only.
        (frame("01 00 3E 00 50 00 C0"), {PR: 62, PI: 8.0}),
        (frame("01 7F 3E 00 50 00 C0"), {PR: 62, PI: 8.0}),
        (frame("01 FF 3E 00 50 00 C0"), {PR: 62, PI: 8.0}),
        (frame("01 60 00 00 50 00 C0"), {SPO2: 96, PI: 8.0}),
        (frame("01 60 FF 00 50 00 C0"), {SPO2: 96, PI: 8.0}),
        (frame("01 60 FF FF 50 00 C0"), {SPO2: 96, PI: 8.0}),
        (frame("01 60 3E 00 00 00 C0"), {SPO2: 96, PR: 62}),
        (frame("01 60 3E 00 FF 00 C0"), {SPO2: 96, PR: 62}),
        (frame("01 00 00 00 00 00 00"), {}),
        # Battery: 0-3 bars.
        (frame("03 00", 0xF0), {BATTERY: 0}),
        (frame("03 01", 0xF0), {BATTERY: 33}),
        (frame("03 02", 0xF0), {BATTERY: 67}),
        (frame("03 03", 0xF0), {BATTERY: 100}),
        # Pleth and unknown payload types: no reading.
        (frame("02 3B 38 35 32 2F"), {}),
        (frame("21 02 00 00 00"), {}),
    ],
)
def test_frame(frame_bytes: bytes, expected: dict[Metric, float]) -> None:
    result = parse_pc60fw_frame(frame_bytes)
    assert values(result) == expected
    assert all(not m.quality for m in result)


@pytest.mark.parametrize(
    ("frame_bytes", "error", "message"),
    [
        (bytes.fromhex(EXAMPLE[:-2] + "09"), ChecksumMismatch, "CRC mismatch"),
        (bytes.fromhex("AB" + EXAMPLE[2:]), ChecksumMismatch, "does not start AA 55 0F/F0"),
        (bytes.fromhex("AA 55 11" + EXAMPLE[8:]), ChecksumMismatch, "does not start AA 55 0F/F0"),
        (bytes.fromhex(EXAMPLE[:-3]), TruncatedPacket, "length byte says 12 bytes, frame is 11"),
        (bytes.fromhex(EXAMPLE + "00"), MalformedPacket, "length byte says 12 bytes, frame is 13"),
        (bytes.fromhex("AA 55 0F 01 00"), TruncatedPacket, "frame of 5 bytes is too short"),
        (frame("01 60 3E"), TruncatedPacket, "readings payload of 3 bytes, needs 5"),
        (frame("01 65 3E 00 50 00 C0"), ImplausibleValue, r"implausible SpO2 101 %"),
        (frame("01 60 2D 01 50 00 C0"), ImplausibleValue, r"implausible pulse rate 301 /min"),
        (frame("03 04", 0xF0), ImplausibleValue, "battery payload 03 04 is not 03 00-03"),
        (frame("03", 0xF0), TruncatedPacket, "battery payload 03 is not 03 00-03"),
        (frame("03 02 00", 0xF0), MalformedPacket, "battery payload 03 02 00 is not 03 00-03"),
    ],
)
def test_frame_malformed(frame_bytes: bytes, error: type[MalformedPacket], message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        parse_pc60fw_frame(frame_bytes)
    assert raised.type is error


STREAM = [bytes.fromhex(EXAMPLE), frame("02 3B 38 35 32 2F"), frame("03 02", 0xF0)]
EXPECTED = [{SPO2: 96, PR: 62, PI: 8.0}, {}, {BATTERY: 67}]


def test_stream_any_split() -> None:
    data = b"".join(STREAM)
    for cut in range(len(data) + 1):
        decoder = Pc60fwStreamDecoder()
        frames = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert [values(f) for f in frames] == EXPECTED
        assert (decoder.garbage_bytes, decoder.bad_packets, decoder.pending) == (0, 0, 0)


@pytest.mark.parametrize(
    ("prefix", "garbage"),
    [
        (b"\x00\x01\x02", 3),
        (b"\xaa", 1),  # a lone sync half
        (b"\xaa\x55\x33", 3),  # sync followed by an impossible direction byte
        (b"\xaa\x55\x0f\x01", 4),  # impossible length
        (bytes.fromhex(EXAMPLE)[:7], 7),  # a frame cut short
    ],
)
def test_stream_resynchronises(prefix: bytes, garbage: int) -> None:
    decoder = Pc60fwStreamDecoder()
    frames = decoder.feed(prefix + b"".join(STREAM))
    assert [values(f) for f in frames] == EXPECTED
    assert decoder.garbage_bytes == garbage


def test_stream_counts_bad_crc_and_goes_on() -> None:
    bad = bytes.fromhex(EXAMPLE[:-2] + "09")
    decoder = Pc60fwStreamDecoder()
    frames = decoder.feed(bad + b"".join(STREAM))
    assert [values(f) for f in frames] == EXPECTED
    assert decoder.bad_packets == 1
    assert decoder.garbage_bytes == len(bad)
    assert isinstance(decoder.last_error, ChecksumMismatch)
    assert "CRC mismatch" in str(decoder.last_error)


def test_stream_corrupt_length_loses_no_good_frame() -> None:
    corrupt = bytes.fromhex("AA 55 0F FF 01 60")
    good = [frame(f"01 {60 + i % 5:02X} 3E 00 50 00 C0") for i in range(40)]
    decoder = Pc60fwStreamDecoder()
    frames = decoder.feed(corrupt + b"".join(good))
    assert len(frames) == 40
    assert decoder.bad_packets == 1
    assert decoder.pending == 0


def test_stream_counts_implausible_frames() -> None:
    decoder = Pc60fwStreamDecoder()
    frames = decoder.feed(frame("01 65 3E 00 50 00 C0") + bytes.fromhex(EXAMPLE))
    assert [values(f) for f in frames] == [EXPECTED[0]]
    assert decoder.bad_packets == 1
    assert isinstance(decoder.last_error, ImplausibleValue)
