"""Runs every rule over each accepted reading, in sequence order, and on each tick of
the clock, so a rule can raise on time passing (a measurement that did not come) as it
raises on a value."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from gateway.model import Alert, AlertKind, Reading
from gateway.rules.base import Rule
from gateway.rules.registry import RULES, RulesSection


class RuleEngine:
    def __init__(self, rules: Iterable[Rule]) -> None:
        self._rules: dict[AlertKind, Rule] = {}
        for rule in rules:
            if rule.kind in self._rules:
                raise ValueError(f"two rules raise {rule.kind.value!r} alerts")
            self._rules[rule.kind] = rule

    @classmethod
    def configured(cls, section: RulesSection) -> RuleEngine:
        """Every rule of the registry, with the parameters the configuration gives it."""
        return cls(entry.rule(getattr(section, entry.table)) for entry in RULES)

    def restore(self, active: Iterable[dict[str, Any]]) -> None:
        """Resume alerts that were active when the gateway stopped (from the store);
        alerts of kinds no rule raises (the gateway's technical ones) are not theirs."""
        for payload in active:
            alert = Alert.from_payload(payload)
            if alert.kind in self._rules:
                self._rules[alert.kind].restore(alert)

    def evaluate(self, readings: Iterable[Reading]) -> list[Alert]:
        """The alert changes these readings cause, in order."""
        changes: list[Alert] = []
        for reading in readings:
            for rule in self._rules.values():
                changes.extend(rule.on_reading(reading))
        return changes

    def evaluate_tick(self, now: datetime) -> list[Alert]:
        """The alert changes that time reaching `now` causes (the caller's clock: rules
        never read the wall clock, so a test or a replay decides what time it is)."""
        return [alert for rule in self._rules.values() for alert in rule.on_tick(now)]
