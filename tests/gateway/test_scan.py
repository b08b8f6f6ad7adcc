"""`bedside-gateway scan` as a technician runs it, against the BLE simulator in its own
process (HCI over loopback TCP)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.broker import free_port
from tests.conftest import REPO, write_config
from tests.e2e.test_ble_to_broker import Simulator

THERMOMETER = "F0:00:00:00:00:01"
OXIMETER = "F0:00:00:00:00:02"


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    sim = Simulator()
    yield sim
    sim.stop()


def scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "scan", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_json_lines_give_kind_name_signal_and_binding(simulator: Simulator, tmp_path: Path) -> None:
    bound = f"""
[[devices]]
kind = "hts"
address = "{THERMOMETER}"
subject = "bed-1"
"""
    config = write_config(tmp_path, free_port(), adapter=simulator.adapter, devices=bound)

    result = scan("--config", str(config), "--seconds", "3", "--json")

    assert result.returncode == 0, result.stderr
    rows: dict[str, dict[str, Any]] = {
        row["address"]: row for row in map(json.loads, result.stdout.splitlines())
    }
    assert rows[THERMOMETER] == {
        "kind": "hts",
        "address": THERMOMETER,
        "name": "Sim Thermometer",
        "rssi": -50,
        "bound": True,
        "device": "hts-f00000000001",
        "subject": "bed-1",
    }
    assert rows[OXIMETER] == {
        "kind": "plx",
        "address": OXIMETER,
        "name": "Sim Oximeter",
        "rssi": -50,
        "bound": False,
        "device": None,
        "subject": None,
    }


def test_a_table_for_technicians(simulator: Simulator) -> None:
    result = scan("--adapter", simulator.adapter, "--seconds", "2")

    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["KIND", "ADDRESS", "RSSI", "NAME", "BOUND", "TO"]
    assert sorted(line.split(maxsplit=3)[:3] for line in lines) == [
        ["hts", THERMOMETER, "-50"],
        ["plx", OXIMETER, "-50"],
    ]
    assert all(line.endswith(" -") for line in lines)  # nothing is bound without a config


@pytest.mark.parametrize(
    "adapter",
    ["bluetooth", "bumble:", f"bumble:tcp-client:127.0.0.1:{free_port()}"],
    ids=["bad spec", "no transport", "nothing listening"],
)
def test_no_usable_adapter_is_one_line_and_status_2(adapter: str) -> None:
    result = scan("--adapter", adapter, "--seconds", "1")

    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot scan with {adapter!r}: ")
