"""What the gateway keeps and publishes: readings (a measurement with its identity) and
alerts. One vocabulary for the store, the rules, the uplink and the page."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import orjson

from drivers.measurement import Measurement


class ClockState(StrEnum):
    SYNCED = "synced"
    UNSYNCED = "unsynced"
    #: Received unsynced; `received_at` corrected once the clock was synchronised
    #: (gateway/clock_correction.py). Readings only: the clock itself is never this.
    CORRECTED = "corrected"


@dataclass(frozen=True, slots=True)
class Instant:
    """A moment as the rules see it: the wall clock (alert times, local-time schedules)
    and the rules' duration clock (`Reading.rule_time`: monotonic seconds in the
    gateway, the wall clock's seconds in a replay)."""

    wall: datetime
    rule: float

    @property
    def epoch_offset(self) -> float:
        """Add to a rule time to get Unix seconds: how timers are saved across a restart
        (the monotonic clock starts again at boot; the wall clock goes on)."""
        return self.wall.timestamp() - self.rule


@dataclass(frozen=True, slots=True)
class Reading:
    """An accepted measurement: committed to the store under `seq` before anything else
    sees it. `id` is `<gateway>-<seq>`, so a resend after a crash carries the same id."""

    seq: int
    id: str
    device: str
    subject: str | None
    measurement: Measurement
    received_at: datetime
    clock: ClockState
    #: The gateway's monotonic clock (s) when it received the measurement; not
    #: published. Rules measure durations with it, so the wall clock jumping (NTP
    #: setting a Pi that booted with no time, forward or back) neither holds back nor
    #: hurries an alert. None for readings built elsewhere (tests, replays): then
    #: `received_at` is used (`rule_time`).
    elapsed_s: float | None = None

    @property
    def rule_time(self) -> float:
        """Seconds on the clock the rules measure durations with."""
        return self.elapsed_s if self.elapsed_s is not None else self.received_at.timestamp()

    @property
    def instant(self) -> Instant:
        return Instant(self.received_at, self.rule_time)

    def payload(self) -> dict[str, Any]:
        """The JSON object published in `readings/<device>` (schema: reading-message.json)."""
        m = self.measurement
        measured_at = m.measured_at
        return {
            "id": self.id,
            "seq": self.seq,
            "device": self.device,
            "subject": self.subject,
            "metric": m.metric.value,
            "value": m.value,
            "unit": m.unit,
            "site": m.site.value if m.site else None,
            "quality": sorted(q.value for q in m.quality) if m.quality else [],
            "measured_at": None
            if measured_at is None
            else _device_time(measured_at, measured_at.fold),
            "received_at": _received_text(self.received_at),
            "clock": self.clock.value,
        }

    def row(self) -> tuple[int, str, str, str, str]:
        """What the store keeps of the reading: seq, device, metric, `received_at` (as
        in the payload) and the payload as compact JSON text, exactly as
        `json.dumps(payload(), separators=(",", ":"))` writes it, but by orjson (several
        times faster)."""
        payload = self.payload()
        if _orjson_writes_as_json(self.measurement.value):
            text = orjson.dumps(payload).decode()
        else:
            text = json.dumps(payload, separators=(",", ":"))
        return self.seq, self.device, payload["metric"], payload["received_at"], text


def _orjson_writes_as_json(value: float | bool) -> bool:
    """orjson writes every other part of a payload as `json` does (ASCII codes, times,
    names, small ints), and a value too, but for a float below 1e-4 (1e-05 becomes
    0.00001, 1e-09 1e-9; a PLX SFLOAT can be 1e-8), a non-finite one (null, not NaN;
    no parser makes one: their special values are no reading) and an int past 64 bits.
    For those, `json` writes the text."""
    if isinstance(value, float):
        size = abs(value)
        return size == 0.0 or (size >= 1e-4 and size != math.inf)
    return -(2**63) <= value < 2**64


#: The `received_at` last formatted, and its text. The readings of one packet share
#: one received time (the same object), and formatting it costs ~1 us, a third of a
#: payload. Swapped as one tuple: the store's thread and the loop's may both ask.
_last_received: tuple[datetime | None, str] = (None, "")


def _received_text(value: datetime) -> str:
    global _last_received
    last, text = _last_received
    if last is not value:
        text = value.isoformat(timespec="milliseconds")
        _last_received = (value, text)
    return text


@functools.lru_cache(maxsize=256)
def _device_time(value: datetime, fold: int) -> str:
    """Device clocks carry no zone: interpret them in the gateway's local zone. Kept
    for the last few times (a packet's values share one; the zone lookup is the cost);
    `fold` is in the key, as naive times that differ only in it are equal."""
    return value.astimezone().isoformat(timespec="seconds")


