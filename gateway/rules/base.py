"""What every rule shares: keying alerts by subject, and building alert ids."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Protocol

from gateway.model import Alert, AlertKind, AlertState, Reading, Severity

#: How many reading ids an alert carries as evidence (the most recent ones).
EVIDENCE_LIMIT = 20


class Rule(Protocol):
    """One kind of alert. Time comes from outside only: a reading's `received_at`, or the
    `now` of a tick, never the wall clock, so a replay gives the same alerts."""

    kind: AlertKind

    def on_reading(self, reading: Reading) -> list[Alert]:
        """Return the alerts whose state this reading changed (raised, updated, cleared)."""

    def on_tick(self, now: datetime) -> list[Alert]:
        """Return the alerts whose state time reaching `now` changed (about once a second)."""

    def restore(self, alert: Alert) -> None:
        """Adopt an alert that was active when the gateway last stopped."""


def subject_key(reading: Reading) -> str:
    """Alerts belong to a subject; an unbound device's readings alert on the device."""
    return reading.subject or f"device:{reading.device}"


def alert_key(alert: Alert) -> str:
    return alert.subject or f"device:{alert.device}"


def new_alert_id(kind: AlertKind, key: str, raised_at: datetime) -> str:
    return f"{kind.value}:{key}:{int(raised_at.timestamp() * 1000)}"


def raise_alert(
    kind: AlertKind,
    reading: Reading,
    severity: Severity,
    threshold: float,
    evidence: list[str],
    site: str | None = None,
) -> Alert:
    """A new alert caused by `reading` (the latest of `evidence`)."""
    now = reading.received_at
    return Alert(
        id=new_alert_id(kind, subject_key(reading), now),
        kind=kind,
        subject=reading.subject,
        device=reading.device,
        severity=severity,
        state=AlertState.RAISED,
        raised_at=now,
        updated_at=now,
        value=float(reading.measurement.value),
        threshold=threshold,
        site=site,
        evidence=evidence[-EVIDENCE_LIMIT:],
    )


def change_alert(
    alert: Alert, state: AlertState, reading: Reading, severity: Severity | None = None
) -> Alert:
    """Move a held alert to `state` because of `reading`; returns the event to publish
    (a copy: the rule keeps mutating the alert it holds)."""
    alert.state = state
    alert.value = float(reading.measurement.value)
    alert.updated_at = reading.received_at
    if severity is not None:
        alert.severity = more_severe(alert.severity, severity)
    if state is AlertState.CLEARED:
        alert.cleared_at = reading.received_at
    alert.evidence.append(reading.id)
    del alert.evidence[:-EVIDENCE_LIMIT]
    return snapshot(alert)


def snapshot(alert: Alert) -> Alert:
    return replace(alert, evidence=list(alert.evidence))


def more_severe(a: Severity, b: Severity) -> Severity:
    order = list(Severity)
    return a if order.index(a) >= order.index(b) else b
