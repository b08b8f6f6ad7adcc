"""Correcting the times stamped before the clock was synchronised.

A Pi has no battery-backed clock: until NTP sets it, its wall clock may be days or
years off, and readings are committed `clock: "unsynced"`. Each also has the monotonic
clock at its receipt (`Reading.elapsed_s`), which runs true from boot. So when the kernel
says the clock is synchronised, a reading's true time is `now_wall - (now_mono -
elapsed_s)`: its `received_at` plus an offset, the wall-minus-monotonic epoch now minus
the epoch it was stamped with.

The span: what was stamped unsynced since the last correction, in runs of one epoch (a
clock stepped while still unsynchronised, e.g. set before the kernel calls it
synchronised, begins another run with its own offset). Kept in the store's meta with the
boot it belongs to, so a restart of the gateway mid-span resumes it. The monotonic clock
starts again at each boot: a span of an earlier boot cannot be corrected, and its
readings stay `unsynced` (logged).

At the synchronisation, in one transaction (`Store.correct_clock`):
- one `clock` message per run with readings: `{"gateway", "from_seq", "to_seq",
  "offset_ms", "synced_at"}`, for the server to correct the readings it already has;
- the run's readings not yet delivered get `received_at` plus the offset and `clock:
  "corrected"`;
- the alert times the span stamped (raised, updated, acknowledged, cleared) are moved by
  their run's offset: in the open alerts the rules and the storage alarm hold, in the
  alerts' records (`alerts/active`) and in the alert events not yet delivered. They are
  told by value: a time within a run's range on the unsynchronised clock. Alert times
  there before the span began (the open alerts' times then, the events queued then) are
  kept, even when a clock restarted behind them stamps the same range again.

The pipeline commits what was received unsynced, then corrects, and holds the rules'
clock meanwhile, so nothing stamped after the synchronisation is taken for the span's.
Not corrected: the ledger and the missed-measurement schedule, which follow the wall
clock as it went (see docs/mqtt-contract.md, Clock).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.model import Alert, ClockState, Instant, Reading
from gateway.rules.engine import RuleEngine
from gateway.rules.technical import GatewayAlarm, open_alarm_alerts
from gateway.store import StoreThread

log = logging.getLogger(__name__)

#: Below the gateway's topic root.
TOPIC = "clock"
#: The epoch moving by more than this (s) means the clock was stepped; less is the time
#: between reading the wall and the monotonic clock.
_STEP_S = 1.0
#: Alert times are kept to the millisecond: a run's range is widened by this (s).
_MARGIN_S = 0.002
_ALERT_TIMES = ("raised_at", "updated_at", "acknowledged_at", "cleared_at")


@dataclass
class _Run:
    """Stamps of one epoch: the readings `from_seq..to_seq` (None before the first) and
    the alert times from monotonic `since` until the next run's."""

    epoch: float
    since: float
    from_seq: int | None = None
    to_seq: int | None = None


@dataclass
class _Span:
    boot: str
    runs: list[_Run]
    #: The open alerts' times when the span began (alert id -> field -> time): kept.
    kept: dict[str, dict[str, str]]
    #: Alert events queued when the span began have seqs up to this: kept.
    events_after: int

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> _Span:
        return cls(
            saved["boot"],
            [_Run(**run) for run in saved["runs"]],
            saved["kept"],
            saved["events_after"],
        )


