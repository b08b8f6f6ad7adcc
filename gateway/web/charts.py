"""The page's pictures: SpO2 and pulse over the last hour, temperature over the isolation
period, as SVG text to put inline in a page.

Why our own SVG: a line chart is a few dozen lines of polylines and labels. Drawn here on
the gateway it needs no JavaScript and no CDN (the gateway may have no internet, and
serves everything itself), and it looks the same on any phone. Chart libraries either
draw in the browser (JavaScript) or bring tens of MB to a Pi (matplotlib) for two charts.

The viewBox is 360 wide (about 1 px per unit on a 360 px phone; `width="100%"` scales it
to wider screens). Lines and text are drawn in `currentColor`, so they follow the page's
colours. Every text comes from the caller (`ChartLabels`, already translated: no
language here) and is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from html import escape

from drivers.measurement import Metric

#: No reading for longer than this breaks the line (vitals arrive each second; the
#: temperature is measured morning and evening, 11 and 13 h apart, so a missed
#: measurement, not every night, breaks it).
VITALS_GAP = timedelta(minutes=2)
TEMPERATURE_GAP = timedelta(hours=16)

_WIDTH = 360
_LEFT, _RIGHT = 36, 8  # room for the value labels on the left
_SPO2_COLOUR, _PULSE_COLOUR, _TEMPERATURE_COLOUR = "#1565c0", "#ef6c00", "#455a64"
_FEVER_COLOUR = "#d32f2f"
#: Label spacing at least this (viewBox units): "12:45" or "12-01" at font size 11.
_TIME_LABEL_GAP = 44
_CLOCK_STEPS_MIN = (5, 10, 15, 30, 60, 120, 180, 360, 720)


@dataclass(frozen=True, slots=True)
class ChartLabels:
    """The charts' texts, already translated. A chart uses the fields it draws."""

    title: str
    no_data: str
    spo2: str = ""  # the SpO2 panel's label with its unit, e.g. "SpO₂ %"
    pulse: str = ""  # e.g. "Pulse /min"
    temperature: str = ""  # e.g. "Temperature °C"
    fever_line: str = ""  # e.g. "Fever line 37.3 °C"


Series = Sequence[tuple[datetime, float]]


