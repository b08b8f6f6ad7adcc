"""Door sensors watch an isolation, a resident at night, or only record: the alert each
role raises, in the gateway's local time, and its clear when the door closes."""

from __future__ import annotations

from datetime import date, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.measurement import Metric
from gateway.config import ConfigError
from gateway.model import Alert, AlertClass, AlertKind, AlertState, Reading
from gateway.rules.engine import RuleEngine
from tests.gateway.helpers import T0, at, reading, rules_config, rules_engine
from tests.gateway.test_rules_technical import after_boot, restart, tick_after_boot

BTHOME = {"kind": "bthome", "address": "F0:00:00:00:00:03", "subject": "bed-1"}
MIBEACON = {
    "kind": "mibeacon",
    "address": "F0:00:00:00:00:05",
    "subject": "bed-1",
    "key": "00112233445566778899aabbccddeeff",
}
DEVICE_IDS = {"bthome": "bthome-f00000000003", "mibeacon": "mibeacon-f00000000005"}
SHANGHAI = {"timezone": "Asia/Shanghai"}
#: T0 is 16:00 in Shanghai (UTC+8): seconds after T0 of a local time that day.
LOCAL_16_00 = 0
LOCAL_21_59 = 5 * 3600 + 59 * 60
LOCAL_22_01 = 6 * 3600 + 60
LOCAL_23_10 = 7 * 3600 + 10 * 60
LOCAL_15_00 = -3600


def door(seq: int, is_open: bool, at_s: float, device: str = DEVICE_IDS["bthome"]) -> Reading:
    return reading(seq, Metric.DOOR_OPEN, is_open, at_s, device=device)


def engine_with(role: str = "isolation", **sections: Any) -> RuleEngine:
    """The rules over one bthome door sensor of bed-1 in the given role, in Shanghai."""
    sections.setdefault("devices", [{**BTHOME, "role": role}])
    sections.setdefault("gateway", SHANGHAI)
    return rules_engine(**sections)


def doors(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.kind is AlertKind.DOOR_OPEN]


def tick(engine: RuleEngine, *seconds: float, clock: Any = at) -> list[Alert]:
    return doors([a for s in seconds for a in engine.evaluate_tick(clock(s))])


@pytest.mark.parametrize("sensor", [BTHOME, MIBEACON], ids=["bthome", "mibeacon"])
def test_a_night_door_opened_at_23_10_local_raises_and_its_closing_clears(
    sensor: dict[str, Any],
) -> None:
    engine = engine_with(devices=[{**sensor, "role": "night"}])
    device = DEVICE_IDS[sensor["kind"]]
    (raised,) = engine.evaluate([door(1, True, LOCAL_23_10, device)])
    assert raised.kind is AlertKind.DOOR_OPEN and raised.state is AlertState.RAISED
    assert raised.kind.alert_class is AlertClass.ISOLATION and raised.severity is None
    assert (raised.subject, raised.device, raised.value, raised.threshold) == (
        "bed-1",
        device,
        None,
        None,
    )
    assert raised.detail == "opened 23:10 during quiet hours"
    assert raised.raised_at == T0 + timedelta(seconds=LOCAL_23_10)
    assert raised.evidence == ["gw-test-1"]
    (cleared,) = engine.evaluate([door(2, False, LOCAL_23_10 + 15 * 60, device)])
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED
    assert cleared.detail == "opened 23:10, closed 23:25"
    assert cleared.cleared_at == T0 + timedelta(seconds=LOCAL_23_10 + 900)
    assert engine.open_alerts() == []


def test_a_night_door_opened_in_the_afternoon_is_an_event_only() -> None:
    engine = engine_with("night")
    assert engine.evaluate([door(1, True, LOCAL_15_00), door(2, False, LOCAL_15_00 + 60)]) == []


def test_quiet_hours_are_the_gateways_local_time() -> None:
    # 21:59 and 22:01 in Shanghai are 13:59 and 14:01 UTC: only the local time says night.
    engine = engine_with("night")
    assert engine.evaluate([door(1, True, LOCAL_21_59), door(2, False, LOCAL_21_59 + 30)]) == []
    (raised,) = engine.evaluate([door(3, True, LOCAL_22_01)])
    assert raised.detail == "opened 22:01 during quiet hours"
    # The same readings under UTC: 14:01 is afternoon.
    utc = engine_with("night", gateway={"timezone": "UTC"})
    assert utc.evaluate([door(1, True, LOCAL_22_01)]) == []


