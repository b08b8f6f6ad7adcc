"""Low SpO2: the sustained-breach rule (sustained.py) on continuous SpO2 samples, at or
below 93 % for 15 s (China's protocol: SpO2 <= 93 % at rest is a severe case), critical
once the episode reached 88 %, cleared after 60 s at or above 95 %; and spot-checks.

A spot-check (`Quality.SPOT_CHECK`: one validated measurement taken on request, as with
the fingertip oximeters handed to people over 65) is judged on its own, at once: there
is no stretch of samples to wait for.

- An alertable spot-check <= `raise_at_or_below` raises the alert at once (`critical`
  if <= `critical_at_or_below`; `detail` says it was a spot-check), or updates an open
  one it is worse than.
- An alertable spot-check >= `clear_at_or_above` clears the alert, unless continuous
  monitoring is running (an alertable continuous sample of the subject within
  `max_gap_s`): then the continuous samples decide, after `clear_after_s` recovered.
  Raising on one value and clearing only on better evidence keeps the doubt on the
  safe side. A spot-check between the lines changes nothing.
- Spot-checks never touch the continuous breach and recovery timers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drivers.measurement import Metric
from gateway.model import Alert, AlertKind, Reading
from gateway.rules.base import subject_key
from gateway.rules.sustained import (
    Direction,
    SustainedBreach,
    SustainedParams,
    beyond_the_raise_line,
)

#: SpO2 lines, %: pulse oximeters state their accuracy from 70 % up (ISO 80601-2-61), so
#: a line below it would rest on values the device cannot vouch for.
_Percent = Annotated[float, Field(ge=70.0, le=100.0)]

#: The `detail` of an alert a spot-check raised.
SPOT_CHECK_DETAIL = "spot-check"


class LowSpo2Params(SustainedParams):
    """`[rules.low_spo2]`."""

    raise_at_or_below: _Percent = 93.0
    #: Checked against `raise_at_or_below` even when left at its default.
    clear_at_or_above: _Percent = Field(default=95.0, validate_default=True)
    critical_at_or_below: _Percent = 88.0

    _clear_above_raise = beyond_the_raise_line(
        "clear_at_or_above", "raise_at_or_below", Direction.AT_OR_BELOW
    )

    LINES = ("raise_at_or_below", "clear_at_or_above", "critical_at_or_below")


class LowSpo2Alerts(SustainedBreach[LowSpo2Params]):
    kind = AlertKind.LOW_SPO2
    metric = Metric.SPO2
    direction = Direction.AT_OR_BELOW

    def _spot_check(self, reading: Reading) -> list[Alert]:
        params = self._params(reading)
        track = self._track(subject_key(reading))
        value = float(reading.measurement.value)
        if value <= params.raise_at_or_below:
            return self._raise_or_update(
                track, reading, value, [reading.id], detail=SPOT_CHECK_DETAIL
            )
        monitored = (
            track.last_at is not None and reading.rule_time - track.last_at <= params.max_gap_s
        )
        if track.alert is None or monitored or value < params.clear_at_or_above:
            return []
        return [self._clear(track, reading)]
