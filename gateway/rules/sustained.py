"""Sustained-breach alerts: continuous samples of one metric past a line for a while.
One rule, three uses: `low_spo2` (spo2.py adds the spot-checks to it), `tachycardia`
and `bradycardia` (below).

- A breach starts with an alertable continuous sample at or past the raise line (at or
  below it for a low value, at or above for a high one) and lasts while the alertable
  samples stay past it. Its time is counted from its first sample.
- Interruptions are tolerated, because a hypoxic person moves: flagged samples (motion,
  probe off, low perfusion, provisional...) neither count nor end a breach, and neither
  does a stretch without samples, as long as the next alertable sample comes within
  `max_gap_s` of the previous one. The time of a tolerated interruption counts as
  breach time. A longer stretch without an alertable sample ends the breach (and a
  recovery being counted): the next one starts afresh.
- An alertable sample short of the raise line ends the breach.
- Raise when the breach has lasted `persist_s`, on an alertable sample past the line:
  a raise always rests on a real value, never on an interruption. `high`, or
  `critical` when a sample of the breach reached the critical line (where the table
  has one).
- While the alert is open, a breach (held `persist_s`) reaching a worse value than the
  alert has announced updates it; reaching the critical line escalates it.
- Clear after `clear_after_s` of alertable samples at or past the clear line on the
  safe side (hysteresis), with the same tolerance of interruptions; a sample between
  the lines restarts that count.
- Spot-checks (`Quality.SPOT_CHECK`: one measurement on request) are not continuous
  samples: they neither count, interrupt nor end a breach or a recovery. This rule
  ignores them; `low_spo2` judges them on their own (spo2.py).
- Silence never raises nor clears (no tick does anything): the next sample decides.

Times are `Reading.rule_time` (monotonic seconds); timers are kept across a restart
(`save_state`, as Unix seconds), so time stopped counts as time passed and a restart
longer than `max_gap_s` ends a breach as any gap does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import Field, ValidationInfo, field_validator

from drivers.measurement import Metric, Quality
from gateway.config_table import ConfigTable
from gateway.model import Alert, AlertKind, AlertState, Instant, Reading, Severity
from gateway.rules.base import (
    EVIDENCE_LIMIT,
    CareContext,
    alert_key,
    change_alert,
    from_epoch,
    raise_alert,
    snapshot,
    subject_key,
    to_epoch,
)


class Direction(Enum):
    """Which side of the raise line is the alert's."""

    AT_OR_BELOW = "at or below"
    AT_OR_ABOVE = "at or above"

    def past(self, value: float, line: float) -> bool:
        """`value` is at `line` or beyond it, on the alert's side."""
        return value <= line if self is Direction.AT_OR_BELOW else value >= line

    def recovered(self, value: float, line: float) -> bool:
        """`value` is at `line` or beyond it, on the safe side."""
        return value >= line if self is Direction.AT_OR_BELOW else value <= line

    def worse(self, value: float, than: float) -> bool:
        return value < than if self is Direction.AT_OR_BELOW else value > than


class SustainedParams(ConfigTable):
    """The timers every sustained-breach table has; each table names its own lines."""

    #: Up to 5 minutes: a longer wait would hide a real deterioration. 15 s: a 15-s
    #: delay cut low-SpO2 alarms by ~60 % (docs/protocols.md section 6).
    persist_s: float = Field(default=15.0, ge=0.0, le=300.0)
    clear_after_s: float = Field(default=60.0, ge=0.0, le=3600.0)
    #: The longest interruption (flagged or missing samples) a breach or a recovery
    #: survives: from one alertable sample to the next. 8 s: oximeters average over a
    #: window of 2-16 s (8 s is common), and after a movement they flag or withhold
    #: values for about that window, so one motion burst is bridged; and below
    #: `persist_s` (15 s, 10 s for red), so a raise rests on three alertable samples at
    #: least. At least 2 s: with 1 Hz samples a shorter gap would end a breach on every
    #: sample, and the alert would never be raised.
    max_gap_s: float = Field(default=8.0, ge=2.0, le=3600.0)

    #: The fields holding the raise, clear and critical lines (each table names them as
    #: its readers say them: `raise_at_or_below`...); no critical field: never more
    #: than `high`.
    LINES: ClassVar[tuple[str, str, str | None]]

    # Cached (the parameters are frozen): every sample asks for a line.
    @functools.cached_property
    def raise_line(self) -> float:
        return float(getattr(self, self.LINES[0]))

    @functools.cached_property
    def clear_line(self) -> float:
        return float(getattr(self, self.LINES[1]))

    @functools.cached_property
    def critical_line(self) -> float | None:
        field = self.LINES[2]
        return None if field is None else float(getattr(self, field))


