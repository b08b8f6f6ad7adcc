"""The MQTT uplink: drains the outbox to the township broker.

- QoS 1; a row is marked delivered only when its PUBACK arrives (at-least-once, and
  every reading carries its id, so the server deduplicates a resend).
- Order of service on every round: alert events first, then other queued messages
  (the daily `ledger`), then live readings (accepted
  since this connection came up), then the backlog, oldest first, in batches of
  `readings_per_message` and never more than half the in-flight window, so the backlog
  never holds up what is happening now.
- Each connection is a fresh `MqttConnection` (gateway/mqtt_connection.py), so a fresh
  paho client: nothing half-sent survives a drop inside paho; whatever was not
  acknowledged is still undelivered in the store and is sent again on the next
  connection.
- A retained `status` message says online with a health summary; the Last Will says
  offline when the connection dies.
- Reconnects back off exponentially with jitter; while the broker cannot be reached at
  all its port is probed, and the uplink reconnects within seconds of it answering
  (gateway/broker_probe.py). Collection never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from drivers.backoff import Backoff
from gateway.broker_probe import wait_for_broker
from gateway.config import Config
from gateway.mqtt_connection import (
    BrokerUnreachable,
    InboundMessage,
    LastWill,
    MqttConnection,
    MqttConnectionError,
)
from gateway.store import OutboxRow, StoreThread

log = logging.getLogger(__name__)

#: Rows read from the store per round and per stream. Enough that, with readings of
#: many devices interleaved, each device's rows still fill whole messages.
_FETCH_LIMIT = 2000


class BrokerState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass
class UplinkHealth:
    state: BrokerState = BrokerState.DISCONNECTED
    last_error: str = ""
    connected_since: str | None = None
    connects: int = 0
    published_messages: int = 0
    delivered_readings: int = 0
    rejected_messages: int = 0
    inflight: int = 0


@dataclass
class _Stream:
    """Where a stream of rows that all go out as soon as read (alert events, other
    messages) stands during a connection: every row up to `cursor` is published."""

    cursor: int

    def published(self, rows: list[OutboxRow]) -> None:
        if rows:
            self.cursor = rows[-1].seq


@dataclass
class _ReadingStream:
    """Where a stream of readings (live, backlog) stands during a connection: every row
    up to `cursor` is published; `ahead` holds rows past the cursor already published
    (a message groups one device's rows, so rows of other devices in between may still
    wait). It reads ahead: the rows read past `cursor` and not yet published wait in
    `waiting`, and the store is read on from `read_to`. A window of 20 messages in
    flight holds back about 1,000 rows; reading them all again on every PUBACK cost a
    fifth of the gateway's CPU."""

    cursor: int
    ahead: set[int] = field(default_factory=set)
    waiting: list[OutboxRow] = field(default_factory=list)
    read_to: int = 0
    #: The store's `rewrites` when `waiting` was read (None: nothing read yet).
    rewrites: int | None = None

    def __post_init__(self) -> None:
        self.read_to = self.cursor

    def read(self, rows: list[OutboxRow], rewrites: int) -> bool:
        """Take `rows`, read from `read_to` on when the store had rewritten `rewrites`
        times. False if a rewrite came since the last read (a clock correction): the
        rows waiting may be stale, so they are dropped, to be read again from the
        cursor."""
        if rewrites != self.rewrites:
            self.rewrites = rewrites
            if self.read_to != self.cursor:
                self.waiting.clear()
                self.read_to = self.cursor
                return False
        self.waiting.extend(r for r in rows if r.seq not in self.ahead)
        if rows:
            self.read_to = rows[-1].seq
        return True

    def wanted(self, up_to: int | None) -> _WantedReadings:
        """What to read next: on from `read_to`, as many as `waiting` has room for."""
        return _WantedReadings(self.read_to, _FETCH_LIMIT - len(self.waiting), up_to)

    def sent(self, seqs: list[int]) -> None:
        """`seqs` of the waiting rows went out."""
        self.ahead.update(seqs)
        self.waiting = [r for r in self.waiting if r.seq not in self.ahead]
        self.cursor = self.waiting[0].seq - 1 if self.waiting else self.read_to
        self.ahead = {s for s in self.ahead if s > self.cursor}


