"""Missed measurement: a schedule window of a subject with a thermometer ended with no
final temperature received in it.

- Judged on the clock's tick `grace_s` after the window's end (60 s by default: a
  temperature received just before the end may still be on its way into the store). A
  temperature counts for the window its `received_at` falls in (local time,
  `gateway/schedule.py`); intermediate and flagged values never count.
- One open alert per subject. Another window missed while it is open updates it: the
  detail then names the first and the latest window and how many were missed in a row
  (`no temperature in 2 windows in a row: from the evening window 18:00-22:00 of
  2026-12-01 to the morning window 06:00-10:00 of 2026-12-02`). An acknowledgement stays.
- Cleared by the subject's next final temperature, whenever it comes.
- Only windows the subject was watched for from their start are judged: watching starts
  on the first tick at which a thermometer is bound to it (the rule's first tick ever
  included), so a gateway installed at 23:00, or a thermometer bound at 08:00, never
  finds the day's earlier windows missed. Unbinding the thermometer ends the watch (an
  open alert stays until a temperature clears it). The isolation does not matter: a
  subject with a thermometer is expected to measure on its schedule.
- Time stopped counts: the last tick and the windows already satisfied are kept across a
  restart, so the first tick after one judges every window that ended meanwhile.

The schedule is on the wall clock (local times of day), so this rule keeps wall times,
not rule times: the gateway's clock set back never judges a window twice (the latest
tick seen is kept), and set forward judges the windows it skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from drivers.measurement import Metric
from gateway.config_table import ConfigTable
from gateway.model import Alert, AlertKind, AlertState, Instant, Reading, Subject
from gateway.rules.base import (
    CareContext,
    alert_key,
    change_alert,
    snapshot,
    subject_key,
)
from gateway.rules.technical import move_alert, open_alert
from gateway.schedule import Slot, window_at, windows_ended

TABLE = "missed_measurement"


#: The wall clock running ahead of the rules' clock by more than this between two ticks
#: is the clock being set, not time passing.
_CLOCK_STEP_S = 60.0


class MissedMeasurementParams(ConfigTable):
    """`[rules.missed_measurement]`."""

    #: Seconds after a window's end before it is judged, up to an hour: a later judgement
    #: would hold back the alert the care team acts on within the day.
    grace_s: float = Field(default=60.0, ge=0.0, le=3600.0)


def thermometers(context: CareContext) -> dict[str, str]:
    """Each subject with a thermometer bound, and that thermometer (the first bound)."""
    found: dict[str, str] = {}
    for b in context.bindings():
        if b.thermometer and b.subject is not None:
            found.setdefault(b.subject, b.device)
    return found


def final_temperature(reading: Reading) -> bool:
    """A temperature that counts for a window and clears the alert: final and unflagged
    (intermediate values carry the `intermediate` flag)."""
    m = reading.measurement
    return m.metric is Metric.BODY_TEMPERATURE and m.alertable


class Watch:
    """Which windows are judged, and when: since when each subject has had a
    thermometer bound (wall clock), the latest tick, each subject's grace. The rule and
    the ledger each keep one, fed the same readings and ticks, so the ledger's `missed`
    is the rule's."""

    def __init__(self, context: CareContext, base: MissedMeasurementParams) -> None:
        self._context = context
        self._base = base
        self.last_tick: datetime | None = None
        #: The rules' clock at the latest tick (not saved: after a restart, time stopped
        #: counts as passed on both clocks).
        self._last_rule: float | None = None
        self._since: dict[str, datetime] = {}

    def advance(self, instant: Instant) -> tuple[datetime | None, dict[str, str]]:
        """Move to the tick `instant`: returns the latest tick before it (None on the
        first tick, and after the clock stepped forward) and the subjects watched, with
        their thermometer. A clock set back leaves the latest tick where it was, so no
        window is judged twice. A clock set forward (a Pi that booted with no time,
        set by NTP: the wall clock jumps, the rules' monotonic clock does not) judges
        none of the windows it skipped: nobody missed them, and a Pi that booted in
        2000 would otherwise judge twenty years of windows."""
        now = instant.wall.astimezone(UTC)
        watched = thermometers(self._context)
        previous, previous_rule = self.last_tick, self._last_rule
        self._last_rule = instant.rule
        if previous is not None and previous_rule is not None:
            stepped = (now - previous).total_seconds() - (instant.rule - previous_rule)
            if stepped > _CLOCK_STEP_S:
                self._since = dict.fromkeys(watched, now)
                self.last_tick = now
                return None, watched
        self._since = {code: self._since.get(code, now) for code in watched}
        if previous is None or now > previous:
            self.last_tick = now
        return previous, watched

    def due(self, subject: Subject, previous: datetime, now: datetime) -> list[Slot]:
        """The subject's windows judged by time going from `previous` to `now` (their
        end plus grace in between), watched or not: see `judged`."""
        grace = self.grace(subject.code)
        tz = self._context.timezone
        return windows_ended(subject.schedule, tz, previous - grace, now.astimezone(UTC) - grace)

    def judged(self, subject: str, slot: Slot) -> bool:
        """Whether the subject was watched from the window's start."""
        since = self._since.get(subject)
        return since is not None and slot.start >= since

    def passed(self, subject: str, slot: Slot) -> bool:
        """Whether the window's time to be judged has come."""
        tick = self.last_tick
        return tick is not None and slot.end + self.grace(subject) <= tick

    def slot_of(self, reading: Reading) -> tuple[Subject, Slot] | None:
        """The subject and window a reading counts for: a final temperature (neither
        intermediate nor flagged) received in one of its subject's windows not judged."""
        if not final_temperature(reading):
            return None
        subject = self._context.subject(reading.subject)
        if subject is None:
            return None
        slot = window_at(reading.received_at, subject.schedule, self._context.timezone)
        if slot is None or self.passed(subject.code, slot):
            return None
        return subject, slot

    def grace(self, subject: str) -> timedelta:
        """The subject's `grace_s` (its grade's profile and own thresholds over the base)."""
        return timedelta(seconds=self._context.params(TABLE, subject, self._base).grace_s)

    def save(self) -> dict[str, Any]:
        tick = self.last_tick
        return {
            "last_tick": None if tick is None else tick.isoformat(),
            "since": {code: at.isoformat() for code, at in self._since.items()},
        }

    def load(self, state: dict[str, Any]) -> None:
        tick = state["last_tick"]
        self.last_tick = None if tick is None else datetime.fromisoformat(tick)
        self._since = {code: datetime.fromisoformat(at) for code, at in state["since"].items()}


