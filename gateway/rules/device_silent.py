"""Device silent: a device bound with a `report_interval_s` (door sensors' periodic
advertisements, 600 s by default; an oximeter configured as continuous) not heard for
`missed_reports` of its intervals (3 by default), and never less than `min_silence_s`.

- Heard means a reading of it, or the gateway's registry having heard any packet of it
  (`CareContext.last_heard`: a repeat advertisement counts, though it makes no reading).
- Raised on the tick that passes the line; cleared by its next reading, or on the tick
  after it is heard again.
- At start-up a device not heard yet is counted silent from the first tick the rule saw
  it watched (not from the epoch); across a restart from when it was last heard, as saved
  (time stopped counts as time passed).
- A device no longer watched (unbound, or its interval removed) has its alert cleared.
- One alert per device (`DeviceAlerts`), carrying its subject; no severity.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from gateway.config_table import ConfigTable
from gateway.model import Alert, AlertKind, AlertState, Binding, Instant, Reading
from gateway.rules.base import CareContext, from_epoch, snapshot, to_epoch
from gateway.rules.technical import DeviceAlerts, device_key, duration, move_alert, open_alert


class DeviceSilentParams(ConfigTable):
    """`[rules.device_silent]`."""

    #: At least 2: one late advertisement (radio noise, a busy scanner) is not silence.
    missed_reports: int = Field(default=3, ge=2, le=100)
    #: Silence shorter than this never raises, whatever the interval: a continuous
    #: oximeter's 1-s readings pause for a reconnect (a BLE scan lasts 10 s).
    min_silence_s: float = Field(default=60.0, ge=10.0, le=86400.0)


class DeviceSilentAlerts(DeviceAlerts):
    kind = AlertKind.DEVICE_SILENT

    def __init__(self, params: DeviceSilentParams, context: CareContext) -> None:
        super().__init__()
        self._base = params
        self._context = context
        #: Per device, the last time (rule clock) it was known to be alive: heard, or
        #: the first tick that watched it.
        self._alive: dict[str, float] = {}
        #: Per silent device, `_alive` when its alert was raised (or adopted).
        self._silent_from: dict[str, float] = {}

    def on_reading(self, reading: Reading) -> list[Alert]:
        device, now = reading.device, reading.rule_time
        alive = self._alive.get(device)
        if alive is not None:
            if now > alive:
                self._alive[device] = now
        elif _watched(self._context.binding(device)):
            self._alive[device] = now
        alert = self._active.pop(device, None)
        if alert is None:
            return []
        detail = _heard_again(now, self._silent_from.pop(device, None))
        return [move_alert(alert, AlertState.CLEARED, reading.received_at, detail, reading.id)]

    def on_tick(self, now: Instant) -> list[Alert]:
        changes: list[Alert] = []
        watched: set[str] = set()
        for binding in self._context.bindings():
            if binding.report_interval_s is None:
                continue
            watched.add(binding.device)
            change = self._look_at(binding, binding.report_interval_s, now)
            if change is not None:
                changes.append(change)
        for device in [d for d in self._active if d not in watched]:
            alert = self._active.pop(device)
            self._silent_from.pop(device, None)
            changes.append(
                move_alert(alert, AlertState.CLEARED, now.wall, "no longer expected to report")
            )
        for device in [d for d in self._alive if d not in watched]:
            del self._alive[device]
        return changes

    def _look_at(self, binding: Binding, interval: float, now: Instant) -> Alert | None:
        device = binding.device
        alive = self._alive.setdefault(device, now.rule)
        heard = self._context.last_heard(device)
        if heard is not None and heard > alive:
            alive = self._alive[device] = heard
        alert = self._active.get(device)
        if alert is not None:
            silent_from = self._silent_from.setdefault(device, alive)
            if alive <= silent_from:
                return None
            del self._active[device], self._silent_from[device]
            return move_alert(alert, AlertState.CLEARED, now.wall, _heard_again(alive, silent_from))
        params = self._context.params("device_silent", binding.subject, self._base)
        silent_for = now.rule - alive
        if silent_for < max(params.missed_reports * interval, params.min_silence_s):
            return None
        alert = open_alert(
            self.kind,
            device_key(device),
            binding.subject,
            device,
            now.wall,
            f"silent for {duration(silent_for)} (expected every {duration(interval)})",
        )
        self._active[device] = alert
        self._silent_from[device] = alive
        return snapshot(alert)

    def save_state(self, epoch_offset: float) -> Any:
        if not self._alive:
            return None
        return {"alive": {d: to_epoch(t, epoch_offset) for d, t in self._alive.items()}}

    def load_state(self, state: Any, epoch_offset: float) -> None:
        for device, epoch in state["alive"].items():
            alive = from_epoch(epoch, epoch_offset)
            assert alive is not None
            self._alive[device] = alive
            if device in self._active:
                self._silent_from[device] = alive


def _watched(binding: Binding | None) -> bool:
    return binding is not None and binding.report_interval_s is not None


def _heard_again(at: float, silent_from: float | None) -> str:
    """Unknown `silent_from`: an alert adopted after a restart whose timers were lost."""
    return (
        "heard again" if silent_from is None else f"heard again after {duration(at - silent_from)}"
    )
