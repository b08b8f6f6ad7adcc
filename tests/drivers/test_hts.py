"""Health Thermometer Service parsers (docs/protocols.md section 2)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from drivers.ble.hts import (
    parse_intermediate_temperature,
    parse_temperature_measurement,
    parse_temperature_type,
)
from drivers.errors import ImplausibleValue, MalformedPacket, TruncatedPacket
from drivers.measurement import Measurement, Metric, Quality, Site

Parser = Callable[..., list[Measurement]]
BOTH = [parse_temperature_measurement, parse_intermediate_temperature]


@pytest.mark.parametrize(
    ("hex_in", "celsius", "measured_at", "site"),
    [
        # Worked examples.
        (
            "06 76 01 00 FF E8 07 03 0F 0A 1E 00 01",
            37.4,
            datetime(2024, 3, 15, 10, 30),
            Site.AXILLARY,
        ),
        ("01 D4 03 00 FF", 36.67, None, None),  # 98.0 degF
        # More.
        ("00 76 01 00 FF", 37.4, None, None),
        ("02 76 01 00 FF 00 00 03 0F 0A 1E 00", 37.4, None, None),  # time stamp, year unknown
        ("05 E8 03 00 FF 06", 37.78, None, Site.ORAL),  # 100.0 degF
        ("00 C8 00 00 FF", 20.0, None, None),  # plausible bounds are inclusive
        ("00 F4 01 00 FF", 50.0, None, None),
        ("F8 76 01 00 FF", 37.4, None, None),  # reserved flag bits ignored
    ],
)
def test_temperature(
    hex_in: str, celsius: float, measured_at: datetime | None, site: Site | None
) -> None:
    final = parse_temperature_measurement(bytes.fromhex(hex_in))
    assert final == [Measurement(Metric.BODY_TEMPERATURE, celsius, frozenset(), site, measured_at)]
    assert final[0].unit == "Cel"
    assert final[0].alertable
    intermediate = parse_intermediate_temperature(bytes.fromhex(hex_in))
    flags = frozenset({Quality.INTERMEDIATE})
    assert intermediate == [Measurement(Metric.BODY_TEMPERATURE, celsius, flags, site, measured_at)]
    assert not intermediate[0].alertable


@pytest.mark.parametrize("parse", BOTH)
@pytest.mark.parametrize(
    "hex_in",
    [
        "00 FF FF 7F 00",  # worked example: NaN
        "00 00 00 80 00",  # NRes
        "00 FE FF 7F 00",  # +INF
        "00 02 00 80 00",  # -INF
        "00 01 00 80 00",  # reserved
        "07 FF FF 7F 00 E8 07 03 0F 0A 1E 00 01",  # NaN with every optional field
    ],
)
def test_special_values_never_become_readings(parse: Parser, hex_in: str) -> None:
    assert parse(bytes.fromhex(hex_in)) == []


@pytest.mark.parametrize(
    ("code", "site"),
    [
        (1, Site.AXILLARY),
        (2, Site.BODY),
        (3, Site.EAR),
        (4, Site.FINGER),
        (5, Site.GASTROINTESTINAL),
        (6, Site.ORAL),
        (7, Site.RECTAL),
        (8, Site.TOE),
        (9, Site.TYMPANIC),
    ],
)
def test_site_codes(code: int, site: Site) -> None:
    assert parse_temperature_type(bytes([code])) == site
    packet = bytes.fromhex("04 76 01 00 FF") + bytes([code])
    for parse in BOTH:
        # The packet's type field wins over the configured site.
        assert [m.site for m in parse(packet, Site.FOREHEAD)] == [site]


@pytest.mark.parametrize("parse", BOTH)
def test_default_site_when_no_type_field(parse: Parser) -> None:
    assert [m.site for m in parse(bytes.fromhex("00 76 01 00 FF"), Site.FOREHEAD)] == [
        Site.FOREHEAD
    ]


@pytest.mark.parametrize("code", [0, 10, 255])
def test_reserved_site_codes(code: int) -> None:
    with pytest.raises(ImplausibleValue, match=f"reserved temperature type code {code}$"):
        parse_temperature_type(bytes([code]))
    with pytest.raises(ImplausibleValue, match=f"reserved temperature type code {code}$"):
        parse_temperature_measurement(bytes.fromhex("04 76 01 00 FF") + bytes([code]))


@pytest.mark.parametrize("parse", BOTH)
@pytest.mark.parametrize(
    ("hex_in", "error", "message"),
    [
        ("", TruncatedPacket, r"Flags missing \(needs byte 0, packet is 0 bytes\)"),
        (
            "00 76 01 00",
            TruncatedPacket,
            r"\(flags 0x00\): Temperature missing \(needs bytes 1-4, packet is 4 bytes\)",
        ),
        (
            "02 76 01 00 FF E8 07",
            TruncatedPacket,
            r"\(flags 0x02\): Time Stamp missing \(needs bytes 5-11, packet is 7",
        ),
        (
            "04 76 01 00 FF",
            TruncatedPacket,
            r"\(flags 0x04\): Temperature Type missing \(needs byte 5, packet is 5",
        ),
        (
            "00 76 01 00 FF 01",
            MalformedPacket,
            r"1 unexpected trailing byte\(s\) after byte 4 \(packet is 6 bytes\)",
        ),
        (
            "02 76 01 00 FF E8 07 02 1E 0A 1E 00",
            ImplausibleValue,
            r"Time Stamp: impossible Date Time 2024-02-30",
        ),
        (
            "00 C7 00 00 FF",
            ImplausibleValue,
            r"implausible body temperature 19.9 degC \(outside 20-50\)",
        ),
        ("00 F5 01 00 FF", ImplausibleValue, r"implausible body temperature 50.1 degC"),
        # 130.0 degF.
        ("01 14 05 00 FF", ImplausibleValue, r"implausible body temperature 54.44 degC"),
        ("00 FB FF FF FF", ImplausibleValue, r"implausible body temperature -0.5 degC"),
    ],
)
def test_malformed(parse: Parser, hex_in: str, error: type[MalformedPacket], message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        parse(bytes.fromhex(hex_in))
    assert raised.type is error


@pytest.mark.parametrize(("hex_in", "error"), [("", TruncatedPacket), ("01 02", MalformedPacket)])
def test_temperature_type_length(hex_in: str, error: type[MalformedPacket]) -> None:
    with pytest.raises(error, match="Temperature Type: needs exactly 1 byte") as raised:
        parse_temperature_type(bytes.fromhex(hex_in))
    assert raised.type is error
