"""Hypothermia: a final temperature at or below 35.0 degC.

- Raise on an alertable final temperature <= `raise_at_or_below`: severity `high`
  (NEWS2 scores a temperature <= 35.0 degC 3 points, a single parameter calling for an
  urgent response; Beijing's home guidance sends a person <= 35 degC to hospital).
- While it lasts, only a lower temperature is news: it updates the alert.
- Clear on an alertable final temperature >= `clear_at_or_above` (35.5 by default:
  hysteresis, so a reading wavering around the line does not raise and clear in turn);
  between the lines nothing changes.
- The line holds for every site and for readings without one, but never for finger
  or toe: the skin of the extremities is normally far below 35 degC.
- In-progress (intermediate) values and flagged readings never raise or clear. No
  timers: only the open alerts are kept across a restart.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drivers.measurement import Metric, Site
from gateway.config_table import ConfigTable
from gateway.model import Alert, AlertKind, AlertState, Reading, Severity
from gateway.rules.base import (
    CareContext,
    HeldAlerts,
    change_alert,
    raise_alert,
    snapshot,
    subject_key,
)
from gateway.rules.sustained import Direction, beyond_the_raise_line

#: Sites whose readings are skin temperatures of the extremities, not the body's.
PERIPHERAL_SITES = frozenset({Site.FINGER, Site.TOE})

#: degC, 32-37: a line above 37 would call a normal temperature hypothermia.
_Temperature = Annotated[float, Field(ge=32.0, le=37.0)]


class HypothermiaParams(ConfigTable):
    """`[rules.hypothermia]`."""

    raise_at_or_below: _Temperature = 35.0
    #: Checked against `raise_at_or_below` even when left at its default.
    clear_at_or_above: _Temperature = Field(default=35.5, validate_default=True)

    _clear_above_raise = beyond_the_raise_line(
        "clear_at_or_above", "raise_at_or_below", Direction.AT_OR_BELOW
    )


class HypothermiaAlerts(HeldAlerts):
    kind = AlertKind.HYPOTHERMIA
    metrics = frozenset({Metric.BODY_TEMPERATURE})

    def __init__(self, params: HypothermiaParams, context: CareContext) -> None:
        super().__init__()
        self._params = params
        self._context = context

    def on_reading(self, reading: Reading) -> list[Alert]:
        m = reading.measurement
        if m.metric is not Metric.BODY_TEMPERATURE or not m.alertable:
            return []
        if m.site in PERIPHERAL_SITES:
            return []
        params = self._context.params("hypothermia", reading.subject, self._params)
        value = float(m.value)
        key = subject_key(reading)
        active = self._active.get(key)
        if value <= params.raise_at_or_below:
            if active is None:
                site = m.site.value if m.site is not None else None
                alert = raise_alert(
                    self.kind,
                    reading,
                    Severity.HIGH,
                    params.raise_at_or_below,
                    [reading.id],
                    site,
                )
                self._active[key] = alert
                return [snapshot(alert)]
            if active.value is not None and value >= active.value:
                return []  # still cold, nothing new for the care team
            return [change_alert(active, AlertState.UPDATED, reading, Severity.HIGH)]
        if active is None or value < params.clear_at_or_above:
            return []
        del self._active[key]
        return [change_alert(active, AlertState.CLEARED, reading)]
