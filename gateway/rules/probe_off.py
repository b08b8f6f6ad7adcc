"""Probe off: an oximeter that has reported "probe off" (no finger, sensor displaced or
unplugged) on every SpO2 and pulse-rate reading for `after_s` (5 min by default).

- Any SpO2 or pulse-rate reading without the probe-off flag clears it: a finger is
  back in, even if the device still searches for a pulse.
- A gap of more than `max_gap_s` between two readings inside a probe-off stretch
  restarts the count: the 5 minutes must be seen, and a device that stops sending
  altogether is `device_silent`'s to report. A gap never clears a raised alert: the
  last thing the device said was "probe off".
- Technical only: it has no severity and neither holds back nor clears `low_spo2`
  (the rules are independent; a flagged sample is only ever ignored by that rule).
- One alert per device (`DeviceAlerts`): a subject may wear two oximeters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from drivers.measurement import Metric, Quality
from gateway.config_table import ConfigTable
from gateway.model import Alert, AlertKind, AlertState, Reading
from gateway.rules.base import EVIDENCE_LIMIT, CareContext, from_epoch, to_epoch
from gateway.rules.technical import DeviceAlerts, duration, move_alert

#: What an oximeter reports, each reading flagged when the probe is off.
OXIMETRY = frozenset({Metric.SPO2, Metric.PULSE_RATE})


class ProbeOffParams(ConfigTable):
    """`[rules.probe_off]`."""

    #: At least 10 s (a finger being repositioned is not an alert), at most an hour.
    after_s: float = Field(default=300.0, ge=10.0, le=3600.0)
    #: At least 2 s: a continuous oximeter sends one reading per metric a second.
    max_gap_s: float = Field(default=60.0, ge=2.0, le=3600.0)


@dataclass
class _Stretch:
    """Consecutive probe-off readings of one device (rule times)."""

    since: float
    last_at: float
    ids: list[str] = field(default_factory=list)


class ProbeOffAlerts(DeviceAlerts):
    kind = AlertKind.PROBE_OFF
    metrics = OXIMETRY

    def __init__(self, params: ProbeOffParams, context: CareContext) -> None:
        super().__init__()
        self._base = params
        self._context = context
        self._stretches: dict[str, _Stretch] = {}

    def on_reading(self, reading: Reading) -> list[Alert]:
        m = reading.measurement
        if m.metric not in OXIMETRY:
            return []
        device = reading.device
        if Quality.PROBE_OFF not in m.quality:
            self._stretches.pop(device, None)
            alert = self._active.pop(device, None)
            if alert is None:
                return []
            return [
                move_alert(
                    alert, AlertState.CLEARED, reading.received_at, "probe back on", reading.id
                )
            ]
        params = self._context.params("probe_off", reading.subject, self._base)
        now = reading.rule_time
        stretch = self._stretches.get(device)
        if stretch is None or now - stretch.last_at > params.max_gap_s:
            stretch = self._stretches[device] = _Stretch(since=now, last_at=now)
        stretch.last_at = now
        stretch.ids.append(reading.id)
        del stretch.ids[:-EVIDENCE_LIMIT]
        off_for = now - stretch.since
        if device in self._active or off_for < params.after_s:
            return []
        return self._raise_for(reading, f"probe off for {duration(off_for)}", stretch.ids)

    def save_state(self, epoch_offset: float) -> Any:
        if not self._stretches:
            return None
        return {
            device: {
                "since": to_epoch(s.since, epoch_offset),
                "last_at": to_epoch(s.last_at, epoch_offset),
                "evidence": list(s.ids),
            }
            for device, s in self._stretches.items()
        }

    def load_state(self, state: Any, epoch_offset: float) -> None:
        for device, saved in state.items():
            since = from_epoch(saved["since"], epoch_offset)
            last_at = from_epoch(saved["last_at"], epoch_offset)
            assert since is not None and last_at is not None
            self._stretches[device] = _Stretch(since, last_at, list(saved["evidence"]))
