"""What the rules without a clinical value share (the equipment's and the isolation's):
alerts told by a one-line `detail` rather than a value, raised or changed at an instant
(a tick has no reading), and kept one per device when the device is what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, tzinfo
from typing import Protocol

from gateway.model import Alert, AlertKind, AlertState, Reading
from gateway.rules.base import EVIDENCE_LIMIT, HeldAlerts, new_alert_id, snapshot


class GatewayAlarm(Protocol):
    """A technical alert the service raises outside the rule engine (the store's, each
    proxy's): the care service acknowledges its alerts, and a clock correction moves
    their times, as the rules' own."""

    def restore(self, alert: Alert) -> None:
        """Adopt an open alert of this alarm's kind (at start, or with its times moved)."""
        ...

    def open_alerts(self) -> Iterable[Alert]: ...

    def acknowledge(self, alert_id: str, by: str, at: datetime) -> Alert:
        """KeyError when none of its open alerts has `alert_id`."""
        ...


def open_alarm_alerts(alarms: Iterable[GatewayAlarm]) -> list[Alert]:
    return [alert for alarm in alarms for alert in alarm.open_alerts()]


class DeviceAlerts(HeldAlerts):
    """Open alerts keyed by device id, not by subject: a flat battery, a silent sensor,
    a probe off are each one device's, and a subject with two such devices (an
    oximeter and a door sensor) needs both told apart, each cleared by its own device.
    The alert still carries the subject, so the care team sees whose equipment it is."""

    def restore(self, alert: Alert) -> None:
        self._active[alert.device] = alert

    def _raise_for(
        self,
        reading: Reading,
        detail: str,
        evidence: Iterable[str],
        value: float | None = None,
        threshold: float | None = None,
    ) -> list[Alert]:
        """A new alert of the reading's device, held open; returns its event."""
        device = reading.device
        alert = open_alert(
            self.kind,
            device_key(device),
            reading.subject,
            device,
            reading.received_at,
            detail,
            evidence,
            value,
            threshold,
        )
        self._active[device] = alert
        return [snapshot(alert)]


def open_alert(
    kind: AlertKind,
    key: str,
    subject: str | None,
    device: str,
    at: datetime,
    detail: str,
    evidence: Iterable[str] = (),
    value: float | None = None,
    threshold: float | None = None,
) -> Alert:
    """A new alert of a class without clinical severity, raised at `at`; `key` makes
    the id (a subject code or `device:<id>`)."""
    return Alert(
        id=new_alert_id(kind, key, at),
        kind=kind,
        subject=subject,
        device=device,
        severity=None,
        state=AlertState.RAISED,
        raised_at=at,
        updated_at=at,
        value=value,
        threshold=threshold,
        evidence=list(evidence)[-EVIDENCE_LIMIT:],
        detail=detail,
    )


def move_alert(
    alert: Alert, state: AlertState, at: datetime, detail: str, evidence: str | None = None
) -> Alert:
    """Move a held alert to `state` at `at`, saying why in `detail`; returns the event
    (a copy). Unlike `change_alert`, no reading's value is taken into the alert."""
    alert.state = state
    alert.updated_at = at
    alert.detail = detail
    if state is AlertState.CLEARED:
        alert.cleared_at = at
    if evidence is not None:
        alert.evidence.append(evidence)
        del alert.evidence[:-EVIDENCE_LIMIT]
    return snapshot(alert)


def device_key(device: str) -> str:
    """The key of a device's alert in its id (as an unbound device's alerts are keyed)."""
    return f"device:{device}"


def duration(seconds: float) -> str:
    """`45 s`, `31 min`, `3 h 5 min`: seconds below 2 min, minutes below 2 h (floored)."""
    whole = int(max(seconds, 0.0))
    if whole < 120:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def local_clock(at: datetime, tz: tzinfo) -> str:
    """`22:41`: the local time of day care teams read times in."""
    return f"{at.astimezone(tz):%H:%M}"
