"""Delivery through a real broker: nothing accepted is lost when the broker goes away
or the gateway is killed, and what arrives follows the contract.

A simulated CMS50 oximeter on a pseudo-terminal feeds the gateway (three readings a
second); the township server is a real MQTT subscriber with a persistent session.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber, write_config
from tests.contract import assert_contract
from tests.gateway.helpers import PageApi

DEVICE = "cms50-{}"


@pytest.fixture
def oximeter(tmp_path: Path) -> Iterator[Cms50Simulator]:
    sim = Cms50Simulator(Generation.V46, "normal", link=str(tmp_path / "usb-Contec-CMS50"))
    sim.start()
    yield sim
    sim.stop()


def gateway_config(tmp_path: Path, port: int, sim: Cms50Simulator) -> Path:
    devices = f'[[devices]]\nkind = "cms50"\nport = "{sim.path}"\nsubject = "bed-7"\n'
    return write_config(tmp_path, port, devices=devices, mqtt_extra="readings_per_message = 5")


def persistent_subscriber(port: int) -> Subscriber:
    return Subscriber(port, "vitals/v1/#", persistent_id="township-server").start()


def by_seq(readings: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for r in readings:
        if r["seq"] in out:
            assert out[r["seq"]] == r, "a resend must carry the same id and content"
        out[r["seq"]] = r
    return out


def test_cms50_readings_reach_the_server_following_the_contract(
    tmp_path: Path,
    mosquitto: Mosquitto,
    oximeter: Cms50Simulator,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
    gateway_factory(gateway_config(tmp_path, mosquitto.port, oximeter))
    sub.wait_for(lambda s: len([r for r in s.readings() if r["metric"] == "spo2"]) >= 3, 30)
    spo2 = next(r for r in sub.readings() if r["metric"] == "spo2")
    assert spo2["value"] in (97, 98) and spo2["unit"] == "%"
    assert spo2["subject"] == "bed-7" and spo2["quality"] == []
    assert spo2["device"].startswith("cms50-") and spo2["id"] == f"gw-test-{spo2['seq']}"
    assert spo2["clock"] in ("synced", "unsynced")
    pulse = next(r for r in sub.readings() if r["metric"] == "pulse_rate")
    assert pulse["value"] in (72, 73) and pulse["unit"] == "/min"
    sub.wait_for(lambda s: s.snapshot("/devices") and s.snapshot("/status"), 10)
    for topic, payload, _ in sub.snapshot():
        assert_contract(topic, payload)
    status = sub.snapshot("/status")[-1][1]
    assert status["state"] == "online" and status["devices"]["configured"] == 1


def test_broker_outage_loses_nothing_and_backlog_follows_live_data(
    tmp_path: Path,
    mosquitto: Mosquitto,
    oximeter: Cms50Simulator,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    broker = Mosquitto(port=mosquitto.port, persistent=True, workdir=tmp_path / "broker")
    mosquitto.close()
    broker.start()
    sub = persistent_subscriber(broker.port)
    config = gateway_config(tmp_path, broker.port, oximeter)
    gw = gateway_factory(config)
    sub.wait_for(lambda s: len(s.readings()) >= 6, 30, "readings before the outage")
    broker.stop()  # the township broker goes away; the oximeter keeps measuring
    status_url, api = _status_url(gw), PageApi(config)
    deadline = time.monotonic() + 30
    while True:  # the page's queue figures refresh every few seconds
        queued = api.get(status_url)
        if queued["queue"]["undelivered"] >= 10 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert queued["broker"]["state"] != "connected"
    assert queued["queue"]["undelivered"] >= 10, queued["queue"]
    broker.start()
    sub.reconnect()
    try:
        gw_db = config.parent / "data" / "gateway.sqlite3"

        def all_delivered(s: Subscriber) -> bool:
            with sqlite3.connect(f"file:{gw_db}?mode=ro", uri=True) as conn:
                (last,) = conn.execute("SELECT max(seq) FROM readings").fetchone()
            return set(range(1, int(last) - 5)) <= set(by_seq(s.readings()))

        sub.wait_for(all_delivered, 60, "every reading accepted during the outage")
        received = by_seq(sub.readings())
        assert sorted(received) == list(range(1, max(received) + 1)), "no gaps in seq"
        # Per device and per stream (live, backlog), readings arrive in seq order.
        streams: dict[tuple[str, bool], list[int]] = defaultdict(list)
        backlog_seen = False
        for topic, payload, _ in sub.snapshot():
            if "/readings/" in topic:
                streams[(payload["device"], payload["backlog"])].extend(
                    r["seq"] for r in payload["readings"]
                )
                backlog_seen = backlog_seen or payload["backlog"]
        assert backlog_seen, "readings queued during the outage are sent as backlog"
        for key, seqs in streams.items():
            firsts = list(dict.fromkeys(seqs))  # resends may repeat a seq
            assert firsts == sorted(firsts), f"{key} out of order"
    finally:
        sub.stop()
        gw.stop()
        broker.close()


def test_a_killed_gateway_loses_no_accepted_reading(
    tmp_path: Path,
    mosquitto: Mosquitto,
    oximeter: Cms50Simulator,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
    config = gateway_config(tmp_path, mosquitto.port, oximeter)
    gw = gateway_factory(config)
    sub.wait_for(lambda s: len(s.readings()) >= 9, 30)
    gw.kill()  # SIGKILL while it is publishing
    with sqlite3.connect(config.parent / "data" / "gateway.sqlite3") as conn:
        accepted = {seq for (seq,) in conn.execute("SELECT seq FROM readings")}
    assert accepted, "the store holds what was accepted before the kill"
    restarted = gateway_factory(config)
    sub.wait_for(lambda s: accepted <= set(by_seq(s.readings())), 30, "all accepted readings")
    top = max(accepted)
    sub.wait_for(lambda s: max(by_seq(s.readings())) > top + 3, 30, "new readings after restart")
    received = by_seq(sub.readings())
    assert sorted(received) == list(range(1, max(received) + 1)), "seq continues without gaps"
    restarted.stop()


def _status_url(gw: GatewayProcess) -> str:
    for record in gw.log_records():
        if record.get("msg") == "gateway started":
            return str(record["web"]) + "api/status"
    raise AssertionError(f"no start line in {gw.log()}")
