"""Contec CMS50 parsers, stream decoders and capture decoders, against the
docs/protocols.md 4.2 vectors and the simulator's encoders."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drivers.errors import ChecksumMismatch, ImplausibleValue, MalformedPacket, TruncatedPacket
from drivers.measurement import Measurement, Metric, Quality
from drivers.serial.contec import (
    STORED_DATA_REQUEST,
    STORED_DATA_STOP,
    V46_KEEPALIVE,
    V46_START,
    Cms50StreamDecoder,
    Generation,
    decode_cms50_legacy,
    decode_cms50_v46,
    decode_legacy_frame,
    decode_v46_frame,
    parse_cms50_legacy_packet,
    parse_cms50_v46_packet,
)
from firmware_sim.cms50 import garbage_for, legacy_packet, v46_packet
from firmware_sim.scenarios import OximeterSample, oximeter_at

LEGACY = bytes.fromhex("852A054861")
V46 = bytes.fromhex("01E085B396C1E1FFFF")


def values(ms: list[Measurement]) -> dict[Metric, tuple[float | bool, frozenset[Quality]]]:
    return {m.metric: (m.value, m.quality) for m in ms}


def test_legacy_vector_every_field() -> None:
    frame = decode_legacy_frame(LEGACY)
    assert (frame.signal, frame.pleth, frame.bar, frame.pulse_rate, frame.spo2) == (
        5,
        42,
        5,
        72,
        97,
    )
    assert not (frame.finger_out or frame.probe_error or frame.searching or frame.beep)
    assert values(parse_cms50_legacy_packet(LEGACY)) == {
        Metric.SPO2: (97, frozenset()),
        Metric.PULSE_RATE: (72, frozenset()),
    }


def test_legacy_pulse_rate_bit_7_lives_in_byte_3() -> None:
    frame = decode_legacy_frame(bytes.fromhex("C63C470C60"))
    assert frame.beep and frame.pulse_rate == 140 and frame.spo2 == 96


def _legacy_with(b1: int = 0, b3: int = 0) -> bytes:
    return bytes([LEGACY[0] | b1, LEGACY[1], LEGACY[2] | b3, LEGACY[3], LEGACY[4]])


@pytest.mark.parametrize(
    ("packet", "flags"),
    [
        (_legacy_with(b1=0x10), {Quality.PROBE_OFF}),  # finger out
        (_legacy_with(b3=0x10), {Quality.PROBE_OFF}),  # probe error
        (_legacy_with(b3=0x20), {Quality.PROVISIONAL}),  # searching
        (_legacy_with(b1=0x20), {Quality.PROVISIONAL}),  # SpO2 dropping
        (bytes([0x80, 0x2A, 0x05, 0x48, 0x61]), {Quality.POOR_SIGNAL}),  # signal 0
        (_legacy_with(b1=0x10, b3=0x20), {Quality.PROBE_OFF, Quality.PROVISIONAL}),
    ],
)
def test_legacy_status_bits_flag_both_readings(packet: bytes, flags: set[Quality]) -> None:
    out = parse_cms50_legacy_packet(packet)
    assert len(out) == 2
    for m in out:
        assert m.quality == flags and not m.alertable


@pytest.mark.parametrize(
    ("packet", "metrics"),
    [
        (bytes.fromhex("852A05487F"), {Metric.PULSE_RATE}),  # SpO2 127
        (bytes.fromhex("852A054800"), {Metric.PULSE_RATE}),  # SpO2 0
        (bytes.fromhex("852A054865"), {Metric.PULSE_RATE}),  # SpO2 101: impossible
        (bytes.fromhex("852A457F61"), {Metric.SPO2}),  # PR 255
        (bytes.fromhex("852A050061"), {Metric.SPO2}),  # PR 0
        (bytes.fromhex("A000707F7F"), set()),
    ],
)
def test_legacy_sentinels_never_become_readings(packet: bytes, metrics: set[Metric]) -> None:
    assert {m.metric for m in parse_cms50_legacy_packet(packet)} == metrics


@pytest.mark.parametrize(
    ("packet", "error", "why"),
    [
        (LEGACY[:4], TruncatedPacket, "5 bytes, got 4"),
        (LEGACY + b"\x00", MalformedPacket, "5 bytes, got 6"),
        (bytes([0x05]) + LEGACY[1:], ChecksumMismatch, "bit 7 set in byte 1 only"),
        (LEGACY[:4] + b"\xe1", ChecksumMismatch, "bit 7 set in byte 1 only"),
    ],
)
def test_legacy_malformed(packet: bytes, error: type[MalformedPacket], why: str) -> None:
    with pytest.raises(error, match=why) as raised:
        parse_cms50_legacy_packet(packet)
    assert raised.type is error


def test_v46_vector() -> None:
    frame = decode_v46_frame(V46)
    assert (frame.status, frame.pleth, frame.pulse_rate, frame.spo2) == (0xE0, 51, 65, 97)
    assert values(parse_cms50_v46_packet(V46)) == {
        Metric.SPO2: (97, frozenset()),
        Metric.PULSE_RATE: (65, frozenset()),
    }


def _v46_with(index: int, value: int) -> bytes:
    return V46[:index] + bytes([value]) + V46[index + 1 :]


@pytest.mark.parametrize(
    ("packet", "metrics"),
    [
        (_v46_with(1, 0xE1), set()),  # waveform only
        (_v46_with(1, 0xE2), set()),  # no valid data
        (_v46_with(6, 0xFF), {Metric.PULSE_RATE}),  # SpO2 127
        (_v46_with(6, 0x80), {Metric.PULSE_RATE}),  # SpO2 0
        (_v46_with(5, 0xFF), {Metric.SPO2}),  # PR filler
        (_v46_with(5, 0x80), {Metric.SPO2}),  # PR 0
    ],
)
def test_v46_status_and_sentinels(packet: bytes, metrics: set[Metric]) -> None:
    assert {m.metric for m in parse_cms50_v46_packet(packet)} == metrics


@pytest.mark.parametrize(
    ("packet", "error", "why"),
    [
        (V46[:8], TruncatedPacket, "9 bytes, got 8"),
        (V46 + b"\x80", MalformedPacket, "9 bytes, got 10"),
        (b"\x02" + V46[1:], ChecksumMismatch, "01 followed by 8 bytes with bit 7 set"),
        (_v46_with(4, 0x16), ChecksumMismatch, "01 followed by 8 bytes with bit 7 set"),
        (_v46_with(1, 0xE5), ImplausibleValue, "status byte E5 is not E0, E1 or E2"),
    ],
)
def test_v46_malformed(packet: bytes, error: type[MalformedPacket], why: str) -> None:
    with pytest.raises(error, match=why) as raised:
        parse_cms50_v46_packet(packet)
    assert raised.type is error


def test_command_bytes() -> None:
    assert V46_START.hex(" ") == "7d 81 a1 80 80 80 80 80 80"
    assert V46_KEEPALIVE.hex(" ") == "7d 81 af 80 80 80 80 80 80"
    assert (STORED_DATA_REQUEST, STORED_DATA_STOP) == (b"\xf5\xf5", b"\xf6\xf6\xf6")


@pytest.mark.parametrize(
    ("generation", "packet", "noise"),
    [
        (Generation.LEGACY, LEGACY, b"\x00\x13\xff\x7f"),
        (Generation.V46, V46, b"\x00\x13\xff\x7f\x01\x80"),
    ],
)
def test_stream_resyncs_and_counts_garbage(
    generation: Generation, packet: bytes, noise: bytes
) -> None:
    partial = packet[:3]
    stream = noise + packet + partial + packet + packet
    decoder = Cms50StreamDecoder(generation)
    packets = decoder.feed(stream)
    assert len(packets) == 3 and all(p == packets[0] for p in packets)
    assert decoder.garbage_bytes == decoder.refused_bytes == len(noise) + len(partial)
    assert (decoder.packets, decoder.packet_bytes) == (3, 3 * len(packet))


@pytest.mark.parametrize(
    ("generation", "packet"), [(Generation.LEGACY, LEGACY), (Generation.V46, V46)]
)
def test_stream_keeps_partial_packets_across_reads(generation: Generation, packet: bytes) -> None:
    decoder = Cms50StreamDecoder(generation)
    stream = packet * 3
    got = [p for i in range(len(stream)) for p in decoder.feed(stream[i : i + 1])]
    assert got == Cms50StreamDecoder(generation).feed(stream)
    assert len(got) == 3 and decoder.garbage_bytes == 0


def test_stream_counts_framed_but_undecodable_v46_packets() -> None:
    decoder = Cms50StreamDecoder(Generation.V46)
    assert len(decoder.feed(V46 + _v46_with(1, 0xE5) + V46)) == 2
    assert (decoder.bad_packets, decoder.garbage_bytes, decoder.packets) == (1, 0, 2)
    assert decoder.refused_bytes == len(V46)
    assert isinstance(decoder.last_error, ImplausibleValue)


@pytest.mark.parametrize("generation", list(Generation))
def test_simulator_packets_decode_to_the_scenario(generation: Generation) -> None:
    encode = legacy_packet if generation is Generation.LEGACY else v46_packet
    sample = oximeter_at("hypoxia", 10.0)
    stream = b"".join(encode(sample, i / 60) for i in range(60))
    garbage = garbage_for(encode(sample, 0.0))
    decoder = Cms50StreamDecoder(generation)
    packets = decoder.feed(stream + garbage + stream)
    assert len(packets) == 120 and decoder.garbage_bytes == len(garbage)
    for p in packets:
        assert values(p) == {
            Metric.SPO2: (sample.spo2, frozenset()),
            Metric.PULSE_RATE: (sample.pulse_rate, frozenset()),
        }


def test_simulated_probe_off_is_flagged_or_dropped() -> None:
    sample = OximeterSample(spo2=85, pulse_rate=0, perfusion_index=0.0, probe_off=True)
    legacy = parse_cms50_legacy_packet(legacy_packet(sample, 0.3))
    assert [m.metric for m in legacy] == [Metric.SPO2]
    assert not legacy[0].alertable and Quality.PROBE_OFF in legacy[0].quality
    assert parse_cms50_v46_packet(v46_packet(sample, 0.3)) == []


def test_capture_decoders_print_the_same_json_as_ble() -> None:
    assert [m.as_json() for m in decode_cms50_legacy(LEGACY)] == [
        {"metric": "spo2", "value": 97, "unit": "%", "quality": []},
        {"metric": "pulse_rate", "value": 72, "unit": "/min", "quality": []},
    ]
    assert [m.value for m in decode_cms50_v46(V46)] == [97, 65]


def test_capture_decoders_take_a_capture_that_starts_and_ends_mid_packet() -> None:
    capture = V46[4:] + V46 + _v46_with(5, 0xC2) + V46[:5]
    assert [m.value for m in decode_cms50_v46(capture)] == [97, 65, 97, 66]


@pytest.mark.parametrize(
    ("decode", "data", "error", "why"),
    [
        (decode_cms50_legacy, b"", TruncatedPacket, "no complete CMS50 legacy packet in 0 bytes"),
        (
            decode_cms50_legacy,
            LEGACY[:4],
            TruncatedPacket,
            "no complete CMS50 legacy packet in 4 bytes",
        ),
        (decode_cms50_legacy, LEGACY[:4] + b"\x80", ChecksumMismatch, "bit 7 set in byte 1 only"),
        (decode_cms50_v46, _v46_with(1, 0xE7), ImplausibleValue, "status byte E7"),
        (
            decode_cms50_v46,
            LEGACY * 3,
            ChecksumMismatch,
            "no complete CMS50 v46 packet in 15 bytes",
        ),
    ],
)
def test_capture_decoders_reject_with_one_clear_line(
    decode: Callable[[bytes], list[Measurement]],
    data: bytes,
    error: type[MalformedPacket],
    why: str,
) -> None:
    with pytest.raises(error, match=why) as err:
        decode(data)
    assert err.type is error
    assert "\n" not in str(err.value)
