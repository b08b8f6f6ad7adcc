"""Door sensors that only advertise (BTHome plain and encrypted, Xiaomi MiBeacon) in the
simulator process -> bleak scanner (bumble backend) -> the gateway process -> mosquitto.

The simulated doors open 5 s into every 30 s and close 10 s later. Only bound sensors
give readings; a sensor heard with the wrong key gives none and is counted; a sensor
that is not bound is listed on the status page for pairing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.broker import Mosquitto
from gateway.config import load_config
from tests.conftest import GatewayProcess, Subscriber, write_config
from tests.contract import assert_contract
from tests.e2e.test_ble_to_broker import Simulator
from tests.gateway.helpers import signed_in_client

PLAIN, ENCRYPTED, MIBEACON = "F0:00:00:00:00:10", "F0:00:00:00:00:11", "F0:00:00:00:00:12"
CONFIG = f"""
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
        sub.wait_for(
            lambda s: door_states(s, "bthome-f00000000011")[-2:] == [True, False],
            45,
            "the encrypted door opening, then closing",
        )
        door = next(r for r in sub.readings() if r["metric"] == "door_open")
        assert door["unit"] is None and door["subject"] == "room-12"
        read_from = {r["device"] for r in sub.readings()}
        assert read_from == {"bthome-f00000000011"}, "only bound sensors with the right key"
        gw.wait_log("packet refused by a security check", 20)
        wrong_key = [
            r
            for r in gw.log_records()
            if r.get("msg") == "packet refused by a security check"
            and r["device"] == "mibeacon-f00000000012"
        ]
        assert wrong_key, "the sensor with the wrong bindkey is reported, not read"
        assert "decryption failed" in wrong_key[0]["error"]
        assert "00000000000000000000000000000000" not in gw.log(), "keys never reach the log"

        def mibeacon_counts(s: Subscriber) -> dict[str, Any] | None:
            inventories = s.snapshot("/devices")
            device = next(
                d for d in inventories[-1][1]["devices"] if d["id"] == "mibeacon-f00000000012"
            )
            return device if device["security_rejections"] else None

        counts = sub.wait_for(mibeacon_counts, 20, "the wrong key counted as a security rejection")
        assert counts["malformed_packets"] == 0, "an attack-like refusal is not radio noise"
        inventory = sub.snapshot("/devices")[-1][1]["devices"]
        links = {d["id"]: d["link"] for d in inventory}
        assert links["bthome-f00000000011"] == "connected"
        web = next(r["web"] for r in gw.log_records() if r.get("msg") == "gateway started")
        password_path = load_config(config).password_path
        with signed_in_client(web, password_path) as page:
            status = page.get("/api/status").json()
        nearby = {d["address"]: d["kind"] for d in status["discovered"]}
        assert nearby[PLAIN] == "bthome", "the unbound sensor is offered for pairing"
        assert ENCRYPTED not in nearby and MIBEACON not in nearby, "bound ones are not"
        for topic, payload, _ in sub.snapshot():
            assert_contract(topic, payload)
    finally:
        sim.stop()
