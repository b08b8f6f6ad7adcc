"""The page's charts: SVG a phone can show (well-formed, escaped, local times), and the
store query that feeds them (one subject, a time range, a bounded number of points)."""

from __future__ import annotations

import contextlib
import sqlite3
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers.measurement import Metric, Quality, Site
from gateway.model import Reading
from gateway.store import Store
from gateway.web.charts import ChartLabels, temperature_chart, vitals_chart
from tests.gateway.helpers import T0, reading

SVG = "{http://www.w3.org/2000/svg}"
SHANGHAI = ZoneInfo("Asia/Shanghai")
FEVER_RED = "#d32f2f"
SPO2_BLUE = "#1565c0"
LABELS = ChartLabels(
    title="bed-9",
    no_data="no data",
    spo2="SpO2 %",
    pulse="Pulse /min",
    temperature="Temperature °C",
    fever_line="fever line 37.3 °C",
)
END = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)  # 15:00 in Shanghai
START = END - timedelta(hours=1)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert root.get("viewBox", "").startswith("0 0 360 ")
    return root


def texts(root: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == cls]


def polylines(root: ET.Element, colour: str) -> list[list[tuple[float, float]]]:
    return [
        [(float(x), float(y)) for x, y in (p.split(",") for p in line.get("points", "").split())]
        for line in root.iter(f"{SVG}polyline")
        if line.get("stroke") == colour
    ]


def plots(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == "plot"]


def line_at(root: ET.Element, label: str) -> float:
    """The y of the value line labelled `label` (its text sits 4 below it)."""
    (y,) = [float(t.get("y", 0)) - 4 for t in root.iter(f"{SVG}text") if t.text == label]
    return y


def spo2_every_10_s(values: dict[int, float]) -> list[tuple[datetime, str, float]]:
    """SpO2 at START + each key (seconds)."""
    return [(START + timedelta(seconds=s), "spo2", v) for s, v in values.items()]


def test_vitals_points_land_where_their_time_and_value_say() -> None:
    points = [
        *spo2_every_10_s({s: 94.0 for s in range(0, 3600, 10)}),
        (START + timedelta(minutes=30), "pulse_rate", 80.0),
        (START + timedelta(minutes=31), "pulse_rate", 120.0),
    ]
    root = parse(vitals_chart(points, start=START, end=END, tz=SHANGHAI, labels=LABELS))
    assert root.findtext(f"{SVG}title") == "bed-9" and root.get("aria-label") == "bed-9"
    spo2_plot, pulse_plot = plots(root)
    left, width = float(spo2_plot.get("x", 0)), float(spo2_plot.get("width", 0))
    (line,) = polylines(root, SPO2_BLUE)
    assert line[0][0] == pytest.approx(left, abs=0.2)  # START at the left edge
    assert line[180][0] == pytest.approx(left + width / 2, abs=0.2)  # half an hour: the middle
    assert [y for _, y in line] == [pytest.approx(line_at(root, "94"), abs=0.2)] * len(line)
    (pulse,) = polylines(root, "#ef6c00")
    assert pulse[0][1] == pytest.approx(line_at(root, "80"), abs=0.2)
    assert pulse[1][1] == pytest.approx(line_at(root, "120"), abs=0.2)
    pulse_top = float(pulse_plot.get("y", 0))
    assert all(y > pulse_top for _, y in pulse)  # in its own panel, below SpO2's
    assert texts(root, "panel-label") == ["SpO2 %", "Pulse /min"]
    # The SpO2 lines at 94 and 90 are drawn faint (dashed), across the plot.
    bands = [ln for ln in root.iter(f"{SVG}line") if ln.get("class") == "band"]
    assert len(bands) == 2 and all(b.get("stroke-dasharray") for b in bands)


def test_a_gap_breaks_the_line_in_two() -> None:
    before = {s: 97.0 for s in range(0, 1200, 10)}
    after = {s: 96.0 for s in range(1500, 3600, 10)}  # 5 minutes without a reading
    points = spo2_every_10_s({**before, **after})
    root = parse(vitals_chart(points, start=START, end=END, tz=SHANGHAI, labels=LABELS))
    first, second = polylines(root, SPO2_BLUE)
    assert (len(first), len(second)) == (len(before), len(after))
    # Readings 2 minutes apart or less are one line.
    joined = spo2_every_10_s({0: 97.0, 120: 97.0, 240: 96.0})
    root = parse(vitals_chart(joined, start=START, end=END, tz=SHANGHAI, labels=LABELS))
    assert len(polylines(root, SPO2_BLUE)) == 1


