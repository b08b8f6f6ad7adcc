"""What a running gateway writes to its store about devices and counters, and when:
a change a restart must find at once, last values and counters at most once a minute
(fewer SD-card writes), and everything at a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.listener import LinkState
from drivers.measurement import Measurement, Metric
from gateway.broker import Mosquitto
from gateway.devices import ROUTINE_SAVE_EVERY_S
from gateway.service import GatewayService
from gateway.web.live import Topic
from tests.conftest import write_config
from tests.gateway.helpers import DEVICE, PORT_PATH, Clocks, running, until

DEVICE_ID = "cms50-usb-absent-cms50"


def stored(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of the store as another process sees them (its own connection)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()


def stored_device(service: GatewayService) -> dict[str, Any]:
    rows = stored(service.config.store.path, "SELECT record FROM devices WHERE id = ?", DEVICE_ID)
    return json.loads(rows[0][0]) if rows else {}


def stored_counters(service: GatewayService) -> dict[str, int]:
    return dict(stored(service.config.store.path, "SELECT name, value FROM counters"))


class PageWatch:
    """What an open page hears: the topics of each change, as the service tells them."""

    def __init__(self) -> None:
        self.devices_told = 0

    async def follow(self, service: GatewayService) -> None:
        async for topics in service.live.changes():
            if Topic.DEVICES.value in topics:
                self.devices_told += 1


@contextlib.asynccontextmanager
async def watched(service: GatewayService) -> AsyncIterator[PageWatch]:
    watch = PageWatch()
    task = asyncio.create_task(watch.follow(service))
    try:
        await until(lambda: service.live.listeners == 1, what="the page listening")
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def told_twice(service: GatewayService, watch: PageWatch) -> None:
    """The page told of a value, then of another in a later housekeeping tick: whatever
    the first tick saved, it has saved by then."""
    await told_of(service, watch, -60)
    await told_of(service, watch, -61)


async def told_of(service: GatewayService, watch: PageWatch, rssi: int) -> None:
    told = watch.devices_told
    service.pipeline.on_signal(PORT_PATH, rssi)
    await until(lambda: watch.devices_told > told, what="the page told of the device")


@pytest.fixture
def config_path(tmp_path: Path, mosquitto: Mosquitto) -> Path:
    return write_config(tmp_path, mosquitto.port, devices=DEVICE)


async def settled(service: GatewayService) -> None:
    """The session on the absent port has said it is unreachable, and that is saved."""
    await until(lambda: stored_device(service).get("link") == "unreachable", what="link saved")


@pytest.mark.asyncio
async def test_values_alone_are_saved_once_a_minute_and_the_page_hears_at_once(
    config_path: Path,
) -> None:
    clocks = Clocks()
    async with running(config_path, clocks) as service, watched(service) as watch:
        await settled(service)
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 91)])
        await told_twice(service, watch)
        assert service.device_records()[0]["last_values"]["spo2"]["value"] == 91
        assert stored_device(service)["last_values"] == {}
        assert stored_device(service)["rssi"] is None
        # The counters move with every reading: not saved within the minute either.
        await until(lambda: service.pipeline.counters.get("readings_accepted") == 1)
        await told_twice(service, watch)
        assert "readings_accepted" not in stored_counters(service)

        clocks.advance(ROUTINE_SAVE_EVERY_S + 1)
        await until(
            lambda: stored_device(service)["last_values"].get("spo2", {}).get("value") == 91,
            what="last values saved after a minute",
        )
        assert stored_device(service)["rssi"] == -61
        await until(
            lambda: stored_counters(service).get("readings_accepted") == 1,
            what="counters saved after a minute",
        )


@pytest.mark.asyncio
async def test_a_link_change_is_saved_at_the_next_tick(config_path: Path) -> None:
    """The test's duration clock stands still: only a change saved at once is saved."""
    async with running(config_path, Clocks()) as service:
        await settled(service)
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.PULSE_RATE, 72)])
        service.pipeline.on_link_state(PORT_PATH, LinkState.CONNECTED, "test line")
        await until(lambda: stored_device(service).get("link") == "connected", what="link saved")
        device = stored_device(service)
        assert device["link_detail"] == "test line"
        # What was known by then goes with it.
        assert device["last_values"]["pulse_rate"]["value"] == 72


@pytest.mark.asyncio
async def test_a_battery_change_is_saved_at_the_next_tick(config_path: Path) -> None:
    async with running(config_path, Clocks()) as service:
        await settled(service)
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.BATTERY, 15)])
        await until(lambda: stored_device(service).get("battery") == 15, what="battery saved")


@pytest.mark.asyncio
async def test_a_clean_stop_saves_last_values_and_counters_and_totals_go_on(
    config_path: Path,
) -> None:
    clocks = Clocks()
    async with running(config_path, clocks) as service:
        await settled(service)
        service.pipeline.on_measurements(
            PORT_PATH, [Measurement(Metric.SPO2, 95), Measurement(Metric.PULSE_RATE, 64)]
        )
        service.pipeline.on_signal(PORT_PATH, -70)
        await until(lambda: service.pipeline.counters.get("readings_accepted") == 2)
    device = stored_device(service)
    assert device["last_values"]["spo2"]["value"] == 95
    assert device["last_values"]["pulse_rate"]["value"] == 64
    assert device["rssi"] == -70 and device["last_seen"] is not None
    assert stored_counters(service)["readings_accepted"] == 2

    async with running(config_path, clocks) as again:
        (record,) = again.device_records()
        assert record["last_values"]["spo2"]["value"] == 95  # restored
        again.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 96)])
        await until(lambda: again.pipeline.counters.get("readings_accepted") == 1)
    assert stored_counters(again)["readings_accepted"] == 3
    assert stored_device(again)["last_values"]["spo2"]["value"] == 96
