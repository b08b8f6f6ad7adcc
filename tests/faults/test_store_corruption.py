"""A store damaged by a failing SD card, found at start and while running: the gateway
sets it aside, publishes what could be salvaged, says so (a `storage_failure` alert)
and goes on collecting with ids above every one ever issued. A real gateway process,
a CMS50 simulator, a real mosquitto."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber, write_config
from tests.faults.test_store_faults import damage_middle_pages, stored


def storage_alerts(sub: Subscriber) -> list[dict[str, Any]]:
    return [a for a in sub.alerts() if a["kind"] == "storage_failure"]


def seqs(sub: Subscriber) -> set[int]:
    return {r["seq"] for r in sub.readings()}


def test_damaged_pages_found_at_start_cost_only_their_rows(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    sim = Cms50Simulator(Generation.V46, "normal", link=str(tmp_path / "usb-a"))
    sim.start()
    try:
        store = tmp_path / "data" / "gateway.sqlite3"
        store.parent.mkdir()
        undelivered = stored(store, 3000, delivered=1000)
        lost = damage_middle_pages(store)
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        devices = f'[[devices]]\nkind = "cms50"\nport = "{sim.path}"\nsubject = "bed-1"\n'
        gw = gateway_factory(write_config(tmp_path, mosquitto.port, devices=devices))
        salvaged = set(undelivered) - lost
        sub.wait_for(lambda s: salvaged <= seqs(s), 60, "the salvaged backlog")
        alert = sub.wait_for(lambda s: storage_alerts(s), 20, "a storage_failure alert")[0]
        assert alert["state"] == "raised" and "set aside" in alert["detail"]
        assert not lost & seqs(sub), "rows on damaged pages cannot be sent"
        sub.wait_for(lambda s: any(seq > 3000 for seq in seqs(s)), 30, "new readings")
        assert min(seq for seq in seqs(sub) if seq > 3000) > 3000 + len(lost)
        assert list(store.parent.glob("gateway.sqlite3.corrupt-*"))
        assert gw.stop() == 0
    finally:
        sim.stop()


def test_damage_met_while_running_is_set_aside_and_collection_goes_on(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    sim = Cms50Simulator(Generation.V46, "normal", link=str(tmp_path / "usb-a"))
    sim.start()
    try:
        store = tmp_path / "data" / "gateway.sqlite3"
        store.parent.mkdir()
        stored(store, 3000, delivered=3000)  # a history, all delivered
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        devices = f'[[devices]]\nkind = "cms50"\nport = "{sim.path}"\nsubject = "bed-1"\n'
        gw = gateway_factory(write_config(tmp_path, mosquitto.port, devices=devices))
        sub.wait_for(lambda s: len(seqs(s)) >= 4, 30, "readings before the damage")
        damage_middle_pages(store)  # under the running gateway
        # The periodic integrity check (or any read) meets it.
        alert = sub.wait_for(lambda s: storage_alerts(s), 60, "a storage_failure alert")[0]
        assert "set aside" in alert["detail"]
        after = max(seqs(sub))
        sub.wait_for(lambda s: max(seqs(s)) > after + 4, 30, "readings after the damage")
        assert gw.stop() == 0
        assert list(store.parent.glob("gateway.sqlite3.corrupt-*"))
        assert not [r for r in gw.log_records() if r.get("msg") == "part stopped unexpectedly"]
    finally:
        sim.stop()
