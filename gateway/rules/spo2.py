"""Low SpO2: valid samples at or below the line, without interruption, for a while.

- Raise after `persist_s` of consecutive alertable samples <= `raise_at_or_below`
  (15 s at 93 % by default: a 15-s delay cuts nuisance alarms by ~60 %, docs/protocols.md 6).
- A flagged sample (probe off, low perfusion, provisional...) or a gap longer than
  `max_gap_s` restarts the count: alarm timers only run on trustworthy values.
- Clear after `clear_after_s` of samples >= `clear_at_or_above` (hysteresis).
- Severity is critical when any sample of the episode reached `critical_at_or_below`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from drivers.measurement import Metric
from gateway.config_table import ConfigTable
from gateway.model import Alert, AlertKind, AlertState, Instant, Reading, Severity
from gateway.rules.base import (
    EVIDENCE_LIMIT,
    CareContext,
    alert_key,
    change_alert,
    raise_alert,
    snapshot,
    subject_key,
)

#: SpO2 lines, %: pulse oximeters state their accuracy from 70 % up (ISO 80601-2-61), so
#: a line below it would rest on values the device cannot vouch for.
_Percent = Annotated[float, Field(ge=70.0, le=100.0)]


class LowSpo2Params(ConfigTable):
    """`[rules.low_spo2]`."""

    raise_at_or_below: _Percent = 93.0
    #: Up to 5 minutes: a longer wait would hide a real desaturation.
    persist_s: float = Field(default=15.0, ge=0.0, le=300.0)
    #: Checked against `raise_at_or_below` even when left at its default.
    clear_at_or_above: _Percent = Field(default=95.0, validate_default=True)
    clear_after_s: float = Field(default=60.0, ge=0.0, le=3600.0)
    critical_at_or_below: _Percent = 88.0
    #: At least 2 s: with 1 Hz readings a shorter gap would restart the count on every
    #: reading, and the alert would never be raised.
    max_gap_s: float = Field(default=5.0, ge=2.0, le=3600.0)

    @field_validator("clear_at_or_above")
    @classmethod
    def _above_the_raise_line(cls, value: float, info: ValidationInfo) -> float:
        raise_line = info.data.get("raise_at_or_below")
        if raise_line is not None and value <= raise_line:
            raise ValueError("must be above raise_at_or_below")
        return value


@dataclass
class _Track:
    #: Times are `Reading.rule_time` (monotonic seconds), never wall clock.
    last_at: float | None = None
    breach_since: float | None = None
    breach_lowest: float = 100.0
    breach_ids: list[str] = field(default_factory=list)
    recovered_since: float | None = None
    alert: Alert | None = None


class LowSpo2Alerts:
    kind = AlertKind.LOW_SPO2

    def __init__(self, params: LowSpo2Params, context: CareContext) -> None:
        self._base = params
        self._context = context
        self._tracks: dict[str, _Track] = {}

    def restore(self, alert: Alert) -> None:
        self._tracks[alert_key(alert)] = _Track(alert=alert)

    def open_alerts(self) -> Iterable[Alert]:
        return [t.alert for t in self._tracks.values() if t.alert is not None]

    def on_tick(self, now: Instant) -> list[Alert]:
        return []  # silence never raises nor clears: only readings do

    def save_state(self, epoch_offset: float) -> None:
        return None

    def load_state(self, state: object, epoch_offset: float) -> None:
        return None

    def on_reading(self, reading: Reading) -> list[Alert]:
        m = reading.measurement
        if m.metric is not Metric.SPO2:
            return []
        params = self._context.params("low_spo2", reading.subject, self._base)
        track = self._tracks.setdefault(subject_key(reading), _Track())
        now = reading.rule_time
        gap = track.last_at is not None and now - track.last_at > params.max_gap_s
        track.last_at = now
        if not m.alertable or gap:
            track.breach_since = None
            track.recovered_since = None
            if not m.alertable:
                return []
        value = float(m.value)
        if value <= params.raise_at_or_below:
            track.recovered_since = None
            if track.breach_since is None:
                track.breach_since = now
                track.breach_lowest = value
                track.breach_ids = []
            track.breach_lowest = min(track.breach_lowest, value)
            track.breach_ids.append(reading.id)
            del track.breach_ids[:-EVIDENCE_LIMIT]
            held = now - track.breach_since
            if held >= params.persist_s:
                return self._raise_or_update(track, reading)
            return []
        track.breach_since = None
        if value >= params.clear_at_or_above and track.alert is not None:
            track.recovered_since = track.recovered_since or now
            if now - track.recovered_since >= params.clear_after_s:
                return [self._clear(track, reading)]
        elif value < params.clear_at_or_above:
            track.recovered_since = None
        return []

    def _raise_or_update(self, track: _Track, reading: Reading) -> list[Alert]:
        params = self._context.params("low_spo2", reading.subject, self._base)
        critical = track.breach_lowest <= params.critical_at_or_below
        severity = Severity.CRITICAL if critical else Severity.HIGH
        if track.alert is None:
            track.alert = raise_alert(
                self.kind, reading, severity, params.raise_at_or_below, track.breach_ids
            )
            return [snapshot(track.alert)]
        if severity is Severity.CRITICAL and track.alert.severity is not Severity.CRITICAL:
            return [change_alert(track.alert, AlertState.UPDATED, reading, severity)]
        return []

    def _clear(self, track: _Track, reading: Reading) -> Alert:
        alert = track.alert
        assert alert is not None
        track.alert = None
        track.recovered_since = None
        return change_alert(alert, AlertState.CLEARED, reading)
