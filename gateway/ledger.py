"""The ledger (the field's 台账): per subject with a thermometer and per local day, each
schedule window with the temperature that satisfied it, or `missed`.

`LedgerBook` is fed the readings and ticks the rules are. A window counts and is judged
as the `missed_measurement` rule does (gateway/rules/missed.py: same schedule functions,
same `grace_s`, same watch), so the ledger says `missed` exactly where that alert was
raised. On the tick that judges a day's last window, `on_tick` returns that day's
completed ledger, one per subject, for the caller to keep and publish.

The payload (one subject, one local day):

    {
      "subject": "bed-1",
      "date": "2026-12-01",                 # local date
      "timezone": "Asia/Shanghai",          # IANA key, or the UTC offset ("+08:00")
      "isolation": {"day": 3, "days": 14},  # day n of the isolation (day 1: the date
                                            # it began); null when not isolated that date
      "windows": [                          # in order of their start
        {
          "name": "morning", "start": "06:00", "end": "10:00",
          "status": "measured",             # or "missed", "pending" (not judged yet),
                                            # "not_expected" (no thermometer was bound
                                            # from the window's start: never judged)
          "measurement": {                  # the window's first final temperature; null
            "reading": "gw-1-42",           # unless measured
            "received_at": "2026-12-01T00:31:05.120+00:00",
            "value": 36.6, "unit": "Cel", "site": "axillary", "device": "hts-f00000000001"
          }
        }
      ]
    }

A date is isolated when the isolation covers any moment of it, so an isolation begun in
the afternoon has its last hours on a 15th date (`{"day": 15, "days": 14}`).

`day(subject, date)` is the same payload as it stands now (for the page): windows not
yet judged are `pending`. The book holds the dates from the day before the latest tick's
on; older ones are the store's. Its state is JSON (`save_state`, `load_state`), so a
restart mid-day keeps what was measured.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from gateway.model import Instant, Reading, Subject
from gateway.rules.base import CareContext
from gateway.rules.missed import MissedMeasurementParams, Watch
from gateway.schedule import Slot, last_window, local_date, local_instant, windows_on


class DayNotHeld(LookupError):
    """The book no longer holds that date: the store has its completed ledger."""


class LedgerBook:
    def __init__(self, context: CareContext, params: MissedMeasurementParams) -> None:
        """`params`: the `[rules.missed_measurement]` the rule is given."""
        self._context = context
        self._watch = Watch(context, params)
        #: subject -> local date (ISO) -> window name -> the measurement that satisfied it.
        self._days: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}

    def on_reading(self, reading: Reading) -> None:
        """Note the reading if it is the first final temperature of a window not judged."""
        counted = self._watch.slot_of(reading)
        if counted is None:
            return
        subject, slot = counted
        windows = self._days.setdefault(subject.code, {}).setdefault(slot.day.isoformat(), {})
        m = reading.measurement
        windows.setdefault(
            slot.window.name,
            {
                "reading": reading.id,
                "received_at": reading.received_at.isoformat(timespec="milliseconds"),
                "value": float(m.value),
                "unit": m.unit,
                "site": m.site.value if m.site else None,
                "device": reading.device,
            },
        )

    def on_tick(self, now: Instant) -> list[dict[str, Any]]:
        """The days whose last window time reaching `now` judged: one payload per
        subject and day (several days after a gateway was off)."""
        previous, watched = self._watch.advance(now)
        completed: list[dict[str, Any]] = []
        if previous is not None:
            for code in watched:
                subject = self._context.subject(code)
                if subject is None:
                    continue
                last = last_window(subject.schedule)
                completed.extend(
                    self._payload(subject, slot.day)
                    for slot in self._watch.due(subject, previous, now.wall)
                    if slot.window == last
                )
        self._forget_before(local_date(now.wall, self._context.timezone) - timedelta(days=1))
        return completed

    def day(self, subject: str, on: date) -> dict[str, Any]:
        """The ledger of `subject` on local date `on` as it stands. KeyError: an unknown
        subject; `DayNotHeld`: a date older than the book holds."""
        known = self._context.subject(subject)
        if known is None:
            raise KeyError(subject)
        tick = self._watch.last_tick
        if tick is not None and on < local_date(tick, self._context.timezone) - timedelta(days=1):
            raise DayNotHeld(f"{on.isoformat()} is no longer held: the store has it")
        return self._payload(known, on)

    def save_state(self) -> dict[str, Any]:
        """A copy (the caller may write it out on another thread)."""
        days = {code: {on: dict(w) for on, w in held.items()} for code, held in self._days.items()}
        return {"watch": self._watch.save(), "days": days}

    def load_state(self, state: dict[str, Any]) -> None:
        self._watch.load(state["watch"])
        self._days = state["days"]

    # ---------------------------------------------------------------------------------

    def _payload(self, subject: Subject, on: date) -> dict[str, Any]:
        tz = self._context.timezone
        held = self._days.get(subject.code, {}).get(on.isoformat(), {})
        return {
            "subject": subject.code,
            "date": on.isoformat(),
            "timezone": zone_name(tz, on),
            "isolation": self._isolation_day(subject, on),
            "windows": [
                {
                    "name": slot.window.name,
                    "start": f"{slot.window.start:%H:%M}",
                    "end": f"{slot.window.end:%H:%M}",
                    "status": self._status(subject.code, slot, held),
                    "measurement": held.get(slot.window.name),
                }
                for slot in windows_on(on, subject.schedule, tz)
            ],
        }

    def _status(self, code: str, slot: Slot, held: dict[str, dict[str, Any]]) -> str:
        if slot.window.name in held:
            return "measured"
        if not self._watch.judged(code, slot):
            return "not_expected"
        return "missed" if self._watch.passed(code, slot) else "pending"

    def _isolation_day(self, subject: Subject, on: date) -> dict[str, int] | None:
        iso = subject.isolation
        if iso is None:
            return None
        tz = self._context.timezone
        begins = local_instant(on, time(0), tz)
        ends = local_instant(on + timedelta(days=1), time(0), tz)
        if not (iso.start.astimezone(UTC) < ends and begins < iso.end.astimezone(UTC)):
            return None
        return {"day": (on - local_date(iso.start, tz)).days + 1, "days": iso.days}

    def _forget_before(self, oldest: date) -> None:
        keep = oldest.isoformat()
        for days in self._days.values():
            for stale in [d for d in days if d < keep]:
                del days[stale]


def zone_name(tz: tzinfo, on: date) -> str:
    """The zone's IANA key, or its UTC offset on that date (`+08:00`)."""
    key = getattr(tz, "key", None)
    if isinstance(key, str):
        return key
    offset = datetime.combine(on, time(12), tzinfo=tz).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
