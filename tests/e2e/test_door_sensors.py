"""Door sensors that only advertise (BTHome plain and encrypted, Xiaomi MiBeacon) in the
simulator process -> bleak scanner (bumble backend) -> the gateway process -> mosquitto.

The simulated doors open 5 s into every 30 s and close 10 s later. Only bound sensors
give readings; a sensor heard with the wrong key gives none and is counted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber, write_config
from tests.contract import assert_contract
from tests.e2e.test_ble_to_broker import Simulator

PLAIN, ENCRYPTED, MIBEACON = "F0:00:00:00:00:10", "F0:00:00:00:00:11", "F0:00:00:00:00:12"
CONFIG = f"""
[[devices]]
kind = "bthome"
address = "{PLAIN}"
subject = "room-12"

[[devices]]
kind = "bthome"
address = "{ENCRYPTED}"
subject = "room-12"
key = "231d39c1d7cc1ab1aee224cd096db932"

[[devices]]
kind = "mibeacon"
address = "{MIBEACON}"
subject = "room-14"
key = "00000000000000000000000000000000"
"""


def door_states(sub: Subscriber, device: str) -> list[bool]:
    states = [
        r["value"] for r in sub.readings() if r["device"] == device and r["metric"] == "door_open"
    ]
    return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


def test_doors_open_and_close_on_the_server_and_a_wrong_key_reads_nothing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    sim = Simulator("--door", "bthome", "--door", "bthome-encrypted", "--door", "mibeacon")
    try:
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        config = write_config(tmp_path, mosquitto.port, adapter=sim.adapter, devices=CONFIG)
        gw = gateway_factory(config)
        for device in ("bthome-f00000000010", "bthome-f00000000011"):
            sub.wait_for(
                lambda s, d=device: door_states(s, d)[-2:] == [True, False],
                45,
                f"{device} opening, then closing",
            )
        door = next(r for r in sub.readings() if r["metric"] == "door_open")
        assert door["unit"] is None and door["subject"] == "room-12"
        assert not [r for r in sub.readings() if r["device"] == "mibeacon-f00000000012"]
        gw.wait_log("malformed packet dropped", 20)
        wrong_key = [
            r
            for r in gw.log_records()
            if r.get("msg") == "malformed packet dropped" and r["device"] == "mibeacon-f00000000012"
        ]
        assert wrong_key, "the sensor with the wrong bindkey is reported, not read"
        assert "00000000000000000000000000000000" not in gw.log(), "keys never reach the log"
        inventory = sub.snapshot("/devices")[-1][1]["devices"]
        links = {d["id"]: d["link"] for d in inventory}
        assert links["bthome-f00000000010"] == "connected"
        for topic, payload, _ in sub.snapshot():
            assert_contract(topic, payload)
    finally:
        sim.stop()