def test_quiet_hours_ending_at_6_local_and_overridden_per_subject() -> None:
    engine = engine_with("night")
    next_05_59 = LOCAL_16_00 + 13 * 3600 + 59 * 60
    (raised,) = engine.evaluate([door(1, True, next_05_59)])
    assert raised.detail == "opened 05:59 during quiet hours"
    engine.evaluate([door(2, False, next_05_59 + 30)])
    assert engine.evaluate([door(3, True, next_05_59 + 60)]) == []  # 06:00: day again
    early = {"door_open": {"quiet_start": time(21, 0), "quiet_end": time(7, 0)}}
    engine = engine_with("night", subjects=[{"code": "bed-1", "thresholds": early}])
    (raised,) = engine.evaluate([door(1, True, LOCAL_21_59)])
    assert raised.detail == "opened 21:59 during quiet hours"


def test_quiet_hours_may_not_be_empty() -> None:
    same = {"door_open": {"quiet_start": time(22, 0), "quiet_end": time(22, 0)}}
    with pytest.raises(ConfigError, match=r"^rules\.door_open\.quiet_end: .*differ"):
        rules_config(rules=same)


ISOLATED = {"code": "bed-1", "isolation_start": date(2026, 11, 10), "isolation_days": 14}
#: The isolation ends 2026-11-24 00:00 in Shanghai, 32 h after T0.
ISOLATION_END_S = 32 * 3600


def test_an_isolation_door_raises_on_any_opening_during_the_isolation_and_not_after_its_end() -> (
    None
):
    engine = engine_with(subjects=[ISOLATED])
    (raised,) = engine.evaluate([door(1, True, LOCAL_16_00)])
    assert raised.detail == "opened 16:00 during isolation" and raised.severity is None
    (cleared,) = engine.evaluate([door(2, False, 120)])
    assert cleared.id == raised.id and cleared.detail == "opened 16:00, closed 16:02"
    assert engine.evaluate([door(3, True, ISOLATION_END_S - 60)])[0].state is AlertState.RAISED
    engine.evaluate([door(4, False, ISOLATION_END_S - 30)])
    # The isolation has ended: isolation rules stop.
    assert (
        engine.evaluate([door(5, True, ISOLATION_END_S), door(6, False, ISOLATION_END_S + 60)])
        == []
    )


def test_an_isolation_door_of_a_subject_never_isolated_raises_nothing_on_opening() -> None:
    engine = engine_with()
    assert engine.evaluate([door(1, True, LOCAL_23_10), door(2, False, LOCAL_23_10 + 60)]) == []


def test_an_info_door_held_open_11_min_raises_on_a_tick_and_its_closing_clears() -> None:
    engine = engine_with("info")
    assert engine.evaluate([door(1, True, 0)]) == []  # an event only
    assert tick(engine, 0, 300, 599) == []
    (raised,) = tick(engine, 660)
    assert raised.state is AlertState.RAISED and raised.detail == "held open 11 min (opened 16:00)"
    assert raised.raised_at == T0 + timedelta(seconds=660) and raised.evidence == ["gw-test-1"]
    assert tick(engine, 661, 1200) == []  # said once
    # A repeated "open" (the sensor's periodic advertisement) changes nothing.
    assert engine.evaluate([door(2, True, 700)]) == []
    (cleared,) = engine.evaluate([door(3, False, 720)])
    assert cleared.id == raised.id and cleared.detail == "opened 16:00, closed 16:12"
    assert tick(engine, 2000) == [] and engine.open_alerts() == []


def test_a_night_opening_held_open_updates_its_alert() -> None:
    engine = engine_with("night")
    (raised,) = engine.evaluate([door(1, True, LOCAL_23_10)])
    (updated,) = tick(engine, LOCAL_23_10 + 600)
    assert updated.id == raised.id and updated.state is AlertState.UPDATED
    assert updated.detail == "held open 10 min (opened 23:10)"
    (cleared,) = engine.evaluate([door(2, False, LOCAL_23_10 + 700)])
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED


def test_held_open_is_configurable() -> None:
    engine = engine_with("info", rules={"door_open": {"held_open_s": 120.0}})
    engine.evaluate([door(1, True, 0)])
    assert tick(engine, 119) == []
    (raised,) = tick(engine, 120)
    assert raised.detail == "held open 2 min (opened 16:00)"


