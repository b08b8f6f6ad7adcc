"""A full disk never silences an alert: the gateway's data directory on a real 1 MiB
tmpfs, filled while it runs (or before it starts), with CMS50 simulators on
pseudo-terminals, a real mosquitto and the gateway as its own process."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber, write_config
from tests.faults.disks import fill, tmpfs

STORE_FAULT_CLEARS_AFTER_S = 2


@pytest.fixture
def data_disk(tmp_path: Path) -> Iterator[Path]:
    """8 MiB: room for the store and its write-ahead log until the test fills it."""
    with tmpfs(tmp_path / "data-disk", "size=8m") as disk:
        yield disk


def status(sub: Subscriber) -> dict[str, Any]:
    return [p for t, p, _ in sub.snapshot("/status")][-1]


def storage_alerts(sub: Subscriber) -> list[dict[str, Any]]:
    return [a for a in sub.alerts() if a["kind"] == "storage_failure"]


def store_seqs(store: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as conn:
        return {seq for (seq,) in conn.execute("SELECT seq FROM readings")}


def config_for(tmp_path: Path, disk: Path, broker: int, *sims: Cms50Simulator) -> Path:
    devices = "".join(
        f'[[devices]]\nkind = "cms50"\nport = "{sim.path}"\nsubject = "bed-{n}"\n'
        for n, sim in enumerate(sims, start=1)
    )
    config = write_config(
        tmp_path,
        broker,
        devices=devices,
        extra=f"[store]\nfailure_clear_s = {STORE_FAULT_CLEARS_AFTER_S}\n",
    )
    text = config.read_text().replace(f'data_dir = "{tmp_path / "data"}"', f'data_dir = "{disk}"')
    config.write_text(text)
    return config


def test_a_disk_filling_up_while_running_loses_no_alert_and_no_reading(
    tmp_path: Path,
    data_disk: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    steady = Cms50Simulator(Generation.V46, "normal", link=str(tmp_path / "usb-a"))
    hypoxic = Cms50Simulator(Generation.V46, "hypoxia", link=str(tmp_path / "usb-b"))
    steady.start()
    try:
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        gw = gateway_factory(config_for(tmp_path, data_disk, mosquitto.port, steady, hypoxic))
        sub.wait_for(lambda s: len(s.readings()) >= 4, 30, "readings before the disk fills")
        filler = fill(data_disk)
        raised = sub.wait_for(lambda s: storage_alerts(s), 20, "a storage_failure alert")[0]
        assert raised["state"] == "raised" and "full" in raised["detail"]
        assert status(sub)["state"] == "degraded"
        assert [f["part"] for f in status(sub)["faults"]] == ["store"]
        # While the disk is full, a deterioration reaches the township within seconds.
        hypoxic.start()
        low = sub.wait_for(
            lambda s: [a for a in s.alerts() if a["kind"] == "low_spo2"], 60, "a low SpO2 alert"
        )[0]
        assert low["subject"] == "bed-2" and low["state"] == "raised"
        seq_while_full = max(r["seq"] for r in sub.readings())
        # Space comes back: the store fault clears, and what was gathered in memory
        # is on disk.
        filler.unlink()
        sub.wait_for(
            lambda s: any(a["state"] == "cleared" for a in storage_alerts(s)),
            30,
            "the storage alert cleared",
        )
        sub.wait_for(lambda s: status(s)["state"] == "online", 30, "status online again")
        assert gw.stop() == 0
        on_disk = store_seqs(data_disk / "gateway.sqlite3")
        assert set(range(1, seq_while_full + 1)) <= on_disk, "every reading is on disk"
        failures = [r for r in gw.log_records() if "exception" in r]
        assert len(failures) <= 1, f"{len(failures)} tracebacks logged"
    finally:
        steady.stop()
        hypoxic.stop()


def test_a_gateway_started_on_a_full_disk_runs_says_so_and_stops_cleanly(
    tmp_path: Path,
    data_disk: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    sim = Cms50Simulator(Generation.V46, "hypoxia", link=str(tmp_path / "usb-a"))
    sim.start()
    try:
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        fill(data_disk)
        gw = gateway_factory(config_for(tmp_path, data_disk, mosquitto.port, sim))
        sub.wait_for(lambda s: storage_alerts(s), 30, "a storage_failure alert")
        assert status(sub)["state"] == "degraded"
        sub.wait_for(lambda s: len(s.readings()) >= 4, 30, "readings while the disk is full")
        sub.wait_for(
            lambda s: [a for a in s.alerts() if a["kind"] == "low_spo2"], 60, "a low SpO2 alert"
        )
        # SIGTERM with the disk still full: a clean exit, and the retained status says
        # offline.
        assert gw.stop() == 0
        sub.wait_for(lambda s: status(s)["state"] == "offline", 10, "the offline status")
        assert not [r for r in gw.log_records() if "Traceback" in r.get("exception", "")][1:]
    finally:
        sim.stop()
