"""The equipment's alerts: probe off, battery low, device silent. Technical: no severity,
a one-line detail for the technician, one alert per device, and never a say in the
clinical alerts."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from drivers.measurement import Metric, Quality
from gateway.config import ConfigError
from gateway.model import Alert, AlertClass, AlertKind, AlertState, Binding, Instant, Reading
from gateway.rules.engine import RuleEngine
from gateway.subjects import SubjectDirectory
from tests.gateway.helpers import T0, at, reading, rules_config, rules_engine

PLX_ID = "plx-f00000000002"
HTS_ID = "hts-f00000000001"
DOOR_ID = "bthome-f00000000003"
PLX = {"kind": "plx", "address": "F0:00:00:00:00:02", "subject": "bed-1"}
HTS = {"kind": "hts", "address": "F0:00:00:00:00:01", "subject": "bed-1", "site": "axillary"}
DOOR = {"kind": "bthome", "address": "F0:00:00:00:00:03", "subject": "bed-1"}
OFF = frozenset({Quality.PROBE_OFF})
#: The second run's monotonic clock started at boot: its rule times are far from Unix time.
BOOT_S = T0.timestamp() - 1000.0


def oximetry(
    seq: int,
    start_s: float,
    seconds: int,
    spo2: float = 97,
    quality: frozenset[Quality] = frozenset(),
) -> list[Reading]:
    """What a continuous oximeter sends: an SpO2 and a pulse-rate reading a second."""
    out = []
    for i in range(seconds):
        for j, (metric, value) in enumerate(((Metric.SPO2, spo2), (Metric.PULSE_RATE, 70.0))):
            out.append(reading(seq + 2 * i + j, metric, value, start_s + i, quality))
    return out


def of(kind: AlertKind, alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.kind is kind]


def after_boot(readings: list[Reading]) -> list[Reading]:
    """The readings as the restarted gateway stamps them: its own monotonic clock."""
    return [replace(r, elapsed_s=r.received_at.timestamp() - BOOT_S) for r in readings]


def tick_after_boot(seconds: float) -> Instant:
    wall = T0 + timedelta(seconds=seconds)
    return Instant(wall, wall.timestamp() - BOOT_S)


def restart(engine: RuleEngine, saved_s: float, resumed_s: float, fresh: RuleEngine) -> RuleEngine:
    """Stop `engine` at `saved_s`, start `fresh` at `resumed_s` on the rebooted clock with
    the open alerts and timers the store would hand it (through JSON, as stored)."""
    state: dict[str, Any] = json.loads(json.dumps(engine.save_state(at(saved_s))))
    fresh.restore(json.loads(json.dumps([a.payload() for a in engine.open_alerts()])))
    fresh.load_state(state, tick_after_boot(resumed_s))
    return fresh


# --- probe off ---------------------------------------------------------------------------


def test_five_minutes_of_probe_off_raise_a_technical_alert_never_low_spo2_and_a_finger_clears() -> (
    None
):
    engine = rules_engine()
    # Low values with the probe off: 0..299 s is not yet 5 minutes, and never low SpO2.
    assert engine.evaluate(oximetry(1, 0, 300, spo2=85, quality=OFF)) == []
    (raised,) = engine.evaluate(oximetry(601, 300, 1, spo2=85, quality=OFF))
    assert raised.kind is AlertKind.PROBE_OFF and raised.state is AlertState.RAISED
    assert raised.kind.alert_class is AlertClass.TECHNICAL and raised.severity is None
    assert raised.payload()["class"] == "technical" and raised.payload()["severity"] is None
    assert (raised.subject, raised.device) == ("bed-1", PLX_ID)
    assert raised.value is None and raised.threshold is None
    assert raised.detail == "probe off for 5 min" and raised.raised_at == T0 + timedelta(
        seconds=300
    )
    assert (
        raised.id.startswith(f"probe_off:device:{PLX_ID}:") and raised.evidence[-1] == "gw-test-601"
    )
    # A finger back in: the first reading without the flag clears it.
    (cleared,) = engine.evaluate(oximetry(603, 301, 1))
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED
    assert cleared.detail == "probe back on" and cleared.cleared_at == T0 + timedelta(seconds=301)
    assert cleared.value is None and engine.open_alerts() == []


def test_probe_off_neither_clears_nor_holds_back_low_spo2() -> None:
    engine = rules_engine()
    (low,) = engine.evaluate(oximetry(1, 0, 16, spo2=88))
    assert low.kind is AlertKind.LOW_SPO2
    changes = engine.evaluate(oximetry(100, 16, 301, spo2=85, quality=OFF))
    assert [(a.kind, a.state) for a in changes] == [(AlertKind.PROBE_OFF, AlertState.RAISED)]
    assert {a.kind for a in engine.open_alerts()} == {AlertKind.LOW_SPO2, AlertKind.PROBE_OFF}
    # Finger back, still hypoxic: probe_off clears at once, low_spo2 stays open.
    changes = engine.evaluate(oximetry(1000, 317, 20, spo2=86))
    assert [a.state for a in of(AlertKind.PROBE_OFF, changes)] == [AlertState.CLEARED]
    assert AlertState.CLEARED not in [a.state for a in of(AlertKind.LOW_SPO2, changes)]
    assert [a.id for a in engine.open_alerts()] == [low.id]


def test_an_open_probe_off_alert_does_not_hold_back_a_new_low_spo2() -> None:
    engine = rules_engine()
    (off,) = engine.evaluate(oximetry(1, 0, 301, spo2=85, quality=OFF))
    changes = engine.evaluate(oximetry(1000, 301, 16, spo2=88))
    assert [(a.kind, a.state) for a in changes] == [
        (AlertKind.PROBE_OFF, AlertState.CLEARED),
        (AlertKind.LOW_SPO2, AlertState.RAISED),
    ]
    assert changes[0].id == off.id and changes[1].raised_at == T0 + timedelta(seconds=316)


def test_a_gap_longer_than_max_gap_s_restarts_the_probe_off_count_a_short_one_does_not() -> None:
    engine = rules_engine()
    # 0..199 s off, 101 s of nothing, 300.. off: counted from 300, raised at 600.
    assert engine.evaluate(oximetry(1, 0, 200, quality=OFF)) == []
    assert engine.evaluate(oximetry(1000, 300, 300, quality=OFF)) == []
    (raised,) = engine.evaluate(oximetry(2000, 600, 1, quality=OFF))
    assert raised.raised_at == T0 + timedelta(seconds=600)

    engine = rules_engine()
    # A 30-s pause (a reconnect) inside the stretch: still raised at 300 s.
    assert engine.evaluate(oximetry(1, 0, 200, quality=OFF)) == []
    (raised,) = engine.evaluate(oximetry(1000, 230, 71, quality=OFF))
    assert raised.raised_at == T0 + timedelta(seconds=300)


def test_probe_off_is_counted_for_each_oximeter_of_a_subject() -> None:
    engine = rules_engine()
    other = [replace(r, device="berrymed-f00000000004") for r in oximetry(5000, 100, 201)]
    # The second oximeter reports fine readings: the first one's probe is still off.
    series = sorted(oximetry(1, 0, 301, quality=OFF) + other, key=lambda r: r.received_at)
    (raised,) = engine.evaluate(series)
    assert raised.device == PLX_ID and raised.raised_at == T0 + timedelta(seconds=300)


def test_the_probe_off_count_survives_a_restart_and_time_stopped_counts() -> None:
    first = rules_engine()
    assert first.evaluate(oximetry(1, 0, 150, quality=OFF)) == []
    # Stopped at 150 s, running again at 160 s (10 s down, within max_gap_s).
    second = restart(first, 150, 160, rules_engine())
    assert second.evaluate(after_boot(oximetry(1000, 160, 140, quality=OFF))) == []
    (raised,) = second.evaluate(after_boot(oximetry(2000, 300, 1, quality=OFF)))
    assert (
        raised.raised_at == T0 + timedelta(seconds=300) and raised.detail == "probe off for 5 min"
    )
    assert raised.evidence[-1] == "gw-test-2000"


def test_a_restart_longer_than_max_gap_s_restarts_the_probe_off_count() -> None:
    first = rules_engine()
    assert first.evaluate(oximetry(1, 0, 150, quality=OFF)) == []
    second = restart(first, 150, 250, rules_engine())
    assert second.evaluate(after_boot(oximetry(1000, 250, 300, quality=OFF))) == []
    (raised,) = second.evaluate(after_boot(oximetry(2000, 550, 1, quality=OFF)))
    assert raised.raised_at == T0 + timedelta(seconds=550)


def test_a_probe_off_alert_open_at_a_restart_is_cleared_by_a_finger_after_it() -> None:
    first = rules_engine()
    (raised,) = first.evaluate(oximetry(1, 0, 301, quality=OFF))
    second = restart(first, 301, 400, rules_engine())
    assert second.evaluate(after_boot(oximetry(1000, 400, 30, quality=OFF))) == []
    (cleared,) = second.evaluate(after_boot(oximetry(2000, 430, 1)))
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED


# --- battery low -------------------------------------------------------------------------


def battery(seq: int, percent: float, at_s: float, device: str = PLX_ID) -> Reading:
    return reading(seq, Metric.BATTERY, percent, at_s, device=device)


def test_battery_low_raises_at_15_percent_updates_lower_and_clears_at_20() -> None:
    engine = rules_engine()
    assert engine.evaluate([battery(1, 16, 0)]) == []
    (raised,) = engine.evaluate([battery(2, 15, 60)])
    assert raised.kind is AlertKind.BATTERY_LOW and raised.severity is None
    assert (raised.value, raised.threshold, raised.detail) == (15, 15, "battery 15 %")
    assert (raised.subject, raised.device) == ("bed-1", PLX_ID)
    assert raised.id.startswith(f"battery_low:device:{PLX_ID}:")
    (updated,) = engine.evaluate([battery(3, 12, 120)])
    assert updated.id == raised.id and updated.state is AlertState.UPDATED
    assert (updated.value, updated.detail) == (12, "battery 12 %")
    # Not lower, and not yet at the clear line: nothing new.
    assert engine.evaluate([battery(4, 14, 180), battery(5, 19, 240)]) == []
    (cleared,) = engine.evaluate([battery(6, 20, 300)])
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED
    assert cleared.detail == "battery 20 %" and cleared.cleared_at == T0 + timedelta(seconds=300)


def test_each_low_battery_of_a_subject_has_its_own_alert_and_clear() -> None:
    engine = rules_engine()
    (plx,) = engine.evaluate([battery(1, 10, 0)])
    (hts,) = engine.evaluate([battery(2, 8, 10, device=HTS_ID)])
    assert plx.id != hts.id and {a.device for a in engine.open_alerts()} == {PLX_ID, HTS_ID}
    assert {a.subject for a in engine.open_alerts()} == {"bed-1"}
    # The oximeter's battery is swapped: the thermometer's alert stays.
    (cleared,) = engine.evaluate([battery(3, 100, 20)])
    assert cleared.id == plx.id and [a.id for a in engine.open_alerts()] == [hts.id]


def test_battery_lines_are_configurable_and_checked() -> None:
    engine = rules_engine(rules={"battery_low": {"at_or_below": 25.0, "clear_at_or_above": 40.0}})
    (raised,) = engine.evaluate([battery(1, 24, 0)])
    assert raised.threshold == 25
    assert engine.evaluate([battery(2, 35, 10)]) == []
    with pytest.raises(
        ConfigError, match=r"rules\.battery_low\.clear_at_or_above: .*above at_or_below"
    ):
        rules_config(rules={"battery_low": {"at_or_below": 20.0}})


# --- device silent -----------------------------------------------------------------------


def watched_engine(heard: dict[str, float] | None = None, **sections: Any) -> RuleEngine:
    """The rules over the door sensor (600 s by default) and a spot-check oximeter (no
    report interval); `heard`: what the gateway's device registry has heard (rule time)."""
    sections.setdefault("devices", [DOOR, PLX])
    config = rules_config(**sections)
    directory = SubjectDirectory.from_config(config)
    if heard is not None:
        directory.heard_by = heard.get
    return RuleEngine.configured(config.rules, directory)