@dataclass(frozen=True)
class _Shift:
    """The span's corrections: each run's seqs and its range of Unix times (lowest,
    highest) with its offset (ms)."""

    seqs: list[tuple[int, int, int]]
    times: list[tuple[float, float, int]]
    kept: dict[str, dict[str, str]]

    def reading(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """A reading received unsynced, corrected; None for any other."""
        if payload["clock"] != ClockState.UNSYNCED.value:
            return None
        offset = next((o for first, last, o in self.seqs if first <= payload["seq"] <= last), None)
        if offset is None:
            return None
        return {
            **payload,
            "received_at": _moved(payload["received_at"], offset),
            "clock": ClockState.CORRECTED.value,
        }

    def alert(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """An alert's payload with the times the span stamped moved; None if it has none."""
        kept = self.kept.get(payload["id"], {})
        moved: dict[str, str] = {}
        for name in _ALERT_TIMES:
            text = payload.get(name)
            if text is None or kept.get(name) == text:
                continue
            at = datetime.fromisoformat(text).timestamp()
            offset = next((o for low, high, o in reversed(self.times) if low <= at <= high), 0)
            if offset:
                moved[name] = _moved(text, offset)
        return {**payload, **moved} if moved else None

    def alerts(self, alerts: Sequence[Alert]) -> list[Alert]:
        """Those of `alerts` the span stamped, moved."""
        return [Alert.from_payload(p) for a in alerts if (p := self.alert(a.payload()))]

    def alert_or_same(self, alert: Alert) -> Alert:
        """`alert`, moved if the span stamped it."""
        moved = self.alert(alert.payload())
        return alert if moved is None else Alert.from_payload(moved)


def _moved(text: str, offset_ms: int) -> str:
    at = datetime.fromisoformat(text) + timedelta(milliseconds=offset_ms)
    return at.isoformat(timespec="milliseconds")


class ClockCorrection:
    """The span of the current boot, and its correction. Called by the pipeline, which
    orders it with the commits (see the module docstring)."""

    def __init__(
        self,
        gateway_id: str,
        store: StoreThread,
        rules: RuleEngine,
        alarms: Sequence[GatewayAlarm],
        boot: str,
    ) -> None:
        """`boot` names the boot the pipeline's monotonic clock counts from."""
        self._gateway_id = gateway_id
        self._store = store
        self._rules = rules
        self._alarms = alarms
        self._boot = boot
        self._span: _Span | None = None

    def due(self, clock: ClockState) -> bool:
        """Whether there is a span to correct, the clock being `clock`."""
        return self._span is not None and clock is ClockState.SYNCED

    async def start(self, clock: ClockState, now: Instant, last_seq: int) -> None:
        """Resume the span the store kept, if it is of this boot; begin one now when the
        clock is not synchronised. `last_seq`: the last reading committed."""
        saved = await self._store.call(self._store.store.clock_span)
        span = None if saved is None else _Span.from_json(saved)
        if span is not None and span.boot != self._boot:
            self._abandon(span, last_seq)
            span = None
            await self._store.call(self._store.store.save_clock_span, None)
        if span is not None:
            with_readings = [r for r in span.runs if r.from_seq is not None]
            if with_readings:
                with_readings[-1].to_seq = last_seq  # what it committed after the last save
            self._span = span
        elif clock is ClockState.UNSYNCED:
            await self._begin(_Run(now.epoch_offset, now.rule))
            await self._save()

    async def note(self, readings: Sequence[Reading]) -> None:
        """Before `readings` are committed: the unsynced ones join the span. A change of
        the span is kept first, so no reading is committed unsynced outside it."""
        changed = False
        for reading in readings:
            if reading.clock is not ClockState.UNSYNCED or reading.elapsed_s is None:
                continue
            epoch = reading.received_at.timestamp() - reading.elapsed_s
            if self._span is None:
                await self._begin(_Run(epoch, reading.elapsed_s))
                changed = True
            assert self._span is not None
            runs = self._span.runs
            if abs(runs[-1].epoch - epoch) > _STEP_S:
                runs.append(_Run(epoch, reading.elapsed_s))
            run = runs[-1]
            if run.from_seq is None:
                run.from_seq = reading.seq
                changed = True
            run.to_seq = reading.seq
        if changed:
            await self._save()

    async def correct(self, now: Instant, unsaved: list[Alert]) -> list[Alert]:
        """Correct the span, the clock being synchronised at `now`; `unsaved` (alert
        changes waiting to be saved) is corrected in place. Returns the open alerts
        whose times moved. Call with no alert change being saved meanwhile."""
        span = self._span
        assert span is not None
        ends = [run.since for run in span.runs[1:]] + [now.rule]
        offsets = [round((now.epoch_offset - run.epoch) * 1000) for run in span.runs]
        shift = _Shift(
            seqs=[
                (run.from_seq, run.to_seq, offset)
                for run, offset in zip(span.runs, offsets, strict=True)
                if run.from_seq is not None and run.to_seq is not None
            ],
            times=[
                (run.epoch + run.since - _MARGIN_S, run.epoch + end + _MARGIN_S, offset)
                for run, end, offset in zip(span.runs, ends, offsets, strict=True)
            ],
            kept=span.kept,
        )
        synced_at = now.wall.isoformat(timespec="milliseconds")
        messages = [
            (
                TOPIC,
                {
                    "gateway": self._gateway_id,
                    "from_seq": first,
                    "to_seq": last,
                    "offset_ms": offset,
                    "synced_at": synced_at,
                },
            )
            for first, last, offset in shift.seqs
        ]
        rewritten = await self._store.call(
            self._store.store.correct_clock,
            [(first, last) for first, last, _ in shift.seqs],
            shift.reading,
            shift.alert,
            span.events_after,
            messages,
        )
        self._span = None
        moved = shift.alerts(self._rules.open_alerts())
        self._rules.restore([alert.payload() for alert in moved])
        for alarm in self._alarms:
            for alert in shift.alerts(list(alarm.open_alerts())):
                alarm.restore(alert)
                moved.append(alert)
        unsaved[:] = [shift.alert_or_same(alert) for alert in unsaved]
        log.info(
            "clock synchronised: the times stamped before it corrected",
            extra={
                "spans": [{"from_seq": f, "to_seq": t, "offset_ms": o} for f, t, o in shift.seqs],
                "readings_rewritten": rewritten,
                "open_alerts_moved": len(moved),
            },
        )
        return moved

    async def _begin(self, run: _Run) -> None:
        """A span from `run` on, the open alerts' times and the events queued kept."""
        kept = {
            alert.id: {n: t for n in _ALERT_TIMES if (t := alert.payload()[n]) is not None}
            for alert in [*self._rules.open_alerts(), *open_alarm_alerts(self._alarms)]
        }
        events_after = await self._store.call(self._store.store.last_alert_event_seq)
        self._span = _Span(self._boot, [run], kept, events_after)

    async def _save(self) -> None:
        assert self._span is not None
        await self._store.call(self._store.store.save_clock_span, asdict(self._span))

    @staticmethod
    def _abandon(span: _Span, last_seq: int) -> None:
        runs = [r for r in span.runs if r.from_seq is not None]
        if runs:
            log.warning(
                "readings received unsynced before a reboot stay unsynced: the monotonic"
                " clock they were stamped with has started again",
                extra={"from_seq": runs[0].from_seq, "to_seq": last_seq},
            )
