"""Door open: what a door sensor's opening means follows from its binding's role.

- `isolation`: any opening while the subject is isolated raises; after the isolation's
  end (or for a subject never isolated) openings raise nothing: isolation rules stop.
- `night`: an opening in the quiet hours (`quiet_start`-`quiet_end`, local time in the
  gateway's time zone; the window may cross midnight, 22:00-06:00 by default) raises.
- `info`: openings are events only.
- Every role: a door held open `held_open_s` (10 min by default) raises on the tick that
  passes it, or updates the alert its opening raised. A resident's door left open is a
  concern after the isolation too, so this applies to isolation doors after the end.
- The door closing clears it. One alert per subject (the lifecycle's); with two doors
  of a subject alerting at once, the second updates it and it clears when the last of
  them closes. A door's "open since" is kept across a restart (time stopped counts).
- An isolation alert: no value, no threshold, no severity; the `detail` says it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from drivers.measurement import Metric
from gateway.config_table import ConfigTable
from gateway.model import Alert, AlertKind, AlertState, DoorRole, Instant, Reading
from gateway.rules.base import CareContext, HeldAlerts, from_epoch, snapshot, subject_key, to_epoch
from gateway.rules.technical import duration, local_clock, move_alert, open_alert


class DoorOpenParams(ConfigTable):
    """`[rules.door_open]`. Quiet hours are TOML local times (`22:00:00`)."""

    quiet_start: time = time(22, 0)
    #: Before `quiet_start`: the quiet hours cross midnight.
    quiet_end: time = Field(default=time(6, 0), validate_default=True)
    #: At least a minute: walking through a door is not holding it open.
    held_open_s: float = Field(default=600.0, ge=60.0, le=86400.0)

    @field_validator("quiet_end")
    @classmethod
    def _not_empty(cls, end: time, info: ValidationInfo) -> time:
        if end == info.data.get("quiet_start"):
            raise ValueError("must differ from quiet_start")
        return end

    def quiet_at(self, local: time) -> bool:
        if self.quiet_start < self.quiet_end:
            return self.quiet_start <= local < self.quiet_end
        return local >= self.quiet_start or local < self.quiet_end


@dataclass
class _Open:
    """A door sensor that is open now."""

    #: The alert key (subject, or `device:<id>` for an unbound sensor) and subject.
    key: str
    subject: str | None
    #: Rule time and wall time of the opening, and the reading that said it.
    since: float
    opened_at: datetime
    opening: str
    #: This opening raised or updated the key's alert (a door to watch close).
    alerted: bool = False
    #: The held-open line was passed.
    held: bool = False


class DoorOpenAlerts(HeldAlerts):
    kind = AlertKind.DOOR_OPEN
    metrics = frozenset({Metric.DOOR_OPEN})

    def __init__(self, params: DoorOpenParams, context: CareContext) -> None:
        super().__init__()
        self._base = params
        self._context = context
        self._open: dict[str, _Open] = {}

    def on_reading(self, reading: Reading) -> list[Alert]:
        m = reading.measurement
        if m.metric is not Metric.DOOR_OPEN:
            return []
        binding = self._context.binding(reading.device)
        if binding is None or binding.door_role is None:
            return []
        if m.value:
            return self._opened(reading, binding.door_role)
        return self._closed(reading)

    def _opened(self, reading: Reading, role: DoorRole) -> list[Alert]:
        if reading.device in self._open:
            return []  # still open: the state repeated, or "left open"
        door = _Open(
            subject_key(reading),
            reading.subject,
            reading.rule_time,
            reading.received_at,
            reading.id,
        )
        self._open[reading.device] = door
        why = self._why(reading, role)
        if why is None:
            return []
        door.alerted = True
        at = local_clock(reading.received_at, self._context.timezone)
        active = self._active.get(door.key)
        if active is not None:
            detail = f"{reading.device} also opened {at} {why}"
            return [move_alert(active, AlertState.UPDATED, reading.received_at, detail, reading.id)]
        alert = open_alert(
            self.kind,
            door.key,
            reading.subject,
            reading.device,
            reading.received_at,
            f"opened {at} {why}",
            [reading.id],
        )
        self._active[door.key] = alert
        return [snapshot(alert)]

    def _why(self, reading: Reading, role: DoorRole) -> str | None:
        """Why this opening is an alert, None when it is an event only."""
        if role is DoorRole.ISOLATION:
            subject = self._context.subject(reading.subject)
            if subject is not None and subject.isolated_at(reading.received_at):
                return "during isolation"
        elif role is DoorRole.NIGHT:
            params = self._context.params("door_open", reading.subject, self._base)
            if params.quiet_at(reading.received_at.astimezone(self._context.timezone).time()):
                return "during quiet hours"
        return None

    def _closed(self, reading: Reading) -> list[Alert]:
        door = self._open.pop(reading.device, None)
        key = door.key if door is not None else subject_key(reading)
        alert = self._active.get(key)
        if alert is None:
            return []
        # The door the alert is about closed (or, its state lost, the one that raised it)
        # and no other door of the subject that alerted is still open.
        ours = door.alerted if door is not None else alert.device == reading.device
        if not ours or any(d.key == key and d.alerted for d in self._open.values()):
            return []
        del self._active[key]
        tz = self._context.timezone
        opened = door.opened_at if door is not None else alert.raised_at
        detail = f"opened {local_clock(opened, tz)}, closed {local_clock(reading.received_at, tz)}"
        return [move_alert(alert, AlertState.CLEARED, reading.received_at, detail, reading.id)]

    def on_tick(self, now: Instant) -> list[Alert]:
        changes: list[Alert] = []
        for device, door in self._open.items():
            if door.held:
                continue
            params = self._context.params("door_open", door.subject, self._base)
            open_for = now.rule - door.since
            if open_for < params.held_open_s:
                continue
            door.held = door.alerted = True
            opened = local_clock(door.opened_at, self._context.timezone)
            detail = f"held open {duration(open_for)} (opened {opened})"
            active = self._active.get(door.key)
            if active is not None:
                changes.append(move_alert(active, AlertState.UPDATED, now.wall, detail))
                continue
            alert = open_alert(
                self.kind, door.key, door.subject, device, now.wall, detail, [door.opening]
            )
            self._active[door.key] = alert
            changes.append(snapshot(alert))
        return changes

    def save_state(self, epoch_offset: float) -> Any:
        if not self._open:
            return None
        return {
            device: {
                "key": door.key,
                "subject": door.subject,
                "since": to_epoch(door.since, epoch_offset),
                "opened_at": door.opened_at.timestamp(),
                "opening": door.opening,
                "alerted": door.alerted,
                "held": door.held,
            }
            for device, door in self._open.items()
        }

    def load_state(self, state: Any, epoch_offset: float) -> None:
        for device, saved in state.items():
            since = from_epoch(saved["since"], epoch_offset)
            assert since is not None
            self._open[device] = _Open(
                key=saved["key"],
                subject=saved["subject"],
                since=since,
                opened_at=datetime.fromtimestamp(saved["opened_at"], UTC),
                opening=saved["opening"],
                alerted=saved["alerted"],
                held=saved["held"],
            )