def test_two_doors_of_a_subject_share_its_alert_until_the_last_one_closes() -> None:
    back = {**BTHOME, "address": "F0:00:00:00:00:04", "role": "night"}
    engine = engine_with(devices=[{**BTHOME, "role": "night"}, back])
    front_id, back_id = DEVICE_IDS["bthome"], "bthome-f00000000004"
    (raised,) = engine.evaluate([door(1, True, LOCAL_23_10, front_id)])
    (updated,) = engine.evaluate([door(2, True, LOCAL_23_10 + 60, back_id)])
    assert updated.id == raised.id and updated.state is AlertState.UPDATED
    assert updated.detail == f"{back_id} also opened 23:11 during quiet hours"
    assert engine.evaluate([door(3, False, LOCAL_23_10 + 120, front_id)]) == []
    (cleared,) = engine.evaluate([door(4, False, LOCAL_23_10 + 180, back_id)])
    assert cleared.id == raised.id and cleared.detail == "opened 23:11, closed 23:13"


def test_a_door_open_since_before_a_restart_is_held_open_on_time_after_it() -> None:
    first = engine_with("info")
    first.evaluate([door(1, True, 0)])
    assert tick(first, 300) == []
    # Down from 300 s to 400 s: the door has been open since 16:00 all along.
    second = restart(first, 300, 400, engine_with("info"))
    assert tick(second, 400, 599, clock=tick_after_boot) == []
    (raised,) = tick(second, 600, clock=tick_after_boot)
    assert raised.detail == "held open 10 min (opened 16:00)" and raised.evidence == ["gw-test-1"]
    (cleared,) = second.evaluate(after_boot([door(2, False, 700)]))
    assert cleared.id == raised.id and cleared.detail == "opened 16:00, closed 16:11"


def test_a_door_alert_open_at_a_restart_clears_when_its_door_closes() -> None:
    first = engine_with("night")
    (raised,) = first.evaluate([door(1, True, LOCAL_23_10)])
    second = restart(first, LOCAL_23_10 + 60, LOCAL_23_10 + 120, engine_with("night"))
    (cleared,) = second.evaluate(after_boot([door(2, False, LOCAL_23_10 + 180)]))
    assert cleared.id == raised.id and cleared.detail == "opened 23:10, closed 23:13"


# --- any sequence of openings, closings and ticks ------------------------------------------

FRONT, BACK = DEVICE_IDS["bthome"], "bthome-f00000000004"
TWO_DOORS: dict[str, Any] = {
    "subjects": [ISOLATED],
    "devices": [
        {**BTHOME, "role": "night"},
        {**BTHOME, "address": "F0:00:00:00:00:04", "role": "isolation"},
    ],
}
#: (what, which door, seconds since the step before): what is "open", "close" or "tick".
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["open", "close", "tick"]),
        st.sampled_from([FRONT, BACK]),
        st.integers(min_value=1, max_value=1200),
    ),
    max_size=40,
)


@settings(deadline=None, database=None, max_examples=150)
@given(steps=STEPS, start_s=st.sampled_from([LOCAL_21_59 - 3600, ISOLATION_END_S - 7200]))
def test_door_alerts_are_one_per_subject_and_every_one_is_cleared_by_a_close(
    steps: list[tuple[str, str, int]], start_s: int
) -> None:
    engine = engine_with(**TWO_DOORS)
    events: list[Alert] = []
    now = start_s
    seq = 0

    def run(what: str, device: str) -> None:
        nonlocal seq
        seq += 1
        if what == "tick":
            events.extend(tick(engine, now))
        else:
            events.extend(doors(engine.evaluate([door(seq, what == "open", now, device)])))
        held = doors(engine.open_alerts())
        assert len(held) <= 1 and all(a.subject == "bed-1" for a in held)

    for what, device, step_s in steps:
        now += step_s
        run(what, device)
    for device in (FRONT, BACK):
        now += 1
        run("close", device)
    assert doors(engine.open_alerts()) == []
    raised = [a.id for a in events if a.state is AlertState.RAISED]
    cleared = [a.id for a in events if a.state is AlertState.CLEARED]
    assert sorted(raised) == sorted(cleared) and len(set(raised)) == len(raised)