def beyond_the_raise_line(clear: str, raise_: str, direction: Direction) -> Any:
    """A field validator: the clear line `clear` lies past the raise line `raise_` on
    the safe side (hysteresis). Declare the clear field with `validate_default=True`,
    so a raise line moved past the default clear line is refused too."""
    side = "above" if direction is Direction.AT_OR_BELOW else "below"

    def check(cls: type[ConfigTable], value: float, info: ValidationInfo) -> float:
        line = info.data.get(raise_)
        if line is not None and not direction.worse(line, value):
            raise ValueError(f"must be {side} {raise_}")
        return value

    return field_validator(clear)(check)


@dataclass
class Track:
    """One subject's continuous samples of the metric. Times are rule times."""

    #: The latest alertable continuous sample.
    last_at: float | None = None
    breach_since: float | None = None
    breach_worst: float | None = None
    breach_ids: list[str] = field(default_factory=list)
    recovered_since: float | None = None
    alert: Alert | None = None
    #: The worst value the open alert has announced.
    reported: float | None = None

    def save(self, epoch_offset: float) -> dict[str, Any]:
        return {
            "last_at": to_epoch(self.last_at, epoch_offset),
            "breach_since": to_epoch(self.breach_since, epoch_offset),
            "breach_worst": self.breach_worst,
            "breach_ids": list(self.breach_ids),
            "recovered_since": to_epoch(self.recovered_since, epoch_offset),
            "reported": self.reported,
        }

    def load(self, saved: dict[str, Any], epoch_offset: float) -> None:
        self.last_at = from_epoch(saved.get("last_at"), epoch_offset)
        self.breach_since = from_epoch(saved.get("breach_since"), epoch_offset)
        self.breach_worst = saved.get("breach_worst")
        self.breach_ids = list(saved.get("breach_ids", []))
        self.recovered_since = from_epoch(saved.get("recovered_since"), epoch_offset)
        if self.alert is not None and saved.get("reported") is not None:
            self.reported = saved["reported"]


P = TypeVar("P", bound=SustainedParams)


