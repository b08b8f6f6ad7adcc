"""A full disk never silences an alert: the gateway's data directory on a real tmpfs,
filled while it runs (or before it starts), with CMS50 simulators on pseudo-terminals,
a real mosquitto and the gateway as its own process."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber, write_config
from tests.faults.conftest import alerts_of, cms50_devices
from tests.faults.disks import fill, tmpfs

STORE_FAULT_CLEARS_AFTER_S = 2


@pytest.fixture
def data_disk(tmp_path: Path) -> Iterator[Path]:
    """8 MiB: room for the store and its write-ahead log until the test fills it."""
    with tmpfs(tmp_path / "data-disk", "size=8m") as disk:
        yield disk


@pytest.fixture
def start_gateway(
    tmp_path: Path,
    data_disk: Path,
    mosquitto: Mosquitto,
    gateway_factory: Callable[..., GatewayProcess],
) -> Callable[..., GatewayProcess]:
    """Start the gateway with its data directory on `data_disk`, reading `sims`."""

    def start(*sims: Cms50Simulator) -> GatewayProcess:
        config = write_config(
            tmp_path,
            mosquitto.port,
            devices=cms50_devices(*sims),
            extra=f"[store]\nfailure_clear_s = {STORE_FAULT_CLEARS_AFTER_S}\n",
        )
        text = config.read_text()
        config.write_text(text.replace(f'"{tmp_path / "data"}"', f'"{data_disk}"'))
        return gateway_factory(config)

    return start


def status(sub: Subscriber) -> dict[str, Any]:
    return [p for t, p, _ in sub.snapshot("/status")][-1]


def store_seqs(store: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as conn:
        return {seq for (seq,) in conn.execute("SELECT seq FROM readings")}


def test_a_disk_filling_up_while_running_loses_no_alert_and_no_reading(
    data_disk: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    cms50_factory: Callable[..., Cms50Simulator],
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    steady = cms50_factory("normal", "usb-a")
    hypoxic = cms50_factory("hypoxia", "usb-b", start=False)
    sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
    gw = start_gateway(steady, hypoxic)
    sub.wait_for(lambda s: len(s.readings()) >= 4, 30, "readings before the disk fills")
    filler = fill(data_disk)
    storage = sub.wait_for(lambda s: alerts_of(s, "storage_failure"), 20, "a storage alert")
    assert storage[0]["state"] == "raised" and "full" in storage[0]["detail"]
    sub.wait_for(lambda s: status(s)["state"] == "degraded", 10, "status degraded")
    assert [f["part"] for f in status(sub)["faults"]] == ["store"]
    # While the disk is full, a deterioration reaches the township within seconds.
    hypoxic.start()
    low = sub.wait_for(lambda s: alerts_of(s, "low_spo2"), 60, "a low SpO2 alert")[0]
    assert low["subject"] == "bed-2" and low["state"] == "raised"
    seq_while_full = max(r["seq"] for r in sub.readings())
    # Space comes back: the store fault clears, and what was gathered in memory is on
    # disk.
    filler.unlink()
    sub.wait_for(
        lambda s: any(a["state"] == "cleared" for a in alerts_of(s, "storage_failure")),
        30,
        "the storage alert cleared",
    )
    sub.wait_for(lambda s: status(s)["state"] == "online", 30, "status online again")
    assert gw.stop() == 0
    on_disk = store_seqs(data_disk / "gateway.sqlite3")
    assert set(range(1, seq_while_full + 1)) <= on_disk, "every reading is on disk"
    tracebacks = [r for r in gw.log_records() if "exception" in r]
    assert len(tracebacks) <= 1, f"{len(tracebacks)} tracebacks logged"


def test_a_gateway_started_on_a_full_disk_runs_says_so_and_stops_cleanly(
    data_disk: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    cms50_factory: Callable[..., Cms50Simulator],
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    sim = cms50_factory("hypoxia")
    sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
    fill(data_disk)
    gw = start_gateway(sim)
    sub.wait_for(lambda s: alerts_of(s, "storage_failure"), 30, "a storage alert")
    sub.wait_for(lambda s: status(s)["state"] == "degraded", 10, "status degraded")
    sub.wait_for(lambda s: len(s.readings()) >= 4, 30, "readings while the disk is full")
    sub.wait_for(lambda s: alerts_of(s, "low_spo2"), 60, "a low SpO2 alert")
    # SIGTERM with the disk still full: a clean exit, and the retained status says
    # offline.
    assert gw.stop() == 0
    sub.wait_for(lambda s: status(s)["state"] == "offline", 10, "the offline status")
    assert len([r for r in gw.log_records() if "exception" in r]) <= 1