def ticks(engine: RuleEngine, *seconds: float, clock: Any = at) -> list[Alert]:
    return of(AlertKind.DEVICE_SILENT, [a for s in seconds for a in engine.evaluate_tick(clock(s))])


def test_a_door_sensor_silent_for_three_intervals_is_raised_on_a_tick_and_a_reading_clears() -> (
    None
):
    engine = watched_engine()
    # Nothing heard since the start: silence counts from the first tick, not the epoch.
    assert ticks(engine, 0, 600, 1200, 1799) == []
    (raised,) = ticks(engine, 1800)
    assert raised.kind is AlertKind.DEVICE_SILENT and raised.severity is None
    assert (raised.subject, raised.device) == ("bed-1", DOOR_ID)
    assert raised.detail == "silent for 30 min (expected every 10 min)"
    assert raised.raised_at == T0 + timedelta(seconds=1800) and raised.value is None
    assert ticks(engine, 1801, 1900) == []
    (cleared,) = engine.evaluate([battery(1, 90, 1930, device=DOOR_ID)])
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED
    assert cleared.detail == "heard again after 32 min" and cleared.evidence == ["gw-test-1"]
    # Counted again from that reading: a new silence is a new alert.
    assert ticks(engine, 3729) == []
    (again,) = ticks(engine, 3730)
    assert again.id != raised.id and again.device == DOOR_ID
    # The spot-check oximeter has no report interval: a day of silence is no alert.
    assert ticks(engine, *range(3731, 86_400, 600)) == []
    assert [a.device for a in engine.open_alerts()] == [DOOR_ID]