class SustainedBreach(Generic[P]):
    """The rule; a subclass says which alert (`kind`, whose value is also its table's
    name), which metric and which side of the lines."""

    kind: AlertKind
    metric: Metric
    direction: Direction

    def __init__(self, params: P, context: CareContext) -> None:
        self._base = params
        self._context = context
        self._table = self.kind.value
        self._tracks: dict[str, Track] = {}

    @property
    def metrics(self) -> frozenset[Metric]:
        return frozenset({self.metric})

    def restore(self, alert: Alert) -> None:
        track = self._tracks.setdefault(alert_key(alert), Track())
        track.alert = alert
        track.reported = alert.value

    def open_alerts(self) -> Iterable[Alert]:
        return [t.alert for t in self._tracks.values() if t.alert is not None]

    def on_tick(self, now: Instant) -> list[Alert]:
        return []  # silence never raises nor clears: only samples do

    def save_state(self, epoch_offset: float) -> dict[str, Any] | None:
        saved = {key: track.save(epoch_offset) for key, track in self._tracks.items()}
        return saved or None

    def load_state(self, state: Any, epoch_offset: float) -> None:
        for key, saved in state.items():
            self._tracks.setdefault(key, Track()).load(saved, epoch_offset)

    def on_reading(self, reading: Reading) -> list[Alert]:
        m = reading.measurement
        if m.metric is not self.metric or not m.alertable:
            return []  # a flagged sample neither counts nor interrupts: gaps are timed
        if m.quality and Quality.SPOT_CHECK in m.quality:  # most samples have no flag
            return self._spot_check(reading)
        params = self._params(reading)
        track = self._track(subject_key(reading))
        now = reading.rule_time
        if track.last_at is not None and now - track.last_at > params.max_gap_s:
            track.breach_since = track.recovered_since = None  # too long untrustworthy
        track.last_at = now
        value = float(m.value)
        if self.direction.past(value, params.raise_line):
            track.recovered_since = None
            if track.breach_since is None or track.breach_worst is None:
                track.breach_since, track.breach_worst, track.breach_ids = now, value, []
            elif self.direction.worse(value, track.breach_worst):
                track.breach_worst = value
            track.breach_ids.append(reading.id)
            del track.breach_ids[:-EVIDENCE_LIMIT]
            if now - track.breach_since >= params.persist_s:
                return self._raise_or_update(track, reading, track.breach_worst, track.breach_ids)
            return []
        track.breach_since = None
        if track.alert is None:
            return []
        if not self.direction.recovered(value, params.clear_line):
            track.recovered_since = None
            return []
        if track.recovered_since is None:
            track.recovered_since = now
        if now - track.recovered_since >= params.clear_after_s:
            return [self._clear(track, reading)]
        return []

    def _spot_check(self, reading: Reading) -> list[Alert]:
        """A spot-check is not a continuous sample: ignored unless a subclass says."""
        return []

    def _track(self, key: str) -> Track:
        """The subject's track (a new one made only when there is none: every reading
        asks)."""
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = Track()
        return track

    def _params(self, reading: Reading) -> P:
        return self._context.params(self._table, reading.subject, self._base)

    def _raise_or_update(
        self,
        track: Track,
        reading: Reading,
        worst: float,
        evidence: list[str],
        detail: str | None = None,
    ) -> list[Alert]:
        """Raise the alert on `reading`, whose breach reached `worst`; or, when it is
        open already, update it if `worst` is worse than it has said."""
        params = self._params(reading)
        critical = params.critical_line
        reached = critical is not None and self.direction.past(worst, critical)
        severity = Severity.CRITICAL if reached else Severity.HIGH
        if track.alert is None:
            track.alert = raise_alert(
                self.kind, reading, severity, params.raise_line, evidence, detail=detail
            )
            track.reported = worst
            return [snapshot(track.alert)]
        if track.reported is not None and not self.direction.worse(worst, track.reported):
            return []
        track.reported = worst
        return [change_alert(track.alert, AlertState.UPDATED, reading, severity)]

    def _clear(self, track: Track, reading: Reading) -> Alert:
        alert = track.alert
        assert alert is not None
        track.alert = track.reported = track.recovered_since = None
        return change_alert(alert, AlertState.CLEARED, reading)


# --- the pulse-rate bands: NEWS2's 3-point bands (<= 40, >= 131 /min) -----------------

#: /min: a line outside it is a slip (a pulse of 300 is no heart's; 0 no reading).
_PulseRate = Annotated[float, Field(ge=20.0, le=250.0)]


class TachycardiaParams(SustainedParams):
    """`[rules.tachycardia]`. No critical line: NEWS2 scores every rate >= 131 alike
    (3 points, a single parameter calling for an urgent response: `high`), and the
    sources give no higher line."""

    raise_at_or_above: _PulseRate = 131.0
    #: 10 /min under the raise line, so a pulse wavering around 131 does not raise and
    #: clear in turn (a design choice, like the SpO2 rule's 93/95).
    clear_at_or_below: _PulseRate = Field(default=120.0, validate_default=True)

    _clear_below_raise = beyond_the_raise_line(
        "clear_at_or_below", "raise_at_or_above", Direction.AT_OR_ABOVE
    )

    LINES = ("raise_at_or_above", "clear_at_or_below", None)


class BradycardiaParams(SustainedParams):
    """`[rules.bradycardia]`. No critical line, as for tachycardia."""

    raise_at_or_below: _PulseRate = 40.0
    #: 10 /min above the raise line (hysteresis, a design choice).
    clear_at_or_above: _PulseRate = Field(default=50.0, validate_default=True)

    _clear_above_raise = beyond_the_raise_line(
        "clear_at_or_above", "raise_at_or_below", Direction.AT_OR_BELOW
    )

    LINES = ("raise_at_or_below", "clear_at_or_above", None)


class TachycardiaAlerts(SustainedBreach[TachycardiaParams]):
    kind = AlertKind.TACHYCARDIA
    metric = Metric.PULSE_RATE
    direction = Direction.AT_OR_ABOVE


class BradycardiaAlerts(SustainedBreach[BradycardiaParams]):
    kind = AlertKind.BRADYCARDIA
    metric = Metric.PULSE_RATE
    direction = Direction.AT_OR_BELOW
