"""The township consumer: the gateways' messages from the broker into the database,
acknowledged only once stored.

- **Shared subscriptions** (MQTT 5, `$share/<group>/...`) for what each gateway sends
  once (readings, alert events, clock corrections, ledger days, command results): the
  broker hands each message to one of the group's consumers, so K consumers split the
  load.
- **Retained state** (`status`, `devices`, `subjects`, `alerts/active`): a broker does
  not send retained messages to a new shared subscription, so every consumer also has
  a plain subscription to these four topics. Each consumer then stores every state
  message, in the order the broker sends them; the writes are idempotent upserts of
  the latest set, so the consumers agree, and a consumer started late (or a new
  database) gets the current state at once.
- **No loss**: a persistent session (`clean_start` false, a session expiry; client id
  `township-<group>-<name>`, so a restarted consumer takes its session back), QoS 1,
  and manual acknowledgement: a message is PUBACKed only after the transaction
  holding it committed. A consumer killed mid-batch has its unacknowledged messages
  sent again by the broker when it returns; the store's idempotent inserts make the
  second delivery harmless. A message the broker queued for a consumer that never
  returns waits for it until its session expires: restart a lost consumer under the
  same name.
- **Batches**: whatever arrived while the last commit ran, up to `batch_max`
  messages, committed on one worker thread (the event loop keeps receiving and
  validating meanwhile), then acknowledged in the order received.
- A message that is not the contract (`ingest.Refusal`) or that the database refuses
  is counted, logged (its reason and topic, never its payload) and acknowledged: it
  never holds up the ones behind it. A database that cannot be used (down, locked) is
  retried with back-off, and nothing is acknowledged meanwhile.
- **Gaps repaired**: a seq gap still open `repair_after_s` after it opened, once the
  gateway's `status` says it has nothing left to send (so it is not backlog on its
  way), is asked for again with a `resend` command (the result comes back on
  `cmd/resend/result` and is stored like any other). One consumer of the group claims
  each request in the database. This also covers a broker that forgets the shared
  subscriptions of absent consumers when it restarts (mosquitto 2.0.11 does: what the
  gateways publish before the consumers are back is accepted and dropped), since the
  gateways keep what they sent.
- The broker connection is an `MqttConnection` (TLS, password as the gateway's
  `[mqtt]`); when it drops, a fresh one is made with back-off. While the broker cannot
  be reached its port is probed every 0.1 s, without the gateways' random pause: the
  consumers should be subscribed again before the gateways return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from drivers.backoff import Backoff
from gateway.broker_probe import broker_answers
from gateway.config import MqttSection
from gateway.mqtt_connection import (
    BrokerUnreachable,
    InboundMessage,
    MqttConnection,
    MqttConnectionError,
)
from gateway.township.commands import MAX_RESEND, new_command_id
from gateway.township.ingest import Message, Refusal, parse
from gateway.township.store import Applied, StoreUnavailable, TownshipStore

log = logging.getLogger(__name__)

#: Sent once per gateway: split among the group's consumers.
SHARED_TOPICS = ("readings/+", "alerts", "clock", "ledger", "cmd/+/result")
#: Retained state: every consumer subscribes to it (see the module's docstring).
RETAINED_TOPICS = ("status", "devices", "subjects", "alerts/active")
#: Seconds between probes of an unreachable broker.
_PROBE_S = 0.1
#: A refusal reason is logged at most once in this many seconds (with its count).
_LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class ConsumerSettings:
    mqtt: MqttSection
    township: str
    group: str = "township"
    name: str = "1"
    batch_max: int = 500
    #: Seconds a gap stays open before its readings are asked for again; 0: never.
    repair_after_s: float = 60.0

    @property
    def client_id(self) -> str:
        return f"township-{self.group}-{self.name}"

    def subscriptions(self) -> tuple[str, ...]:
        root = f"{self.mqtt.topic_prefix}/{self.township}/+"
        shared = tuple(f"$share/{self.group}/{root}/{topic}" for topic in SHARED_TOPICS)
        return shared + tuple(f"{root}/{topic}" for topic in RETAINED_TOPICS)


@dataclass(frozen=True, slots=True)
class _Received:
    message: Message | Refusal
    ack: Callable[[], None]


class TownshipConsumer:
    def __init__(self, settings: ConsumerSettings, store: TownshipStore) -> None:
        self.settings = settings
        self.store = store
        #: received, acknowledged, readings, duplicates, alert_events, refused,
        #: refused:<reason>, refused_by_database, store_retries.
        self.counters: Counter[str] = Counter()
        self.connected = False
        self._pending: list[_Received] = []
        self._arrived = asyncio.Event()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="township-store")
        self._backoff = Backoff(settings.mqtt.reconnect_min_s, settings.mqtt.reconnect_max_s)
        self._logged_at: dict[str, float] = {}

    async def run(self) -> None:
        """Consume until cancelled, reconnecting whenever the connection is lost."""
        failures = 0
        try:
            while True:
                connection = MqttConnection(
                    self.settings.mqtt,
                    self.settings.client_id,
                    None,
                    subscriptions=self.settings.subscriptions(),
                    on_message=self._received,
                )
                error: MqttConnectionError | None = None
                try:
                    await connection.connect()
                    failures = 0
                    self.connected = True
                    log.info("township consumer subscribed", extra=self._who())
                    await self._serve(connection)
                except MqttConnectionError as exc:
                    error = exc
                    log.warning("broker connection failed", extra={"error": str(exc)})
                finally:
                    self.connected = False
                    self._pending.clear()  # not acknowledged: the broker sends them again
                    await connection.disconnect()
                delay = self._backoff.delay(failures)
                failures += 1
                if isinstance(error, BrokerUnreachable):
                    await self._until_broker_answers(delay)
                else:
                    await asyncio.sleep(delay)
        finally:
            self._worker.shutdown(wait=True)  # a commit under way finishes

    async def _until_broker_answers(self, longest_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + longest_s
        host, port = self.settings.mqtt.host, self.settings.mqtt.port
        while loop.time() < deadline:
            if await broker_answers(host, port, _PROBE_S * 5):
                return
            await asyncio.sleep(_PROBE_S)

    def _who(self) -> dict[str, object]:
        return {"client_id": self.settings.client_id, "township": self.settings.township}

    def _received(self, inbound: InboundMessage) -> None:
        settings = self.settings
        message = parse(
            inbound.topic, inbound.payload, settings.mqtt.topic_prefix, settings.township
        )
        self.counters["received"] += 1
        if isinstance(message, Refusal):
            self._refused(message, inbound.topic)
        self._pending.append(_Received(message, inbound.ack))
        self._arrived.set()

    def _refused(self, refusal: Refusal, topic: str) -> None:
        self.counters["refused"] += 1
        key = f"refused:{refusal.reason}"
        self.counters[key] += 1
        now = time.monotonic()
        if now - self._logged_at.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged_at[key] = now
            log.warning(
                "message refused",
                extra={"reason": refusal.reason, "fields": refusal.detail, "topic": topic,
                       "count": self.counters[key]},
            )  # fmt: skip

    async def _serve(self, connection: MqttConnection) -> None:
        """Store and acknowledge batches until the connection is lost."""
        lost = connection.lost
        repair = None
        if self.settings.repair_after_s > 0:
            repair = asyncio.create_task(self._repair(connection))
        try:
            await self._batches(lost)
        finally:
            if repair is not None:
                repair.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await repair

    async def _batches(self, lost: asyncio.Future[str]) -> None:
        while not lost.done():
            if not self._pending:
                self._arrived.clear()
                waiter = asyncio.ensure_future(self._arrived.wait())
                either: set[asyncio.Future[Any]] = {waiter, lost}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                continue
            batch = self._pending[: self.settings.batch_max]
            del self._pending[: len(batch)]
            if not await self._store(batch, lost):
                break
            for received in batch:
                received.ack()
            self.counters["acknowledged"] += len(batch)
        raise MqttConnectionError(f"connection lost: {lost.result()}")

    async def _store(self, batch: list[_Received], lost: asyncio.Future[str]) -> bool:
        """Commit the batch's messages, retrying while the database is unavailable;
        False if the connection was lost first (nothing to acknowledge on)."""
        messages = [r.message for r in batch if not isinstance(r.message, Refusal)]
        if not messages:
            return True
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            try:
                applied = await loop.run_in_executor(
                    self._worker, self.store.apply, self.settings.township, messages
                )
            except StoreUnavailable as exc:
                self.counters["store_retries"] += 1
                log.warning("database unavailable, retrying", extra={"error": str(exc)})
                await asyncio.wait({lost}, timeout=self._backoff.delay(failures))
                failures += 1
                if lost.done():
                    return False
                continue
            self._count(applied, messages)
            return True

    async def _repair(self, connection: MqttConnection) -> None:
        """Ask for the readings of the gaps due (`TownshipStore.claim_gaps`), at a
        quarter of `repair_after_s` (at most every 30 s)."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        every_s = min(30.0, settings.repair_after_s / 4)
        while True:
            await asyncio.sleep(every_s)
            try:
                due = await loop.run_in_executor(
                    self._worker, self.store.claim_gaps, settings.repair_after_s
                )
            except Exception as exc:  # the database away: the next round tries again
                log.warning("cannot look for gaps", extra={"error": type(exc).__name__})
                continue
            try:
                for gateway, low, high in due:
                    for first in range(low, high + 1, MAX_RESEND):
                        last = min(high, first + MAX_RESEND - 1)
                        await self._resend(connection, gateway, first, last)
            except MqttConnectionError:
                return  # the connection is gone; the claims are due again later

    async def _resend(self, connection: MqttConnection, gateway: str, low: int, high: int) -> None:
        loop = asyncio.get_running_loop()
        command_id = new_command_id(self.settings.client_id)
        args = {"from_seq": low, "to_seq": high}
        sent_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        await loop.run_in_executor(
            self._worker, self.store.record_command, command_id, gateway, "resend", args, sent_at
        )
        root = f"{self.settings.mqtt.topic_prefix}/{self.settings.township}/{gateway}"
        payload = orjson.dumps({"id": command_id, "args": args, "sent_at": sent_at}).decode()
        await connection.publish(f"{root}/cmd/resend", payload)
        self.counters["resend_requests"] += 1
        log.info("gap asked for again", extra={"gateway": gateway, "from_seq": low, "to_seq": high})

    def _count(self, applied: Applied, messages: list[Message]) -> None:
        self.counters["readings"] += applied.readings
        self.counters["duplicates"] += applied.duplicates
        self.counters["alert_events"] += applied.alert_events
        for index in applied.refused:
            self.counters["refused_by_database"] += 1
            log.warning(
                "message refused by the database",
                extra={"kind": type(messages[index]).__name__,
                       "gateway": messages[index].gateway},
            )  # fmt: skip