@dataclass
class _Track:
    #: Windows with a final temperature, not yet judged: key -> end.
    satisfied: dict[str, datetime] = field(default_factory=dict)
    alert: Alert | None = None
    #: While the alert is open: the first window it names and how many were missed.
    first_missed: str | None = None
    missed: int = 0


class MissedMeasurementAlerts:
    kind = AlertKind.MISSED_MEASUREMENT
    metrics = frozenset({Metric.BODY_TEMPERATURE})

    def __init__(self, params: MissedMeasurementParams, context: CareContext) -> None:
        self._watch = Watch(context, params)
        self._tracks: dict[str, _Track] = {}
        self._context = context

    def restore(self, alert: Alert) -> None:
        self._tracks.setdefault(alert_key(alert), _Track()).alert = alert

    def open_alerts(self) -> Iterable[Alert]:
        return [t.alert for t in self._tracks.values() if t.alert is not None]

    def on_reading(self, reading: Reading) -> list[Alert]:
        if not final_temperature(reading):
            return []
        counted = self._watch.slot_of(reading)
        if counted is not None:
            subject, slot = counted
            self._tracks.setdefault(subject.code, _Track()).satisfied[slot.key] = slot.end
        track = self._tracks.get(subject_key(reading))
        if track is None or track.alert is None:
            return []
        alert, track.alert, track.first_missed, track.missed = track.alert, None, None, 0
        return [change_alert(alert, AlertState.CLEARED, reading)]

    def on_tick(self, now: Instant) -> list[Alert]:
        previous, watched = self._watch.advance(now)
        if previous is None:
            return []
        changes: list[Alert] = []
        for code, device in watched.items():
            subject = self._context.subject(code)
            if subject is None:
                continue
            track = self._tracks.setdefault(code, _Track())
            missed = [
                slot
                for slot in self._watch.due(subject, previous, now.wall)
                if self._watch.judged(code, slot) and slot.key not in track.satisfied
            ]
            if missed:
                changes.append(self._missed(track, code, device, missed, now.wall))
        latest = self._watch.last_tick
        assert latest is not None  # set by advance
        for code, track in self._tracks.items():
            grace = self._watch.grace(code)
            track.satisfied = {k: e for k, e in track.satisfied.items() if e + grace > latest}
        return changes

    def _missed(
        self, track: _Track, code: str, device: str, slots: list[Slot], now: datetime
    ) -> Alert:
        """Raise the subject's alert for `slots`, or update the open one."""
        track.first_missed = track.first_missed or slots[0].label()
        track.missed += len(slots)
        latest = slots[-1].label()
        if track.missed == 1:
            detail = f"no temperature in {latest}"
        else:
            detail = (
                f"no temperature in {track.missed} windows in a row:"
                f" from {track.first_missed} to {latest}"
            )
        if track.alert is None:
            track.alert = open_alert(self.kind, code, code, device, now, detail)
            return snapshot(track.alert)
        return move_alert(track.alert, AlertState.UPDATED, now, detail)

    def save_state(self, epoch_offset: float) -> Any:
        """Wall times (ISO), not rule times: the schedule is on the wall clock."""
        return {
            "watch": self._watch.save(),
            "tracks": {
                code: {
                    "satisfied": {k: e.isoformat() for k, e in t.satisfied.items()},
                    "first_missed": t.first_missed,
                    "missed": t.missed,
                }
                for code, t in self._tracks.items()
                if t.satisfied or t.alert is not None
            },
        }

    def load_state(self, state: Any, epoch_offset: float) -> None:
        self._watch.load(state["watch"])
        for code, saved in state["tracks"].items():
            track = self._tracks.setdefault(code, _Track())
            track.satisfied = {k: datetime.fromisoformat(e) for k, e in saved["satisfied"].items()}
            if track.alert is not None:
                track.first_missed, track.missed = saved["first_missed"], saved["missed"]