def test_a_reading_restarts_the_silence_count() -> None:
    engine = watched_engine()
    ticks(engine, 0)
    engine.evaluate([reading(1, Metric.DOOR_OPEN, False, 1000, device=DOOR_ID)])
    assert ticks(engine, 1800, 2799) == []
    (raised,) = ticks(engine, 2800)
    assert raised.detail == "silent for 30 min (expected every 10 min)"


def test_a_device_the_gateway_hears_without_readings_is_not_silent_and_clears_when_heard() -> None:
    heard: dict[str, float] = {}
    engine = watched_engine(heard)
    ticks(engine, 0)
    heard[DOOR_ID] = at(1000).rule  # a repeated advertisement: no reading, but alive
    assert ticks(engine, 1800, 2799) == []
    (raised,) = ticks(engine, 2800)
    assert ticks(engine, 2899) == []
    heard[DOOR_ID] = at(2900).rule
    (cleared,) = ticks(engine, 2900)
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED
    assert cleared.detail == "heard again after 31 min"
    assert cleared.cleared_at == T0 + timedelta(seconds=2900)


def test_a_continuous_oximeter_is_silent_after_the_floor_of_60_s() -> None:
    plx = {**PLX, "report_interval_s": 1.0}
    engine = watched_engine(devices=[plx])
    ticks(engine, 0)
    engine.evaluate(oximetry(1, 0, 10))
    # 3 x 1 s would be 3 s: a reconnect's pause. The floor is a minute.
    assert ticks(engine, *range(10, 69)) == []
    (raised,) = ticks(engine, 69)
    assert raised.device == PLX_ID and raised.detail == "silent for 60 s (expected every 1 s)"


