"""BTHome v2 (docs/protocols.md section 5.1)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from drivers.ble.advert_decoder import ccm_decrypt
from drivers.ble.bthome import BthomeDecoder, parse_bthome
from drivers.errors import (
    DecryptionFailed,
    DowngradedPacket,
    ImplausibleValue,
    MalformedPacket,
    RefusedPacket,
    ReplayedPacket,
    TruncatedPacket,
)
from drivers.measurement import Measurement, Metric

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = "54:48:E6:8F:80:A5"
VECTOR = "41 A4 72 66 C9 5F 73 00 11 22 33 78 23 72 14"
DOOR, BATTERY = Metric.DOOR_OPEN, Metric.BATTERY


def seal(plain_hex: str, counter: int, info: int = 0x41, key: bytes = KEY) -> bytes:
    """An encrypted advertisement, built as a device would."""
    counter_bytes = counter.to_bytes(4, "little")
    nonce = bytes.fromhex(MAC.replace(":", "")) + b"\xd2\xfc" + bytes([info]) + counter_bytes
    sealed = AESCCM(key, tag_length=4).encrypt(nonce, bytes.fromhex(plain_hex), None)
    return bytes([info]) + sealed[:-4] + counter_bytes + sealed[-4:]


def values(measurements: list[Measurement]) -> list[tuple[Metric, float | bool]]:
    return [(m.metric, m.value) for m in measurements]


@pytest.mark.parametrize(
    ("hex_in", "expected", "packet_id", "trigger_based"),
    [
        # Worked examples. Temperature, humidity, lux and rotation are not readings here.
        ("40 02 C4 09 03 BF 13", [], None, False),
        (
            "40 00 4E 01 64 05 00 00 00 2D 01 3F 00 00",  # Shelly BLU Door/Window: window open
            [(BATTERY, 100), (DOOR, True)],
            78,
            False,
        ),
        ("44 00 05 01 5F 1A 00", [(BATTERY, 95), (DOOR, False)], 5, True),
        # Each door-like object.
        ("40 11 01", [(DOOR, True)], None, False),
        ("40 1A 01", [(DOOR, True)], None, False),
        ("40 2D 00", [(DOOR, False)], None, False),
        # An unknown object id stops parsing; what came before is kept.
        ("40 01 5A 70 01 2D 01", [(BATTERY, 90)], None, False),
        ("40 01 5A 3B 01 02 2D 01", [(BATTERY, 90)], None, False),  # command: not parsed
        # Length-prefixed text is skipped by its length.
        ("40 01 5A 53 02 68 69 2D 01", [(BATTERY, 90), (DOOR, True)], None, False),
        # Button event and 4-byte objects are skipped.
        ("40 00 07 3A 01 3E 01 02 03 04 2D 01", [(DOOR, True)], 7, False),
        ("40", [], None, False),
        # Bit 1 (MAC included, as bthome-ble reads it): six MAC bytes before the objects.
        ("42 A5 80 8F E6 48 54 01 5A", [(BATTERY, 90)], None, False),
    ],
)
def test_plain(
    hex_in: str,
    expected: list[tuple[Metric, float | bool]],
    packet_id: int | None,
    trigger_based: bool,
) -> None:
    packet = parse_bthome(bytes.fromhex(hex_in))
    assert values(packet.measurements) == expected
    assert (packet.packet_id, packet.trigger_based, packet.encrypted, packet.counter) == (
        packet_id,
        trigger_based,
        False,
        None,
    )


def test_encrypted_vector() -> None:
    nonce = bytes.fromhex("5448E68F80A5D2FC4100112233")
    sealed = bytes.fromhex("A4 72 66 C9 5F 73 78 23 72 14")
    assert ccm_decrypt("test", KEY, nonce, sealed, None) == bytes.fromhex("02 CA 09 03 BF 13")
    packet = parse_bthome(bytes.fromhex(VECTOR), KEY, MAC)
    assert (packet.encrypted, packet.counter, packet.measurements) == (True, 0x33221100, [])
    assert seal("02 CA 09 03 BF 13", 0x33221100) == bytes.fromhex(VECTOR)


@pytest.mark.parametrize("mac", [MAC, "54-48-E6-8F-80-A5", "5448e68f80a5"])
def test_encrypted_door(mac: str) -> None:
    packet = parse_bthome(seal("00 09 01 50 2D 01", 7), KEY, mac)
    assert values(packet.measurements) == [(BATTERY, 80), (DOOR, True)]
    assert (packet.packet_id, packet.counter, packet.encrypted) == (9, 7, True)


@pytest.mark.parametrize(
    ("hex_in", "key", "mac", "error", "message"),
    [
        ("", None, None, TruncatedPacket, "empty service data"),
        ("20 01 64", None, None, ImplausibleValue, r"version 1 in device info 0x20, not 2"),
        ("40 02 C4", None, None, TruncatedPacket, r"object 0x02 at byte 0 truncated"),
        ("40 01 5A 53", None, None, TruncatedPacket, r"object 0x53 at byte 2 truncated"),
        ("40 53 05 68", None, None, TruncatedPacket, r"object 0x53 at byte 0 truncated"),
        ("40 2D 02", None, None, ImplausibleValue, r"window state 2 is not 0 \(closed\) or 1"),
        ("40 01 65", None, None, ImplausibleValue, r"battery level 101 %"),
        ("42 A5 80", None, None, TruncatedPacket, r"MAC missing"),
        (VECTOR, None, MAC, MalformedPacket, "encrypted; the device key and MAC are needed"),
        (VECTOR, KEY, None, MalformedPacket, "encrypted; the device key and MAC are needed"),
        (VECTOR, bytes(16), MAC, DecryptionFailed, "decryption failed"),
        (VECTOR, KEY, "54:48:E6:8F:80:A6", DecryptionFailed, "decryption failed"),
        (VECTOR[:-2] + "15", KEY, MAC, DecryptionFailed, "decryption failed"),  # tampered MIC
        ("41 00 11 22 33 78 23 72", KEY, MAC, TruncatedPacket, "no room for counter and MIC"),
        ("40 01 5A", KEY, MAC, DowngradedPacket, "unencrypted packet from a device with a key"),
    ],
)
def test_refused(
    hex_in: str, key: bytes | None, mac: str | None, error: type[RefusedPacket], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        parse_bthome(bytes.fromhex(hex_in), key, mac)
    assert raised.type is error


def plain(packet_id: int) -> bytes:
    return bytes([0x40, 0x00, packet_id, 0x2D, packet_id % 2])


@pytest.mark.parametrize(
    ("events", "accepted"),
    [
        # (packet id, time in s): repeats of one packet within 4 s are dropped.
        ([(10, 0.0), (10, 0.1), (10, 0.2), (11, 0.3), (11, 0.4)], [10, 11]),
        # An older packet (reordered by a proxy) is dropped.
        ([(10, 0.0), (9, 0.1), (11, 0.2)], [10, 11]),
        # Rollover 255 -> 0; up to 63 ahead is new, 64 ahead is not.
        ([(255, 0.0), (0, 0.1), (63, 0.2), (127, 0.3)], [255, 0, 63]),
        # After more than 4 s of silence, any packet id is new.
        ([(10, 0.0), (10, 4.5), (9, 9.0)], [10, 10, 9]),
        # A steady stream of repeats keeps being dropped.
        ([(10, 0.0), (10, 3.0), (10, 6.0), (10, 9.0)], [10]),
    ],
)
def test_decoder_drops_repeats(events: list[tuple[int, float]], accepted: list[int]) -> None:
    decoder = BthomeDecoder(None, MAC)
    seen = [pid for pid, now in events if decoder.feed(plain(pid), now)]
    assert seen == accepted


def test_decoder_without_packet_id_keeps_everything() -> None:
    decoder = BthomeDecoder(None, MAC)
    assert [decoder.feed(bytes.fromhex("40 2D 01"), t) for t in (0.0, 0.1)] == [
        [Measurement(DOOR, True)]
    ] * 2


def test_decoder_rejects_replayed_counters() -> None:
    decoder = BthomeDecoder(KEY, MAC)
    assert values(decoder.feed(seal("00 01 2D 01", 500), 0.0)) == [(DOOR, True)]
    assert decoder.feed(seal("00 01 2D 01", 500), 0.1) == []  # same advertisement again
    with pytest.raises(ReplayedPacket, match="counter went back from 500 to 499"):
        decoder.feed(seal("00 02 2D 00", 499), 0.2)
    assert values(decoder.feed(seal("00 02 2D 00", 501), 0.3)) == [(DOOR, False)]
    # A counter below 100 is a device restart (battery change), not a replay.
    assert values(decoder.feed(seal("00 03 2D 01", 3), 0.4)) == [(DOOR, True)]
    with pytest.raises(DowngradedPacket, match="unencrypted packet"):
        decoder.feed(plain(4), 0.5)


def test_decoder_checks_its_configuration() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        BthomeDecoder(b"short", MAC)
    with pytest.raises(ValueError, match="not a MAC address"):
        BthomeDecoder(None, "54:48")
