"""The gateway measured in-process, as tests/gateway/test_uplink.py runs it: a real
`GatewayService` (store, pipeline, rules, uplink, web) against its own mosquitto.

Devices are CMS50 oximeters configured on serial ports that do not exist; their
addresses are used to hand measurements straight to `service.pipeline.on_measurements`,
as a device session does. 60 devices (an eldercare floor) each hand in one second's
worth of readings per burst: SpO2, pulse rate and perfusion index. (The runs at a real
load, in real time, are in bench/live_runs.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    FLOOR_DEVICES,
    GATEWAY_ID,
    METRICS_PER_DEVICE,
    TOPIC_ROOT,
    TOWNSHIP,
    ArrivalClock,
    Result,
    cpu_seconds,
    latency_summary,
    probe_value,
    start_broker,
)
from drivers.measurement import Measurement, Metric
from gateway.broker import Mosquitto, free_port
from gateway.config import parse_config
from gateway.pipeline import QUEUE_MAX, Pipeline
from gateway.service import GatewayService
from gateway.uplink import BrokerState

PROBE_INTERVAL_S = 0.05
_PORT = "/dev/serial/by-id/usb-bench-absent-{}"  # never opened successfully


class AcceptedCounter:
    """`readings_accepted` since this counter was made (the pipeline keeps totals)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._start = self._now()

    def _now(self) -> int:
        return self._pipeline.counters.get("readings_accepted", 0)

    def total(self) -> int:
        return self._now() - self._start


@dataclass
class Probe:
    """The device whose single readings are timed, and the topic they arrive on."""

    address: str
    topic: str


@dataclass
class RunningGateway:
    service: GatewayService
    broker: Mosquitto
    addresses: list[str]
    accepted: AcceptedCounter
    configured_probe: Probe | None
    #: How long `service.stop()` took, and how often it made no progress for 3 s.
    stop_s: float = 0.0
    stop_stalls: int = 0
    stopped: bool = False

    @property
    def probe(self) -> Probe:
        if self.configured_probe is None:
            raise RuntimeError("this gateway run has no probe device")
        return self.configured_probe

    async def stop(self) -> None:
        """`service.stop()` once (a run that measures past the stop calls it itself)."""
        if self.stopped:
            return
        self.stopped = True
        stopping = time.perf_counter()
        self.stop_stalls = await stop_with_watchdog(self.service)
        self.stop_s = time.perf_counter() - stopping


#: Set by `python -m bench --sync-interval-s S`: the gateway runs' `store.sync_interval_s`.
SYNC_INTERVAL_ENV = "BENCH_SYNC_INTERVAL_S"


def _store_settings() -> dict[str, dict[str, float]]:
    interval = os.environ.get(SYNC_INTERVAL_ENV)
    return {} if interval is None else {"store": {"sync_interval_s": float(interval)}}


@contextlib.asynccontextmanager
async def running_gateway(
    workdir: Path, beds: int = FLOOR_DEVICES, probe: bool = True
) -> AsyncIterator[RunningGateway]:
    """A fresh mosquitto and a gateway with `beds` devices (and a probe device), connected."""
    broker = await asyncio.to_thread(start_broker, workdir / "broker")
    try:
        addresses = [_PORT.format(f"bed-{i:02d}") for i in range(beds)]
        probe_address = _PORT.format("probe")
        devices = [
            {"kind": "cms50", "port": address, "subject": f"bed-{i:02d}"}
            for i, address in enumerate([*addresses, probe_address] if probe else addresses)
        ]
        config = parse_config(
            {
                "gateway": {"id": GATEWAY_ID, "township": TOWNSHIP, "data_dir": str(workdir)},
                "mqtt": {"url": broker.url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
                "web": {"listen": f"127.0.0.1:{free_port()}"},
                "devices": devices,
                **_store_settings(),
            },
            base_dir=workdir,
        )
        service = GatewayService(config)
        await service.start()
        gw = RunningGateway(
            service,
            broker,
            addresses,
            AcceptedCounter(service.pipeline),
            Probe(probe_address, f"{TOPIC_ROOT}/readings/{config.devices[-1].device_id}")
            if probe
            else None,
        )
        try:
            await until(
                lambda: service.uplink.health.state is BrokerState.CONNECTED, 15, "connected"
            )
            yield gw
        finally:
            await gw.stop()
    finally:
        broker.close()


async def stop_with_watchdog(service: GatewayService) -> int:
    """`service.stop()`, noting how often it made no progress for 3 s (reported as a
    finding) and giving up after 30 s.

    A guard: before a15b7fe the uplink waited in `asyncio.wait_for`, which on Python
    3.11 can swallow a cancellation, and about one stop in five hung for good (3 of 15
    here). A regression shows up as stalls in the report, or as an error, instead of a
    run that never ends.
    """
    stopping = asyncio.ensure_future(service.stop())
    stalls = 0
    while True:
        done, _ = await asyncio.wait({stopping}, timeout=3.0)
        if done:
            stopping.result()
            return stalls
        stalls += 1
        if stalls >= 10:
            stopping.cancel()
            raise RuntimeError("GatewayService.stop() does not finish")


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.002)


def _timeout(n: int) -> float:
    return max(60.0, n / 300)  # far slower than any figure ever measured here


def one_second_of_readings() -> list[list[Measurement]]:
    """What a CMS50 reduced to 1 Hz hands in per second, with plausible variation (never
    low enough to raise an alert)."""
    return [
        [
            Measurement(Metric.SPO2, 95 + i % 5),
            Measurement(Metric.PULSE_RATE, 60 + i % 31),
            Measurement(Metric.PERFUSION_INDEX, round(1 + (i % 40) / 10, 1)),
        ]
        for i in range(97)
    ]