def test_missed_reports_is_configurable_per_subject() -> None:
    engine = watched_engine(
        subjects=[{"code": "bed-1", "thresholds": {"device_silent": {"missed_reports": 2}}}]
    )
    assert ticks(engine, 0, 1199) == []
    (raised,) = ticks(engine, 1200)
    assert raised.detail == "silent for 20 min (expected every 10 min)"


def test_a_device_no_longer_watched_has_its_silent_alert_cleared() -> None:
    config = rules_config(devices=[DOOR])
    directory = SubjectDirectory.from_config(config)
    engine = RuleEngine.configured(config.rules, directory)
    (raised,) = ticks(engine, 0, 1800)
    directory.put_binding(Binding(DOOR_ID, "bthome", "bed-1", report_interval_s=None))
    (cleared,) = ticks(engine, 1801)
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED
    assert cleared.detail == "no longer expected to report"
    assert ticks(engine, 10_000) == []


def test_last_heard_survives_a_restart_and_time_stopped_counts() -> None:
    first = watched_engine()
    ticks(first, 0)
    first.evaluate([battery(1, 90, 100, device=DOOR_ID)])
    assert ticks(first, 1000) == []
    # Down from 1000 s to 1500 s: the silence since 100 s goes on counting.
    second = restart(first, 1000, 1500, watched_engine())
    assert ticks(second, 1500, 1899, clock=tick_after_boot) == []
    (raised,) = ticks(second, 1900, clock=tick_after_boot)
    assert raised.raised_at == T0 + timedelta(seconds=1900)


def test_a_silent_alert_open_at_a_restart_is_cleared_when_the_device_is_heard_again() -> None:
    first = watched_engine()
    (raised,) = ticks(first, 0, 1800)
    second = restart(first, 1800, 2000, watched_engine())
    assert ticks(second, 2000, 2500, clock=tick_after_boot) == []
    (cleared,) = second.evaluate(after_boot([battery(1, 90, 2600, device=DOOR_ID)]))
    assert cleared.id == raised.id and cleared.detail == "heard again after 43 min"
