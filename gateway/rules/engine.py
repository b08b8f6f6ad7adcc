"""Runs every rule over each accepted reading, in sequence order."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from gateway.config import RulesSection
from gateway.model import Alert, AlertKind, AlertState, Reading, Severity
from gateway.rules.base import Rule
from gateway.rules.fever import FeverAlerts
from gateway.rules.spo2 import LowSpo2Alerts


class RuleEngine:
    def __init__(self, rules: RulesSection) -> None:
        self._rules: dict[AlertKind, Rule] = {
            AlertKind.FEVER: FeverAlerts(rules.fever),
            AlertKind.LOW_SPO2: LowSpo2Alerts(rules.low_spo2),
        }

    def restore(self, active: Iterable[dict[str, Any]]) -> None:
        """Resume alerts that were active when the gateway stopped (from the store)."""
        for payload in active:
            alert = alert_from_payload(payload)
            self._rules[alert.kind].restore(alert)

    def evaluate(self, readings: Iterable[Reading]) -> list[Alert]:
        changes: list[Alert] = []
        for reading in readings:
            for rule in self._rules.values():
                changes.extend(rule.evaluate(reading))
        return changes


def alert_from_payload(payload: dict[str, Any]) -> Alert:
    def when(key: str) -> datetime | None:
        value = payload.get(key)
        return datetime.fromisoformat(value) if value else None

    raised_at = when("raised_at")
    updated_at = when("updated_at")
    assert raised_at is not None and updated_at is not None
    return Alert(
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
    )
