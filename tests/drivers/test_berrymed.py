"""BerryMed BCI packets and stream (docs/protocols.md section 4.1)."""

from __future__ import annotations

import pytest

from drivers.ble.berrymed import BciSample, BciStreamDecoder, decode_bci_packet
from drivers.errors import ChecksumMismatch, ImplausibleValue, MalformedPacket, TruncatedPacket
from drivers.measurement import Measurement, Metric, Quality
from drivers.one_hertz import OneHertzReducer

Q = Quality
SPO2, PR = Metric.SPO2, Metric.PULSE_RATE
EXAMPLES = ["85 2A 05 48 61", "C6 3C 47 0C 60", "A0 00 70 7F 7F"]


def values(measurements: list[Measurement]) -> dict[Metric, float | bool]:
    return {m.metric: m.value for m in measurements}


@pytest.mark.parametrize(
    ("hex_in", "expected", "quality", "pleth", "bar", "signal", "beep"),
    [
        # Worked examples.
        ("85 2A 05 48 61", {SPO2: 97, PR: 72}, set(), 42, 5, 5, False),
        ("C6 3C 47 0C 60", {SPO2: 96, PR: 140}, set(), 60, 7, 6, True),
        ("A0 00 70 7F 7F", {}, {Q.PROBE_OFF, Q.PROVISIONAL, Q.POOR_SIGNAL}, None, None, 0, False),
        # Flags one at a time.
        ("A5 2A 05 48 61", {SPO2: 97, PR: 72}, {Q.PROBE_OFF}, 42, 5, 5, False),  # unplugged
        ("85 2A 15 48 61", {SPO2: 97, PR: 72}, {Q.PROBE_OFF}, 42, 5, 5, False),  # no finger
        ("85 2A 25 48 61", {SPO2: 97, PR: 72}, {Q.PROVISIONAL}, 42, 5, 5, False),  # searching
        ("95 2A 05 48 61", {SPO2: 97, PR: 72}, {Q.POOR_SIGNAL}, 42, 5, 5, False),  # no signal
        ("81 2A 05 48 61", {SPO2: 97, PR: 72}, {Q.POOR_SIGNAL}, 42, 5, 1, False),  # strength 1
        ("80 2A 05 48 61", {SPO2: 97, PR: 72}, {Q.POOR_SIGNAL}, 42, 5, 0, False),  # strength 0
        ("82 2A 05 48 61", {SPO2: 97, PR: 72}, set(), 42, 5, 2, False),  # strength 2 is fine
        # Sentinels and zeros give no value for that metric only.
        ("85 2A 05 48 7F", {PR: 72}, set(), 42, 5, 5, False),  # SpO2 127
        ("85 2A 45 7F 61", {SPO2: 97}, set(), 42, 5, 5, False),  # PR 255
        ("85 2A 05 00 61", {SPO2: 97}, set(), 42, 5, 5, False),  # PR 0
        ("85 2A 05 48 00", {PR: 72}, set(), 42, 5, 5, False),  # SpO2 0
        ("85 00 00 48 61", {SPO2: 97, PR: 72}, set(), None, None, 5, False),  # pleth, bar 0
        ("85 2A 45 7E 64", {SPO2: 100, PR: 254}, set(), 42, 5, 5, False),  # highest valid
    ],
)
def test_packet(
    hex_in: str,
    expected: dict[Metric, float],
    quality: set[Quality],
    pleth: int | None,
    bar: int | None,
    signal: int,
    beep: bool,
) -> None:
    sample = decode_bci_packet(bytes.fromhex(hex_in))
    assert values(sample.measurements) == expected
    assert all(m.quality == frozenset(quality) for m in sample.measurements)
    assert (sample.pleth, sample.bar_graph, sample.signal_strength, sample.beep) == (
        pleth,
        bar,
        signal,
        beep,
    )