async def feed(gw: RunningGateway, n: int) -> None:
    """n readings: bursts in which each of the 60 devices hands in one second's worth,
    yielding to the event loop between bursts (as device sessions' callbacks would).
    Faster than any floor: it holds back while the pipeline's queue is nearly full,
    which would refuse what comes past it (a capacity is measured, not a refusal)."""
    pool = one_second_of_readings()
    pipeline = gw.service.pipeline
    on_measurements = pipeline.on_measurements
    fed = burst = 0
    while fed < n:
        while pipeline.queued > QUEUE_MAX - len(gw.addresses) * METRICS_PER_DEVICE:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        for i, address in enumerate(gw.addresses):
            take = min(METRICS_PER_DEVICE, n - fed)
            on_measurements(address, pool[(burst + i) % len(pool)][:take])
            fed += take
            if fed >= n:
                break
        burst += 1
        await asyncio.sleep(0)


async def ingest(n: int, workdir: Path) -> Result:
    """Readings/s from the first `on_measurements` until all n are committed."""
    async with running_gateway(workdir) as gw:
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        await feed(gw, n)
        fed_s = time.perf_counter() - start
        await until(lambda: gw.accepted.total() >= n, _timeout(n), f"{n} readings accepted")
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds() - cpu0
        if gw.accepted.total() != n:
            raise RuntimeError(f"readings_accepted is {gw.accepted.total()}, expected {n}")
        result: Result = {
            "n": n,
            "rate": n / elapsed,
            "seconds": elapsed,
            "feed_s": fed_s,
            "cpu_us_per_reading": cpu / n * 1e6,
        }
    return {**result, "stop_s": gw.stop_s, "stop_stalls": gw.stop_stalls}


async def end_to_end(n: int, workdir: Path) -> Result:
    """Readings/s from the first `on_measurements` until all n are PUBACK'd."""
    async with running_gateway(workdir) as gw:
        health = gw.service.uplink.health
        messages0 = health.published_messages
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        await feed(gw, n)
        accepted_s: float | None = None
        deadline = time.monotonic() + _timeout(n)
        while health.delivered_readings < n:
            if accepted_s is None and gw.accepted.total() >= n:
                accepted_s = time.perf_counter() - start
            if time.monotonic() > deadline:
                raise TimeoutError(f"{health.delivered_readings} of {n} delivered")
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds() - cpu0
        messages = health.published_messages - messages0
        result: Result = {
            "n": n,
            "rate": n / elapsed,
            "seconds": elapsed,
            "accepted_s": accepted_s if accepted_s is not None else elapsed,
            "messages": messages,
            "readings_per_message": n / max(1, messages),
            "cpu_us_per_reading": cpu / n * 1e6,
        }
    return {**result, "stop_s": gw.stop_s, "stop_stalls": gw.stop_stalls}


async def backlog_drain(n: int, workdir: Path) -> Result:
    """n readings accepted while the broker is down; then the broker comes back and the
    backlog drains. Meanwhile a probe device hands in one live reading every 50 ms, and
    a subscriber on another thread notes when each arrives."""
    async with running_gateway(workdir) as gw:
        service = gw.service
        health = service.uplink.health
        store = service.store
        await asyncio.to_thread(gw.broker.stop)
        await until(lambda: health.state is not BrokerState.CONNECTED, 15, "the broker outage")
        fill_start = time.perf_counter()
        await feed(gw, n)
        await until(lambda: gw.accepted.total() >= n, _timeout(n), "the backlog accepted")
        fill_s = time.perf_counter() - fill_start
        last_backlog_seq = await store.call(store.store.last_seq)
        messages0 = health.published_messages
        delivered0 = health.delivered_readings

        start = time.perf_counter()
        await asyncio.to_thread(gw.broker.start)
        clock = await asyncio.to_thread(ArrivalClock(gw.broker.port, gw.probe.topic).start)
        try:
            # The first message on a connection is the status, published once the uplink
            # has fixed where live readings begin: probes from now on are live.
            await until(lambda: health.published_messages > messages0, 30, "reconnected")
            connected = time.perf_counter()
            cpu0 = cpu_seconds()
            sent: dict[float, float] = {}
            next_probe = connected
            next_check = 0.0
            deadline = time.monotonic() + _timeout(n)
            while True:
                now = time.perf_counter()
                if now >= next_probe:
                    value = probe_value(len(sent))
                    sent[value] = time.perf_counter()
                    service.pipeline.on_measurements(
                        gw.probe.address, [Measurement(Metric.PERFUSION_INDEX, value)]
                    )
                    next_probe += PROBE_INTERVAL_S
                if health.delivered_readings - delivered0 >= n and now >= next_check:
                    next_check = now + 0.01
                    left = await store.call(store.store.undelivered, 0, 1, last_backlog_seq)
                    if not left:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"backlog not drained: {health.delivered_readings} sent")
                await asyncio.sleep(0.002)
            done = time.perf_counter()
            cpu = cpu_seconds() - cpu0
            messages = health.published_messages - messages0
            with contextlib.suppress(TimeoutError):
                await until(lambda: len(clock.arrivals) >= len(sent), 5, "the last probes")
            latencies, lost = clock.latencies_ms(sent)
        finally:
            await asyncio.to_thread(clock.stop)
        result: Result = {
            "n": n,
            "fill_s": fill_s,
            "seconds_from_broker_start": done - start,
            "reconnect_s": connected - start,
            "drain_s": done - connected,
            "rate": n / (done - connected),
            "messages": messages,
            "readings_per_message": (health.delivered_readings - delivered0) / max(1, messages),
            "cpu_us_per_reading": cpu / n * 1e6,
            "latency": latency_summary(latencies, lost),
        }
    return {**result, "stop_s": gw.stop_s, "stop_stalls": gw.stop_stalls}
