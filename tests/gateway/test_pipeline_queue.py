"""The pipeline's queue to the store is bounded, and what it accepted reaches SQLite
within `store.sync_interval_s` and at a clean stop. A real gateway in-process, a real
mosquitto, a real SQLite file."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from drivers.measurement import Measurement, Metric
from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.pipeline import QUEUE_MAX
from gateway.service import GatewayService
from gateway.store_unsynced import unsynced_paths
from tests.conftest import Subscriber, write_config
from tests.gateway.helpers import DEVICE, PORT_PATH, until


def stored(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])


@pytest.mark.asyncio
async def test_a_burst_beyond_the_queue_is_refused_and_counted_not_held(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(write_config(tmp_path, mosquitto.port, devices=DEVICE))
    service = GatewayService(config)
    await service.start()
    try:
        # All in one turn of the event loop: nothing is handed to the store meanwhile.
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 97)] * QUEUE_MAX)
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 97)] * 500)
        assert service.pipeline.counters["readings_refused"] == 500
        await until(
            lambda: service.pipeline.counters.get("readings_accepted") == QUEUE_MAX,
            60,
            "the queue handed to the store",
        )
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 97)])
        await until(lambda: service.pipeline.counters["readings_accepted"] == QUEUE_MAX + 1)
    finally:
        await service.stop()
    assert stored(config.store.path) == QUEUE_MAX + 1
    assert "readings refused: the queue to the store is full" in caplog.text


@pytest.mark.asyncio
async def test_readings_reach_sqlite_within_the_sync_interval_and_all_at_a_stop(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    path = write_config(
        tmp_path, mosquitto.port, devices=DEVICE, extra="[store]\nsync_interval_s = 0.2\n"
    )
    config = load_config(path)
    sub = Subscriber(mosquitto.port, "vitals/v1/#").start()
    service = GatewayService(config)
    await service.start()
    try:
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 97)] * 3)
        await until(lambda: stored(config.store.path) == 3, 10, "the readings in SQLite")
        await until(lambda: len(sub.readings()) == 3, 10, "the readings at the township")
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.PULSE_RATE, 70)] * 7)
    finally:
        await service.stop()
        sub.stop()
    assert stored(config.store.path) == 10
    assert all(p.stat().st_size == 0 for p in unsynced_paths(config.store.path) if p.exists())
