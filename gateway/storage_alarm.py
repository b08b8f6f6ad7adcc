"""The technical alert `storage_failure`: the store refuses writes (disk full, I/O
errors, read-only), or was found corrupt or unopenable and replaced. It goes to the
township like any alert, so a gateway whose disk is failing is not quietly losing data.

Raised at the first fault, updated when the reason changes, cleared once the store has
worked for `clear_after` (`store.failure_clear_s`: a store that flaps does not raise and
clear every minute).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.model import Alert, AlertKind, AlertState
from gateway.rules.base import acknowledge
from gateway.rules.technical import open_alert


class StorageAlarm:
    def __init__(self, gateway_id: str, clear_after: timedelta) -> None:
        self._gateway_id = gateway_id
        self._clear_after = clear_after
        self._active: Alert | None = None
        self._working_since: datetime | None = None

    def restore(self, alert: Alert) -> None:
        """Adopt a storage alert that was active when the gateway last stopped."""
        if alert.kind is AlertKind.STORAGE_FAILURE:
            self._active = alert

    def open_alerts(self) -> Iterable[Alert]:
        return [] if self._active is None else [self._active]

    def acknowledge(self, alert_id: str, by: str, at: datetime) -> Alert:
        """Mark the open storage alert acknowledged; KeyError if `alert_id` is not it."""
        if self._active is None or self._active.id != alert_id:
            raise KeyError(alert_id)
        return acknowledge(self._active, by, at)

    def failing(self, reason: str, now: datetime) -> list[Alert]:
        """The store has a fault: raise, or update when the reason changed."""
        self._working_since = None
        alert = self._active
        if alert is None:
            alert = self._active = open_alert(
                AlertKind.STORAGE_FAILURE,
                f"gateway:{self._gateway_id}",
                None,
                self._gateway_id,
                now,
                reason,
            )
            return [replace(alert)]
        if alert.detail == reason:
            return []
        alert.state, alert.detail, alert.updated_at = AlertState.UPDATED, reason, now
        return [replace(alert)]

    def working(self, now: datetime) -> list[Alert]:
        """The store works (called about once a second): clear after `clear_after`."""
        alert = self._active
        if alert is None:
            return []
        if self._working_since is None:
            self._working_since = now
        if now - self._working_since < self._clear_after:
            return []
        self._active = None
        alert.state, alert.updated_at, alert.cleared_at = AlertState.CLEARED, now, now
        return [replace(alert)]
