"""A Pi boots with no time: readings are received `unsynced`, stamped by a wall clock
days or years off. When the clock is synchronised the township gets a `clock`
correction for the span, and what the outage kept from it (readings, alert events)
goes out corrected; what it already had stays as it was sent.

The gateway runs in-process, its wall clock, monotonic clock, clock state and boot
given by the test; a CMS50 that is never plugged in, whose spot-checks the test hands to
the pipeline; a real mosquitto that keeps the township server's persistent session
across the outage the test makes, so the undelivered part of the span is real backlog.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.measurement import Measurement, Metric, Quality
from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.contract.schemas import FILES
from gateway.model import ClockState
from gateway.service import GatewayService
from gateway.uplink import BrokerState
from tests.conftest import Subscriber, write_config
from tests.contract import assert_exactly, schema_for
from tests.gateway.helpers import DEVICE, PORT_PATH, Clocks, until

#: The true time when NTP answers.
REAL = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@dataclass
class PiClock(Clocks):
    """The Pi's clocks, and whether the kernel calls the wall clock synchronised."""

    synced: bool = False

    def state(self) -> ClockState:
        return ClockState.SYNCED if self.synced else ClockState.UNSYNCED

    def set_wall(self, wall: datetime) -> None:
        """Something steps the wall clock; the monotonic clock runs on."""
        self.wall = wall


@pytest.fixture
def township(tmp_path: Path) -> Iterator[tuple[Mosquitto, Subscriber]]:
    """A broker that keeps the server's persistent session across an outage."""
    broker = Mosquitto(persistent=True, workdir=tmp_path / "broker").start()
    server = Subscriber(broker.port, "vitals/v1/#", persistent_id="township-server").start()
    yield broker, server
    server.stop()
    broker.close()


def gateway(
    tmp_path: Path,
    broker: Mosquitto,
    clock: PiClock,
    boot: str,
    devices: str = DEVICE,
    extra: str = "",
) -> GatewayService:
    config = load_config(write_config(tmp_path, broker.port, devices=devices, extra=extra))
    return GatewayService(
        config, now=clock.now, monotonic=clock.monotonic, clock_state=clock.state, boot=boot
    )


async def spot_checks(service: GatewayService, clock: PiClock, *values: float) -> list[str]:
    """Hand the pipeline one SpO2 spot-check a second; returns their `received_at`, once
    they are committed."""
    accepted = service.pipeline.counters.get("readings_accepted", 0)
    stamps = []
    for value in values:
        clock.advance(1)
        measurement = Measurement(Metric.SPO2, value, frozenset({Quality.SPOT_CHECK}))
        service.pipeline.on_measurements(PORT_PATH, [measurement])
        stamps.append(clock.wall.isoformat(timespec="milliseconds"))
    total = accepted + len(values)
    await until(
        lambda: service.pipeline.counters.get("readings_accepted", 0) == total, what="committed"
    )
    return stamps


async def delivered(service: GatewayService, n: int) -> None:
    """Until `n` readings are marked delivered (their PUBACKs settled): none is sent again."""
    await until(lambda: service.uplink.health.delivered_readings == n, what="delivered")


async def outage(service: GatewayService, broker: Mosquitto) -> None:
    broker.stop()
    await until(lambda: service.uplink.health.state is not BrokerState.CONNECTED, what="drop")


async def synchronise(service: GatewayService, clock: PiClock, at: datetime) -> None:
    """NTP steps the clock and the kernel calls it synchronised; returns once the
    gateway has seen it and queued its correction."""
    clock.set_wall(at)
    clock.synced = True
    await until(lambda: service.clock.state is ClockState.SYNCED, what="the clock seen synced")
    await until(lambda: queued(service, "clock"), what="the correction queued")


def queued(service: GatewayService, topic: str) -> list[dict[str, Any]]:
    """The messages queued in the store for `topic`, read as another process would."""
    store = f"file:{service.config.store.path}?mode=ro"
    with contextlib.closing(sqlite3.connect(store, uri=True)) as db:
        rows = db.execute("SELECT payload FROM messages WHERE topic = ?", (topic,)).fetchall()
    return [json.loads(payload) for (payload,) in rows]


def back(broker: Mosquitto, server: Subscriber) -> None:
    broker.start()
    server.reconnect()


def received(server: Subscriber) -> dict[int, dict[str, Any]]:
    """The readings the server has, by seq; each reading arrived once."""
    readings = server.readings()
    assert len({r["id"] for r in readings}) == len(readings), "a reading arrived twice"
    by_seq = {r["seq"]: r for r in readings}
    assert len(by_seq) == len(readings), "two readings share a seq"
    return by_seq