def test_time_ticks_are_local_clock_times() -> None:
    svg = vitals_chart([], start=START, end=END, tz=SHANGHAI, labels=LABELS)
    # Every 10 minutes; 15:00 would not fit at the right edge.
    assert texts(parse(svg), "time") == ["14:00", "14:10", "14:20", "14:30", "14:40", "14:50"]
    (first, *_) = (t for t in parse(svg).iter(f"{SVG}text") if t.get("class") == "time")
    assert first.get("text-anchor") == "start"  # not under the lowest value's label
    new_york = ZoneInfo("America/New_York")
    svg = vitals_chart([], start=START, end=END, tz=new_york, labels=LABELS)
    assert texts(parse(svg), "time")[:2] == ["01:00", "01:10"]
    kathmandu = ZoneInfo("Asia/Kathmandu")  # UTC+05:45: still round local minutes
    svg = vitals_chart([], start=START, end=END, tz=kathmandu, labels=LABELS)
    assert texts(parse(svg), "time")[:2] == ["11:50", "12:00"]


def test_no_readings_show_the_frame_and_no_data() -> None:
    root = parse(vitals_chart([], start=START, end=END, tz=SHANGHAI, labels=LABELS))
    assert len(plots(root)) == 2 and texts(root, "no-data") == ["no data", "no data"]
    assert not list(root.iter(f"{SVG}polyline"))
    only_spo2 = spo2_every_10_s({0: 97.0, 10: 97.0})
    root = parse(vitals_chart(only_spo2, start=START, end=END, tz=SHANGHAI, labels=LABELS))
    assert texts(root, "no-data") == ["no data"]  # the pulse panel's
    temperature = parse(
        temperature_chart([], start=START, end=END, tz=SHANGHAI, fever_line=37.3, labels=LABELS)
    )
    assert texts(temperature, "no-data") == ["no data"] and len(plots(temperature)) == 1
    # An isolation that starts now has no span yet: still a chart, not an error.
    starts_now = temperature_chart(
        [], start=END, end=END, tz=SHANGHAI, fever_line=37.3, labels=LABELS
    )
    assert texts(parse(starts_now), "no-data") == ["no data"]


def test_every_text_is_escaped() -> None:
    hostile = ChartLabels(
        title='<script>alert("x")</script> & "bed"',
        no_data="<b>none</b>",
        spo2="<i>",
        pulse="'",
        temperature="<t>",
        fever_line="</svg>",
    )
    vitals = vitals_chart([], start=START, end=END, tz=SHANGHAI, labels=hostile)
    temperature = temperature_chart(
        [], start=START, end=END, tz=SHANGHAI, fever_line=37.3, labels=hostile
    )
    for svg in (vitals, temperature):
        assert "<script" not in svg and "<b>" not in svg and "</svg>" not in svg[:-6]
        root = parse(svg)  # well-formed, so nothing broke out of its element
        assert root.findtext(f"{SVG}title") == hostile.title
        assert root.get("aria-label") == hostile.title
    assert texts(parse(vitals), "no-data") == ["<b>none</b>"] * 2
    assert texts(parse(temperature), "fever-label") == ["</svg>"]


def test_the_fever_line_is_drawn_and_labelled_and_fevers_are_red() -> None:
    start = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)  # 11-28 00:00 in Shanghai
    end = start + timedelta(days=14)
    morning, evening = timedelta(hours=7, minutes=30), timedelta(hours=18)
    points = [
        (start + morning, 36.6),  # 11-28 07:30
        (start + evening, 37.3),  # 11-28 18:00: on the line is a fever (>=, as the rule)
        (start + timedelta(days=1) + morning, 38.4),
        (start + timedelta(days=1) + evening, 37.2),
    ]
    root = parse(
        temperature_chart(points, start=start, end=end, tz=SHANGHAI, fever_line=37.3, labels=LABELS)
    )
    (fever,) = [ln for ln in root.iter(f"{SVG}line") if ln.get("class") == "fever-line"]
    assert texts(root, "fever-label") == ["fever line 37.3 °C"]
    dots = [(float(c.get("cy", 0)), c.get("fill")) for c in root.iter(f"{SVG}circle")]
    assert [fill == FEVER_RED for _, fill in dots] == [False, True, True, False]
    assert dots[1][0] == pytest.approx(float(fever.get("y1", 0)), abs=0.2)  # 37.3: on it
    assert dots[2][0] < dots[1][0] < dots[3][0] < dots[0][0]  # higher is further up
    (line,) = polylines(root, "#455a64")
    assert len(line) == 4  # 10.5 and 13.5 h apart: one line
    # Day ticks on local dates: every other day labelled, so they do not touch.
    assert texts(root, "time")[:3] == ["11-28", "11-30", "12-02"]
    days = [ln for ln in root.iter(f"{SVG}line") if ln.get("class") == "day"]
    assert len(days) == 15  # both ends are local midnights
    left = float(plots(root)[0].get("x", 0))
    assert float(days[0].get("x1", 0)) == pytest.approx(left, abs=0.2)  # local midnight


