"""IEEE 11073 numbers and the GATT Date Time (docs/protocols.md section 0)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from drivers.ble.fields import FieldReader, decode_date_time
from drivers.ble.ieee11073 import decode_float, decode_sfloat
from drivers.errors import ImplausibleValue, MalformedPacket, TruncatedPacket


@pytest.mark.parametrize(
    ("hex_le", "expected"),
    [
        ("1C F0", 2.8),  # 0xF01C
        ("2E 0B", -1234.0),  # 0x0B2E
        ("61 00", 97.0),
        ("48 00", 72.0),
        ("01 10", 10.0),  # exponent +1
        ("FF FF", -0.1),  # mantissa -1, exponent -1
        ("FF 07", None),  # NaN
        ("00 08", None),  # NRes
        ("FE 07", None),  # +INF
        ("02 08", None),  # -INF
        ("01 08", None),  # reserved
    ],
)
def test_sfloat(hex_le: str, expected: float | None) -> None:
    assert decode_sfloat(bytes.fromhex(hex_le)) == expected


@pytest.mark.parametrize(
    ("hex_le", "expected"),
    [
        ("76 01 00 FF", 37.4),  # 0xFF000176
        ("D4 03 00 FF", 98.0),
        ("9C FF FF FE", -1.0),  # mantissa -100, exponent -2
        ("05 00 00 02", 500.0),
        ("FF FF 7F 00", None),  # NaN 0x007FFFFF
        ("00 00 80 00", None),  # NRes
        ("FE FF 7F 00", None),  # +INF
        ("02 00 80 00", None),  # -INF
        ("01 00 80 00", None),  # reserved
    ],
)
def test_float(hex_le: str, expected: float | None) -> None:
    assert decode_float(bytes.fromhex(hex_le)) == expected


@pytest.mark.parametrize(
    ("decode", "hex_le", "message"),
    [
        (decode_sfloat, "1C", "SFLOAT needs 2 bytes, got 1"),
        (decode_float, "76 01 00", "FLOAT needs 4 bytes, got 3"),
    ],
)
def test_wrong_length(decode: Callable[[bytes], float | None], hex_le: str, message: str) -> None:
    with pytest.raises(TruncatedPacket, match=message):
        decode(bytes.fromhex(hex_le))


@pytest.mark.parametrize(
    ("hex_le", "expected"),
    [
        ("E8 07 03 0F 0A 1E 00", datetime(2024, 3, 15, 10, 30, 0)),
        ("E8 07 02 1D 17 3B 3B", datetime(2024, 2, 29, 23, 59, 59)),
        ("00 00 03 0F 0A 1E 00", None),  # year unknown
        ("E8 07 00 0F 0A 1E 00", None),  # month unknown
        ("E8 07 03 00 0A 1E 00", None),  # day unknown
    ],
)
def test_date_time(hex_le: str, expected: datetime | None) -> None:
    assert decode_date_time(bytes.fromhex(hex_le)) == expected


@pytest.mark.parametrize(
    ("hex_le", "error", "message"),
    [
        ("E7 07 02 1D 00 00 00", ImplausibleValue, "2023-02-29 00:00:00"),
        ("E8 07 0D 01 00 00 00", ImplausibleValue, "2024-13-01"),
        ("E8 07 03 0F 18 00 00", ImplausibleValue, "24:00:00"),
        ("E8 07 03 0F 0A 3C 00", ImplausibleValue, "10:60:00"),
        ("E8 03 01 01 00 00 00", ImplausibleValue, "year before 1582"),
        ("E8 07 03 0F 0A 1E", TruncatedPacket, "needs 7 bytes, got 6"),
    ],
)
def test_impossible_date_time(hex_le: str, error: type[MalformedPacket], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_date_time(bytes.fromhex(hex_le))


def test_reader_names_the_missing_field_and_length() -> None:
    reader = FieldReader(bytes.fromhex("02 61 00 48"), "Example")
    reader.take(3, "head")
    with pytest.raises(
        TruncatedPacket, match=r"^Example: Status missing \(needs bytes 3-4, packet is 4 bytes\)$"
    ):
        reader.uint(2, "Status")


def test_reader_rejects_trailing_bytes() -> None:
    reader = FieldReader(bytes.fromhex("02 61 00"), "Example")
    reader.uint(1, "Flags")
    with pytest.raises(
        MalformedPacket, match=r"Example: 2 unexpected trailing byte\(s\) after byte 0"
    ) as raised:
        reader.end()
    assert raised.type is MalformedPacket  # too long: not a truncation
