"""Streaming Bluetooth oximeters (BerryMed BCI, PC-60FW) in the simulator process ->
bleak (bumble backend) -> the gateway process -> real mosquitto -> a subscriber: 100 Hz
packets and 1 Hz frames cut across notifications, arriving as one reading per second
per metric."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber, write_config
from tests.contract import assert_contract
from tests.e2e.test_ble_to_broker import Simulator

BERRYMED = "F0:00:00:00:00:03"
PC60FW = "F0:00:00:00:00:04"
DEVICES = {"berrymed-f00000000003": "berrymed", "pc60fw-f00000000004": "pc60fw"}
CONFIG = f"""
[[devices]]
kind = "berrymed"
address = "{BERRYMED}"
subject = "bed-2"

[[devices]]
kind = "pc60fw"
address = "{PC60FW}"
subject = "bed-3"
"""


@pytest.fixture
def ward(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> tuple[Subscriber, GatewayProcess]:
    """Simulator with both streaming oximeters and the options of the test's
    `sim_options` mark, a gateway bound to them, a subscriber."""
    mark = request.node.get_closest_marker("sim_options")
    sim = Simulator("--berrymed", BERRYMED, "--pc60fw", PC60FW, *(mark.args if mark else ()))
    request.addfinalizer(sim.stop)
    sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
    config = write_config(tmp_path, mosquitto.port, adapter=sim.adapter, devices=CONFIG)
    return sub, gateway_factory(config)


def readings_of(sub: Subscriber, device: str, metric: str) -> list[dict[str, Any]]:
    return [r for r in sub.readings() if r["device"] == device and r["metric"] == metric]


def summaries(gw: GatewayProcess) -> list[dict[str, Any]]:
    """The log lines reporting stray bytes the stream decoders dropped."""
    return [
        r
        for r in gw.log_records()
        if r.get("msg") == "malformed packet dropped"
        and "garbage bytes dropped while resynchronising" in r.get("error", "")
    ]


def seconds(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


@pytest.mark.sim_options("--scenario", "normal", "--garbage-every", "40")
def test_streamed_oximetry_reaches_the_server_once_a_second_per_metric(
    ward: tuple[Subscriber, GatewayProcess],
) -> None:
    sub, gw = ward
    metrics = {"berrymed": ("spo2", "pulse_rate"), "pc60fw": ("spo2", "pulse_rate")}
    metrics["pc60fw"] += ("perfusion_index",)

    def five_seconds_each(s: Subscriber) -> bool:
        return all(
            len(readings_of(s, device, metric)) >= 6
            for device, kind in DEVICES.items()
            for metric in metrics[kind]
        )

    sub.wait_for(five_seconds_each, 45, "six readings per metric from each oximeter")

    expected = {"spo2": ({97, 98}, "%"), "pulse_rate": ({72, 73}, "/min")}
    expected["perfusion_index"] = ({4.5}, "%")
    for device, kind in DEVICES.items():
        for metric in metrics[kind]:
            readings = readings_of(sub, device, metric)
            values, unit = expected[metric]
            for reading in readings:
                assert reading["value"] in values and reading["unit"] == unit, reading
                assert reading["quality"] == [] and reading["measured_at"] is None
            # A second of 100 packets (or 1 frame) is one reading: no faster than that.
            span = seconds(readings[0]["received_at"], readings[-1]["received_at"])
            assert span >= 0.8 * (len(readings) - 1), (device, metric, len(readings), span)
    assert {r["subject"] for r in sub.readings()} == {"bed-2", "bed-3"}
    # The BerryMed's Battery Level is read on connecting (and polled every 10 min).
    assert {r["value"] for r in readings_of(sub, "berrymed-f00000000003", "battery")} == {95}

    # Stray bytes 2.5 times a second reach the log as one summary per minute.
    sub.wait_for(lambda _s: len(summaries(gw)) == len(DEVICES), 10, "a summary from each")
    assert {r["device"] for r in summaries(gw)} == set(DEVICES)

    def identified(s: Subscriber) -> bool:
        inventories = [p for _, p, _ in s.snapshot("/devices")]
        return bool(inventories) and {
            d["id"]: d["info"].get("model") for d in inventories[-1]["devices"]
        } == {"berrymed-f00000000003": "BM1000C", "pc60fw-f00000000004": "PC-60FW"}

    sub.wait_for(identified, 20, "both oximeters identified in the inventory")
    for topic, payload, _ in sub.snapshot():
        assert_contract(topic, payload)
    assert sub.alerts() == []


@pytest.mark.sim_options("--scenario", "probe_off", "--speed", "2", "--garbage-every", "40")
def test_with_the_probe_off_no_value_is_made_of_the_sentinels(
    ward: tuple[Subscriber, GatewayProcess],
) -> None:
    sub, gw = ward
    # The probe is off from real second 1.5. The PC-60FW's battery frames come every 5 s
    # and each stream's stray bytes are summarised: proof that both streams were decoded.
    sub.wait_for(
        lambda s: len(readings_of(s, "pc60fw-f00000000004", "battery")) >= 2,
        30,
        "two battery frames from the PC-60FW",
    )
    sub.wait_for(lambda _s: len(summaries(gw)) == len(DEVICES), 10, "a summary from each")

    for reading in sub.readings():
        if reading["metric"] == "spo2":
            assert reading["value"] in (97, 98), reading  # never 127, 0 or the stale 85
        if reading["metric"] == "pulse_rate":
            assert reading["value"] in (72, 73), reading  # never 255 or 0
    assert sub.alerts() == [], "a probe off the finger is not hypoxaemia"
