"""Xiaomi MiBeacon, MCCGQ02HL door sensor (docs/protocols.md section 5.2)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from drivers.ble.mibeacon import MiBeaconDecoder, parse_mibeacon
from drivers.errors import (
    DecryptionFailed,
    DowngradedPacket,
    ImplausibleValue,
    MalformedPacket,
    RefusedPacket,
    ReplayedPacket,
    SecurityRejection,
    TruncatedPacket,
)
from drivers.measurement import Measurement, Metric

KEY = bytes.fromhex("017e52d2684779298709b117c0a75a7b")
MAC = "E4:AA:EC:81:21:AE"
VECTOR = "58 58 8B 09 A3 AE 21 81 EC AA E4 0E 2C 55 3C 04 00 00 D2 8A 50 0C"
DOOR, BATTERY = Metric.DOOR_OPEN, Metric.BATTERY
MAC_REVERSED = bytes.fromhex(MAC.replace(":", ""))[::-1]
OTHER_MAC = "E4:AA:EC:81:21:AF"
#: v5, MAC and objects, no encryption: from a device with a bindkey, a downgrade.
CLEAR = bytes.fromhex("50 50 8B 09 01") + MAC_REVERSED + bytes.fromhex("19 10 01 00")


def seal(
    objects_hex: str, frame_counter: int = 0xA4, ext_counter: int = 4, mac: bool = True
) -> bytes:
    """An encrypted v5 advertisement from the sensor, built as the device would."""
    control = 0x5858 if mac else 0x5848
    head = control.to_bytes(2, "little") + b"\x8b\x09" + bytes([frame_counter])
    ext = ext_counter.to_bytes(3, "little")
    nonce = MAC_REVERSED + head[2:5] + ext
    sealed = AESCCM(KEY, tag_length=4).encrypt(nonce, bytes.fromhex(objects_hex), b"\x11")
    return head + (MAC_REVERSED if mac else b"") + sealed[:-4] + ext + sealed[-4:]


def values(measurements: list[Measurement]) -> list[tuple[Metric, float | bool]]:
    return [(m.metric, m.value) for m in measurements]


def test_vector_door_left_open() -> None:
    packet = parse_mibeacon(bytes.fromhex(VECTOR), KEY)
    assert values(packet.measurements) == [(DOOR, True)]
    assert packet.left_open
    assert (packet.product_id, packet.frame_counter, packet.encrypted, packet.mac) == (
        0x098B,
        0xA3,
        True,
        MAC,
    )
    assert packet.counter == 0x000004A3
    assert seal("19 10 01 02", frame_counter=0xA3) == bytes.fromhex(VECTOR)


@pytest.mark.parametrize(
    ("objects", "expected", "left_open"),
    [
        ("19 10 01 00", [(DOOR, True)], False),  # open
        ("19 10 01 01", [(DOOR, False)], False),  # closed
        ("19 10 01 02", [(DOOR, True)], True),  # left open after the timeout
        ("19 10 01 03", [], False),  # device reset: no reading
        ("0A 10 01 5A", [(BATTERY, 90)], False),
        ("18 10 01 01 19 10 01 01", [(DOOR, False)], False),  # light object skipped
        ("99 99 03 01 02 03 0A 10 01 64", [(BATTERY, 100)], False),  # unknown skipped
    ],
)
def test_objects(
    objects: str, expected: list[tuple[Metric, float | bool]], left_open: bool
) -> None:
    packet = parse_mibeacon(seal(objects), KEY)
    assert values(packet.measurements) == expected
    assert packet.left_open is left_open


def test_mac_from_argument_when_not_in_frame() -> None:
    packet = parse_mibeacon(seal("19 10 01 01", mac=False), KEY, MAC)
    assert values(packet.measurements) == [(DOOR, False)]
    assert packet.mac == MAC


def test_unencrypted_frame() -> None:
    packet = parse_mibeacon(CLEAR)
    assert values(packet.measurements) == [(DOOR, True)]
    assert (packet.encrypted, packet.counter) == (False, None)


def test_frame_without_objects() -> None:
    # v5 with MAC and capability (with the I/O byte): no objects, no readings.
    data = bytes.fromhex("30 50 8B 09 02") + MAC_REVERSED + bytes.fromhex("28 01")
    packet = parse_mibeacon(data, KEY)
    assert packet.measurements == []
    assert packet.frame_counter == 2


@pytest.mark.parametrize(
    ("data", "key", "mac", "error", "message"),
    [
        (
            bytes.fromhex(VECTOR),
            None,
            None,
            MalformedPacket,
            "encrypted; the bindkey and MAC are needed",
        ),
        (
            seal("19 10 01 01", mac=False),
            KEY,
            None,
            MalformedPacket,
            "encrypted; the bindkey and MAC are needed",
        ),
        (bytes.fromhex(VECTOR), bytes(16), None, DecryptionFailed, "decryption failed"),
        (seal("19 10 01 01", mac=False), KEY, OTHER_MAC, DecryptionFailed, "decryption failed"),
        (
            bytes.fromhex(VECTOR),
            KEY,
            OTHER_MAC,
            SecurityRejection,
            "frame is from E4:AA:EC:81:21:AE",
        ),
        (bytes.fromhex(VECTOR[:-2] + "0D"), KEY, None, DecryptionFailed, "decryption failed"),
        (
            bytes.fromhex("58 38 8B 09 A3") + MAC_REVERSED + bytes(8),
            KEY,
            None,
            ImplausibleValue,
            "legacy v3",
        ),
        (bytes.fromhex("D8 58 8B 09 A3"), KEY, None, ImplausibleValue, "mesh frames unsupported"),
        (bytes.fromhex("58 18 8B 09 A3"), KEY, None, ImplausibleValue, "0x1858: v1 unsupported"),
        (
            bytes.fromhex("58 58 8B 09"),
            KEY,
            None,
            TruncatedPacket,
            r"Frame Counter missing \(needs byte 4",
        ),
        (
            bytes.fromhex("58 58 8B 09 A3 AE 21"),
            KEY,
            None,
            TruncatedPacket,
            r"MAC missing \(needs bytes 5-10",
        ),
        (
            bytes.fromhex("78 58 8B 09 A3") + MAC_REVERSED,
            KEY,
            None,
            TruncatedPacket,
            "Capability missing",
        ),
        (
            bytes.fromhex(VECTOR)[:18],
            KEY,
            None,
            TruncatedPacket,
            "no room for objects, counter and MIC",
        ),
        (seal("19 10 01 04"), KEY, None, ImplausibleValue, "door state 4 is not 0-3"),
        (seal("19 10 02 01 00"), KEY, None, ImplausibleValue, "object 0x1019 has 2 bytes, not 1"),
        (seal("0A 10 01 65"), KEY, None, ImplausibleValue, "battery level 101 %"),
        (
            seal("19 10 05 01"),
            KEY,
            None,
            TruncatedPacket,
            r"object 0x1019 missing \(needs bytes 3-7",
        ),
        (seal("19 10"), KEY, None, TruncatedPacket, r"object 0x1019 length missing"),
        (CLEAR, KEY, None, DowngradedPacket, "unencrypted objects from a device with a key"),
    ],
)
def test_refused(
    data: bytes, key: bytes | None, mac: str | None, error: type[RefusedPacket], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        parse_mibeacon(data, key, mac)
    assert raised.type is error


def test_decoder_drops_repeats_and_replays() -> None:
    decoder = MiBeaconDecoder(KEY, MAC)
    assert values(decoder.feed(seal("19 10 01 00", 0x10, 300), 0.0)) == [(DOOR, True)]
    assert decoder.feed(seal("19 10 01 00", 0x10, 300), 0.2) == []  # repeated advertisement
    assert values(decoder.feed(seal("19 10 01 01", 0x11, 300), 0.4)) == [(DOOR, False)]
    with pytest.raises(ReplayedPacket, match="replayed packet rejected"):
        decoder.feed(seal("19 10 01 00", 0x10, 300), 10.0)
