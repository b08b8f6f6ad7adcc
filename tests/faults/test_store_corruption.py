"""A store damaged by a failing SD card, found at start and while running: the gateway
sets it aside, publishes what could be salvaged, says so (a `storage_failure` alert)
and goes on collecting with ids above every one ever issued. A real gateway process,
a CMS50 simulator, a real mosquitto."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber, write_config
from tests.faults.conftest import alerts_of, cms50_devices
from tests.faults.test_store_faults import damage_middle_pages, stored

Ward = tuple[Path, Subscriber, Callable[[], GatewayProcess]]


@pytest.fixture
def ward(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[..., GatewayProcess],
    cms50_factory: Callable[..., Cms50Simulator],
) -> Ward:
    """Where the store will be, the township's subscriber, and how to start the
    gateway (with one oximeter)."""
    store = tmp_path / "data" / "gateway.sqlite3"
    store.parent.mkdir()
    config = write_config(tmp_path, mosquitto.port, devices=cms50_devices(cms50_factory("normal")))
    sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
    return store, sub, lambda: gateway_factory(config)


def seqs(sub: Subscriber) -> set[int]:
    return {r["seq"] for r in sub.readings()}


def test_damaged_pages_found_at_start_cost_only_their_rows(ward: Ward) -> None:
    store, sub, start = ward
    undelivered = stored(store, 3000, delivered=1000)
    lost = damage_middle_pages(store)
    gw = start()
    salvaged = set(undelivered) - lost
    sub.wait_for(lambda s: salvaged <= seqs(s), 60, "the salvaged backlog")
    alert = sub.wait_for(lambda s: alerts_of(s, "storage_failure"), 20, "a storage alert")[0]
    assert alert["state"] == "raised" and "set aside" in alert["detail"]
    assert not lost & seqs(sub), "rows on damaged pages cannot be sent"
    sub.wait_for(lambda s: any(seq > 3000 for seq in seqs(s)), 30, "new readings")
    assert min(seq for seq in seqs(sub) if seq > 3000) > 3000 + len(lost)
    assert list(store.parent.glob("gateway.sqlite3.corrupt-*"))
    assert gw.stop() == 0


def test_damage_met_while_running_is_set_aside_and_collection_goes_on(ward: Ward) -> None:
    store, sub, start = ward
    stored(store, 3000, delivered=3000)  # a history, all delivered
    gw = start()
    sub.wait_for(lambda s: len(seqs(s)) >= 4, 30, "readings before the damage")
    damage_middle_pages(store)  # under the running gateway
    # The periodic integrity check (or any read) meets it.
    alert = sub.wait_for(lambda s: alerts_of(s, "storage_failure"), 60, "a storage alert")[0]
    assert "set aside" in alert["detail"]
    after = max(seqs(sub))
    sub.wait_for(lambda s: max(seqs(s)) > after + 4, 30, "readings after the damage")
    assert gw.stop() == 0
    assert list(store.parent.glob("gateway.sqlite3.corrupt-*"))
    assert not [r for r in gw.log_records() if r.get("msg") == "part stopped unexpectedly"]