class AlertKind(StrEnum):
    """The names the township's server keys on: fixed."""

    LOW_SPO2 = "low_spo2"
    FEVER = "fever"
    HYPOTHERMIA = "hypothermia"
    TACHYCARDIA = "tachycardia"
    BRADYCARDIA = "bradycardia"
    MISSED_MEASUREMENT = "missed_measurement"
    DOOR_OPEN = "door_open"
    DEVICE_SILENT = "device_silent"
    PROBE_OFF = "probe_off"
    BATTERY_LOW = "battery_low"
    #: The gateway's store refuses writes or was found corrupt.
    STORAGE_FAILURE = "storage_failure"
    #: An ESPHome Bluetooth proxy not connected, or relaying nothing.
    PROXY_SILENT = "proxy_silent"

    @property
    def alert_class(self) -> AlertClass:
        return ALERT_CLASSES[self]


class AlertClass(StrEnum):
    """What an alert is about: the resident's body, the measurement routine, the
    isolation, or the equipment. Only physiological alerts carry a clinical severity."""

    PHYSIOLOGICAL = "physiological"
    ADHERENCE = "adherence"
    ISOLATION = "isolation"
    TECHNICAL = "technical"


ALERT_CLASSES: Mapping[AlertKind, AlertClass] = MappingProxyType(
    {
        AlertKind.LOW_SPO2: AlertClass.PHYSIOLOGICAL,
        AlertKind.FEVER: AlertClass.PHYSIOLOGICAL,
        AlertKind.HYPOTHERMIA: AlertClass.PHYSIOLOGICAL,
        AlertKind.TACHYCARDIA: AlertClass.PHYSIOLOGICAL,
        AlertKind.BRADYCARDIA: AlertClass.PHYSIOLOGICAL,
        AlertKind.MISSED_MEASUREMENT: AlertClass.ADHERENCE,
        AlertKind.DOOR_OPEN: AlertClass.ISOLATION,
        AlertKind.DEVICE_SILENT: AlertClass.TECHNICAL,
        AlertKind.PROBE_OFF: AlertClass.TECHNICAL,
        AlertKind.BATTERY_LOW: AlertClass.TECHNICAL,
        AlertKind.STORAGE_FAILURE: AlertClass.TECHNICAL,
        AlertKind.PROXY_SILENT: AlertClass.TECHNICAL,
    }
)


class Severity(StrEnum):
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"


class AlertState(StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


@dataclass(slots=True)
class Alert:
    """A condition of one subject (or of an unbound device). Events about it are
    published on `alerts`; the set of alerts not cleared on `alerts/active`."""

    id: str
    kind: AlertKind
    subject: str | None
    device: str
    #: None for every class but physiological: a flat battery is never "critical".
    severity: Severity | None
    state: AlertState
    raised_at: datetime
    updated_at: datetime
    #: The measured value and the line it crossed; None for a technical alert.
    value: float | None
    threshold: float | None
    site: str | None = None
    cleared_at: datetime | None = None
    evidence: list[str] = field(default_factory=list)
    #: What the alert is about, in one line, when value and threshold do not say it
    #: (a technical alert's cause, the window a measurement was missed in).
    detail: str | None = None
    #: Who acknowledged it: a role code (`doctor-3`), never a name.
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON object published on `alerts` (schema: alert-event.json)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "class": self.kind.alert_class.value,
            "state": self.state.value,
            "severity": self.severity.value if self.severity else None,
            "subject": self.subject,
            "device": self.device,
            "value": self.value,
            "threshold": self.threshold,
            "site": self.site,
            "raised_at": self.raised_at.isoformat(timespec="milliseconds"),
            "updated_at": self.updated_at.isoformat(timespec="milliseconds"),
            "cleared_at": (
                self.cleared_at.isoformat(timespec="milliseconds") if self.cleared_at else None
            ),
            "evidence": list(self.evidence),
            "detail": self.detail,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": (
                self.acknowledged_at.isoformat(timespec="milliseconds")
                if self.acknowledged_at
                else None
            ),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Alert:
        """The inverse of `payload()`: an alert as the store kept it."""

        def when(key: str) -> datetime | None:
            value = payload.get(key)
            return datetime.fromisoformat(value) if value else None

        raised_at, updated_at = when("raised_at"), when("updated_at")
        assert raised_at is not None and updated_at is not None
        return cls(
            id=payload["id"],
            kind=AlertKind(payload["kind"]),
            subject=payload["subject"],
            device=payload["device"],
            severity=Severity(payload["severity"]) if payload.get("severity") else None,
            state=AlertState(payload["state"]),
            raised_at=raised_at,
            updated_at=updated_at,
            value=payload["value"],
            threshold=payload["threshold"],
            site=payload.get("site"),
            cleared_at=when("cleared_at"),
            evidence=list(payload.get("evidence", [])),
            detail=payload.get("detail"),
            acknowledged_by=payload.get("acknowledged_by"),
            acknowledged_at=when("acknowledged_at"),
        )


