"""What the township tests share: a consumer in this process or in its own, a real
gateway service in this process, and looks into the township's database."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from drivers.measurement import Measurement, Metric
from gateway.config import MqttSection, load_config
from gateway.service import GatewayService
from gateway.township.consumer import ConsumerSettings, TownshipConsumer
from gateway.township.store import TownshipStore, alerts, readings, seq_gaps
from tests.conftest import REPO, ChildProcess, write_config
from tests.gateway.helpers import DEVICE, PORT_PATH, until

TOWN = "testtown"
GW = "gw-test"


def mqtt_settings(port: int, **login: Any) -> MqttSection:
    """Fast reconnects; `login`: `username` and `password_file`."""
    return MqttSection(
        url=f"mqtt://127.0.0.1:{port}", reconnect_min_s=0.1, reconnect_max_s=0.5, **login
    )


@contextlib.asynccontextmanager
async def consuming(
    port: int, database: str, name: str = "1", repair_after_s: float = 0.0, **login: Any
) -> AsyncIterator[TownshipConsumer]:
    """A consumer in this event loop, subscribed when this yields; it asks for gaps
    again only with `repair_after_s`."""
    store = TownshipStore(database)
    mqtt = mqtt_settings(port, **login)
    consumer = TownshipConsumer(
        ConsumerSettings(mqtt, TOWN, name=name, repair_after_s=repair_after_s), store
    )
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: consumer.connected, what="the consumer subscribed")
        yield consumer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()


def gateway_config(directory: Path, port: int, gateway_id: str = GW, mqtt_extra: str = "") -> Path:
    """The configuration of a gateway with a CMS50 that is never plugged in."""
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(
        directory, port, devices=DEVICE, gateway_id=gateway_id, mqtt_extra=mqtt_extra
    )


@contextlib.asynccontextmanager
async def gateway(
    directory: Path, port: int, gateway_id: str = GW, mqtt_extra: str = "", **clocks: Any
) -> AsyncIterator[GatewayService]:
    """A real gateway service with a CMS50 whose measurements the test hands over."""
    config = gateway_config(directory, port, gateway_id, mqtt_extra)
    service = GatewayService(load_config(config), **clocks)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def measure(service: GatewayService, *measurements: Measurement) -> None:
    """Hand the gateway measurements and wait until it committed them."""
    counters = service.pipeline.counters
    total = counters.get("readings_accepted", 0) + len(measurements)
    service.pipeline.on_measurements(PORT_PATH, measurements)
    await until(lambda: counters.get("readings_accepted", 0) == total, what="committed")


async def spo2(service: GatewayService, n: int, value: float = 97) -> None:
    await measure(service, *(Measurement(Metric.SPO2, value) for _ in range(n)))


def seqs(store: TownshipStore, gateway_id: str = GW) -> list[int]:
    """The seqs stored for the gateway, in order (a seq stored twice would show twice)."""
    query = sa.select(readings.c.seq).where(readings.c.gateway == gateway_id)
    return [row.seq for row in store.rows(query.order_by(readings.c.seq))]


def gaps(store: TownshipStore, gateway_id: str = GW) -> list[tuple[int, int]]:
    query = sa.select(seq_gaps.c.from_seq, seq_gaps.c.to_seq).where(
        seq_gaps.c.gateway == gateway_id
    )
    rows = store.rows(query.order_by(seq_gaps.c.from_seq))
    return [(row.from_seq, row.to_seq) for row in rows]


def alert_states(store: TownshipStore) -> dict[str, str]:
    return {row.kind: row.state for row in store.rows(sa.select(alerts.c.kind, alerts.c.state))}


async def cli(*args: str) -> tuple[int, str, str]:
    """`bedside-gateway township ARGS` in its own process, without blocking the loop
    (a gateway in this process answers the commands it sends)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "township", *args, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def broker_args(port: int, database: str) -> list[str]:
    return ["--broker", f"mqtt://127.0.0.1:{port}", "--township", TOWN, "--database", database]


class ConsumerProcess(ChildProcess):
    """`bedside-gateway township run ...` as its own process."""

    def __init__(self, port: int, database: str, log_path: Path, extra: Sequence[str] = ()):
        command = [
            sys.executable, "-m", "gateway.cli", "township", "run",
            *broker_args(port, database), *extra,
        ]  # fmt: skip
        super().__init__(command, log_path)

    async def wait_log(self, text: str, count: int = 1, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        while self.log().count(text) < count:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"no {text!r} in: {self.log()[-2000:]}"
            await asyncio.sleep(0.05)
