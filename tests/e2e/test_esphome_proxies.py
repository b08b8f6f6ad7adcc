"""A gateway with no radio of its own and two simulated ESPHome Bluetooth proxies
(`python -m firmware_sim esphome-proxy`, each its own process, on the simulator's
virtual radio) -> mosquitto -> a subscriber in the township server's place.

The oximeter is heard best by `east`, the thermometer by `west`, the door sensor by
both. Killing `east` moves the oximeter to `west` within the time the configuration
guide promises.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.bluetooth import SCAN_TIMEOUT_S
from gateway.broker import Mosquitto, free_port
from gateway.config import load_config
from tests.conftest import REPO, GatewayProcess, Subscriber, write_config
from tests.contract import assert_contract
from tests.e2e.test_ble_to_broker import DEVICES as GATT_DEVICES
from tests.e2e.test_ble_to_broker import OXIMETER, THERMOMETER, Simulator

DOOR = "F0:00:00:00:00:10"
KEY = base64.b64encode(os.urandom(32)).decode()
DEVICES = f"""{GATT_DEVICES}
[[devices]]
kind = "bthome"
address = "{DOOR}"
subject = "room-12"
"""


class ProxyProcess:
    """One simulated proxy, as a separate box on the network would be."""

    def __init__(self, name: str, port: int, hci: str, *strengths: str) -> None:
        self.name, self.port = name, port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_sim", "esphome-proxy", "--name", name]
            + ["--port", str(port), "--noise-key", KEY, "--hci", hci, "--rssi", "-80"]
            + [option for strength in strengths for option in ("--rssi-for", strength)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            text=True,
        )
        assert self.proc.stdout is not None
        banner = self.proc.stdout.readline()
        assert f"esphome-proxy=127.0.0.1:{port} name={name}" in banner, banner

    def config(self) -> str:
        return f"""
[[bluetooth.proxies]]
name = "{self.name}"
host = "127.0.0.1"
port = {self.port}
noise_key = "{KEY}"
"""

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Floor:
    sub: Subscriber
    gateway: GatewayProcess
    east: ProxyProcess
    west: ProxyProcess
    config: Path


@pytest.fixture
def floor(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Any,
    gateway_factory: Any,
) -> Iterator[Floor]:
    sim = Simulator("--door", "bthome")
    hci = f"tcp-client:127.0.0.1:{sim.port}"
    east = ProxyProcess("east", free_port(), hci, f"{OXIMETER}=-50", f"{DOOR}=-65")
    west = ProxyProcess("west", free_port(), hci, f"{THERMOMETER}=-50", f"{OXIMETER}=-72")
    try:
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        config = write_config(
            tmp_path,
            mosquitto.port,
            adapter="none",
            devices=DEVICES,
            extra=east.config() + west.config(),
        )
        yield Floor(sub, gateway_factory(config), east, west, config)
    finally:
        east.stop()
        west.stop()
        sim.stop()


def readings_of(sub: Subscriber, device: str, metric: str) -> list[dict[str, Any]]:
    return [r for r in sub.readings() if r["device"] == device and r["metric"] == metric]


def assert_all_contract(sub: Subscriber) -> None:
    for topic, payload, _ in sub.snapshot():
        assert_contract(topic, payload)


def last_status(sub: Subscriber) -> dict[str, Any] | None:
    statuses = [p for topic, p, _ in sub.snapshot("/status") if p.get("state") != "offline"]
    return statuses[-1] if statuses else None


def proxies(status: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if status is None:
        return {}
    return {p["name"]: p for p in status["bluetooth"].get("proxies", [])}


def test_devices_spread_over_two_proxies_reach_the_server_and_move_when_one_dies(
    floor: Floor,
) -> None:
    sub = floor.sub
    sub.wait_for(
        lambda s: (
            readings_of(s, "hts-f00000000001", "body_temperature")
            and readings_of(s, "plx-f00000000002", "spo2")
            and readings_of(s, "bthome-f00000000010", "door_open")
        ),
        60,
        "a temperature, an SpO2 and a door state through the proxies",
    )
    status = sub.wait_for(
        lambda s: (
            (st := last_status(s))
            and {n: (p["state"], p["devices"]) for n, p in proxies(st).items()}
            == {"east": ("connected", 1), "west": ("connected", 1)}
            and st
        ),
        30,
        "both proxies connected, each holding one connection",
    )
    assert_all_contract(sub)
    assert KEY not in floor.gateway.log()
    assert all(p["slots_limit"] >= 1 and p["error"] == "" for p in proxies(status).values())

    killed_at = datetime.now(UTC)
    floor.east.kill()
    moved = sub.wait_for(
        lambda s: next(
            (
                r
                for r in readings_of(s, "plx-f00000000002", "spo2")
                if datetime.fromisoformat(r["received_at"]) > killed_at
            ),
            None,
        ),
        60,
        "an SpO2 reading through west after east died",
    )
    took_s = (datetime.fromisoformat(moved["received_at"]) - killed_at).total_seconds()
    bluetooth = load_config(floor.config).bluetooth
    # The configuration guide's promise: the back-off, hearing it again, one connect.
    promised_s = bluetooth.reconnect_max_s + SCAN_TIMEOUT_S + bluetooth.connect_timeout_s
    assert took_s <= promised_s, f"the oximeter took {took_s:.1f} s to move"
    after = sub.wait_for(
        lambda s: (
            (st := last_status(s))
            and proxies(st)["east"]["state"] != "connected"
            and proxies(st)["west"]["devices"] == 2
            and st
        ),
        30,
        "east shown down, west holding both connections",
    )
    assert "127.0.0.1" in proxies(after)["east"]["error"]
    count = len(readings_of(sub, "hts-f00000000001", "body_temperature"))
    sub.wait_for(
        lambda s: len(readings_of(s, "hts-f00000000001", "body_temperature")) > count,
        30,
        "the thermometer on west going on",
    )
    assert_all_contract(sub)


def test_the_gateways_own_radio_and_a_proxy_share_the_devices_by_strength(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Any, gateway_factory: Any
) -> None:
    """The local radio hears everything at -50 dBm (bumble's virtual link); the proxy
    hears the thermometer at -38 and the oximeter at -85."""
    sim = Simulator()
    proxy = ProxyProcess(
        "hall",
        free_port(),
        f"tcp-client:127.0.0.1:{sim.port}",
        f"{THERMOMETER}=-38",
        f"{OXIMETER}=-85",
    )
    try:
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        config = write_config(
            tmp_path,
            mosquitto.port,
            adapter=sim.adapter,
            devices=GATT_DEVICES,
            extra=proxy.config(),
        )
        gateway_factory(config)
        sub.wait_for(
            lambda s: (
                readings_of(s, "hts-f00000000001", "body_temperature")
                and readings_of(s, "plx-f00000000002", "spo2")
            ),
            60,
            "a temperature and an SpO2",
        )
        status = sub.wait_for(
            lambda s: (
                (st := last_status(s))
                and st["devices"]["connected"] == 2
                and proxies(st).get("hall", {}).get("devices") == 1
                and st
            ),
            30,
            "two devices connected, one of them through the proxy",
        )
        assert status["bluetooth"]["state"] == "up"
    finally:
        proxy.stop()
        sim.stop()