@dataclass(frozen=True, slots=True)
class _TimeAxis:
    """[`start`, `end`] across the plot; an empty or reversed span is a minute long
    (an isolation that starts now, or later, has no past to draw yet)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end - self.start < timedelta(minutes=1):
            object.__setattr__(self, "end", self.start + timedelta(minutes=1))

    def x(self, at: datetime) -> float:
        return _LEFT + (_WIDTH - _LEFT - _RIGHT) * ((at - self.start) / (self.end - self.start))

    def holds(self, at: datetime) -> bool:
        return self.start <= at <= self.end


@dataclass(frozen=True, slots=True)
class _Panel:
    """One plot area: its vertical place in the viewBox and its value range."""

    top: float
    height: float
    low: float
    high: float

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def y(self, value: float) -> float:
        return self.top + self.height * (self.high - value) / (self.high - self.low)


def vitals_chart(
    points: Sequence[tuple[datetime, str, float]],
    *,
    start: datetime,
    end: datetime,
    tz: tzinfo,
    labels: ChartLabels,
) -> str:
    """SpO2 (`spo2`, %) above pulse (`pulse_rate`, /min) over [`start`, `end`]: two
    stacked panels sharing the time axis (two y scales on one panel are hard to tell
    apart at 360 px). The SpO2 lines at 94 % and 90 % are drawn faint."""
    axis = _TimeAxis(start, end)
    spo2, pulse = (
        [(at, v) for at, m, v in points if m == metric and axis.holds(at)]
        for metric in (Metric.SPO2, Metric.PULSE_RATE)
    )
    spo2_low = min(85.0, 5 * math.floor((min((v for _, v in spo2), default=100) - 1) / 5))
    spo2_panel = _Panel(20, 96, spo2_low, 100)
    pulse_values = [v for _, v in pulse] or [60.0]
    pulse_panel = _Panel(
        142,
        96,
        min(40.0, 20 * math.floor(min(pulse_values) / 20)),
        max(140.0, 20 * math.ceil(max(pulse_values) / 20)),
    )
    spo2_ticks = [(100.0, False), (94.0, True), (90.0, True)]
    if spo2_low <= 85:
        spo2_ticks.append((spo2_low, False))
    parts = [
        *_panel(spo2_panel, labels.spo2, spo2_ticks, labels.no_data, has_data=bool(spo2)),
        *_line(spo2, axis, spo2_panel, VITALS_GAP, _SPO2_COLOUR),
        *_panel(
            pulse_panel,
            labels.pulse,
            [(v, False) for v in _value_ticks(pulse_panel)],
            labels.no_data,
            has_data=bool(pulse),
        ),
        *_line(pulse, axis, pulse_panel, VITALS_GAP, _PULSE_COLOUR),
        *_time_labels(axis, _clock_ticks(axis, tz), pulse_panel.bottom),
    ]
    return _svg(labels.title, pulse_panel.bottom + 22, parts)


def temperature_chart(
    points: Series,
    *,
    start: datetime,
    end: datetime,
    tz: tzinfo,
    fever_line: float,
    labels: ChartLabels,
) -> str:
    """Temperature (°C) over [`start`, `end`] with the fever line drawn and labelled;
    each measurement a dot, red at or above the line (as the fever rule judges: ≥).
    Day ticks at local midnight, labelled "12-01" (month-day)."""
    axis = _TimeAxis(start, end)
    shown = [(at, v) for at, v in points if axis.holds(at)]
    values = [v for _, v in shown] or [fever_line]
    panel = _Panel(
        20,
        150,
        min(35.5, math.floor(min(values) * 2) / 2),
        max(math.ceil((fever_line + 1) * 2) / 2, math.ceil(max(values) * 2) / 2),
    )
    ticks = [(v, False) for v in _value_ticks(panel)]
    y_fever = panel.y(fever_line)
    parts = [
        *_panel(panel, labels.temperature, ticks, labels.no_data, has_data=bool(shown)),
        *_day_grid(axis, tz, panel),
        f'<line class="fever-line" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y_fever:.1f}"'
        f' y2="{y_fever:.1f}" stroke="{_FEVER_COLOUR}" stroke-width="1" stroke-dasharray="6 3"/>',
        f'<text class="fever-label" x="{_LEFT + 4}" y="{y_fever - 3:.1f}"'
        f' fill="{_FEVER_COLOUR}">{escape(labels.fever_line)}</text>',
        *_line(shown, axis, panel, TEMPERATURE_GAP, _TEMPERATURE_COLOUR, dots=False),
        *(
            _dot(axis.x(at), panel.y(v), _FEVER_COLOUR if v >= fever_line else _TEMPERATURE_COLOUR)
            for at, v in shown
        ),
        *_time_labels(axis, _day_ticks(axis, tz), panel.bottom),
    ]
    return _svg(labels.title, panel.bottom + 22, parts)


def _svg(title: str, height: float, parts: Iterable[str]) -> str:
    text = escape(title)
    return "\n".join(
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height:.0f}"'
            f' width="100%" role="img" aria-label="{text}" font-family="sans-serif"'
            ' font-size="11" class="chart">',
            f"<title>{text}</title>",
            *parts,
            "</svg>",
        )
    )


def _panel(
    panel: _Panel, label: str, ticks: Iterable[tuple[float, bool]], no_data: str, *, has_data: bool
) -> list[str]:
    """The frame, its label above it, value ticks (faint ones dashed), and "no data"."""
    right = _WIDTH - _RIGHT
    parts = [
        f'<text class="panel-label" x="{_LEFT}" y="{panel.top - 6}" fill="currentColor">'
        f"{escape(label)}</text>",
        f'<rect class="plot" x="{_LEFT}" y="{panel.top}" width="{right - _LEFT}"'
        f' height="{panel.height}" fill="none" stroke="currentColor" stroke-opacity="0.4"/>',
    ]
    for value, faint in ticks:
        y = panel.y(value)
        dash = ' stroke-dasharray="3 3"' if faint else ""
        parts.append(
            f'<line class="{"band" if faint else "tick"}" x1="{_LEFT}" x2="{right}"'
            f' y1="{y:.1f}" y2="{y:.1f}" stroke="currentColor" stroke-opacity="0.2"{dash}/>'
        )
        parts.append(
            f'<text class="value" x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end"'
            f' fill="currentColor">{value:g}</text>'
        )
    if not has_data:
        parts.append(
            f'<text class="no-data" x="{(_LEFT + right) / 2:.1f}"'
            f' y="{panel.top + panel.height / 2 + 4:.1f}"'
            f' text-anchor="middle" fill="currentColor" fill-opacity="0.7">{escape(no_data)}</text>'
        )
    return parts


def _line(
    series: Series,
    axis: _TimeAxis,
    panel: _Panel,
    gap: timedelta,
    colour: str,
    *,
    dots: bool = True,
) -> list[str]:
    """One polyline per stretch without a gap longer than `gap`; a stretch of one
    reading is a dot (when `dots`), else it would not show."""
    parts = []
    for stretch in _stretches(series, gap):
        if len(stretch) == 1:
            if dots:
                parts.append(_dot(axis.x(stretch[0][0]), panel.y(stretch[0][1]), colour))
            continue
        coords = " ".join(f"{axis.x(at):.1f},{panel.y(v):.1f}" for at, v in stretch)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"'
            ' stroke-linejoin="round"/>'
        )
    return parts


def _stretches(series: Series, gap: timedelta) -> list[list[tuple[datetime, float]]]:
    stretches: list[list[tuple[datetime, float]]] = []
    for at, value in sorted(series):
        if not stretches or at - stretches[-1][-1][0] > gap:
            stretches.append([])
        stretches[-1].append((at, value))
    return stretches


def _dot(x: float, y: float, colour: str) -> str:
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>'


def _value_ticks(panel: _Panel) -> list[float]:
    """Round values at least 24 units apart."""
    span = panel.high - panel.low
    steps = (0.5, 1, 2, 5, 10, 20, 40, 50, 100)
    step = next((s for s in steps if panel.height * s / span >= 24), steps[-1])
    first = math.ceil(panel.low / step)
    return [n * step for n in range(first, math.floor(panel.high / step) + 1)]


def _clock_ticks(axis: _TimeAxis, tz: tzinfo) -> list[tuple[datetime, str]]:
    """Every few minutes, on round local minutes (as the clock at `start` reads),
    labelled HH:MM in `tz`."""
    per_minute = (_WIDTH - _LEFT - _RIGHT) * 60 / (axis.end - axis.start).total_seconds()
    step = 60 * next(
        (m for m in _CLOCK_STEPS_MIN if m * per_minute >= _TIME_LABEL_GAP), _CLOCK_STEPS_MIN[-1]
    )
    offset = (axis.start.astimezone(tz).utcoffset() or timedelta()).total_seconds()
    at = math.ceil((axis.start.timestamp() + offset) / step) * step - offset
    ticks = []
    while at <= axis.end.timestamp():
        moment = datetime.fromtimestamp(at, UTC)
        ticks.append((moment, f"{moment.astimezone(tz):%H:%M}"))
        at += step
    return ticks


def _local_midnights(axis: _TimeAxis, tz: tzinfo) -> list[datetime]:
    day = axis.start.astimezone(tz).date()
    midnights = []
    while (midnight := datetime.combine(day, time(), tzinfo=tz)) <= axis.end:
        if midnight >= axis.start:
            midnights.append(midnight)
        day += timedelta(days=1)
    return midnights


def _day_ticks(axis: _TimeAxis, tz: tzinfo) -> list[tuple[datetime, str]]:
    """Local midnights labelled month-day, every n-th day so the labels do not touch."""
    midnights = _local_midnights(axis, tz)
    per_day = (_WIDTH - _LEFT - _RIGHT) * 86400 / (axis.end - axis.start).total_seconds()
    every = max(1, math.ceil(_TIME_LABEL_GAP / per_day))
    return [(m, f"{m:%m-%d}") for m in midnights[::every]]


def _day_grid(axis: _TimeAxis, tz: tzinfo, panel: _Panel) -> list[str]:
    return [
        f'<line class="day" x1="{x:.1f}" x2="{x:.1f}" y1="{panel.top}" y2="{panel.bottom}"'
        ' stroke="currentColor" stroke-opacity="0.15"/>'
        for x in (axis.x(m) for m in _local_midnights(axis, tz))
    ]


def _time_labels(axis: _TimeAxis, ticks: Iterable[tuple[datetime, str]], y: float) -> list[str]:
    """Centred under their tick; one at the left edge starts there (centred, it would
    run under the lowest value's label); one too near the right edge is left out."""
    labels = []
    for at, label in ticks:
        x = axis.x(at)
        if x > _WIDTH - _TIME_LABEL_GAP / 3:
            continue
        anchor = "start" if x < _LEFT + _TIME_LABEL_GAP / 3 else "middle"
        labels.append(
            f'<text class="time" x="{max(x, _LEFT):.1f}" y="{y + 15:.1f}"'
            f' text-anchor="{anchor}" fill="currentColor">{escape(label)}</text>'
        )
    return labels