def corrections(server: Subscriber) -> list[dict[str, Any]]:
    return [payload for _, payload, _ in server.snapshot("/clock")]


def shifted(stamp: str, offset: timedelta) -> str:
    return (datetime.fromisoformat(stamp) + offset).isoformat(timespec="milliseconds")


def assert_all_in_the_contract(server: Subscriber) -> None:
    for topic, payload, _ in server.snapshot():
        assert_exactly(FILES[schema_for(topic)], payload)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "booted_at",
    [datetime(2000, 1, 1, tzinfo=UTC), REAL + timedelta(days=2, hours=3)],
    ids=["forward-from-2000", "back-by-two-days"],
)
async def test_the_span_received_unsynced_is_corrected_when_the_clock_is_synchronised(
    tmp_path: Path, township: tuple[Mosquitto, Subscriber], booted_at: datetime
) -> None:
    broker, server = township
    clock = PiClock(wall=booted_at)
    service = gateway(tmp_path, broker, clock, "boot-1")
    await service.start()
    try:
        sent = await spot_checks(service, clock, 97, 96, 98)  # seqs 1-3
        await delivered(service, 3)
        await outage(service, broker)
        kept = await spot_checks(service, clock, 97, 90)  # 4, and 5 raises low_spo2
        step = REAL - clock.wall
        await synchronise(service, clock, REAL)
        back(broker, server)
        await until(lambda: len(server.readings()) == 5 and server.alerts(), what="the backlog")
        await until(
            lambda: any(p["alerts"] for _, p, _ in server.snapshot("/alerts/active")),
            what="the open alert in alerts/active",
        )
        after = await spot_checks(service, clock, 97)  # 6: synced, clears the alert
        await until(lambda: len(server.alerts()) == 2, what="the alert cleared")
    finally:
        await service.stop()

    offset_ms = int(step / timedelta(milliseconds=1))
    assert corrections(server) == [
        {
            "gateway": "gw-test",
            "from_seq": 1,
            "to_seq": 5,
            "offset_ms": offset_ms,
            "synced_at": REAL.isoformat(timespec="milliseconds"),
        }
    ]
    readings = received(server)
    assert sorted(readings) == [1, 2, 3, 4, 5, 6]
    # Delivered before the synchronisation: as sent (the server applies the offset).
    assert [(readings[s]["received_at"], readings[s]["clock"]) for s in (1, 2, 3)] == [
        (at, "unsynced") for at in sent
    ]
    # Kept by the outage: sent corrected.
    assert [(readings[s]["received_at"], readings[s]["clock"]) for s in (4, 5)] == [
        (shifted(at, step), "corrected") for at in kept
    ]
    assert (readings[6]["received_at"], readings[6]["clock"]) == (after[0], "synced")
    raised, cleared = server.alerts()
    assert (raised["kind"], raised["state"]) == ("low_spo2", "raised")
    assert raised["raised_at"] == raised["updated_at"] == shifted(kept[1], step)
    (active,) = [a for _, p, _ in server.snapshot("/alerts/active") for a in p["alerts"]]
    assert active["raised_at"] == shifted(kept[1], step)
    assert (cleared["id"], cleared["state"]) == (raised["id"], "cleared")
    assert cleared["raised_at"] == shifted(kept[1], step)
    assert cleared["cleared_at"] == after[0]
    assert_all_in_the_contract(server)


@pytest.mark.asyncio
async def test_a_clock_synchronised_from_the_start_is_never_corrected_even_when_it_steps(
    tmp_path: Path, township: tuple[Mosquitto, Subscriber]
) -> None:
    broker, server = township
    clock = PiClock(wall=REAL, synced=True)
    service = gateway(tmp_path, broker, clock, "boot-1")
    await service.start()
    try:
        await spot_checks(service, clock, 97, 96)
        clock.set_wall(clock.wall + timedelta(hours=1))  # still synchronised
        await spot_checks(service, clock, 98)
        await until(lambda: len(server.readings()) == 3, what="the readings delivered")
    finally:
        await service.stop()
    assert [r["clock"] for r in server.readings()] == ["synced"] * 3
    assert corrections(server) == [] and queued(service, "clock") == []


