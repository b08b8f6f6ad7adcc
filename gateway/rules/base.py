"""What every rule shares: what a rule is (`Rule`), what it may ask about subjects and
devices (`CareContext`), keying alerts by subject, building and changing alerts, and
the bookkeeping most rules need (`HeldAlerts`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, tzinfo
from typing import Any, Protocol, TypeVar

from drivers.measurement import Metric
from gateway.config_table import ConfigTable
from gateway.model import (
    Alert,
    AlertClass,
    AlertKind,
    AlertState,
    Binding,
    Instant,
    Reading,
    Severity,
    Subject,
)

#: How many reading ids an alert carries as evidence (the most recent ones).
EVIDENCE_LIMIT = 20

P = TypeVar("P", bound=ConfigTable)


class CareContext(Protocol):
    """What the rules may know besides readings: the subjects (grade, isolation,
    schedule, thresholds), the device bindings, and the local time zone. The gateway's
    `SubjectDirectory` (gateway/subjects.py) is one; it changes at run time."""

    @property
    def timezone(self) -> tzinfo: ...

    def subject(self, code: str | None) -> Subject | None: ...

    def subjects(self) -> Iterable[Subject]: ...

    def binding(self, device: str) -> Binding | None: ...

    def bindings(self) -> Iterable[Binding]: ...

    def last_heard(self, device: str) -> float | None:
        """When the device was last heard at all (any packet, a repeat included), on the
        rules' duration clock; None when unknown (a replay knows only readings)."""
        ...

    def params(self, table: str, subject: str | None, base: P) -> P:
        """`base` (the `[rules.<table>]` parameters) as they apply to `subject`: its risk
        grade's profile over them, then its own thresholds over that."""
        ...


class Rule(Protocol):
    """One kind of alert. Time comes from outside only: a reading's `received_at` and
    `rule_time`, or the `Instant` of a tick, never the clock, so a replay gives the
    same alerts."""

    kind: AlertKind

    @property
    def metrics(self) -> frozenset[Metric] | None:
        """The metrics whose readings the rule looks at (the engine hands it no others);
        None: every reading."""

    def on_reading(self, reading: Reading) -> list[Alert]:
        """Return the alerts whose state this reading changed (raised, updated, cleared)."""

    def on_tick(self, now: Instant) -> list[Alert]:
        """Return the alerts whose state time reaching `now` changed (about once a second)."""

    def restore(self, alert: Alert) -> None:
        """Adopt an alert that was active when the gateway last stopped."""

    def open_alerts(self) -> Iterable[Alert]:
        """The alerts this rule holds open (the objects it changes, not copies)."""

    def save_state(self, epoch_offset: float) -> Any:
        """What the rule must remember across a restart besides its open alerts (timers
        of a breach not yet alerted, ...), as JSON; rule times are saved as Unix seconds
        (`rule_time + epoch_offset`)."""

    def load_state(self, state: Any, epoch_offset: float) -> None:
        """Take back what `save_state` returned (rule time = Unix seconds - offset)."""


class HeldAlerts:
    """A rule's open alerts, one per subject (or unbound device); the restore and
    acknowledgement bookkeeping every rule needs. Rules with no timers to keep across
    a restart need nothing more."""

    kind: AlertKind
    #: Every reading, unless a rule says which metrics it looks at.
    metrics: frozenset[Metric] | None = None

    def __init__(self) -> None:
        self._active: dict[str, Alert] = {}

    def restore(self, alert: Alert) -> None:
        self._active[alert_key(alert)] = alert

    def open_alerts(self) -> Iterable[Alert]:
        return list(self._active.values())

    def on_tick(self, now: Instant) -> list[Alert]:
        return []

    def save_state(self, epoch_offset: float) -> Any:
        return None

    def load_state(self, state: Any, epoch_offset: float) -> None:
        return None


def subject_key(reading: Reading) -> str:
    """Alerts belong to a subject; an unbound device's readings alert on the device."""
    return reading.subject or f"device:{reading.device}"


def alert_key(alert: Alert) -> str:
    return alert.subject or f"device:{alert.device}"


def new_alert_id(kind: AlertKind, key: str, raised_at: datetime) -> str:
    return f"{kind.value}:{key}:{int(raised_at.timestamp() * 1000)}"


def graded(kind: AlertKind, severity: Severity | None) -> Severity | None:
    """Only physiological alerts carry a clinical severity."""
    return severity if kind.alert_class is AlertClass.PHYSIOLOGICAL else None


def raise_alert(
    kind: AlertKind,
    reading: Reading,
    severity: Severity | None,
    threshold: float | None,
    evidence: list[str],
    site: str | None = None,
    detail: str | None = None,
) -> Alert:
    """A new alert caused by `reading` (the latest of `evidence`)."""
    now = reading.received_at
    value = reading.measurement.value
    return Alert(
        id=new_alert_id(kind, subject_key(reading), now),
        kind=kind,
        subject=reading.subject,
        device=reading.device,
        severity=graded(kind, severity),
        state=AlertState.RAISED,
        raised_at=now,
        updated_at=now,
        value=float(value),
        threshold=threshold,
        site=site,
        evidence=evidence[-EVIDENCE_LIMIT:],
        detail=detail,
    )


def change_alert(
    alert: Alert, state: AlertState, reading: Reading, severity: Severity | None = None
) -> Alert:
    """Move a held alert to `state` because of `reading`; returns the event to publish
    (a copy: the rule keeps mutating the alert it holds). An escalation takes back an
    acknowledgement: the worse condition is news to whoever acknowledged the milder."""
    alert.state = state
    alert.value = float(reading.measurement.value)
    alert.updated_at = reading.received_at
    escalate(alert, severity)
    if state is AlertState.CLEARED:
        alert.cleared_at = reading.received_at
    alert.evidence.append(reading.id)
    del alert.evidence[:-EVIDENCE_LIMIT]
    return snapshot(alert)


def escalate(alert: Alert, severity: Severity | None) -> None:
    """Raise the alert's severity to `severity` if that is worse (physiological only)."""
    severity = graded(alert.kind, severity)
    if severity is None or alert.severity is None:
        return
    worse = more_severe(alert.severity, severity)
    if worse is not alert.severity:
        alert.severity = worse
        alert.acknowledged_by = alert.acknowledged_at = None


def acknowledge(alert: Alert, by: str, at: datetime) -> Alert:
    """Someone with role code `by` has seen the alert: it stays open."""
    alert.state = AlertState.ACKNOWLEDGED
    alert.acknowledged_by = by
    alert.acknowledged_at = at
    alert.updated_at = at
    return snapshot(alert)


def snapshot(alert: Alert) -> Alert:
    return replace(alert, evidence=list(alert.evidence))


def more_severe(a: Severity, b: Severity) -> Severity:
    order = list(Severity)
    return a if order.index(a) >= order.index(b) else b


def to_epoch(rule_time: float | None, epoch_offset: float) -> float | None:
    """A rule time as Unix seconds, for saving across a restart."""
    return None if rule_time is None else rule_time + epoch_offset


def from_epoch(epoch: float | None, epoch_offset: float) -> float | None:
    """The inverse of `to_epoch` on the clock of the new run."""
    return None if epoch is None else epoch - epoch_offset
