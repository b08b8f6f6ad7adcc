"""Pulse Oximeter Service parsers (docs/protocols.md section 1)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from drivers.ble.plx import (
    DeviceSensorStatus,
    MeasurementStatus,
    PlxFeature,
    PlxFeatures,
    parse_plx_continuous,
    parse_plx_features,
    parse_plx_spot_check,
)
from drivers.errors import ImplausibleValue, MalformedPacket, TruncatedPacket
from drivers.measurement import Measurement, Metric, Quality

Q = Quality
SPOT = Quality.SPOT_CHECK
SPO2, PR, PI = Metric.SPO2, Metric.PULSE_RATE, Metric.PERFUSION_INDEX
Parser = Callable[[bytes], list[Measurement]]


def values(measurements: list[Measurement]) -> dict[Metric, float | bool]:
    return {m.metric: m.value for m in measurements}


def qualities(measurements: list[Measurement]) -> set[frozenset[Quality]]:
    return {m.quality for m in measurements}


@pytest.mark.parametrize(
    ("parse", "hex_in", "expected", "quality", "measured_at"),
    [
        # Worked examples.
        (parse_plx_spot_check, "02 61 00 48 00 80 00", {SPO2: 97, PR: 72}, {SPOT}, None),
        (
            parse_plx_spot_check,
            "0B 62 00 4B 00 E8 07 03 0F 0A 1E 00 80 00 1C F0",
            {SPO2: 98, PR: 75, PI: 2.8},
            {SPOT},
            datetime(2024, 3, 15, 10, 30),
        ),
        (
            parse_plx_continuous,
            "18 5F 00 4E 00 20 00 00 1C F0",
            {SPO2: 95, PR: 78, PI: 2.8},
            {Q.LOW_PERFUSION},
            None,
        ),
        # Minimal packets, no optional fields.
        (parse_plx_spot_check, "00 61 00 48 00", {SPO2: 97, PR: 72}, {SPOT}, None),
        (parse_plx_continuous, "00 61 00 48 00", {SPO2: 97, PR: 72}, set(), None),
        # Spot-check flag b4: device clock not set (no field).
        (
            parse_plx_spot_check,
            "10 61 00 48 00",
            {SPO2: 97, PR: 72},
            {SPOT, Q.DEVICE_CLOCK_UNSET},
            None,
        ),
        # Timestamp with unknown year: no measured_at.
        (
            parse_plx_spot_check,
            "01 61 00 48 00 00 00 03 0F 0A 1E 00",
            {SPO2: 97, PR: 72},
            {SPOT},
            None,
        ),
        # Continuous fast and slow pairs are skipped; only the normal pair is reported.
        (
            parse_plx_continuous,
            "03 61 00 48 00 60 00 47 00 5F 00 46 00",
            {SPO2: 97, PR: 72},
            set(),
            None,
        ),
        # Continuous with every optional field.
        (
            parse_plx_continuous,
            "1F 61 00 48 00 60 00 47 00 5F 00 46 00 80 00 00 00 00 1C F0",
            {SPO2: 97, PR: 72, PI: 2.8},
            set(),
            None,
        ),
        # Reserved flag bits are ignored.
        (parse_plx_spot_check, "E0 61 00 48 00", {SPO2: 97, PR: 72}, {SPOT}, None),
        (parse_plx_continuous, "E0 61 00 48 00", {SPO2: 97, PR: 72}, set(), None),
    ],
)
def test_readings(
    parse: Parser,
    hex_in: str,
    expected: dict[Metric, float],
    quality: set[Quality],
    measured_at: datetime | None,
) -> None:
    result = parse(bytes.fromhex(hex_in))
    assert values(result) == expected
    assert qualities(result) == {frozenset(quality)}
    assert {m.measured_at for m in result} == {measured_at}
    assert {m.site for m in result} == {None}


@pytest.mark.parametrize("parse", [parse_plx_spot_check, parse_plx_continuous])
@pytest.mark.parametrize(
    ("hex_in", "expected"),
    [
        ("00 FF 07 FF 07", {}),  # worked example: SpO2 NaN, PR NaN
        ("00 00 08 48 00", {PR: 72}),  # SpO2 NRes
        ("00 FE 07 48 00", {PR: 72}),  # SpO2 +INF
        ("00 61 00 02 08", {SPO2: 97}),  # PR -INF
        ("00 61 00 01 08", {SPO2: 97}),  # PR reserved
    ],
)
def test_special_values_never_become_readings(
    parse: Parser, hex_in: str, expected: dict[Metric, float]
) -> None:
    assert values(parse(bytes.fromhex(hex_in))) == expected


def test_special_pai_gives_no_perfusion_index() -> None:
    assert values(parse_plx_spot_check(bytes.fromhex("08 61 00 48 00 FF 07"))) == {
        SPO2: 97,
        PR: 72,
    }


@pytest.mark.parametrize(
    ("bit", "quality"),
    [
        *[(bit, set()) for bit in range(5)],  # RFU
        (5, {Q.PROVISIONAL}),  # measurement ongoing
        (6, {Q.PROVISIONAL}),  # early estimate
        (7, set()),  # validated
        (8, set()),  # fully qualified
        (9, {Q.FROM_STORAGE}),
        (10, {Q.TEST_MODE}),  # demonstration
        (11, {Q.TEST_MODE}),  # testing
        (12, {Q.TEST_MODE}),  # calibration ongoing
        (13, None),  # measurement unavailable: no reading
        (14, {Q.QUESTIONABLE}),
        (15, None),  # invalid measurement: no reading
    ],
)
def test_measurement_status(bit: int, quality: set[Quality] | None) -> None:
    status = (1 << bit).to_bytes(2, "little").hex()
    spot = parse_plx_spot_check(bytes.fromhex(f"02 61 00 48 00 {status}"))
    continuous = parse_plx_continuous(bytes.fromhex(f"04 61 00 48 00 {status}"))
    for result, kind in ((spot, {SPOT}), (continuous, set())):
        if quality is None:
            assert result == []
        else:
            assert values(result) == {SPO2: 97, PR: 72}
            assert qualities(result) == {frozenset(quality | kind)}


@pytest.mark.parametrize(
    ("bit", "quality"),
    [
        (0, set()),  # extended display update ongoing
        (1, {Q.DEVICE_FAULT}),  # equipment malfunction
        (2, {Q.POOR_SIGNAL}),  # signal processing irregularity
        (3, {Q.POOR_SIGNAL}),  # inadequate signal
        (4, {Q.POOR_SIGNAL}),  # poor signal
        (5, {Q.LOW_PERFUSION}),
        (6, {Q.POOR_SIGNAL}),  # erratic signal
        (7, {Q.POOR_SIGNAL}),  # non-pulsatile signal
        (8, {Q.QUESTIONABLE}),  # questionable pulse
        (9, set()),  # signal analysis ongoing
        (10, {Q.POOR_SIGNAL}),  # sensor interference
        (11, {Q.PROBE_OFF}),  # sensor unconnected to user
        (12, {Q.DEVICE_FAULT}),  # unknown sensor
        (13, {Q.PROBE_OFF}),  # sensor displaced
        (14, {Q.DEVICE_FAULT}),  # sensor malfunctioning
        (15, {Q.PROBE_OFF}),  # sensor disconnected
        *[(bit, set()) for bit in range(16, 24)],  # RFU
    ],
)
def test_device_and_sensor_status(bit: int, quality: set[Quality]) -> None:
    status = (1 << bit).to_bytes(3, "little").hex()
    spot = parse_plx_spot_check(bytes.fromhex(f"04 61 00 48 00 {status}"))
    continuous = parse_plx_continuous(bytes.fromhex(f"08 61 00 48 00 {status}"))
    for result, kind in ((spot, {SPOT}), (continuous, set())):
        assert values(result) == {SPO2: 97, PR: 72}
        assert qualities(result) == {frozenset(quality | kind)}


def test_status_flags_combine() -> None:
    # Ongoing + from storage; low perfusion + sensor displaced; clock not set.
    result = parse_plx_spot_check(bytes.fromhex("16 61 00 48 00 20 02 20 20 00"))
    expected = {Q.PROVISIONAL, Q.FROM_STORAGE, Q.LOW_PERFUSION, Q.PROBE_OFF, Q.DEVICE_CLOCK_UNSET}
    assert qualities(result) == {frozenset(expected | {SPOT})}
    assert not result[0].alertable


@pytest.mark.parametrize(
    ("hex_in", "alertable"),
    [
        ("02 61 00 48 00 80 00", True),  # validated
        ("12 61 00 48 00 80 02", True),  # from storage, device clock not set
        ("02 61 00 48 00 20 00", False),  # measurement ongoing
        ("02 61 00 48 00 00 40", False),  # questionable
    ],
)
def test_a_spot_check_is_marked_and_may_raise_an_alert_unless_otherwise_flagged(
    hex_in: str, alertable: bool
) -> None:
    result = parse_plx_spot_check(bytes.fromhex(hex_in))
    assert all(SPOT in m.quality for m in result)
    assert {m.alertable for m in result} == {alertable}
    assert all(SPOT not in m.quality for m in parse_plx_continuous(bytes.fromhex("00 61 00 48 00")))


def test_invalid_status_wins_over_implausible_values() -> None:
    # SpO2 255 would be implausible, but the device already says the value is invalid.
    assert parse_plx_spot_check(bytes.fromhex("02 FF 00 48 00 00 80")) == []


@pytest.mark.parametrize(
    ("parse", "hex_in", "message"),
    [
        (parse_plx_spot_check, "", r"PLX spot-check: Flags missing \(needs byte 0, packet is 0"),
        (parse_plx_spot_check, "00 61", r"SpO2 missing \(needs bytes 1-2, packet is 2 bytes\)"),
        (parse_plx_spot_check, "00 61 00 48", r"PR missing \(needs bytes 3-4, packet is 4 bytes\)"),
        (
            parse_plx_spot_check,
            "01 61 00 48 00 E8 07",
            r"\(flags 0x01\): Timestamp missing \(needs bytes 5-11, packet is 7 bytes\)",
        ),
        (
            parse_plx_spot_check,
            "02 61 00 48 00",
            r"Measurement Status missing \(needs bytes 5-6, packet is 5 bytes\)",
        ),
        (
            parse_plx_spot_check,
            "04 61 00 48 00 00 00",
            r"Device and Sensor Status missing \(needs bytes 5-7, packet is 7 bytes\)",
        ),
        (parse_plx_spot_check, "08 61 00 48 00 1C", r"PAI missing \(needs bytes 5-6"),
        (
            parse_plx_continuous,
            "01 61 00 48 00 60 00",
            r"PLX continuous \(flags 0x01\): SpO2PR-Fast missing \(needs bytes 5-8, packet is 7",
        ),
        (parse_plx_continuous, "02 61 00 48 00", r"SpO2PR-Slow missing \(needs bytes 5-8"),
        (parse_plx_continuous, "10 61 00 48 00", r"PAI missing \(needs bytes 5-6"),
    ],
)
def test_truncated(parse: Parser, hex_in: str, message: str) -> None:
    with pytest.raises(TruncatedPacket, match=message):
        parse(bytes.fromhex(hex_in))


@pytest.mark.parametrize("parse", [parse_plx_spot_check, parse_plx_continuous])
@pytest.mark.parametrize(
    ("hex_in", "error", "message"),
    [
        (
            "00 61 00 48 00 00",
            MalformedPacket,
            r"1 unexpected trailing byte\(s\) after byte 4 \(packet is 6 bytes\)",
        ),
        ("00 65 00 48 00", ImplausibleValue, r"implausible SpO2 101.0 % \(outside 0-100\)"),
        ("00 FF 0F 48 00", ImplausibleValue, r"implausible SpO2 -1.0 %"),
        (
            "00 61 00 2D 01",
            ImplausibleValue,
            r"implausible pulse rate 301.0 /min \(outside 0-300\)",
        ),
    ],
)
def test_malformed(parse: Parser, hex_in: str, error: type[MalformedPacket], message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        parse(bytes.fromhex(hex_in))
    assert raised.type is error


@pytest.mark.parametrize(
    ("parse", "hex_in"),
    [
        (parse_plx_spot_check, "08 61 00 48 00 FF 0F"),
        (parse_plx_continuous, "10 61 00 48 00 E9 13"),
    ],
)
def test_implausible_pai(parse: Parser, hex_in: str) -> None:
    with pytest.raises(
        ImplausibleValue, match=r"implausible PAI -?\d+(\.\d+)? % \(outside 0-100\)"
    ):
        parse(bytes.fromhex(hex_in))


def test_impossible_timestamp() -> None:
    with pytest.raises(ImplausibleValue, match=r"Timestamp: impossible Date Time 2024-02-30"):
        parse_plx_spot_check(bytes.fromhex("01 61 00 48 00 E8 07 02 1E 0A 1E 00"))


@pytest.mark.parametrize(
    ("hex_in", "expected"),
    [
        (  # Worked example: may set ongoing, validated; inadequate signal, low perfusion,
            # sensor unconnected.
            "03 00 A0 00 28 08 00",
            PlxFeatures(
                PlxFeature.MEASUREMENT_STATUS | PlxFeature.DEVICE_SENSOR_STATUS,
                MeasurementStatus.ONGOING | MeasurementStatus.VALIDATED,
                DeviceSensorStatus.INADEQUATE_SIGNAL
                | DeviceSensorStatus.LOW_PERFUSION
                | DeviceSensorStatus.SENSOR_UNCONNECTED,
            ),
        ),
        ("00 00", PlxFeatures(PlxFeature(0), None, None)),
        (
            "FC 00",
            PlxFeatures(
                PlxFeature.SPOT_CHECK_STORAGE
                | PlxFeature.SPOT_CHECK_TIMESTAMP
                | PlxFeature.SPO2PR_FAST
                | PlxFeature.SPO2PR_SLOW
                | PlxFeature.PULSE_AMPLITUDE_INDEX
                | PlxFeature.MULTIPLE_BONDS,
                None,
                None,
            ),
        ),
        (
            "02 00 01 00 00",
            PlxFeatures(PlxFeature.DEVICE_SENSOR_STATUS, None, DeviceSensorStatus(1)),
        ),
    ],
)
def test_features(hex_in: str, expected: PlxFeatures) -> None:
    assert parse_plx_features(bytes.fromhex(hex_in)) == expected


@pytest.mark.parametrize(
    ("hex_in", "error", "message"),
    [
        (
            "03",
            TruncatedPacket,
            r"Supported Features missing \(needs bytes 0-1, packet is 1 bytes\)",
        ),
        (
            "03 00 A0 00 28 08",
            TruncatedPacket,
            r"Device and Sensor Status Support missing \(needs bytes 4-6",
        ),
        ("01 00", TruncatedPacket, r"Measurement Status Support missing"),
        ("00 00 00", MalformedPacket, r"1 unexpected trailing byte"),
    ],
)
def test_features_malformed(hex_in: str, error: type[MalformedPacket], message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        parse_plx_features(bytes.fromhex(hex_in))
    assert raised.type is error
