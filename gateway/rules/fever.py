"""Fever: a final temperature at or above the line for its measurement site.

Each site has its own line (37.3 degC axillary by default); values are never converted
between sites. A reading without a site, or from a site with no line (finger, toe,
gastrointestinal by default), could be from any site: it raises only at or above the
highest line (38.0 degC by default), so a clear fever is never dropped for want of a
site, and clears only below the lowest (37.3), so no site's fever is cleared by it; in
between it changes nothing. Both follow the configured lines (a subject's too).
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
#: patient-education cut-offs elsewhere. Readings from sites not listed are judged as
#: readings without a site.
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
    metrics = frozenset({Metric.BODY_TEMPERATURE})

    def __init__(self, params: FeverParams, context: CareContext) -> None:
        super().__init__()
        self._params = params
        self._context = context

    def on_reading(self, reading: Reading) -> list[Alert]:
        m = reading.measurement
        if m.metric is not Metric.BODY_TEMPERATURE or not m.alertable:
            return []
        params = self._context.params("fever", reading.subject, self._params)
        line = params.lines.get(m.site) if m.site is not None else None
        raise_line = max(params.lines.values()) if line is None else line
        clear_line = min(params.lines.values()) if line is None else line
        value = float(m.value)
        key = subject_key(reading)
        active = self._active.get(key)
        if value >= raise_line:
            severity = Severity.HIGH if value >= params.high_fever_c else Severity.WARNING
            if active is None:
                site = m.site.value if m.site is not None else None
                alert = raise_alert(self.kind, reading, severity, raise_line, [reading.id], site)
                self._active[key] = alert
                return [snapshot(alert)]
            if active.value is not None and value <= active.value:
                return []  # still feverish, nothing new for the care team
            return [change_alert(active, AlertState.UPDATED, reading, severity)]
        if active is None or value >= clear_line:
            return []
        del self._active[key]
        return [change_alert(active, AlertState.CLEARED, reading)]
