"""Fever: a final temperature at or above the line for its measurement site.

Each site has its own line (37.3 degC axillary by default); a reading from a site with
no configured line never raises, and values are never converted between sites.
In-progress (intermediate) values and flagged readings never raise or clear. While a
fever lasts, only a higher temperature is news: it updates the alert (and its grade).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, Strict, field_validator

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

#: Fever lines per measurement site, degC, reading >= line raises. Defaults follow
#: docs/protocols.md section 6: 37.3 axillary (the isolation documents), Western
#: patient-education cut-offs elsewhere. Sites not listed never raise a fever alert.
DEFAULT_FEVER_LINES: dict[Site, float] = {
    Site.AXILLARY: 37.3,
    Site.ORAL: 37.8,
    Site.TYMPANIC: 38.0,
    Site.EAR: 38.0,
    Site.RECTAL: 38.0,
    Site.FOREHEAD: 38.0,
    Site.BODY: 37.3,
}

#: degC, 34-42: a line outside it is a slip (100.4 is Fahrenheit) that would make every
#: reading a fever, or none.
_Temperature = Annotated[float, Field(ge=34.0, le=42.0)]


class FeverParams(ConfigTable):
    """`[rules.fever]`."""

    #: `[rules.fever.lines]`: the lines set replace or add to the defaults (a default
    #: line cannot be removed).
    lines: dict[Annotated[Site, Strict(False)], _Temperature] = Field(
        default_factory=lambda: dict(DEFAULT_FEVER_LINES)
    )
    #: At or above this a fever is `high` instead of `warning`.
    high_fever_c: _Temperature = 39.1

    @field_validator("lines", mode="before")
    @classmethod
    def _over_the_defaults(cls, lines: Any) -> Any:
        return {**DEFAULT_FEVER_LINES, **lines} if isinstance(lines, dict) else lines


class FeverAlerts(HeldAlerts):
    kind = AlertKind.FEVER

    def __init__(self, params: FeverParams, context: CareContext) -> None:
        super().__init__()
        self._params = params
        self._context = context

    def on_reading(self, reading: Reading) -> list[Alert]:
        m = reading.measurement
        if m.metric is not Metric.BODY_TEMPERATURE or not m.alertable or m.site is None:
            return []
        params = self._context.params("fever", reading.subject, self._params)
        line = params.lines.get(m.site)
        if line is None:
            return []
        value = float(m.value)
        key = subject_key(reading)
        active = self._active.get(key)
        if value >= line:
            severity = Severity.HIGH if value >= params.high_fever_c else Severity.WARNING
            if active is None:
                alert = raise_alert(self.kind, reading, severity, line, [reading.id], m.site.value)
                self._active[key] = alert
                return [snapshot(alert)]
            if active.value is not None and value <= active.value:
                return []  # still feverish, nothing new for the care team
            return [change_alert(active, AlertState.UPDATED, reading, severity)]
        if active is None:
            return []
        del self._active[key]
        return [change_alert(active, AlertState.CLEARED, reading)]
