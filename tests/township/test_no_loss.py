"""Nothing is lost and nothing stored twice: two consumers splitting one shared
subscription, a consumer process killed mid-stream and started again, the broker
restarted mid-run, and malformed messages in the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.broker import Mosquitto
from gateway.service import GatewayService
from gateway.township.store import TownshipStore
from tests.gateway.helpers import until
from tests.township.helpers import TOWN, ConsumerProcess, consuming, gaps, gateway, seqs, spo2

#: Readings per round; each round is committed and published on its own.
ROUND = 5


async def rounds(service: GatewayService, n: int) -> None:
    """`n` rounds of readings, each waited for (committed) before the next."""
    for _ in range(n):
        await spo2(service, ROUND)


def all_stored(store: TownshipStore, total: int) -> bool:
    return seqs(store) == list(range(1, total + 1))


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Keeps the consumers' sessions (and the messages queued for them) across a restart."""
    broker = Mosquitto(persistent=True, workdir=tmp_path / "broker").start()
    yield broker
    broker.close()


@pytest.mark.asyncio
async def test_two_consumers_split_the_load_and_store_every_reading_once(
    tmp_path: Path, mosquitto: Mosquitto, database: str
) -> None:
    async with consuming(mosquitto.port, database, "a") as a, consuming(
        mosquitto.port, database, "b"
    ) as b, gateway(tmp_path, mosquitto.port) as service:  # fmt: skip
        await rounds(service, 40)
        await until(lambda: all_stored(a.store, 40 * ROUND), 30, "every reading")
        assert gaps(a.store) == []
        # Each consumer took part of them, and between them each reading once.
        assert a.counters["readings"] > 0 and b.counters["readings"] > 0
        assert a.counters["readings"] + b.counters["readings"] == 40 * ROUND


@pytest.mark.asyncio
async def test_a_consumer_killed_mid_stream_loses_nothing(
    tmp_path: Path, persistent_broker: Mosquitto, database: str
) -> None:
    log = tmp_path / "consumer.log"
    consumer = ConsumerProcess(persistent_broker.port, database, log, ["--name", "k"]).start()
    store = TownshipStore(database)
    try:
        await consumer.wait_log("township consumer subscribed")
        async with gateway(tmp_path, persistent_broker.port) as service:
            stream = asyncio.create_task(rounds(service, 60))
            await until(lambda: len(seqs(store)) >= 10 * ROUND, what="part of the stream")
            consumer.kill()  # SIGKILL, while readings flow
            stored_when_killed = len(seqs(store))
            accepted = service.pipeline.counters
            await until(
                lambda: accepted.get("readings_accepted", 0) >= stored_when_killed + 10 * ROUND,
                what="more readings while it is down",
            )
            consumer.start()
            await stream
            await until(lambda: all_stored(store, 60 * ROUND), 30, "every reading")
        assert gaps(store) == []
        assert stored_when_killed < 60 * ROUND
        assert consumer.stop() == 0  # SIGTERM: a clean stop
    finally:
        consumer.stop()
        store.close()


@pytest.mark.asyncio
async def test_a_broker_restart_mid_run_loses_nothing(
    tmp_path: Path, persistent_broker: Mosquitto, sqlite_file: str
) -> None:
    """mosquitto 2.0.11 forgets an absent consumer's shared subscriptions when it
    restarts: what a gateway publishes before the consumer is back is dropped. The
    consumer is back first when it can be, and asks for any gap that stays open."""
    port = persistent_broker.port
    async with consuming(port, sqlite_file, repair_after_s=1) as consumer, gateway(
        tmp_path, port
    ) as service:  # fmt: skip
        await rounds(service, 10)
        persistent_broker.stop()
        await until(lambda: not consumer.connected, what="the consumer sees the broker go")
        await rounds(service, 10)  # kept by the gateway meanwhile
        persistent_broker.start()
        await rounds(service, 10)
        await until(lambda: all_stored(consumer.store, 30 * ROUND), 60, "every reading")
        assert gaps(consumer.store) == []


@pytest.mark.asyncio
async def test_malformed_messages_are_acknowledged_counted_and_block_nothing(
    tmp_path: Path, mosquitto: Mosquitto, sqlite_file: str
) -> None:
    root = f"vitals/v1/{TOWN}/gw-odd"
    async with consuming(mosquitto.port, sqlite_file) as consumer, gateway(
        tmp_path, mosquitto.port
    ) as service:  # fmt: skip
        publish(mosquitto.port, f"{root}/readings/dev-1", b"\xff not json")
        publish(mosquitto.port, f"{root}/readings/dev-1", b'{"gateway": "gw-odd"}')
        publish(mosquitto.port, f"{root}/alerts", b'{"id": "x", "secret": "bed 4 name"}')
        await until(lambda: consumer.counters["refused"] == 3, what="three refused")
        await spo2(service, 2)
        await until(lambda: all_stored(consumer.store, 2), what="the next readings stored")
        assert consumer.counters["refused:not_json"] == 1
        assert consumer.counters["refused:invalid"] == 2
    # Acknowledged: a consumer of the same session is not sent them again.
    async with consuming(mosquitto.port, sqlite_file) as again, gateway(
        tmp_path, mosquitto.port
    ) as service:  # fmt: skip
        await spo2(service, 1)
        await until(lambda: all_stored(again.store, 3), what="one more reading")
        assert again.counters["refused"] == 0


def publish(port: int, topic: str, payload: bytes) -> None:
    """One QoS 1 message from a client that is not a gateway."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