@pytest.mark.asyncio
async def test_a_span_across_a_restart_of_the_gateway_is_corrected_whole(
    tmp_path: Path, township: tuple[Mosquitto, Subscriber]
) -> None:
    broker, server = township
    clock = PiClock(wall=datetime(2000, 1, 1, tzinfo=UTC))
    first = gateway(tmp_path, broker, clock, "boot-1")
    await first.start()
    try:
        sent = await spot_checks(first, clock, 97, 96)  # 1-2
        await delivered(first, 2)
        await outage(first, broker)
        kept = await spot_checks(first, clock, 98, 97)  # 3-4
    finally:
        await first.stop()
    clock.advance(30)  # the same boot: the monotonic clock runs on
    second = gateway(tmp_path, broker, clock, "boot-1")
    await second.start()
    try:
        kept += await spot_checks(second, clock, 96, 95)  # 5-6
        step = REAL - clock.wall
        await synchronise(second, clock, REAL)
        back(broker, server)
        await until(lambda: len(server.readings()) == 6 and corrections(server), what="the backlog")
    finally:
        await second.stop()

    (correction,) = corrections(server)
    assert (correction["from_seq"], correction["to_seq"]) == (1, 6)
    assert correction["offset_ms"] == int(step / timedelta(milliseconds=1))
    readings = received(server)
    assert sorted(readings) == [1, 2, 3, 4, 5, 6]
    assert [readings[s]["received_at"] for s in (1, 2)] == sent
    assert [(readings[s]["received_at"], readings[s]["clock"]) for s in (3, 4, 5, 6)] == [
        (shifted(at, step), "corrected") for at in kept
    ]
    assert_all_in_the_contract(server)


@pytest.mark.asyncio
async def test_what_an_earlier_boot_stamped_unsynced_stays_as_it_was_stamped(
    tmp_path: Path, township: tuple[Mosquitto, Subscriber]
) -> None:
    """The monotonic clock starts again at boot, and a Pi without a battery clock boots
    at the same wrong time again: the earlier boot's span cannot be corrected, nor
    told from the new one by its times. Its readings and its alert times stay as
    stamped; the new boot's are corrected."""
    broker, server = township
    booted_at = datetime(2000, 1, 1, tzinfo=UTC)
    clock = PiClock(wall=booted_at)
    first = gateway(tmp_path, broker, clock, "boot-1")
    await first.start()
    try:
        await outage(first, broker)
        earlier = await spot_checks(first, clock, 97, 90)  # 1-2: 2 raises low_spo2
    finally:
        await first.stop()
    clock = PiClock(wall=booted_at, mono=5.0)  # rebooted
    second = gateway(tmp_path, broker, clock, "boot-2")
    await second.start()
    try:
        kept = await spot_checks(second, clock, 94, 94, 85)  # 3-5: 5 updates the alert
        step = REAL - clock.wall
        await synchronise(second, clock, REAL)
        back(broker, server)
        await until(
            lambda: len(server.readings()) == 5 and len(server.alerts()) == 2, what="the backlog"
        )
    finally:
        await second.stop()

    (correction,) = corrections(server)
    assert (correction["from_seq"], correction["to_seq"]) == (3, 5)
    assert correction["offset_ms"] == int(step / timedelta(milliseconds=1))
    readings = received(server)
    assert sorted(readings) == [1, 2, 3, 4, 5]
    assert [(readings[s]["received_at"], readings[s]["clock"]) for s in (1, 2)] == [
        (at, "unsynced") for at in earlier
    ]
    assert [(readings[s]["received_at"], readings[s]["clock"]) for s in (3, 4, 5)] == [
        (shifted(at, step), "corrected") for at in kept
    ]
    raised, updated = server.alerts()
    assert (raised["state"], raised["raised_at"]) == ("raised", earlier[1])
    assert (updated["id"], updated["state"]) == (raised["id"], "updated")
    assert updated["raised_at"] == earlier[1]
    assert updated["updated_at"] == shifted(kept[2], step)
    assert_all_in_the_contract(server)