@dataclass(frozen=True, slots=True)
class _WantedReadings:
    """Undelivered readings after `after` (through `up_to`), at most `limit`."""

    after: int
    limit: int
    up_to: int | None


@dataclass(frozen=True, slots=True)
class _ReadingsRead:
    #: The store's `rewrites` when `rows` were read.
    rewrites: int
    rows: list[OutboxRow]


@dataclass(frozen=True, slots=True)
class _Wanted:
    alert_events_after: int
    messages_after: int


@dataclass(frozen=True, slots=True)
class _Outbox:
    """What one round read from the store."""

    alert_events: list[OutboxRow]
    messages: list[OutboxRow]
    #: None: not read (no room this round).
    live: _ReadingsRead | None


@dataclass(slots=True)
class _Acked:
    """The seqs acknowledged since the last round, by kind."""

    readings: list[int] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)


@dataclass
class _Inflight:
    #: "live" | "backlog" (readings), "alert_event", "message", or "other" (retained sets)
    kind: str
    seqs: list[int] = field(default_factory=list)


class Uplink:
    def __init__(
        self,
        config: Config,
        store: StoreThread,
        status_payload: Callable[[], dict[str, Any]],
        devices_payload: Callable[[], list[dict[str, Any]]],
        subjects_payload: Callable[[], list[dict[str, Any]]],
        on_command: Callable[[InboundMessage], None] = lambda message: None,
    ) -> None:
        """`on_command`: each message on `cmd/+`, on the event loop (it acknowledges
        the message once it is recorded)."""
        self._config = config
        self._on_command = on_command
        self._mqtt = config.mqtt
        self._store = store
        self._status_payload = status_payload
        self._devices_payload = devices_payload
        self._subjects_payload = subjects_payload
        self._root = config.topic_root
        self.health = UplinkHealth()
        # Jitter matters here too: after a broker restart, gateways must not all
        # reconnect in the same second.
        self._backoff = Backoff(self._mqtt.reconnect_min_s, self._mqtt.reconnect_max_s)
        self._wake = asyncio.Event()
        self._connection: MqttConnection | None = None
        self._inflight: dict[asyncio.Future[bool], _Inflight] = {}
        self._acked: list[asyncio.Future[bool]] = []
        self._publish_devices = True
        self._publish_subjects = True
        self._publish_active = True
        self._publish_status = False
        #: Start the streams again from the store's first undelivered rows (after
        #: `resend` marked delivered readings undelivered).
        self._rewind = False

    # --- lifecycle -------------------------------------------------------------------

    async def say_offline(self) -> None:
        """Say offline (retained) if connected, before `run` is stopped and `close`
        disconnects: a clean disconnect suppresses the Last Will, so the offline status
        has to be published here."""
        connection = self._connection
        if connection is not None and self.health.state is BrokerState.CONNECTED:
            with contextlib.suppress(MqttConnectionError):  # connection already gone
                ack = connection.publish(
                    self._topic("status"), self._offline_payload(), retain=True
                )
                # Returns on the PUBACK, after 2 s, or if the connection drops first.
                await asyncio.wait([ack], timeout=2.0)

    async def close(self) -> None:
        """Disconnect (after `run` was stopped)."""
        await self._drop_connection()

    def wake(self) -> None:
        """New data in the outbox (called after each committed batch)."""
        self._wake.set()

    def devices_changed(self) -> None:
        self._publish_devices = True
        self._wake.set()

    def status_changed(self) -> None:
        """Something `status` reports changed now (a part down or back): publish it at
        once rather than at the next interval."""
        self._publish_status = True
        self._wake.set()

    def subjects_changed(self) -> None:
        """A subject or a binding changed, or an isolation ended: republish `subjects`
        (and `devices`, which shows the bindings)."""
        self._publish_subjects = self._publish_devices = True
        self._wake.set()

    def rewind(self) -> None:
        """Readings were marked undelivered again (`resend`): read the outbox from its
        start, as on a new connection."""
        self._rewind = True
        self._wake.set()

    def reply(self, topic: str, payload: str, correlation_data: bytes | None) -> None:
        """Answer a command on the response topic it named (MQTT 5), at once if
        connected; not kept in the outbox (the result also goes to
        `cmd/<name>/result`, which is, and a repeated id gets it again)."""
        connection = self._connection
        if connection is None or self.health.state is not BrokerState.CONNECTED:
            return
        with contextlib.suppress(MqttConnectionError):
            ack = connection.publish(topic, payload, correlation_data=correlation_data)
            ack.add_done_callback(self._on_ack)
            self._inflight[ack] = _Inflight("other")

    def alerts_changed(self) -> None:
        self._publish_active = True
        self._wake.set()

    # --- the connection loop -----------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect, for ever (supervised by the service)."""
        failures = 0
        while True:
            self.health.state = BrokerState.CONNECTING
            try:
                connection = await self._connect()
            except MqttConnectionError as exc:
                failures += 1
                await self._drop_connection()
                self.health.state = BrokerState.DISCONNECTED
                self.health.last_error = str(exc)
                delay = self._backoff.delay(failures - 1)
                log.warning(
                    "broker connection failed",
                    extra={"error": str(exc), "retry_in_s": round(delay, 2)},
                )
                await self._wait_before_retry(exc, delay)
                continue
            failures = 0
            self.health.state = BrokerState.CONNECTED
            self.health.connects += 1
            self.health.last_error = ""
            self.health.connected_since = datetime.now(UTC).isoformat(timespec="seconds")
            log.info("broker connected", extra={"broker": f"{self._mqtt.host}:{self._mqtt.port}"})
            try:
                await self._serve_connection(connection.lost)
            except MqttConnectionError as exc:
                self.health.last_error = str(exc)
                log.warning("broker connection lost", extra={"error": str(exc)})
            finally:
                await self._drop_connection()
                self.health.state = BrokerState.DISCONNECTED
                self.health.connected_since = None
            await asyncio.sleep(self._backoff.delay(0))

    async def _connect(self) -> MqttConnection:
        connection = self._connection = MqttConnection(
            self._mqtt,
            self._mqtt.client_id or f"bedside-{self._config.gateway.id}",
            LastWill(self._topic("status"), self._offline_payload()),
            subscriptions=(self._topic("cmd/+"),),
            on_message=self._on_command,
        )
        connection.lost.add_done_callback(lambda _: self._wake.set())
        await connection.connect()
        return connection

    async def _wait_before_retry(self, error: MqttConnectionError, delay: float) -> None:
        """Sit out the back-off. When nothing answered at the broker's address, probe
        it meanwhile and retry soon after it answers, so a broker back after a long
        outage is used within seconds; a broker that answered and refused (password,
        TLS, CONNACK) is left alone for the whole back-off."""
        if isinstance(error, BrokerUnreachable):
            await wait_for_broker(self._mqtt.host, self._mqtt.port, delay)
        else:
            await asyncio.sleep(delay)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._inflight.clear()
        self._acked.clear()
        self.health.inflight = 0
        if connection is not None:
            await connection.disconnect()

    def _on_ack(self, ack: asyncio.Future[bool]) -> None:
        if ack.cancelled():  # the connection was dropped first
            return
        self._acked.append(ack)
        self._wake.set()

    # --- serving one connection ------------------------------------------------------

    async def _serve_connection(self, lost: asyncio.Future[str]) -> None:
        generation = -1
        self._publish_json(self._topic("status"), self._status_payload(), retain=True)
        next_status = asyncio.get_running_loop().time() + self._mqtt.status_interval_s
        while True:
            if lost.done():
                raise MqttConnectionError(f"disconnected: {lost.result()}")
            self._wake.clear()
            if generation != self._store.generation or self._rewind:
                # A new connection, or the store was replaced (set aside, memory store
                # in or out): start the streams again; PUBACKs of what was in flight
                # are ignored (their rows are sent again: same ids).
                generation = self._store.generation
                self._rewind = False
                self._inflight.clear()
                self._acked.clear()
                live_floor = await self._store.call(self._store.store.last_seq)
                live, backlog = _ReadingStream(live_floor), _ReadingStream(0)
                alerts, messages = _Stream(0), _Stream(0)
                self._publish_devices = self._publish_active = self._publish_subjects = True
            acked = self._settle_acks()
            # No live reading is read that the window has no room for (alert events and
            # messages come first and take room too).
            room = self._mqtt.max_inflight - len(self._inflight)
            outbox = await self._store.call(
                self._exchange,
                acked,
                _Wanted(alerts.cursor, messages.cursor),
                live.wanted(None) if room > 0 else None,
            )
            self.health.delivered_readings += len(acked.readings)
            await self._take(live, outbox.live, None)
            self._publish_rows(alerts, "alert_event", outbox.alert_events, lambda _: "alerts")
            self._publish_rows(messages, "message", outbox.messages, lambda row: row.device)
            await self._publish_retained_sets()
            room = self._mqtt.max_inflight - len(self._inflight)
            if room > 0:
                room -= self._publish_readings(live, None, room, backlog=False)
            backlog_share = max(1, self._mqtt.max_inflight // 2)
            backlog_room = min(room, backlog_share - self._backlog_inflight())
            if backlog_room > 0 and backlog.cursor < live_floor:
                # Read after the live readings went out, in a call of its own: live
                # readings never wait for the backlog's rows to be read.
                read = await self._store.call(self._read_readings, backlog.wanted(live_floor))
                await self._take(backlog, read, live_floor)
                self._publish_readings(backlog, live_floor, backlog_room, backlog=True)
            now = asyncio.get_running_loop().time()
            if now >= next_status or self._publish_status:
                self._publish_status = False
                self._publish_json(self._topic("status"), self._status_payload(), retain=True)
                next_status = now + self._mqtt.status_interval_s
            self.health.inflight = len(self._inflight)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that lands as its timeout fires, and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, next_status - now)):
                    await self._wake.wait()

    def _backlog_inflight(self) -> int:
        return sum(1 for f in self._inflight.values() if f.kind == "backlog")

    async def _take(
        self, stream: _ReadingStream, read: _ReadingsRead | None, up_to: int | None
    ) -> None:
        """Keep what the round read of `stream`; read it again (from the cursor) if a
        rewrite made the rows waiting stale."""
        if read is not None and not stream.read(read.rows, read.rewrites):
            again = await self._store.call(self._read_readings, stream.wanted(up_to))
            stream.read(again.rows, again.rewrites)

    def _publish_readings(
        self, stream: _ReadingStream, up_to: int | None, room: int, backlog: bool
    ) -> int:
        """Publish up to `room` messages of the rows waiting (just read), each of one
        device's readings in seq order, oldest device first. Returns the number of
        messages published."""
        per_message = self._mqtt.readings_per_message
        if not stream.waiting and up_to is not None:
            stream.cursor = stream.read_to = up_to  # nothing left of the backlog
            return 0
        by_device: dict[str, list[OutboxRow]] = {}
        for row in stream.waiting:
            by_device.setdefault(row.device, []).append(row)
        batches = [
            rows[i : i + per_message]
            for rows in by_device.values()
            for i in range(0, len(rows), per_message)
        ]
        batches.sort(key=lambda batch: batch[0].seq)
        sent: list[int] = []
        kind = "backlog" if backlog else "live"
        for batch in batches[:room]:
            device = batch[0].device
            seqs = [r.seq for r in batch]
            data = self._readings_message(device, backlog, [r.payload for r in batch])
            self._publish(self._topic(f"readings/{device}"), data, inflight=_Inflight(kind, seqs))
            sent.extend(seqs)
        stream.sent(sent)
        return min(room, len(batches))

    def _read_readings(self, wanted: _WantedReadings) -> _ReadingsRead:
        """On the store's thread: its `rewrites`, then the undelivered readings
        `wanted`, read in the same step so that no rewrite can come in between."""
        store = self._store.store
        rows = store.undelivered(wanted.after, wanted.limit, wanted.up_to) if wanted.limit else []
        return _ReadingsRead(store.rewrites, rows)

    def _exchange(self, acked: _Acked, wanted: _Wanted, live: _WantedReadings | None) -> _Outbox:
        """On the store's thread, a round's store work but the backlog's in one call
        (each call is a hop between threads, and a round comes with every commit and
        PUBACK): mark what was acknowledged, then read what is waiting."""
        store = self._store.store
        if acked.readings:
            store.mark_delivered(acked.readings)
        if acked.events:
            store.mark_alert_events_delivered(acked.events)
        if acked.messages:
            store.mark_messages_delivered(acked.messages)
        return _Outbox(
            store.undelivered_alert_events(wanted.alert_events_after, _FETCH_LIMIT),
            store.undelivered_messages(wanted.messages_after, _FETCH_LIMIT),
            None if live is None else self._read_readings(live),
        )

    def _readings_message(self, device: str, backlog: bool, readings: list[str]) -> str:
        """The `readings/<device>` payload. Each reading's stored JSON goes out as it
        is: no decode and encode per reading on the way out."""
        return (
            f'{{"gateway":{json.dumps(self._config.gateway.id)},"device":{json.dumps(device)},'
            f'"backlog":{json.dumps(backlog)},"readings":[{",".join(readings)}]}}'
        )

    def _publish_rows(
        self, stream: _Stream, kind: str, rows: list[OutboxRow], topic: Callable[[OutboxRow], str]
    ) -> None:
        for row in rows:
            self._publish(self._topic(topic(row)), row.payload, inflight=_Inflight(kind, [row.seq]))
        stream.published(rows)

    async def _publish_retained_sets(self) -> None:
        if self._publish_active:
            self._publish_active = False
            active = await self._store.call(self._store.store.active_alerts)
            self._publish_json(
                self._topic("alerts/active"),
                {"gateway": self._config.gateway.id, "alerts": active},
                retain=True,
            )
        if self._publish_subjects:
            self._publish_subjects = False
            self._publish_json(
                self._topic("subjects"),
                {"gateway": self._config.gateway.id, "subjects": self._subjects_payload()},
                retain=True,
            )
        if self._publish_devices:
            self._publish_devices = False
            self._publish_json(
                self._topic("devices"),
                {"gateway": self._config.gateway.id, "devices": self._devices_payload()},
                retain=True,
            )

    def _publish_json(self, topic: str, payload: object, retain: bool = False) -> None:
        self._publish(topic, json.dumps(payload, separators=(",", ":")), retain=retain)

    def _publish(
        self, topic: str, data: str, retain: bool = False, inflight: _Inflight | None = None
    ) -> None:
        connection = self._connection
        if connection is None:
            raise MqttConnectionError("no client")
        ack = connection.publish(topic, data, retain=retain)
        ack.add_done_callback(self._on_ack)
        self._inflight[ack] = inflight or _Inflight("other")
        self.health.published_messages += 1

    def _settle_acks(self) -> _Acked:
        """What was acknowledged since the last round, by kind (marked delivered by
        `_exchange`, one transaction per kind)."""
        acked = _Acked()
        by_kind = {
            "alert_event": acked.events,
            "message": acked.messages,
            "live": acked.readings,
            "backlog": acked.readings,
        }
        for ack in self._acked:
            entry = self._inflight.pop(ack, None)
            if entry is None:
                continue
            if not ack.result():
                # The broker refused it (e.g. ACL). It stays undelivered and is sent
                # again on the next connection; the counter tells the technician.
                self.health.rejected_messages += 1
                log.error("broker rejected a message", extra={"kind": entry.kind})
                continue
            seqs = by_kind.get(entry.kind)
            if seqs is not None:
                seqs.extend(entry.seqs)
        self._acked.clear()
        return acked

    # --- helpers ---------------------------------------------------------------------

    def _topic(self, suffix: str) -> str:
        return f"{self._root}/{suffix}"

    def _offline_payload(self) -> str:
        return json.dumps(
            {"gateway": self._config.gateway.id, "state": "offline"}, separators=(",", ":")
        )
