"""Battery low: a device's battery at or below `at_or_below` (15 % by default).

- A lower level while the alert is open updates it (the new value, in the detail).
- It clears at `clear_at_or_above` (20 % by default): above the raise line, so a level
  that wavers around 15 % does not raise and clear by turns; a new battery clears it.
- One alert per device (`DeviceAlerts`), not per subject: a subject's thermometer and
  oximeter may both run low, and each needs its own battery swapped and its own clear.
  The alert carries the subject, so the team knows whose device it is.
- Value and threshold are the battery level and the raise line (%); no severity.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drivers.measurement import Metric
from gateway.config_table import ConfigTable
from gateway.model import Alert, AlertKind, AlertState, Reading
from gateway.rules.base import CareContext, change_alert
from gateway.rules.sustained import Direction, beyond_the_raise_line
from gateway.rules.technical import DeviceAlerts

_Percent = Annotated[float, Field(ge=1.0, le=100.0)]


class BatteryLowParams(ConfigTable):
    """`[rules.battery_low]`."""

    #: At most 50 %: a higher line would keep every device's alert open half its life.
    at_or_below: float = Field(default=15.0, ge=1.0, le=50.0)
    #: Checked against `at_or_below` even when left at its default.
    clear_at_or_above: _Percent = Field(default=20.0, validate_default=True)

    _clear_above_raise = beyond_the_raise_line(
        "clear_at_or_above", "at_or_below", Direction.AT_OR_BELOW
    )


class BatteryLowAlerts(DeviceAlerts):
    kind = AlertKind.BATTERY_LOW
    metrics = frozenset({Metric.BATTERY})

    def __init__(self, params: BatteryLowParams, context: CareContext) -> None:
        super().__init__()
        self._base = params
        self._context = context

    def on_reading(self, reading: Reading) -> list[Alert]:
        m = reading.measurement
        if m.metric is not Metric.BATTERY or not m.alertable:
            return []
        params = self._context.params("battery_low", reading.subject, self._base)
        value = float(m.value)
        device = reading.device
        active = self._active.get(device)
        detail = f"battery {value:g} %"
        if value <= params.at_or_below:
            if active is None:
                return self._raise_for(
                    reading, detail, [reading.id], value=value, threshold=params.at_or_below
                )
            if active.value is not None and value >= active.value:
                return []  # still low, nothing new for the technician
            active.detail = detail
            return [change_alert(active, AlertState.UPDATED, reading)]
        if active is None or value < params.clear_at_or_above:
            return []
        del self._active[device]
        active.detail = detail
        return [change_alert(active, AlertState.CLEARED, reading)]
