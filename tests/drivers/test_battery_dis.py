"""Battery Level, Device Information strings and the UUID table (docs/protocols.md section 3)."""

from __future__ import annotations

import re

import pytest

from drivers.ble import uuids
from drivers.ble.battery import parse_battery_level
from drivers.ble.dis import DIS_STRINGS, decode_dis_string
from drivers.errors import ImplausibleValue, MalformedPacket, TruncatedPacket
from drivers.measurement import Measurement, Metric


@pytest.mark.parametrize(("hex_in", "percent"), [("5A", 90), ("00", 0), ("64", 100), ("01", 1)])
def test_battery_level(hex_in: str, percent: int) -> None:
    assert parse_battery_level(bytes.fromhex(hex_in)) == [Measurement(Metric.BATTERY, percent)]


@pytest.mark.parametrize(
    ("hex_in", "error", "message"),
    [
        ("65", ImplausibleValue, r"battery level 101 % outside 0-100 \(reserved\)"),
        ("FF", ImplausibleValue, r"battery level 255 %"),
        ("", TruncatedPacket, r"needs exactly 1 byte, packet is 0 bytes"),
        ("5A 00", MalformedPacket, r"needs exactly 1 byte, packet is 2 bytes"),
    ],
)
def test_battery_level_malformed(hex_in: str, error: type[MalformedPacket], message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        parse_battery_level(bytes.fromhex(hex_in))
    assert raised.type is error


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"BerryMed", "BerryMed"),
        (b"PC-60FW\x00\x00\x00", "PC-60FW"),
        (b"", ""),
        (b"\x00", ""),
        (b"a\x00b\x00", "a\x00b"),  # only trailing NULs go
        ("固件 1.2".encode(), "固件 1.2"),
        (b"V\xff\xfe1", "V\ufffd\ufffd1"),  # not UTF-8: replacement characters, no error
        (b"\xe5\x9b", "\ufffd"),  # cut multi-byte sequence
    ],
)
def test_dis_string(raw: bytes, text: str) -> None:
    assert decode_dis_string(raw) == text


def test_dis_uuids() -> None:
    assert DIS_STRINGS == {
        "manufacturer": "00002a29-0000-1000-8000-00805f9b34fb",
        "model": "00002a24-0000-1000-8000-00805f9b34fb",
        "serial": "00002a25-0000-1000-8000-00805f9b34fb",
        "firmware": "00002a26-0000-1000-8000-00805f9b34fb",
        "hardware": "00002a27-0000-1000-8000-00805f9b34fb",
        "software": "00002a28-0000-1000-8000-00805f9b34fb",
    }


def test_every_uuid_is_lowercase_128_bit_and_unique() -> None:
    table = {k: v for k, v in vars(uuids).items() if k.isupper()}
    for name, value in table.items():
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value
        ), name
    assert len(set(table.values())) == len(table)