# --- subjects: who is measured, how closely, and on which schedule -----------------------


class RiskGrade(StrEnum):
    """The field's red/yellow/green grade: selects a profile of alert thresholds."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


class DoorRole(StrEnum):
    """What an opening of a door sensor means."""

    #: Any opening during the subject's isolation alerts.
    ISOLATION = "isolation"
    #: An opening in the quiet hours alerts (a resident who wanders at night).
    NIGHT = "night"
    #: Openings are recorded, never alerted (except a door held open).
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Window:
    """A measurement window of the day, in local time: `start` <= t < `end`, within one
    day (no window crosses midnight)."""

    name: str
    start: time
    end: time

    def label(self) -> str:
        return f"{self.name} {self.start:%H:%M}-{self.end:%H:%M}"


#: The field's twice-daily temperature: morning and evening.
DEFAULT_SCHEDULE: tuple[Window, ...] = (
    Window("morning", time(6, 0), time(10, 0)),
    Window("evening", time(18, 0), time(22, 0)),
)


@dataclass(frozen=True, slots=True)
class Isolation:
    """A home isolation: from `start` for `days` days, or until `ended_at` when it was
    ended early."""

    start: datetime
    days: int = 14
    ended_at: datetime | None = None

    @property
    def end(self) -> datetime:
        planned = self.start + timedelta(days=self.days)
        return min(planned, self.ended_at) if self.ended_at else planned

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True, slots=True)
class Subject:
    """A bed or a pseudonymous resident code (never a name) and how it is followed."""

    code: str
    risk_grade: RiskGrade = RiskGrade.GREEN
    isolation: Isolation | None = None
    schedule: tuple[Window, ...] = DEFAULT_SCHEDULE
    #: Per rule table, the parameters that differ for this subject (over its grade's
    #: profile and the `[rules]` defaults).
    thresholds: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def isolated_at(self, at: datetime) -> bool:
        return self.isolation is not None and self.isolation.covers(at)

    def record(self) -> dict[str, Any]:
        """The JSON object kept in the store and published in `subjects`."""
        iso = self.isolation
        return {
            "code": self.code,
            "risk_grade": self.risk_grade.value,
            "isolation": None
            if iso is None
            else {
                "start": iso.start.isoformat(timespec="seconds"),
                "days": iso.days,
                "end": iso.end.isoformat(timespec="seconds"),
                "ended_early": iso.ended_at is not None,
            },
            "schedule": [
                {"name": w.name, "start": f"{w.start:%H:%M}", "end": f"{w.end:%H:%M}"}
                for w in self.schedule
            ],
            "thresholds": {
                table: {k: _json_value(v) for k, v in values.items()}
                for table, values in self.thresholds.items()
            },
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Subject:
        iso = record.get("isolation")
        isolation = None
        if iso:
            start = datetime.fromisoformat(iso["start"])
            days = int(iso["days"])
            end = datetime.fromisoformat(iso["end"])
            ended_at = end if iso.get("ended_early") else None
            isolation = Isolation(start, days, ended_at)
        return cls(
            code=record["code"],
            risk_grade=RiskGrade(record.get("risk_grade", "green")),
            isolation=isolation,
            schedule=tuple(
                Window(w["name"], time.fromisoformat(w["start"]), time.fromisoformat(w["end"]))
                for w in record["schedule"]
            )
            if "schedule" in record
            else DEFAULT_SCHEDULE,
            thresholds=MappingProxyType(
                {t: MappingProxyType(dict(v)) for t, v in record.get("thresholds", {}).items()}
            ),
        )


def _json_value(value: Any) -> Any:
    """A threshold as JSON holds it: a time of day (quiet hours) as `HH:MM[:SS]`."""
    return value.isoformat() if isinstance(value, time) else value


@dataclass(frozen=True, slots=True)
class Binding:
    """A device bound to a subject, and what the rules need to know of it."""

    device: str
    kind: str
    subject: str | None
    #: A thermometer: its subject's schedule windows expect its final temperatures.
    thermometer: bool = False
    #: A door sensor, and what its openings mean.
    door_role: DoorRole | None = None
    #: Expected to report at least this often (s): silence past a few of these is the
    #: technical `device_silent` alert. None: not expected to report continuously.
    report_interval_s: float | None = None
