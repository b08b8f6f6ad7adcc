"""Runs every rule over each accepted reading, in sequence order, and on each tick of
the clock, so a rule can raise on time passing (a measurement that did not come) as it
raises on a value. Also the lifecycle steps that are not a rule's own: acknowledging an
alert, and the rules' timers kept across a restart."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from drivers.measurement import Metric
from gateway.model import Alert, AlertKind, Instant, Reading
from gateway.rules.base import CareContext, Rule, acknowledge, snapshot
from gateway.rules.registry import RULES, RulesSection


class UnknownAlert(LookupError):
    """No open alert has this id (never raised, or cleared already)."""


class RuleEngine:
    def __init__(self, rules: Iterable[Rule]) -> None:
        self._rules: dict[AlertKind, Rule] = {}
        for rule in rules:
            if rule.kind in self._rules:
                raise ValueError(f"two rules raise {rule.kind.value!r} alerts")
            self._rules[rule.kind] = rule
        #: The rules each metric's readings go to (most rules look at one metric: a
        #: reading is handed to 3 or 4 of the 11, not all).
        self._by_metric: dict[Metric, list[Rule]] = {
            metric: [r for r in self._rules.values() if r.metrics is None or metric in r.metrics]
            for metric in Metric
        }

    @classmethod
    def configured(cls, section: RulesSection, context: CareContext) -> RuleEngine:
        """Every rule of the registry, with the parameters the configuration gives it."""
        return cls(entry.rule(getattr(section, entry.table), context) for entry in RULES)

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
        by_metric = self._by_metric
        for reading in readings:
            for rule in by_metric[reading.measurement.metric]:
                if changed := rule.on_reading(reading):
                    changes.extend(changed)
        return changes

    def evaluate_tick(self, now: Instant) -> list[Alert]:
        """The alert changes that time reaching `now` causes (the caller's clock: rules
        never read the clock, so a test or a replay decides what time it is)."""
        return [alert for rule in self._rules.values() for alert in rule.on_tick(now)]

    def open_alerts(self) -> list[Alert]:
        """Copies of every alert the rules hold open."""
        return [snapshot(a) for rule in self._rules.values() for a in rule.open_alerts()]

    def acknowledge(self, alert_id: str, by: str, at: datetime) -> Alert:
        """Mark an open alert acknowledged by role code `by`; returns the event. Raises
        `UnknownAlert` when no rule holds it open."""
        for rule in self._rules.values():
            for alert in rule.open_alerts():
                if alert.id == alert_id:
                    return acknowledge(alert, by, at)
        raise UnknownAlert(alert_id)

    def save_state(self, now: Instant) -> dict[str, Any]:
        """Each rule's timers (JSON, by alert kind), to be kept across a restart."""
        offset = now.epoch_offset
        saved = {kind.value: rule.save_state(offset) for kind, rule in self._rules.items()}
        return {kind: state for kind, state in saved.items() if state is not None}

    def load_state(self, states: dict[str, Any], now: Instant) -> None:
        """Give each rule back its timers (after `restore`: the open alerts come first);
        time spent stopped counts as time passed."""
        offset = now.epoch_offset
        for kind, rule in self._rules.items():
            if kind.value in states:
                rule.load_state(states[kind.value], offset)
