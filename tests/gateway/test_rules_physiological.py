"""The physiological alerts as a care team meets them: timelines of readings through
the real rule engine, and the alerts they raise, update and clear, and when.

low_spo2, tachycardia and bradycardia are sustained-breach rules (a breach tolerates
motion artefacts and brief gaps); low_spo2 also takes spot-checks; fever and
hypothermia judge each final temperature."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.measurement import Metric, Quality, Site
from gateway.model import Alert, AlertKind, AlertState, Instant, Reading
from gateway.rules.engine import RuleEngine
from tests.gateway.helpers import T0, reading, rules_engine

SPO2, PULSE, TEMP = Metric.SPO2, Metric.PULSE_RATE, Metric.BODY_TEMPERATURE
LOW_SPO2, TACHY, BRADY = AlertKind.LOW_SPO2, AlertKind.TACHYCARDIA, AlertKind.BRADYCARDIA
FEVER, HYPO = AlertKind.FEVER, AlertKind.HYPOTHERMIA
MOTION = frozenset({Quality.POOR_SIGNAL})
PROBE_OFF = frozenset({Quality.PROBE_OFF})
SPOT = frozenset({Quality.SPOT_CHECK})
FINAL: frozenset[Quality] = frozenset()

#: One event as the care team sees it: state, seconds after T0, severity, value.
Event = tuple[str, float, str | None, float | None]


class Timeline:
    """Readings of one subject (unless told), numbered in order. `boot` is the rules'
    monotonic clock at T0 (`Reading.elapsed_s`), as in a running gateway."""

    def __init__(self, boot: float = 1000.0) -> None:
        self.readings: list[Reading] = []
        self.boot = boot
        self._seq = count(1)

    def at(self, at_s: float, value: float, metric: Metric = SPO2, **kw: Any) -> Reading:
        r = reading(next(self._seq), metric, value, at_s, **kw)
        r = replace(r, elapsed_s=at_s + self.boot)
        self.readings.append(r)
        return r

    def each_second(
        self, start_s: float, stop_s: float, value: float, metric: Metric = SPO2, **kw: Any
    ) -> list[Reading]:
        """A reading every second from `start_s` up to, not including, `stop_s`."""
        return [self.at(float(t), value, metric, **kw) for t in range(int(start_s), int(stop_s))]

    def rebooted(self, boot: float) -> Timeline:
        """The readings after a restart: numbered on, on a new monotonic clock."""
        after = Timeline(boot)
        after._seq = self._seq
        return after

    def instant(self, at_s: float) -> Instant:
        return Instant(T0 + timedelta(seconds=at_s), at_s + self.boot)


def of(alerts: list[Alert], kind: AlertKind) -> list[Alert]:
    return [a for a in alerts if a.kind is kind]


def story(alerts: list[Alert], kind: AlertKind) -> list[Event]:
    return [
        (
            a.state.value,
            (a.updated_at - T0).total_seconds(),
            a.severity.value if a.severity else None,
            a.value,
        )
        for a in of(alerts, kind)
    ]


def run(timeline: Timeline, kind: AlertKind, **config: Any) -> list[Event]:
    return story(rules_engine(**config).evaluate(timeline.readings), kind)


# --- low SpO2: sustained, through motion ------------------------------------------------


def test_hypoxia_with_motion_artefacts_is_raised_15_s_after_it_began() -> None:
    t = Timeline()
    t.each_second(0, 10, 97)
    t.each_second(10, 12, 90)  # desaturation from 10 s
    t.each_second(12, 16, 78, quality=MOTION)  # the resident moves: 4 s flagged
    t.each_second(16, 18, 89)
    # 18-22 s: nothing at all (the finger out of the clip for 5 s)
    t.each_second(23, 25, 90)
    t.at(25, 80, quality=MOTION)  # the 15th second is an artefact: no raise on it
    t.each_second(26, 60, 90)
    engine = rules_engine()
    alerts = of(engine.evaluate(t.readings), LOW_SPO2)
    assert story(alerts, LOW_SPO2) == [("raised", 26.0, "high", 90.0)]
    (alert,) = alerts
    flagged = {r.id for r in t.readings if r.measurement.quality}
    assert alert.evidence[0] == t.readings[10].id and not flagged & set(alert.evidence)


@pytest.mark.parametrize(
    "scenario",
    ["flagged artefact bursts", "brief real dips", "low edges of long bursts", "gap too long"],
)
def test_motion_bursts_do_not_alarm(scenario: str) -> None:
    t = Timeline()
    for start in range(0, 600, 60):
        if scenario == "flagged artefact bursts":  # 20 s of flagged nonsense a minute
            t.each_second(start, start + 40, 97)
            t.each_second(start + 40, start + 60, 76, quality=MOTION)
        elif scenario == "brief real dips":  # unflagged, but 14 s at most
            t.each_second(start, start + 46, 97)
            t.each_second(start + 46, start + 60, 91)
        elif scenario == "low edges of long bursts":  # each low value 12 s from the next
            for edge in range(start, start + 60, 12):
                t.at(edge, 91)
                t.each_second(edge + 1, edge + 12, 70, quality=PROBE_OFF)
        else:  # 10 s low, 9 s with no sample, 10 s low: two breaches of 9 s
            t.each_second(start, start + 10, 91)
            t.each_second(start + 19, start + 29, 91)
            t.each_second(start + 29, start + 60, 97)
    assert run(t, LOW_SPO2) == []


def test_low_spo2_escalates_to_critical_and_updates_on_each_new_lowest_value() -> None:
    t = Timeline()
    t.each_second(0, 16, 92)
    for at_s, value in ((16, 87), (17, 89), (18, 85), (19, 86), (20, 85)):
        t.at(at_s, value)
    engine = rules_engine()
    alerts = of(engine.evaluate(t.readings), LOW_SPO2)
    assert story(alerts, LOW_SPO2) == [
        ("raised", 15.0, "high", 92.0),
        ("updated", 16.0, "critical", 87.0),
        ("updated", 18.0, "critical", 85.0),
    ]
    assert len({a.id for a in alerts}) == 1


def test_a_breach_that_reached_88_is_critical_from_its_raise() -> None:
    t = Timeline()
    t.each_second(0, 3, 91)
    t.at(3, 88)
    t.each_second(4, 20, 91)
    assert run(t, LOW_SPO2) == [("raised", 15.0, "critical", 91.0)]


@pytest.mark.parametrize(
    ("interruption", "cleared_at"),
    [
        ("none", 76.0),  # 60 s from the first recovered sample (16 s)
        ("motion", 76.0),  # 4 s flagged: tolerated, counted
        ("94 %", 101.0),  # not recovered (hysteresis): counting restarts at 41 s
        ("gap", 110.0),  # 10 s without a sample: counting restarts at 50 s
    ],
)
def test_low_spo2_clears_after_60_s_recovered(interruption: str, cleared_at: float) -> None:
    t = Timeline()
    t.each_second(0, 16, 90)
    t.each_second(16, 40, 96)
    if interruption == "motion":
        t.each_second(40, 44, 80, quality=MOTION)
        t.each_second(44, 200, 96)
    elif interruption == "94 %":
        t.at(40, 94)
        t.each_second(41, 200, 96)
    elif interruption == "gap":
        t.each_second(50, 200, 96)
    else:
        t.each_second(40, 200, 96)
    t.each_second(200, 216, 90)  # a new episode
    alerts = of(rules_engine().evaluate(t.readings), LOW_SPO2)
    assert story(alerts, LOW_SPO2) == [
        ("raised", 15.0, "high", 90.0),
        ("cleared", cleared_at, "high", 96.0),
        ("raised", 215.0, "high", 90.0),
    ]
    assert alerts[0].id == alerts[1].id != alerts[2].id


# --- low SpO2: spot-checks --------------------------------------------------------------


def test_a_validated_spot_check_at_or_below_93_raises_at_once() -> None:
    t = Timeline()
    t.at(100, 93, quality=SPOT)
    t.at(400, 87, quality=SPOT)  # a recheck, worse
    t.at(700, 94, quality=SPOT)  # better, not recovered: nothing
    t.at(1000, 95, quality=SPOT)  # recovered
    t.at(1300, 92, quality=SPOT)  # a new episode
    alerts = of(rules_engine().evaluate(t.readings), LOW_SPO2)
    assert story(alerts, LOW_SPO2) == [
        ("raised", 100.0, "high", 93.0),
        ("updated", 400.0, "critical", 87.0),
        ("cleared", 1000.0, "critical", 95.0),
        ("raised", 1300.0, "high", 92.0),
    ]
    first = alerts[0]
    assert (first.detail, first.threshold, first.evidence) == ("spot-check", 93.0, ["gw-test-1"])
    assert alerts[0].id == alerts[2].id != alerts[3].id


def test_a_spot_check_the_device_doubts_raises_nothing() -> None:
    t = Timeline()
    t.at(0, 85, quality=SPOT | {Quality.QUESTIONABLE})
    t.at(60, 80, quality=SPOT | {Quality.PROVISIONAL})
    assert run(t, LOW_SPO2) == []


def test_a_spot_check_does_not_clear_while_continuous_samples_come() -> None:
    t = Timeline()
    t.each_second(0, 16, 90)
    t.each_second(16, 30, 94)  # continuous: better, not recovered
    t.at(20.5, 97, quality=SPOT)  # a recheck with another oximeter: not enough
    # The continuous oximeter is taken off at 30 s; a spot-check at 60 s decides.
    t.at(60, 97, quality=SPOT)
    assert run(t, LOW_SPO2) == [("raised", 15.0, "high", 90.0), ("cleared", 60.0, "high", 97.0)]


def test_spot_checks_neither_feed_nor_interrupt_the_continuous_timers() -> None:
    t = Timeline()
    t.each_second(0, 10, 90)
    t.at(9.5, 98, quality=SPOT)  # does not end the breach
    t.each_second(10, 20, 90)
    t.at(30, 150, PULSE, quality=SPOT)  # one pulse rate on request: not sustained
    engine = rules_engine()
    alerts = engine.evaluate(t.readings)
    assert story(alerts, LOW_SPO2) == [("raised", 15.0, "high", 90.0)]
    assert of(alerts, TACHY) == []


# --- pulse rate -------------------------------------------------------------------------

PULSE_CASES = [
    # kind, past the raise line, between the lines, recovered, threshold
    pytest.param(TACHY, 131.0, 125.0, 120.0, 131.0, id="tachycardia"),
    pytest.param(BRADY, 40.0, 45.0, 50.0, 40.0, id="bradycardia"),
]


@pytest.mark.parametrize(("kind", "breach", "between", "recovered", "line"), PULSE_CASES)
def test_a_pulse_rate_past_its_line_for_15_s_raises_and_60_s_recovered_clears(
    kind: AlertKind, breach: float, between: float, recovered: float, line: float
) -> None:
    t = Timeline()
    t.each_second(0, 10, 75, PULSE)
    t.each_second(10, 24, breach, PULSE)  # 14 s (10..23): brief, nothing
    t.each_second(24, 100, 75, PULSE)
    t.each_second(100, 104, breach, PULSE)
    t.each_second(104, 108, 0, PULSE, quality=MOTION)  # tolerated
    t.each_second(108, 120, breach, PULSE)
    t.each_second(120, 200, between, PULSE)  # not recovered
    t.each_second(200, 261, recovered, PULSE)
    alerts = of(rules_engine().evaluate(t.readings), kind)
    assert story(alerts, kind) == [
        ("raised", 115.0, "high", breach),
        ("cleared", 260.0, "high", recovered),
    ]
    assert alerts[0].threshold == line and alerts[0].id == alerts[1].id


def test_the_pulse_rules_never_raise_on_each_others_side_or_on_spo2() -> None:
    t = Timeline()
    t.each_second(0, 30, 150, PULSE)
    t.each_second(30, 60, 30, SPO2)
    alerts = rules_engine().evaluate(t.readings)
    assert story(alerts, TACHY) == [("raised", 15.0, "high", 150.0)]
    assert of(alerts, BRADY) == []


# --- temperature ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("site", "value", "raised"),
    [
        (Site.AXILLARY, 37.2, None),
        (Site.AXILLARY, 37.3, (37.3, "axillary")),
        (Site.ORAL, 37.5, None),
        (Site.ORAL, 37.8, (37.8, "oral")),
        (None, 37.5, None),  # feverish axillary, normal tympanic: unknown
        (None, 38.2, (38.0, None)),  # a fever at every site
        (Site.FINGER, 37.9, None),  # a site with no line: as without a site
        (Site.FINGER, 38.0, (38.0, "finger")),
    ],
)
def test_fever_by_site_and_without_a_site(
    site: Site | None, value: float, raised: tuple[float, str | None] | None
) -> None:
    alerts = of(rules_engine().evaluate([reading(1, TEMP, value, site=site)]), FEVER)
    assert [(a.threshold, a.site) for a in alerts] == ([raised] if raised else [])


def test_a_reading_without_a_site_clears_a_fever_only_below_every_line() -> None:
    engine = rules_engine()
    (raised,) = of(engine.evaluate([reading(1, TEMP, 37.6, site=Site.AXILLARY)]), FEVER)
    # 37.5 with no site may be an axillary fever still: nothing.
    assert of(engine.evaluate([reading(2, TEMP, 37.5, site=None, at_s=3600)]), FEVER) == []
    (cleared,) = of(engine.evaluate([reading(3, TEMP, 37.2, site=None, at_s=7200)]), FEVER)
    assert cleared.state is AlertState.CLEARED and cleared.id == raised.id


def test_a_high_fever_is_high_with_or_without_a_site() -> None:
    engine = rules_engine()
    axillary = reading(1, TEMP, 39.1, site=Site.AXILLARY)
    unknown = reading(2, TEMP, 39.5, site=None, subject="bed-2")
    assert story(engine.evaluate([axillary, unknown]), FEVER) == [
        ("raised", 0.0, "high", 39.1),
        ("raised", 0.0, "high", 39.5),
    ]


def test_the_line_without_a_site_follows_the_subjects_own_lines() -> None:
    engine = rules_engine(
        subjects=[{"code": "bed-2", "thresholds": {"fever": {"lines": {"tympanic": 38.5}}}}]
    )
    readings = [
        reading(1, TEMP, 38.2, site=None, subject="bed-1"),
        reading(2, TEMP, 38.2, site=None, subject="bed-2"),
        reading(3, TEMP, 38.5, site=None, subject="bed-2", at_s=60),
    ]
    alerts = of(engine.evaluate(readings), FEVER)
    assert [(a.subject, a.threshold, a.value) for a in alerts] == [
        ("bed-1", 38.0, 38.2),
        ("bed-2", 38.5, 38.5),
    ]


def test_hypothermia_raises_at_35_updates_colder_and_clears_at_35_5() -> None:
    t = Timeline()
    t.at(0, 36.0, TEMP, site=Site.AXILLARY)
    t.at(60, 34.0, TEMP, site=Site.AXILLARY, quality=frozenset({Quality.INTERMEDIATE}))
    t.at(120, 35.0, TEMP, site=Site.AXILLARY)
    t.at(180, 34.6, TEMP, site=Site.AXILLARY)
    t.at(240, 34.8, TEMP, site=Site.AXILLARY)  # warmer, still cold: nothing
    t.at(300, 35.3, TEMP, site=Site.AXILLARY)  # between the lines: nothing
    t.at(360, 35.5, TEMP, site=Site.AXILLARY)
    alerts = of(rules_engine().evaluate(t.readings), HYPO)
    assert story(alerts, HYPO) == [
        ("raised", 120.0, "high", 35.0),
        ("updated", 180.0, "high", 34.6),
        ("cleared", 360.0, "high", 35.5),
    ]
    assert (alerts[0].threshold, alerts[0].site) == (35.0, "axillary")
    assert len({a.id for a in alerts}) == 1


def test_hypothermia_without_a_site_but_never_from_a_finger_or_toe() -> None:
    readings = [
        reading(1, TEMP, 30.5, site=Site.FINGER),
        reading(2, TEMP, 29.0, site=Site.TOE, subject="bed-2"),
        reading(3, TEMP, 34.9, site=None, subject="bed-3"),
    ]
    alerts = rules_engine().evaluate(readings)
    assert [(a.subject, a.site) for a in of(alerts, HYPO)] == [("bed-3", None)]
    assert of(alerts, FEVER) == []


# --- who the subject is -----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "metric", "value"), [(LOW_SPO2, SPO2, 90), (TACHY, PULSE, 140)])
def test_a_red_graded_subject_is_alerted_after_10_s_not_15(
    kind: AlertKind, metric: Metric, value: float
) -> None:
    t = Timeline()
    t.each_second(0, 20, value, metric, subject="bed-1")
    t.each_second(0, 20, value, metric, subject="bed-2", device="plx-other")
    engine = rules_engine(subjects=[{"code": "bed-1", "risk_grade": "red"}])
    alerts = of(engine.evaluate(t.readings), kind)
    assert [(a.subject, (a.raised_at - T0).total_seconds()) for a in alerts] == [
        ("bed-1", 10.0),
        ("bed-2", 15.0),
    ]


def test_a_subjects_own_thresholds_decide_when_its_alert_fires() -> None:
    subjects = [
        # Known to live at 91-92 %: alerted below 90 % only, after 30 s.
        {"code": "bed-2", "thresholds": {"low_spo2": {"raise_at_or_below": 90, "persist_s": 30}}},
        # Red, with a delay of its own: the subject's thresholds win over the grade's.
        {"code": "bed-3", "risk_grade": "red", "thresholds": {"low_spo2": {"persist_s": 20}}},
    ]
    t = Timeline()
    for subject in ("bed-1", "bed-2", "bed-3"):
        t.each_second(0, 60, 92, subject=subject, device=f"plx-{subject}")
        t.each_second(60, 100, 89, subject=subject, device=f"plx-{subject}")
    alerts = of(rules_engine(subjects=subjects).evaluate(t.readings), LOW_SPO2)
    raised = {a.subject: a for a in alerts if a.state is AlertState.RAISED}
    assert {code: (a.raised_at - T0).total_seconds() for code, a in raised.items()} == {
        "bed-1": 15.0,
        "bed-2": 90.0,
        "bed-3": 20.0,
    }
    assert raised["bed-2"].threshold == 90.0


def test_the_tachycardia_table_moves_the_line_for_every_subject() -> None:
    t = Timeline()
    t.each_second(0, 20, 125, PULSE)
    config = {"rules": {"tachycardia": {"raise_at_or_above": 120, "clear_at_or_below": 100}}}
    assert run(t, TACHY, **config) == [("raised", 15.0, "high", 125.0)]


# --- across a restart -------------------------------------------------------------------


def restarted(first: RuleEngine, stopped: Instant, started: Instant) -> RuleEngine:
    """A new engine that takes over what `first` kept when it stopped, through JSON as
    the store keeps it."""
    state = json.loads(json.dumps(first.save_state(stopped)))
    active = json.loads(json.dumps([a.payload() for a in first.open_alerts()]))
    second = rules_engine()
    second.restore(active)
    second.load_state(state, started)
    return second


SUSTAINED_CASES = [
    pytest.param(LOW_SPO2, SPO2, 90.0, 97.0, id="low_spo2"),
    pytest.param(TACHY, PULSE, 140.0, 80.0, id="tachycardia"),
    pytest.param(BRADY, PULSE, 35.0, 80.0, id="bradycardia"),
]


@pytest.mark.parametrize(("kind", "metric", "value", "normal"), SUSTAINED_CASES)
def test_a_restart_in_the_middle_of_a_breach_raises_when_it_would_have(
    kind: AlertKind, metric: Metric, value: float, normal: float
) -> None:
    before = Timeline(boot=5000.0)
    before.each_second(0, 10, value, metric)
    after = before.rebooted(boot=-100.0)  # the gateway's monotonic clock started again
    after.each_second(10, 20, value, metric)
    first = rules_engine()
    assert of(first.evaluate(before.readings), kind) == []
    second = restarted(first, before.instant(9.5), after.instant(10))
    resumed = of(second.evaluate(after.readings), kind)
    # The same readings without a restart.
    whole = Timeline()
    whole.each_second(0, 20, value, metric)
    unbroken = of(rules_engine().evaluate(whole.readings), kind)
    assert [a.payload() for a in resumed] == [a.payload() for a in unbroken]
    assert story(resumed, kind) == [("raised", 15.0, "high", value)]


@pytest.mark.parametrize(("kind", "metric", "value", "normal"), SUSTAINED_CASES)
def test_a_restart_longer_than_the_gap_tolerance_restarts_the_breach(
    kind: AlertKind, metric: Metric, value: float, normal: float
) -> None:
    before = Timeline(boot=5000.0)
    before.each_second(0, 10, value, metric)
    after = before.rebooted(boot=-100.0)
    after.each_second(40, 60, value, metric)
    first = rules_engine()
    first.evaluate(before.readings)
    second = restarted(first, before.instant(9.5), after.instant(40))
    assert story(second.evaluate(after.readings), kind) == [("raised", 55.0, "high", value)]


@pytest.mark.parametrize(("kind", "metric", "value", "normal"), SUSTAINED_CASES)
def test_a_restart_with_an_open_alert_keeps_counting_its_recovery(
    kind: AlertKind, metric: Metric, value: float, normal: float
) -> None:
    before = Timeline(boot=5000.0)
    before.each_second(0, 16, value, metric)
    before.each_second(16, 40, normal, metric)
    after = before.rebooted(boot=-100.0)
    after.each_second(41, 80, normal, metric)
    first = rules_engine()
    (raised,) = of(first.evaluate(before.readings), kind)
    second = restarted(first, before.instant(40.5), after.instant(41))
    (cleared,) = of(second.evaluate(after.readings), kind)
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED
    assert cleared.cleared_at == T0 + timedelta(seconds=76)  # 60 s after 16 s


def test_after_a_restart_the_alert_remembers_the_lowest_value_of_its_episode() -> None:
    before = Timeline()
    before.each_second(0, 3, 92)
    before.at(3, 85)
    before.each_second(4, 16, 92)  # raised at 15 s with value 92, critical: it reached 85
    after = before.rebooted(boot=1000.0)
    after.at(16, 90)  # lower than the alert's value, not than its episode: nothing
    after.at(17, 84)
    first = rules_engine()
    assert story(first.evaluate(before.readings), LOW_SPO2) == [("raised", 15.0, "critical", 92.0)]
    second = restarted(first, before.instant(15.5), after.instant(16))
    assert story(second.evaluate(after.readings), LOW_SPO2) == [("updated", 17.0, "critical", 84.0)]


@pytest.mark.parametrize(
    ("kind", "cold", "warm"), [(HYPO, 34.5, 36.5), (FEVER, 38.5, 36.5)], ids=["hypo", "fever"]
)
def test_an_open_temperature_alert_clears_after_a_restart(
    kind: AlertKind, cold: float, warm: float
) -> None:
    first = rules_engine()
    (raised,) = of(first.evaluate([reading(1, TEMP, cold, site=Site.AXILLARY)]), kind)
    second = restarted(first, Instant(T0, T0.timestamp()), Instant(T0, 0.0))
    warmer = reading(2, TEMP, warm, site=Site.AXILLARY, at_s=3600)
    (cleared,) = of(second.evaluate([warmer]), kind)
    assert (cleared.id, cleared.state) == (raised.id, AlertState.CLEARED)


# --- properties -------------------------------------------------------------------------

PERSIST_S, MAX_GAP_S, RAISE_AT = 15.0, 8.0, 93.0
samples = st.lists(
    st.tuples(
        st.sampled_from([1, 1, 1, 1, 2, 3, 5, 8, 9, 12]),  # seconds since the previous one
        st.integers(min_value=84, max_value=99),  # SpO2
        st.booleans(),  # flagged
    ),
    max_size=150,
)


def held_low_since(timeline: list[tuple[float, float, bool]], i: int) -> float | None:
    """When the stretch of low values that sample `i` ends began: alertable samples
    <= 93 %, each within 8 s of the alertable one before, flagged ones between them
    ignored. None when sample `i` is not an alertable low one."""
    at, value, flagged = timeline[i]
    if flagged or value > RAISE_AT:
        return None
    since, later = at, at
    for earlier_at, earlier_value, earlier_flagged in reversed(timeline[:i]):
        if earlier_flagged:
            continue
        if later - earlier_at > MAX_GAP_S or earlier_value > RAISE_AT:
            break
        since = later = earlier_at
    return since


@settings(max_examples=300, deadline=None)
@given(samples)
def test_low_spo2_raises_only_on_a_held_stretch_of_low_samples_and_keeps_its_ids(
    steps: list[tuple[int, int, bool]],
) -> None:
    engine = rules_engine()
    timeline: list[tuple[float, float, bool]] = []
    at = 0.0
    open_id: str | None = None
    seen: set[str] = set()
    for seq, (step, value, flagged) in enumerate(steps, start=1):
        at += step
        timeline.append((at, float(value), flagged))
        quality = MOTION if flagged else FINAL
        alerts = of(engine.evaluate([reading(seq, SPO2, value, at, quality)]), LOW_SPO2)
        since = held_low_since(timeline, len(timeline) - 1)
        held = since is not None and at - since >= PERSIST_S
        for alert in alerts:
            if alert.state is AlertState.RAISED:
                assert held, f"raised at {at} s without {PERSIST_S} s of low samples"
                assert open_id is None and alert.id not in seen, "a new episode, a new id"
                open_id = alert.id
                seen.add(alert.id)
            else:
                assert alert.id == open_id, "updated and cleared under the raised id"
                if alert.state is AlertState.CLEARED:
                    open_id = None
        if held and open_id is None:
            raise AssertionError(f"a held stretch of low samples at {at} s raised nothing")


def test_a_subjects_own_fever_line_is_laid_over_the_townships_lines_not_the_defaults() -> None:
    """The township moved the axillary line to 37.5; a subject's oral line of its own
    must not bring the default 37.3 back (it did: overrides replaced the whole table)."""
    engine = rules_engine(
        rules={"fever": {"lines": {"axillary": 37.5}}},
        subjects=[{"code": "bed-1", "thresholds": {"fever": {"lines": {"oral": 38.2}}}}],
    )
    temp = Metric.BODY_TEMPERATURE
    assert engine.evaluate([reading(1, temp, 37.4, site=Site.AXILLARY)]) == []
    assert engine.evaluate([reading(2, temp, 38.0, site=Site.ORAL, at_s=60)]) == []
    (raised,) = engine.evaluate([reading(3, temp, 37.5, site=Site.AXILLARY, at_s=120)])
    assert raised.threshold == 37.5
