"""The gateway at a real load, in real time (the runs in bench/gateway_runs.py feed as
fast as the loop allows, which measures capacity, not what a real load costs).

Every device hands in its three readings (SpO2, pulse rate, perfusion index) once a
second, as a CMS50 reduced to 1 Hz does. Devices are not in step: device i of n hands
in at i/n of each second.

- `household`: 6 devices (18 readings/s, one bed), the broker up, no subscriber. The
  window starts after a warm-up and ends once `service.stop()` has returned: a clean
  stop checkpoints the write-ahead log into the main file, and a long run pays those
  writes too, periodically.
- `idle_latency`: 60 devices (180 readings/s, an eldercare floor) and a probe device
  handing in one reading every 50 ms, timed until it reaches a subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.common import (
    HOUSEHOLD_DEVICES,
    METRICS_PER_DEVICE,
    WARMUP_PROBES,
    ArrivalClock,
    Result,
    cpu_seconds,
    disk_write_bytes,
    latency_summary,
    probe_value,
    rss_now_mb,
)
from bench.gateway_runs import (
    PROBE_INTERVAL_S,
    RunningGateway,
    one_second_of_readings,
    running_gateway,
    until,
)
from drivers.measurement import Measurement, Metric

HOUSEHOLD_WARMUP_S = 3.0
IDLE_WARMUP_S = 2.0
SECONDS_PER_DAY = 86_400


class LiveFeed:
    """Each of the gateway's devices hands in one second's readings once a second, on a
    schedule kept from the start (never catching up in a burst), until cancelled."""

    def __init__(self, gw: RunningGateway) -> None:
        self.handed_in = 0
        #: How far behind its schedule feeding fell at worst.
        self.lag_max_s = 0.0
        self._gw = gw

    async def run(self) -> None:
        pool = one_second_of_readings()
        on_measurements = self._gw.service.pipeline.on_measurements
        addresses = self._gw.addresses
        start = time.perf_counter()
        for tick in itertools.count():
            second, i = divmod(tick, len(addresses))
            due = start + second + i / len(addresses)
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                self.lag_max_s = max(self.lag_max_s, now - due)
            readings = pool[(second + i) % len(pool)][:METRICS_PER_DEVICE]
            on_measurements(addresses[i], readings)
            self.handed_in += len(readings)


@contextlib.asynccontextmanager
async def feeding(gw: RunningGateway) -> AsyncIterator[LiveFeed]:
    """A `LiveFeed` running meanwhile; a feed that failed raises here."""
    feed = LiveFeed(gw)
    task = asyncio.create_task(feed.run())
    try:
        yield feed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _checkpoint(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def household(window_s: int, workdir: Path) -> Result:
    """Disk writes, CPU and memory of a household's gateway over `window_s` seconds of
    real-time feeding and the stop that follows."""
    async with running_gateway(workdir, beds=HOUSEHOLD_DEVICES, probe=False) as gw:
        health = gw.service.uplink.health
        async with feeding(gw) as feed:
            await asyncio.sleep(HOUSEHOLD_WARMUP_S)
            # The store's creation (its schema, the devices) is not a household's cost:
            # it goes to the main file now, so the stop's checkpoint copies only what
            # the window wrote.
            await asyncio.to_thread(_checkpoint, gw.service.config.store.path)
            accepted0, handed0 = gw.accepted.total(), feed.handed_in
            delivered0, messages0 = health.delivered_readings, health.published_messages
            disk0, cpu0, start = disk_write_bytes(), cpu_seconds(), time.perf_counter()
            await asyncio.sleep(window_s)
        handed_in = feed.handed_in - handed0
        delivered = health.delivered_readings - delivered0
        messages = health.published_messages - messages0
        rss_end_mb = rss_now_mb()
        await gw.stop()
        wall_s = time.perf_counter() - start
        disk = disk_write_bytes() - disk0
        cpu = cpu_seconds() - cpu0
        accepted = gw.accepted.total() - accepted0
        if gw.accepted.total() != feed.handed_in:
            raise RuntimeError(
                f"{feed.handed_in} readings handed in, {gw.accepted.total()} committed by"
                " the time the gateway stopped"
            )
        stored, payload_bytes = _stored_payloads(gw.service.config.store.path)
        lag_max_s = feed.lag_max_s
    per_reading = disk / max(1, accepted)
    return {
        "n": accepted,
        "feed_s": window_s,
        "window_s": wall_s,
        "handed_in": handed_in,
        "delivered": delivered,
        "messages": messages,
        "disk_bytes": disk,
        "bytes_per_reading": per_reading,
        "mb_per_day_per_bed": per_reading
        * HOUSEHOLD_DEVICES
        * METRICS_PER_DEVICE
        * SECONDS_PER_DAY
        / 1e6,
        "stored_readings": stored,
        "payload_bytes": payload_bytes,
        "cpu_percent": cpu / wall_s * 100,
        "rss_end_mb": rss_end_mb,
        "lag_max_s": lag_max_s,
        "stop_s": gw.stop_s,
        "stop_stalls": gw.stop_stalls,
    }


def _stored_payloads(path: Path) -> tuple[int, float]:
    """Readings in the store and their payloads' mean length in bytes (the JSON text
    stored, and published, per reading)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        count, total = db.execute(
            "SELECT count(*), sum(length(CAST(payload AS BLOB))) FROM readings"
        ).fetchone()
    return count, (total or 0) / max(1, count)


async def idle_latency(probes: int, workdir: Path) -> Result:
    """Latency of single readings, `on_measurements` to a subscriber, at a floor's load."""
    async with running_gateway(workdir) as gw:
        service = gw.service
        clock = await asyncio.to_thread(ArrivalClock(gw.broker.port, gw.probe.topic).start)
        try:
            async with feeding(gw) as feed:
                await asyncio.sleep(IDLE_WARMUP_S)
                cpu0, start = cpu_seconds(), time.perf_counter()
                sent: dict[float, float] = {}
                for k in range(probes + WARMUP_PROBES):  # as baseline B' does
                    due = start + k * PROBE_INTERVAL_S
                    if due > time.perf_counter():
                        await asyncio.sleep(due - time.perf_counter())
                    value = probe_value(k)
                    sent[value] = time.perf_counter()
                    service.pipeline.on_measurements(
                        gw.probe.address, [Measurement(Metric.PERFUSION_INDEX, value)]
                    )
                with contextlib.suppress(TimeoutError):
                    await until(lambda: len(clock.arrivals) >= len(sent), 5, "the last probes")
                cpu = cpu_seconds() - cpu0
                elapsed = time.perf_counter() - start
                lag_max_s = feed.lag_max_s
            latencies, lost = clock.latencies_ms(sent)
        finally:
            await asyncio.to_thread(clock.stop)
    return {
        "n": probes,
        "devices": len(gw.addresses),
        "readings_per_s": len(gw.addresses) * METRICS_PER_DEVICE,
        "latency": latency_summary(latencies, lost),
        "cpu_percent": cpu / elapsed * 100,
        "lag_max_s": lag_max_s,
        "stop_s": gw.stop_s,
        "stop_stalls": gw.stop_stalls,
    }
