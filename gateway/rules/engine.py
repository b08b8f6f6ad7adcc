"""Runs every rule over each accepted reading, in sequence order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.config import RulesSection
from gateway.model import Alert, AlertKind, Reading
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
            alert = Alert.from_payload(payload)
            self._rules[alert.kind].restore(alert)

    def evaluate(self, readings: Iterable[Reading]) -> list[Alert]:
        changes: list[Alert] = []
        for reading in readings:
            for rule in self._rules.values():
                changes.extend(rule.evaluate(reading))
        return changes
