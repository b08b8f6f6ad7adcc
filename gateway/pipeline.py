"""From device sessions to durable readings, then to the rules and the uplink.

Sessions call the `SessionListener` methods on the event loop; this module queues what
they report and a single flush task turns it into readings:

1. assign each a sequence number (one writer: no gaps, no reuse),
2. hand the batch to the store (safe from a crash before anything else),
3. run the rules over the batch and persist any alert changes (and those of the
   clock's ticks, `evaluate_clock`); note the temperatures in the ledger and keep
   each day's ledger as it completes,
4. wake the uplink,

and every `store.sync_interval_s` has the store write what it accepted to SQLite in
one transaction (gateway/store_unsynced.py says why); an alert change, saved with an
fsync before it is announced, takes the readings before it along.

When the clock is synchronised, what was received before it is committed, then its
times corrected (gateway/clock_correction.py) before anything received since; the
rules' clock waits for that, so nothing they stamp on the new clock is taken for a time
of the old one.

Nothing waits to gather a batch: a batch is whatever came while the last one was being
handed over, so a lone reading goes on at once and a burst gathers by itself. The
queue is bounded (`QUEUE_MAX`): past it, readings are refused and counted
(`readings_refused`), never gathered without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drivers.errors import RefusedPacket, SecurityRejection
from drivers.listener import LinkState
from drivers.measurement import Measurement
from gateway.clock import ClockWatch
from gateway.clock_correction import ClockCorrection
from gateway.config import Config
from gateway.devices import DeviceRegistry
from gateway.ledger import LedgerBook
from gateway.model import Alert, ClockState, Instant, Reading
from gateway.rules.engine import RuleEngine
from gateway.store import StoreThread

log = logging.getLogger(__name__)

#: While commits keep failing (one attempt a second), a reminder every this many.
_REMIND_EVERY = 60
#: The rules' clock waits this many ticks at most for a clock correction (one that
#: keeps failing must not stop the time-driven alerts).
_HOLD_TICKS = 5
#: Measurements waiting to be handed to the store, at most: over a minute of an
#: eldercare floor's 180 readings/s (a few MB). Past it (a store stuck for that long)
#: new ones are refused and counted, so memory stays bounded whatever comes in.
QUEUE_MAX = 20_000
#: Readings the store keeps unsynced, at most: a backlog being caught up is written
#: in transactions of this many, not held for the whole `sync_interval_s`.
_UNSYNCED_MAX = 5_000
#: A refused measurement is logged at most this often (s).
_REFUSED_LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class _Pending:
    device: str
    subject: str | None
    measurement: Measurement
    received_at: datetime
    clock: ClockState
    elapsed_s: float


class Pipeline:
    """The gateway's `SessionListener`: every session reports here."""

    def __init__(
        self,
        config: Config,
        store: StoreThread,
        devices: DeviceRegistry,
        rules: RuleEngine,
        ledger: LedgerBook,
        clock: ClockWatch,
        on_committed: Callable[[], None],
        on_alerts: Callable[[list[Alert]], None],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        clock_correction: ClockCorrection | None = None,
    ) -> None:
        """`now` is the wall clock readings are stamped with, `monotonic` the clock the
        rules measure durations on (a test gives its own); `clock_correction` corrects
        the times stamped before the clock was synchronised (none: they stay)."""
        self._config = config
        self._store = store
        self._devices = devices
        self._rules = rules
        self._ledger = ledger
        self._clock = clock
        self._on_committed = on_committed
        self._on_alerts = on_alerts
        self._now = now
        self._monotonic = monotonic
        self._correction = clock_correction
        #: Ticks the rules' clock has waited for the correction.
        self._held_ticks = 0
        self._pending: list[_Pending] = []
        #: Readings the store holds unsynced, and since when (event loop time).
        self._unsynced = 0
        self._unsynced_since = 0.0
        self._refused_logged_at: float | None = None
        self._wake = asyncio.Event()
        self._next_seq = 0
        #: The store's generation `_next_seq` was read from (see `_renumber`).
        self._generation = -1
        self._stopping = False
        #: Alert changes not saved yet (from readings or from the clock, or whose save
        #: failed): the flush task saves them in order, before anything newer.
        self._unsaved_alerts: list[Alert] = []
        #: One save of alert changes at a time (the flush task's, an acknowledgement's).
        self._saving_alerts = asyncio.Lock()
        #: Completed ledger days not saved yet (the `ledger` message payloads).
        self._unsaved_days: list[dict[str, Any]] = []
        #: Totals since start (readings accepted, malformed packets, ...).
        self.counters: dict[str, int] = {}

    async def start(self) -> None:
        """Resume numbering after the highest sequence number the store has seen, and
        the clock's unsynced span."""
        self._generation = self._store.generation
        last_seq = await self._store.call(self._store.store.last_seq)
        self._next_seq = last_seq + 1
        if self._correction is not None:
            now = Instant(self._now(), self._monotonic())
            await self._correction.start(self._clock.state, now, last_seq)

    @property
    def queued(self) -> int:
        """Measurements waiting to be handed to the store (at most `QUEUE_MAX`)."""
        return len(self._pending)

    def request_stop(self) -> None:
        """Ask `run` to commit whatever is queued, then return. The flush task is asked
        to finish, not cancelled: a commit cut off half-way would be committed twice."""
        self._stopping = True
        self._wake.set()

    # --- SessionListener -----------------------------------------------------------

    def on_measurements(self, address: str, measurements: Sequence[Measurement]) -> None:
        status = self._devices.values_seen(address, list(measurements))
        if status is None:
            self._count("readings_from_unbound_device")
            return
        if len(self._pending) + len(measurements) > QUEUE_MAX:
            self._refuse(status.id, len(measurements))
            return
        now, elapsed = self._now(), self._monotonic()
        clock = self._clock.state
        self._pending.extend(
            _Pending(status.id, status.subject, m, now, clock, elapsed) for m in measurements
        )
        self._wake.set()

    def _refuse(self, device: str, n: int) -> None:
        self._count("readings_refused", n)
        at = time.monotonic()
        logged = self._refused_logged_at
        if logged is None or at - logged >= _REFUSED_LOG_EVERY_S:
            self._refused_logged_at = at
            log.error(
                "readings refused: the queue to the store is full",
                extra={
                    "device": device,
                    "queued": len(self._pending),
                    "refused_total": self.counters["readings_refused"],
                },
            )

    def on_live(self, address: str, measurements: Sequence[Measurement]) -> None:
        self._devices.values_seen(address, list(measurements))

    def on_link_state(self, address: str, state: LinkState, detail: str = "") -> None:
        self._devices.link_changed(address, state, detail)

    def on_device_info(self, address: str, info: dict[str, str]) -> None:
        self._devices.identified(address, info)

    def on_refused(self, address: str, error: RefusedPacket, raw: bytes) -> None:
        status = self._devices.refused(address, error)
        security = isinstance(error, SecurityRejection)
        self._count("security_rejections" if security else "malformed_packets")
        log.warning(
            "packet refused by a security check" if security else "malformed packet dropped",
            extra={
                "device": status.id if status else "unbound",
                "error": str(error),
                "bytes": raw.hex(" "),
            },
        )

    def on_signal(self, address: str, rssi: int | None) -> None:
        self._devices.signal(address, rssi)

    # --- the flush task --------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    async def run(self) -> None:
        """The flush task (supervised by the service), until `request_stop`."""
        failures = 0  # commits failed in a row
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sync_wait(loop.time()))
            self._wake.clear()
            try:
                await self._flush()
                if self._unsynced and (self._stopping or self._sync_wait(loop.time()) == 0):
                    await self._sync()
            except Exception as exc:  # a store error must not stop collection for good
                failures += 1
                self._log_failure(exc, failures)
                if self._stopping:
                    log.error(
                        "stopping with readings not committed", extra={"n": len(self._pending)}
                    )
                    return
                await asyncio.sleep(1.0)
                self._wake.set()
                continue
            if failures:
                log.info("committing to the store works again", extra={"failures": failures})
                failures = 0
            if self._stopping:
                return

    async def _sync(self) -> None:
        await self._store.call(self._store.store.sync)
        self._unsynced = 0

    def _sync_wait(self, now: float) -> float | None:
        """Seconds until the unsynced readings are due in SQLite (None: there are none)."""
        if not self._unsynced:
            return None
        return max(0.0, self._unsynced_since + self._config.store.sync_interval_s - now)

    @staticmethod
    def _log_failure(exc: Exception, failures: int) -> None:
        """The traceback once, then a one-line reminder a minute (retries are each
        second): a failing disk must not flood the journal of the same disk."""
        if failures == 1:
            log.error("committing to the store failed; retrying each second", exc_info=exc)
        elif failures % _REMIND_EVERY == 0:
            log.error(
                "committing to the store still fails",
                extra={"failures": failures, "error": f"{type(exc).__name__}: {exc}"},
            )

    async def _flush(self) -> None:
        await self._save_alerts()
        while self._pending or self._correction_due():
            batch = self._pending[: self._config.store.batch_max]
            if self._correction_due():  # what came unsynced, then the correction
                batch = list(itertools.takewhile(lambda p: p.clock is ClockState.UNSYNCED, batch))
                if not batch:
                    await self._correct_clock()
                    continue
            await self._renumber()
            readings = [self._reading(p, self._next_seq + i) for i, p in enumerate(batch)]
            if self._correction is not None:
                await self._correction.note(readings)
            unsynced = await self._store.call(self._store.store.commit_readings, readings)
            if unsynced and not self._unsynced:
                self._unsynced_since = asyncio.get_running_loop().time()
            self._unsynced = unsynced
            # Accepted: only now do the sequence numbers and the queue move on.
            self._next_seq += len(readings)
            del self._pending[: len(batch)]
            self._count("readings_accepted", len(readings))
            self._on_committed()
            self._unsaved_alerts.extend(self._rules.evaluate(readings))
            for reading in readings:
                self._ledger.on_reading(reading)
            await self._save_alerts()
            if self._unsynced >= _UNSYNCED_MAX:  # a burst is written as it goes, not held
                await self._sync()
        await self._save_ledger_days()

    async def _renumber(self) -> None:
        """A store that replaced the last (a damaged one set aside, a memory store in
        or out) may number from higher up (above the seq reservation): go on above it,
        as the uplink expects everything committed after the switch to be."""
        if self._store.generation != self._generation:
            self._generation = self._store.generation
            last_seq = await self._store.call(self._store.store.last_seq)
            self._next_seq = max(self._next_seq, last_seq + 1)

    def evaluate_clock(self, now: Instant) -> None:
        """Run the rules and the ledger on the clock reaching `now`; their alert changes
        and completed days are saved, logged and announced by the flush task, as the
        changes readings cause are. Held while a clock correction is due."""
        if self._correction_due() and self._held_ticks < _HOLD_TICKS:
            self._held_ticks += 1
            self._wake.set()
            return
        gateway = self._config.gateway.id
        days = [{"gateway": gateway, **day} for day in self._ledger.on_tick(now)]
        if days:
            self._unsaved_days.extend(days)
            self._wake.set()
        self.add_alert_changes(self._rules.evaluate_tick(now))

    def add_alert_changes(self, alerts: list[Alert]) -> None:
        """Alert changes to save, log and announce as the rules' own are (the rules'
        ticks, and the gateway's technical alerts)."""
        if alerts:
            self._unsaved_alerts.extend(alerts)
            self._wake.set()

    async def commit_alert_changes(self, alerts: list[Alert]) -> None:
        """Save and announce alert changes made outside the rules' evaluation (an
        acknowledgement), after every change queued before them; returns once saved."""
        self._unsaved_alerts.extend(alerts)
        await self._save_alerts()

    async def _save_alerts(self) -> None:
        """Save the alert changes waiting (one transaction), then log and announce them."""
        async with self._saving_alerts:
            alerts = list(self._unsaved_alerts)
            if not alerts:
                return
            await self._store.call(self._store.store.save_alert_events, alerts)
            del self._unsaved_alerts[: len(alerts)]  # a tick may have added more meanwhile
        for alert in alerts:
            log.warning(
                "alert",
                extra={
                    "alert": alert.id,
                    "kind": alert.kind.value,
                    "state": alert.state.value,
                    "severity": alert.severity.value if alert.severity else None,
                    "subject": alert.subject,
                },
            )
        self._on_alerts(alerts)

    def _correction_due(self) -> bool:
        return self._correction is not None and self._correction.due(self._clock.state)

    async def _correct_clock(self) -> None:
        """Correct the span received unsynced (all of it committed), with no alert
        change saved meanwhile; then announce the open alerts whose times moved."""
        assert self._correction is not None
        async with self._saving_alerts:
            now = Instant(self._now(), self._monotonic())
            moved = await self._correction.correct(now, self._unsaved_alerts)
        self._held_ticks = 0
        self._on_committed()
        if moved:
            self._on_alerts(moved)

    async def _save_ledger_days(self) -> None:
        """Keep the completed ledger days and queue them for `ledger`, then wake the
        uplink."""
        days = list(self._unsaved_days)
        if not days:
            return
        await self._store.call(self._store.store.save_ledger_days, "ledger", days)
        del self._unsaved_days[: len(days)]
        log.info("ledger days completed", extra={"days": len(days)})
        self._on_committed()

    def _reading(self, pending: _Pending, seq: int) -> Reading:
        return Reading(
            seq=seq,
            id=f"{self._config.gateway.id}-{seq}",
            device=pending.device,
            subject=pending.subject,
            measurement=pending.measurement,
            received_at=pending.received_at,
            clock=pending.clock,
            elapsed_s=pending.elapsed_s,
        )