@pytest.mark.parametrize(
    ("hex_in", "error", "message"),
    [
        ("85 2A 05 48", TruncatedPacket, "packet must be 5 bytes, got 4"),
        ("85 2A 05 48 61 00", MalformedPacket, "packet must be 5 bytes, got 6"),
        ("05 2A 05 48 61", ChecksumMismatch, "bad sync bits in 05 2a 05 48 61"),
        ("85 AA 05 48 61", ChecksumMismatch, "bad sync bits"),
        ("85 2A 05 48 65", ImplausibleValue, r"implausible SpO2 101 %"),
        ("85 2A 05 48 7E", ImplausibleValue, r"implausible SpO2 126 %"),
    ],
)
def test_packet_malformed(hex_in: str, error: type[MalformedPacket], message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        decode_bci_packet(bytes.fromhex(hex_in))
    assert raised.type is error


def stream_values(samples: list[BciSample]) -> list[dict[Metric, float | bool]]:
    return [values(s.measurements) for s in samples]


EXPECTED = [{SPO2: 97, PR: 72}, {SPO2: 96, PR: 140}, {}]


def test_stream_any_split() -> None:
    data = bytes.fromhex(" ".join(EXAMPLES))
    for cut in range(len(data) + 1):
        decoder = BciStreamDecoder()
        samples = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert stream_values(samples) == EXPECTED
        assert (decoder.garbage_bytes, decoder.bad_packets, decoder.pending) == (0, 0, 0)


def test_stream_byte_by_byte() -> None:
    decoder = BciStreamDecoder()
    samples = [s for b in bytes.fromhex(" ".join(EXAMPLES)) for s in decoder.feed(bytes([b]))]
    assert stream_values(samples) == EXPECTED


@pytest.mark.parametrize(
    ("hex_in", "garbage"),
    [
        ("2A 05 48 61 " + " ".join(EXAMPLES), 4),  # joined mid-packet
        ("85 2A " + " ".join(EXAMPLES), 2),  # a packet cut short by a sync byte
        (EXAMPLES[0] + " 85 2A 05 " + EXAMPLES[1] + " " + EXAMPLES[2], 3),
        ("FF FF FF " + " ".join(EXAMPLES), 3),  # sync bits on every byte
    ],
)
def test_stream_resynchronises(hex_in: str, garbage: int) -> None:
    decoder = BciStreamDecoder()
    assert stream_values(decoder.feed(bytes.fromhex(hex_in))) == EXPECTED
    assert decoder.garbage_bytes == garbage


def test_stream_counts_implausible_packets_and_goes_on() -> None:
    decoder = BciStreamDecoder()
    samples = decoder.feed(bytes.fromhex("85 2A 05 48 65 " + EXAMPLES[0]))
    assert stream_values(samples) == [{SPO2: 97, PR: 72}]
    assert decoder.bad_packets == 1
    assert isinstance(decoder.last_error, ImplausibleValue)
    assert "implausible SpO2 101" in str(decoder.last_error)


def test_stream_keeps_a_partial_packet() -> None:
    decoder = BciStreamDecoder()
    assert decoder.feed(bytes.fromhex("85 2A 05")) == []
    assert decoder.pending == 3
    assert stream_values(decoder.feed(bytes.fromhex("48 61"))) == [{SPO2: 97, PR: 72}]


def packet(spo2: int, pulse: int, flags: int = 0x05) -> bytes:
    """A signal-5 packet; `flags` is byte 3 without the PR high bit."""
    return bytes([0x85, 0x2A, flags | (pulse >> 7) << 6, pulse & 0x7F, spo2])


def test_decoder_and_reducer_give_one_reading_per_second() -> None:
    """100 Hz packets in 20-byte notifications (not aligned) -> one SpO2 and one PR per
    second; a second where half the samples are 'searching' reports the clean ones."""
    seconds = [
        [packet(97, 72)] * 100,
        [packet(95, 80)] * 50 + [packet(88, 120, flags=0x25)] * 50,
        [packet(92, 110, flags=0x25)] * 100,
    ]
    stream = b"".join(p for second in seconds for p in second)
    decoder = BciStreamDecoder()
    reducer = OneHertzReducer()
    readings: list[Measurement] = []
    for offset in range(0, len(stream), 20):
        now = offset / 5 / 100  # five bytes per packet, 100 packets per second
        for sample in decoder.feed(stream[offset : offset + 20]):
            readings += reducer.add(now, sample.measurements)
    readings += reducer.flush()
    assert [(m.metric, m.value, m.quality) for m in readings] == [
        (SPO2, 97, frozenset()),
        (PR, 72, frozenset()),
        (SPO2, 95, frozenset()),
        (PR, 80, frozenset()),
        (SPO2, 92, frozenset({Q.PROVISIONAL})),
        (PR, 110, frozenset({Q.PROVISIONAL})),
    ]
