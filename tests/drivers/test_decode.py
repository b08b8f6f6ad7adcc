"""The `bedside-gateway decode` registry."""

from __future__ import annotations

import pytest

from drivers.decode import DECODERS, DecodeError, decode
from drivers.kinds import KINDS
from drivers.measurement import Metric

SPO2, PR, PI = Metric.SPO2, Metric.PULSE_RATE, Metric.PERFUSION_INDEX
TEMP, DOOR, BATTERY = Metric.BODY_TEMPERATURE, Metric.DOOR_OPEN, Metric.BATTERY
BTHOME_KEY = "231d39c1d7cc1ab1aee224cd096db932"
BTHOME_MAC = "54:48:E6:8F:80:A5"
MIBEACON_KEY = "017e52d2684779298709b117c0a75a7b"


@pytest.mark.parametrize(
    ("decoder", "chunks", "key", "mac", "expected"),
    [
        ("plx-spot-check", ["02 61 00 48 00 80 00"], None, None, [(SPO2, 97), (PR, 72)]),
        (
            "plx-spot-check",
            ["0B 62 00 4B 00 E8 07 03 0F 0A 1E 00 80 00 1C F0"],
            None,
            None,
            [(SPO2, 98), (PR, 75), (PI, 2.8)],
        ),
        (
            "plx-continuous",
            ["18 5F 00 4E 00 20 00 00 1C F0"],
            None,
            None,
            [(SPO2, 95), (PR, 78), (PI, 2.8)],
        ),
        ("plx-continuous", ["00 FF 07 FF 07"], None, None, []),
        ("hts-temperature", ["06 76 01 00 FF E8 07 03 0F 0A 1E 00 01"], None, None, [(TEMP, 37.4)]),
        ("hts-temperature", ["01 D4 03 00 FF"], None, None, [(TEMP, 36.67)]),
        ("hts-temperature", ["00 FF FF 7F 00"], None, None, []),
        ("hts-intermediate", ["01 D4 03 00 FF"], None, None, [(TEMP, 36.67)]),
        ("battery", ["5A"], None, None, [(BATTERY, 90)]),
        # Streams: chunks are joined in order, split anywhere.
        (
            "berrymed",
            ["85 2A 05", "48 61 C6 3C", "47 0C 60 A0 00 70 7F 7F"],
            None,
            None,
            [(SPO2, 97), (PR, 72), (SPO2, 96), (PR, 140)],
        ),
        ("berrymed", ["00 11 85 2A 05 48 61"], None, None, [(SPO2, 97), (PR, 72)]),
        (
            "pc60fw",
            ["AA 55 0F 08 01 60", "3E 00 50 00 C0 08"],
            None,
            None,
            [(SPO2, 96), (PR, 62), (PI, 8.0)],
        ),
        ("cms50-legacy", ["85 2A 05 48 61"], None, None, [(SPO2, 97), (PR, 72)]),
        ("cms50-v46", ["01 E0 85 B3 96 C1 E1 FF FF"], None, None, [(SPO2, 97), (PR, 65)]),
        (
            "bthome",
            ["40 00 4E 01 64 05 00 00 00 2D 01 3F 00 00"],
            None,
            None,
            [(BATTERY, 100), (DOOR, True)],
        ),
        ("bthome", ["44 00 05 01 5F 1A 00"], None, None, [(BATTERY, 95), (DOOR, False)]),
        ("bthome", ["41 A4 72 66 C9 5F 73 00 11 22 33 78 23 72 14"], BTHOME_KEY, BTHOME_MAC, []),
        (
            "mibeacon",
            ["58 58 8B 09 A3 AE 21 81 EC AA E4 0E 2C 55 3C 04 00 00 D2 8A 50 0C"],
            MIBEACON_KEY,
            None,
            [(DOOR, True)],
        ),
    ],
)
def test_decoders(
    decoder: str,
    chunks: list[str],
    key: str | None,
    mac: str | None,
    expected: list[tuple[Metric, float | bool]],
) -> None:
    assert [(m.metric, m.value) for m in decode(decoder, chunks, key, mac)] == expected


