"""What every rule shares: keying alerts by subject, and building alert ids."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from gateway.model import Alert, AlertKind, Reading, Severity

#: How many reading ids an alert carries as evidence (the most recent ones).
EVIDENCE_LIMIT = 20


class Rule(Protocol):
    kind: AlertKind

    def evaluate(self, reading: Reading) -> list[Alert]:
        """Return the alerts whose state this reading changed (raised, updated, cleared)."""

    def restore(self, alert: Alert) -> None:
        """Adopt an alert that was active when the gateway last stopped."""


def subject_key(reading: Reading) -> str:
    """Alerts belong to a subject; an unbound device's readings alert on the device."""
    return reading.subject or f"device:{reading.device}"


def alert_key(alert: Alert) -> str:
    return alert.subject or f"device:{alert.device}"


def new_alert_id(kind: AlertKind, key: str, raised_at: datetime) -> str:
    return f"{kind.value}:{key}:{int(raised_at.timestamp() * 1000)}"


def add_evidence(alert: Alert, reading_id: str) -> None:
    alert.evidence.append(reading_id)
    del alert.evidence[:-EVIDENCE_LIMIT]


def more_severe(a: Severity, b: Severity) -> Severity:
    order = list(Severity)
    return a if order.index(a) >= order.index(b) else b