@pytest.mark.asyncio
async def test_a_clock_set_before_the_kernel_calls_it_synchronised_is_corrected_per_run(
    tmp_path: Path, township: tuple[Mosquitto, Subscriber]
) -> None:
    """The clock is stepped (to the true time) while still unsynchronised, and called
    synchronised later: the readings before the step and those after it have different
    offsets, one correction each."""
    broker, server = township
    clock = PiClock(wall=datetime(2000, 1, 1, tzinfo=UTC))
    service = gateway(tmp_path, broker, clock, "boot-1")
    await service.start()
    try:
        await outage(service, broker)
        before = await spot_checks(service, clock, 97, 96)  # 1-2
        step = REAL - clock.wall
        clock.set_wall(REAL)
        stepped = await spot_checks(service, clock, 98, 97)  # 3-4: right, still unsynced
        clock.synced = True
        await until(lambda: queued(service, "clock"), what="the correction queued")
        back(broker, server)
        await until(
            lambda: len(server.readings()) == 4 and len(corrections(server)) == 2,
            what="the backlog",
        )
    finally:
        await service.stop()

    synced_at = REAL + timedelta(seconds=2)
    assert corrections(server) == [
        {
            "gateway": "gw-test",
            "from_seq": first,
            "to_seq": last,
            "offset_ms": offset_ms,
            "synced_at": synced_at.isoformat(timespec="milliseconds"),
        }
        for first, last, offset_ms in [(1, 2, int(step / timedelta(milliseconds=1))), (3, 4, 0)]
    ]
    readings = received(server)
    assert [readings[s]["received_at"] for s in (1, 2, 3, 4)] == [
        *(shifted(at, step) for at in before),
        *stepped,
    ]
    assert {r["clock"] for r in readings.values()} == {"corrected"}
    assert_all_in_the_contract(server)


@pytest.mark.asyncio
async def test_a_time_stamped_after_the_synchronisation_is_never_taken_for_the_spans(
    tmp_path: Path, township: tuple[Mosquitto, Subscriber]
) -> None:
    """The clock was 10 s ahead for 30 s: the true time at the synchronisation is within
    the span's times on the old clock. An alert the rules' first tick after it raises
    (the oximeter silent for 15 s) is stamped with the true time and stays so."""
    broker, server = township
    clock = PiClock(wall=REAL - timedelta(seconds=20))
    service = gateway(
        tmp_path,
        broker,
        clock,
        "boot-1",
        devices=DEVICE + "report_interval_s = 5\n",
        extra="[rules.device_silent]\nmin_silence_s = 10\n",
    )
    await service.start()
    try:
        await outage(service, broker)
        await spot_checks(service, clock, *[94] * 14)  # heard each second until REAL - 6 s
        clock.advance(16)  # silent for 16 s, and synchronised, before the next tick
        clock.set_wall(REAL)
        clock.synced = True
        await until(lambda: queued(service, "clock"), what="the correction queued")
        back(broker, server)
        await until(lambda: server.alerts(), what="the device_silent alert")
    finally:
        await service.stop()

    (correction,) = corrections(server)
    assert correction["offset_ms"] == -10_000
    (silent,) = server.alerts()
    assert (silent["kind"], silent["raised_at"]) == (
        "device_silent",
        REAL.isoformat(timespec="milliseconds"),
    )


@pytest.mark.asyncio
async def test_readings_read_ahead_of_a_full_window_go_out_corrected(
    tmp_path: Path, township: tuple[Mosquitto, Subscriber]
) -> None:
    """The uplink reads ahead of what it can send at once; a correction coming while
    readings wait there must still reach them: they go out corrected, not as read."""
    broker, server = township
    clock = PiClock(wall=datetime(2000, 1, 1, tzinfo=UTC))
    config = load_config(
        write_config(
            tmp_path,
            broker.port,
            devices=DEVICE,
            mqtt_extra="max_inflight = 2\nreadings_per_message = 1",
        )
    )
    service = GatewayService(
        config, now=clock.now, monotonic=clock.monotonic, clock_state=clock.state, boot="boot-1"
    )
    await service.start()
    try:
        health = service.uplink.health
        await until(lambda: health.published_messages >= 4 and not health.inflight, what="up")
        broker.pause()  # no PUBACK comes: two messages in flight, the third reading waits
        try:
            stamps = await spot_checks(service, clock, 97, 96, 98)  # seqs 1-3, one batch
            # A reading in flight and the window full: what was read with it waits.
            await until(
                lambda: (
                    health.inflight >= 2
                    and any(f.kind == "live" for f in service.uplink._inflight.values())
                ),
                what="the window full",
            )
            step = REAL - clock.wall
            await synchronise(service, clock, REAL)
        finally:
            broker.resume()
        await until(lambda: len(server.readings()) == 3 and corrections(server), what="sent")
    finally:
        await service.stop()

    readings = received(server)
    # Seq 1 was in flight (with seq 2, or a status), seq 3 waited in the read-ahead.
    assert (readings[1]["received_at"], readings[1]["clock"]) == (stamps[0], "unsynced")
    assert (readings[3]["received_at"], readings[3]["clock"]) == (
        shifted(stamps[2], step),
        "corrected",
    )