@pytest.mark.parametrize(
    "chunks",
    [
        ["02 61 00 48 00 80 00"],
        ["02610048008000"],
        ["02:61:00:48:00:80:00"],
        ["02", "61", "00", "48", "00", "80", "00"],  # typed unquoted
        ["0261", "00:48", "00 80 00"],
        ["  02 61 00\t48 00 80 00\n"],
    ],
)
def test_hex_forms(chunks: list[str]) -> None:
    assert [m.value for m in decode("plx-spot-check", chunks)] == [97, 72]


@pytest.mark.parametrize(
    ("decoder", "chunks", "key", "mac", "message"),
    [
        ("plx", ["00"], None, None, r"^unknown decoder 'plx'; known: hts-temperature, "),
        ("battery", ["zz"], None, None, r"^bad hex: 'z' is not a hex digit$"),
        ("battery", ["0x5A"], None, None, r"^bad hex: 'x' is not a hex digit$"),
        ("battery", ["5A0"], None, None, r"^bad hex: odd number of hex digits \(3\)$"),
        ("battery", [], None, None, r"^no bytes given$"),
        ("battery", [" : "], None, None, r"^no bytes given$"),
        ("battery", ["65"], None, None, r"^battery: Battery Level: battery level 101 %"),
        ("plx-spot-check", ["02 61 00 48 00"], None, None, r"^plx-spot-check: PLX spot-check"),
        ("hts-temperature", ["00 C7 00 00 FF"], None, None, r"implausible body temperature"),
        (
            "berrymed",
            ["00 01 02 03 04 05"],
            None,
            None,
            r"^berrymed: no complete packet in 6 bytes \(6 garbage, 0 waiting",
        ),
        ("berrymed", ["85 2A 05"], None, None, r"\(0 garbage, 3 waiting for the rest"),
        ("berrymed", ["85 2A 05 48 65"], None, None, r"^berrymed: BCI: implausible SpO2 101"),
        ("pc60fw", ["AA 55 0F 08 01 60 3E 00 50 00 C0 09"], None, None, r"^pc60fw: .*CRC mismatch"),
        (
            "bthome",
            ["41 A4 72 66 C9 5F 73 00 11 22 33 78 23 72 14"],
            None,
            None,
            r"^bthome: BTHome: packet is encrypted; the device key and MAC are needed$",
        ),
        ("bthome", ["40 01 5A"], "00", BTHOME_MAC, r"^--key must be 16 bytes \(32 hex digits\)"),
        ("bthome", ["40 01 5A"], BTHOME_KEY, "54:48", r"^bthome: not a MAC address: '54:48'$"),
        (
            "battery",
            ["5A"],
            BTHOME_KEY,
            None,
            r"^--key and --mac apply only to bthome and mibeacon",
        ),
        ("mibeacon", ["58 58 8B 09"], MIBEACON_KEY, None, r"^mibeacon: MiBeacon: Frame Counter"),
    ],
)
def test_errors(
    decoder: str, chunks: list[str], key: str | None, mac: str | None, message: str
) -> None:
    with pytest.raises(DecodeError, match=message) as caught:
        decode(decoder, chunks, key, mac)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_every_device_kind_can_be_decoded_from_the_command_line() -> None:
    for kind in KINDS.values():
        assert kind.decoders, f"{kind.name} declares no decoder for `decode`"
        for decoder in kind.decoders:
            assert DECODERS[decoder.name] is decoder
    assert all(d.description and "\n" not in d.description for d in DECODERS.values())


def test_output_is_json_ready() -> None:
    [reading] = decode("hts-temperature", ["06 76 01 00 FF E8 07 03 0F 0A 1E 00 01"])
    assert reading.as_json() == {
        "metric": "body_temperature",
        "value": 37.4,
        "unit": "Cel",
        "quality": [],
        "site": "axillary",
        "measured_at": "2024-03-15T10:30:00",
    }
