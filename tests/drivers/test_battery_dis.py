"""Battery Level, Device Information strings and the UUID table (docs/protocols.md section 3)."""

from __future__ import annotations

import re

import pytest

from drivers.ble import uuids
from drivers.ble.battery import parse_battery_level
from drivers.ble.dis import DIS_STRINGS, decode_dis_string
from drivers.errors import MalformedPacket
from drivers.measurement import Measurement, Metric


@pytest.mark.parametrize(("hex_in", "percent"), [("5A", 90), ("00", 0), ("64", 100), ("01", 1)])
def test_battery_level(hex_in: str, percent: int) -> None:
    assert parse_battery_level(bytes.fromhex(hex_in)) == [Measurement(Metric.BATTERY, percent)]


@pytest.mark.parametrize(
    ("hex_in", "message"),
    [
        ("65", r"battery level 101 % outside 0-100 \(reserved\)"),
        ("FF", r"battery level 255 %"),
        ("", r"needs exactly 1 byte, packet is 0 bytes"),
        ("5A 00", r"needs exactly 1 byte, packet is 2 bytes"),
    ],
)
def test_battery_level_malformed(hex_in: str, message: str) -> None:
    with pytest.raises(MalformedPacket, match=message):
        parse_battery_level(bytes.fromhex(hex_in))


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


SIG = "0000{:04x}-0000-1000-8000-00805f9b34fb"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PULSE_OXIMETER_SERVICE", SIG.format(0x1822)),
        ("PLX_SPOT_CHECK_MEASUREMENT", SIG.format(0x2A5E)),
        ("PLX_CONTINUOUS_MEASUREMENT", SIG.format(0x2A5F)),
        ("PLX_FEATURES", SIG.format(0x2A60)),
        ("RECORD_ACCESS_CONTROL_POINT", SIG.format(0x2A52)),
        ("HEALTH_THERMOMETER_SERVICE", SIG.format(0x1809)),
        ("TEMPERATURE_MEASUREMENT", SIG.format(0x2A1C)),
        ("TEMPERATURE_TYPE", SIG.format(0x2A1D)),
        ("INTERMEDIATE_TEMPERATURE", SIG.format(0x2A1E)),
        ("MEASUREMENT_INTERVAL", SIG.format(0x2A21)),
        ("BATTERY_SERVICE", SIG.format(0x180F)),
        ("BATTERY_LEVEL", SIG.format(0x2A19)),
        ("DEVICE_INFORMATION_SERVICE", SIG.format(0x180A)),
        ("SYSTEM_ID", SIG.format(0x2A23)),
        ("IEEE_11073_CERTIFICATION_LIST", SIG.format(0x2A2A)),
        ("PNP_ID", SIG.format(0x2A50)),
        ("BERRYMED_SERVICE", "49535343-FE7D-4AE5-8FA9-9FAFD205E455".lower()),
        ("BERRYMED_NOTIFY", "49535343-1E4D-4BD9-BA61-23C647249616".lower()),
        ("BERRYMED_WRITE", "49535343-8841-43F4-A8D4-ECBE34729BB3".lower()),
        ("BERRYMED_RENAME", SIG.format(0x5343)),
        ("NORDIC_UART_SERVICE", "6E400001-B5A3-F393-E0A9-E50E24DCCA9E".lower()),
        ("NORDIC_UART_WRITE", "6E400002-B5A3-F393-E0A9-E50E24DCCA9E".lower()),
        ("NORDIC_UART_NOTIFY", "6E400003-B5A3-F393-E0A9-E50E24DCCA9E".lower()),
        ("O2RING_SERVICE", "14839AC4-7D7E-415C-9A42-167340CF2339".lower()),
        ("O2RING_WRITE", "8B00ACE7-EB0B-49B0-BBE9-9AEE0A26E1A3".lower()),
        ("O2RING_NOTIFY", "0734594A-A8E7-4B1A-A6B1-CD5243059A57".lower()),
        ("JUMPER_SERVICE", "CDEACB80-5235-4C07-8846-93A37EE6B86D".lower()),
        ("JUMPER_NOTIFY", "CDEACB81-5235-4C07-8846-93A37EE6B86D".lower()),
        ("BTHOME_SERVICE_DATA", SIG.format(0xFCD2)),
        ("MIBEACON_SERVICE_DATA", SIG.format(0xFE95)),
    ],
)
def test_uuid(name: str, expected: str) -> None:
    assert getattr(uuids, name) == expected


def test_every_uuid_is_lowercase_128_bit_and_unique() -> None:
    table = {k: v for k, v in vars(uuids).items() if k.isupper()}
    for name, value in table.items():
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value
        ), name
    assert len(set(table.values())) == len(table)
