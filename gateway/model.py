"""What the gateway keeps and publishes: readings (a measurement with its identity) and
alerts. One vocabulary for the store, the rules, the uplink and the page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from drivers.measurement import Measurement


class ClockState(StrEnum):
    SYNCED = "synced"
    UNSYNCED = "unsynced"


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

    def payload(self) -> dict[str, Any]:
        """The JSON object published in `readings/<device>` (schema: reading-message.json)."""
        m = self.measurement
        return {
            "id": self.id,
            "seq": self.seq,
            "device": self.device,
            "subject": self.subject,
            "metric": m.metric.value,
            "value": m.value,
            "unit": m.unit,
            "site": m.site.value if m.site else None,
            "quality": sorted(q.value for q in m.quality),
            "measured_at": _device_time(m.measured_at),
            "received_at": self.received_at.isoformat(timespec="milliseconds"),
            "clock": self.clock.value,
        }


def _device_time(value: datetime | None) -> str | None:
    """Device clocks carry no zone: interpret them in the gateway's local zone."""
    if value is None:
        return None
    return value.astimezone().isoformat(timespec="seconds")


class AlertKind(StrEnum):
    LOW_SPO2 = "low_spo2"
    FEVER = "fever"
    #: Technical: the gateway's store refuses writes or was found corrupt.
    STORAGE_FAILURE = "storage_failure"


class Severity(StrEnum):
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"


class AlertState(StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    CLEARED = "cleared"


@dataclass(slots=True)
class Alert:
    """A condition of one subject (or of an unbound device). Events about it are
    published on `alerts`; the set of alerts not cleared on `alerts/active`."""

    id: str
    kind: AlertKind
    subject: str | None
    device: str
    severity: Severity
    state: AlertState
    raised_at: datetime
    updated_at: datetime
    #: The measured value and the line it crossed; None for a technical alert.
    value: float | None
    threshold: float | None
    site: str | None = None
    cleared_at: datetime | None = None
    evidence: list[str] = field(default_factory=list)
    #: What a technical alert is about, in one line (None for a physiological one).
    detail: str | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON object published on `alerts` (schema: alert-event.json)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "state": self.state.value,
            "severity": self.severity.value,
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
            severity=Severity(payload["severity"]),
            state=AlertState(payload["state"]),
            raised_at=raised_at,
            updated_at=updated_at,
            value=payload["value"],
            threshold=payload["threshold"],
            site=payload.get("site"),
            cleared_at=when("cleared_at"),
            evidence=list(payload.get("evidence", [])),
            detail=payload.get("detail"),
        )
