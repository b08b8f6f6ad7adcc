"""`bedside-gateway decode`: the contract technicians and support rely on — a JSON list
of readings and exit 0, or one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def decode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "decode", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["hts-temperature", "06 76 01 00 FF E8 07 03 0F 0A 1E 00 01"],
            [
                {
                    "metric": "body_temperature",
                    "value": 37.4,
                    "unit": "Cel",
                    "quality": [],
                    "site": "axillary",
                    "measured_at": "2024-03-15T10:30:00",
                }
            ],
        ),
        (
            ["plx-continuous", "18 5F 00 4E 00 20 00 00 1C F0"],
            [
                {"metric": "spo2", "value": 95.0, "unit": "%", "quality": ["low_perfusion"]},
                {
                    "metric": "pulse_rate",
                    "value": 78.0,
                    "unit": "/min",
                    "quality": ["low_perfusion"],
                },
                {
                    "metric": "perfusion_index",
                    "value": 2.8,
                    "unit": "%",
                    "quality": ["low_perfusion"],
                },
            ],
        ),
        (["plx-continuous", "00 FF 07 FF 07"], []),
        (
            [
                "bthome",
                "41 A4 72 66 C9 5F 73 00 11 22 33 78 23 72 14",
                "--key",
                "231d39c1d7cc1ab1aee224cd096db932",
                "--mac",
                "54:48:E6:8F:80:A5",
            ],
            [],  # temperature and humidity only: no metric of ours in this vector
        ),
        (
            ["cms50-legacy", "85 2A 05 48 61"],
            [
                {"metric": "spo2", "value": 97, "unit": "%", "quality": []},
                {"metric": "pulse_rate", "value": 72, "unit": "/min", "quality": []},
            ],
        ),
        (
            ["cms50-v46", "01 E0 85 B3 96 C1 E1 FF FF"],
            [
                {"metric": "spo2", "value": 97, "unit": "%", "quality": []},
                {"metric": "pulse_rate", "value": 65, "unit": "/min", "quality": []},
            ],
        ),
    ],
)
def test_bytes_decode_to_readings(args: list[str], expected: list[dict[str, object]]) -> None:
    result = decode(*args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["plx-continuous", "02 61"], "plx"),
        (["hts-temperature", "zz"], "hex"),
        (["thermostat", "00"], "thermostat"),
        (
            [
                "bthome",
                "41 A4 72 66 C9 5F 73 00 11 22 33 78 23 72 14",
                "--key",
                "00" * 16,
                "--mac",
                "54:48:E6:8F:80:A5",
            ],
            "bthome",
        ),
    ],
)
def test_undecodable_bytes_give_one_line_and_exit_2(args: list[str], says: str) -> None:
    result = decode(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and says in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