def test_a_missed_day_breaks_the_temperature_line() -> None:
    start = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    end = start + timedelta(days=14)
    points = [
        (start + timedelta(hours=8), 36.6),
        (start + timedelta(hours=18), 36.8),
        (start + timedelta(days=2, hours=8), 36.7),  # a day and a half without one
        (start + timedelta(days=2, hours=18), 36.9),
    ]
    root = parse(
        temperature_chart(points, start=start, end=end, tz=SHANGHAI, fever_line=37.3, labels=LABELS)
    )
    assert [len(line) for line in polylines(root, "#455a64")] == [2, 2]


# --- the store query behind them ------------------------------------------------------


def one_hour_at_1_hz(subject: str, first_seq: int) -> list[Reading]:
    return [
        reading(first_seq + 2 * s + i, metric, value, at_s=s, subject=subject)
        for s in range(3600)
        for i, (metric, value) in enumerate(((Metric.SPO2, 90 + s % 10), (Metric.PULSE_RATE, 70)))
    ]


def test_subject_series_reduces_an_hour_at_1_hz_to_the_limit(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.sqlite3", 10**9)
    store.commit_readings(one_hour_at_1_hz("bed-1", 1))
    store.commit_readings(one_hour_at_1_hz("bed-2", 10_001))
    series = store.subject_series(
        "bed-1", ["spo2", "pulse_rate"], T0, T0 + timedelta(hours=1), limit=360
    )
    spo2 = [(at, v) for at, metric, v, _ in series if metric == "spo2"]
    pulse = [v for _, metric, v, _ in series if metric == "pulse_rate"]
    assert len(spo2) == len(pulse) == 360
    # 10 s buckets: each the mean of its ten readings (90..99), at their mean time.
    assert {v for _, v in spo2} == {94.5}
    assert set(pulse) == {70.0}
    times = [datetime.fromisoformat(at) for at, _ in spo2]
    assert times[0] == T0 + timedelta(seconds=4.5) and times == sorted(times)
    assert all(T0 <= t < T0 + timedelta(hours=1) for t in times)


def test_subject_series_keeps_to_the_subject_range_and_clean_values(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.sqlite3", 10**9)
    store.commit_readings(
        [
            reading(1, Metric.BODY_TEMPERATURE, 36.6, at_s=0, site=Site.AXILLARY),
            reading(2, Metric.BODY_TEMPERATURE, 36.9, at_s=0, subject="bed-2"),
            reading(3, Metric.SPO2, 96, at_s=10),  # another metric
            reading(
                4,
                Metric.BODY_TEMPERATURE,
                34.0,
                at_s=20,
                quality=frozenset({Quality.DEVICE_FAULT}),
            ),
            reading(
                5,
                Metric.BODY_TEMPERATURE,
                37.4,
                at_s=30,
                quality=frozenset({Quality.FROM_STORAGE}),  # fit to judge: drawn
            ),
            reading(6, Metric.BODY_TEMPERATURE, 37.0, at_s=3600),  # at `until`: outside
            reading(7, Metric.BODY_TEMPERATURE, 36.0, at_s=-1),  # before `since`
        ]
    )
    series = store.subject_series(
        "bed-1", ["body_temperature"], T0, T0 + timedelta(hours=1), limit=360
    )
    assert series == [
        (T0.isoformat(timespec="milliseconds"), "body_temperature", 36.6, "axillary"),
        (
            (T0 + timedelta(seconds=30)).isoformat(timespec="milliseconds"),
            "body_temperature",
            37.4,
            None,
        ),
    ]
    assert (
        store.subject_series("bed-3", ["body_temperature"], T0, T0 + timedelta(hours=1), 360) == []
    )


def test_readings_kept_before_the_upgrade_are_found(tmp_path: Path) -> None:
    """A store of schema 3 (before the charts' indexes) gets them at the next open."""
    path = tmp_path / "g.sqlite3"
    store = Store(path, 10**9)
    store.commit_readings([reading(1, Metric.SPO2, 95, at_s=5)])
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP INDEX readings_by_time")
        conn.execute("DROP INDEX temperatures_by_subject")
        conn.execute("PRAGMA user_version = 3")
    store = Store(path, 10**9)
    at = (T0 + timedelta(seconds=5)).isoformat(timespec="milliseconds")
    hour = (T0, T0 + timedelta(hours=1))
    assert store.subject_series("bed-1", ["spo2"], *hour, 10) == [(at, "spo2", 95.0, None)]
    indexes = {index.name for index in store.db["readings"].indexes}
    assert {"readings_by_time", "temperatures_by_subject"} <= indexes
    assert "readings_by_subject" not in indexes
