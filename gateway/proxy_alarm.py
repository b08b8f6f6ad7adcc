"""The technical alert `proxy_silent`: an ESPHome Bluetooth proxy (`[[bluetooth.proxies]]`)
that has not been connected, or has relayed no advertisement, for
`bluetooth.proxy_silent_s`. Its devices move to another radio that hears them; the alert
tells the township that a part of the floor may have lost its Bluetooth.

One alert per proxy, keyed `proxy:<name>`, its `device` the proxy's name. Raised once a
condition has lasted `proxy_silent_s` (a proxy never connected since the gateway started
gets that long from the start), updated when the reason changes (another error, or
connected again but still relaying nothing), cleared at once when the proxy is connected
and relays again. At once, unlike `storage_failure`'s minute of good writes: an
advertisement relayed since the connection is proof the proxy works, and raising again
takes `proxy_silent_s` more of silence, so a flapping proxy raises at most once per that
long. An open alert of a proxy no longer in use (removed from the configuration, or no
Bluetooth device served) is cleared.

Durations are measured on the rules' clock (`Instant.rule`, monotonic in the gateway),
and the proxy's own figures (`connected_s`, `last_heard_s_ago`) are ages, so setting the
wall clock neither hurries nor holds back the alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from gateway.model import Alert, AlertKind, AlertState, Instant
from gateway.rules.base import acknowledge, snapshot
from gateway.rules.technical import duration, move_alert, open_alert

#: What a silent proxy's alert says, besides how long: not connected (with the link's
#: error), or connected and relaying nothing.
_Reason = tuple[bool, str]


class ProxyAlarm:
    def __init__(self, silent_after_s: float) -> None:
        """`silent_after_s`: `bluetooth.proxy_silent_s`."""
        self._silent_after_s = silent_after_s
        #: The open alerts, by proxy name.
        self._active: dict[str, Alert] = {}
        #: What each open alert says now; none yet for one restored from the store.
        self._reasons: dict[str, _Reason] = {}
        #: Since when (rule clock) each proxy seen not connected has been so.
        self._down_since: dict[str, float] = {}

    def restore(self, alert: Alert) -> None:
        """Adopt a proxy alert that was active when the gateway last stopped."""
        if alert.kind is AlertKind.PROXY_SILENT:
            self._active[alert.device] = alert

    def open_alerts(self) -> list[Alert]:
        return [snapshot(alert) for alert in self._active.values()]

    def acknowledge(self, alert_id: str, by: str, at: datetime) -> Alert:
        """Mark an open proxy alert acknowledged; KeyError if none has `alert_id`."""
        alert = next((a for a in self._active.values() if a.id == alert_id), None)
        if alert is None:
            raise KeyError(alert_id)
        return acknowledge(alert, by, at)

    def look(self, proxies: Iterable[Mapping[str, Any]], now: Instant) -> list[Alert]:
        """The proxies as `ProxiedBluetooth.health()["proxies"]` gives them now (called
        about once a second): the alert changes they make."""
        changes: list[Alert] = []
        seen: set[str] = set()
        for proxy in proxies:
            name = proxy["name"]
            seen.add(name)
            changes += self._look_at(name, proxy, now)
        for name in [n for n in self._active if n not in seen]:
            self._reasons.pop(name, None)
            alert = self._active.pop(name)
            changes.append(move_alert(alert, AlertState.CLEARED, now.wall, "no longer in use"))
        return changes

    def _look_at(self, name: str, proxy: Mapping[str, Any], now: Instant) -> list[Alert]:
        silent_after = self._silent_after_s
        if proxy["state"] != "connected":
            down_s = now.rule - self._down_since.setdefault(name, now.rule)
            reason: _Reason = (False, proxy["error"])
            detail = f"not connected for {duration(down_s)}"
            if proxy["error"]:
                detail += f": {proxy['error']}"
            return self._silent(name, reason, detail, now) if down_s >= silent_after else []
        self._down_since.pop(name, None)
        connected_s = proxy["connected_s"] or 0.0
        heard_s_ago = proxy["last_heard_s_ago"]
        quiet_s = connected_s if heard_s_ago is None else min(heard_s_ago, connected_s)
        if heard_s_ago is not None and heard_s_ago <= connected_s and quiet_s < silent_after:
            return self._relaying(name, now)
        if quiet_s < silent_after:
            return []
        detail = f"connected but relayed nothing for {duration(quiet_s)}"
        return self._silent(name, (True, ""), detail, now)

    def _silent(self, name: str, reason: _Reason, detail: str, now: Instant) -> list[Alert]:
        """The proxy has been silent for at least `proxy_silent_s`: raise, or update when
        the reason changed (or is not known yet: an alert restored from the store)."""
        alert = self._active.get(name)
        if alert is None:
            alert = self._active[name] = open_alert(
                AlertKind.PROXY_SILENT, f"proxy:{name}", None, name, now.wall, detail
            )
            self._reasons[name] = reason
            return [snapshot(alert)]
        if self._reasons.get(name) == reason:
            return []
        self._reasons[name] = reason
        return [move_alert(alert, AlertState.UPDATED, now.wall, detail)]

    def _relaying(self, name: str, now: Instant) -> list[Alert]:
        alert = self._active.pop(name, None)
        self._reasons.pop(name, None)
        if alert is None:
            return []
        return [move_alert(alert, AlertState.CLEARED, now.wall, "connected and relaying again")]
