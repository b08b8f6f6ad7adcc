"""Fever: a final temperature at or above the line for its measurement site.

Each site has its own line (37.3 degC axillary by default); a reading from a site with
no configured line never raises, and values are never converted between sites.
In-progress (intermediate) values and flagged readings never raise or clear. While a
fever lasts, only a higher temperature is news: it updates the alert (and its grade).
"""

from __future__ import annotations

from drivers.measurement import Metric
from gateway.config import FeverRule
from gateway.model import Alert, AlertKind, AlertState, Reading, Severity
from gateway.rules.base import alert_key, change_alert, raise_alert, snapshot, subject_key


class FeverAlerts:
    kind = AlertKind.FEVER

    def __init__(self, rule: FeverRule) -> None:
        self._rule = rule
        self._active: dict[str, Alert] = {}

    def restore(self, alert: Alert) -> None:
        self._active[alert_key(alert)] = alert

    def evaluate(self, reading: Reading) -> list[Alert]:
        m = reading.measurement
        if m.metric is not Metric.BODY_TEMPERATURE or not m.alertable or m.site is None:
            return []
        line = self._rule.lines.get(m.site.value)
        if line is None:
            return []
        value = float(m.value)
        key = subject_key(reading)
        active = self._active.get(key)
        if value >= line:
            severity = Severity.HIGH if value >= self._rule.high_fever_c else Severity.WARNING
            if active is None:
                alert = raise_alert(self.kind, reading, severity, line, [reading.id], m.site.value)
                self._active[key] = alert
                return [snapshot(alert)]
            if value <= active.value:
                return []  # still feverish, nothing new for the care team
            return [change_alert(active, AlertState.UPDATED, reading, severity)]
        if active is None:
            return []
        del self._active[key]
        return [change_alert(active, AlertState.CLEARED, reading)]
