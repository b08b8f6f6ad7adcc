"""A subject's measurement schedule on the calendar: its windows (local times of day,
`Window`) as moments of a given date in the gateway's time zone.

A window covers `[start, end)`: it opens when the local clock first shows `start` on
that date and closes when it first shows `end`. So a day when the clocks change keeps
every window at its local times (a 06:00-10:00 window is 4 hours long either way, its
instants one hour apart in UTC across the change); a window edge in the hour skipped in
spring falls at the jump (a 02:30 start opens at 03:00), and an edge in the hour repeated
in autumn falls on its first occurrence. Pure: time zone and instants come from the
caller (the missed-measurement rule and the ledger share these functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from gateway.model import Window


@dataclass(frozen=True, slots=True)
class Slot:
    """One schedule window on one local date; `start` and `end` in UTC (Python compares
    and subtracts datetimes of one zone by their wall times, wrong across a change)."""

    window: Window
    day: date
    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        """Names this window of this date (`2026-12-01 evening`): what state is kept by."""
        return f"{self.day.isoformat()} {self.window.name}"

    def contains(self, at: datetime) -> bool:
        return self.start <= at.astimezone(UTC) < self.end

    def label(self) -> str:
        """`the evening window 18:00-22:00 of 2026-12-01`."""
        w = self.window
        return f"the {w.name} window {w.start:%H:%M}-{w.end:%H:%M} of {self.day.isoformat()}"


def local_date(at: datetime, tz: tzinfo) -> date:
    return at.astimezone(tz).date()


def windows_on(day: date, schedule: tuple[Window, ...], tz: tzinfo) -> list[Slot]:
    """The schedule's windows on local date `day`, in order of their start."""
    slots = [
        Slot(w, day, local_instant(day, w.start, tz), local_instant(day, w.end, tz))
        for w in schedule
    ]
    return sorted(slots, key=lambda s: s.start)


def window_at(at: datetime, schedule: tuple[Window, ...], tz: tzinfo) -> Slot | None:
    """The window `at` falls in, if any."""
    for slot in windows_on(local_date(at, tz), schedule, tz):
        if slot.contains(at):
            return slot
    return None


def windows_ended(
    schedule: tuple[Window, ...], tz: tzinfo, after: datetime, until: datetime
) -> list[Slot]:
    """The windows that ended in `(after, until]`, in order of their end; any number of
    days apart (a gateway that was off for a while)."""
    after, until = after.astimezone(UTC), until.astimezone(UTC)
    if until <= after:
        return []
    day, last = local_date(after, tz), local_date(until, tz)
    ended: list[Slot] = []
    while day <= last:
        ended.extend(s for s in windows_on(day, schedule, tz) if after < s.end <= until)
        day += timedelta(days=1)
    return sorted(ended, key=lambda s: s.end)


def last_window(schedule: tuple[Window, ...]) -> Window | None:
    """The window that ends the day's schedule."""
    return max(schedule, key=lambda w: w.end, default=None)


def local_instant(day: date, at: time, tz: tzinfo) -> datetime:
    """The first instant of local date `day` at which the clock shows `at` or later (a
    window's edge; midnight, a date's start)."""
    local = datetime.combine(day, at, tzinfo=tz)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant  # it exists (fold 0: the first of two in autumn's repeated hour)
    # Skipped by the spring change: the clock jumps past it at the change. With fold 1 the
    # time is read with the offset after the change (an instant before it), with fold 0
    # with the offset before (an instant after it); the change is found between them to
    # the second (zones change on whole seconds).
    wanted = local.replace(tzinfo=None)
    before = int(local.replace(fold=1).timestamp())
    after = int(local.timestamp())
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, tz).replace(tzinfo=None) >= wanted:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)
