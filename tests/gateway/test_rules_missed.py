"""A subject with a thermometer who takes no temperature in a schedule window gets a
`missed_measurement` alert when the window ends, cleared by the next temperature;
judged on the local clock, and across a gateway's restart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from drivers.measurement import Metric, Quality, Site
from gateway.ledger import LedgerBook
from gateway.model import Alert, AlertClass, AlertKind, AlertState, Binding, Instant, Reading
from gateway.rules.engine import RuleEngine
from gateway.subjects import SubjectDirectory
from tests.gateway.helpers import T0, at, reading, rules_config

SHANGHAI = ZoneInfo("Asia/Shanghai")
THERMOMETER = "hts-f00000000001"
HTS = {"kind": "hts", "address": "F0:00:00:00:00:01", "subject": "bed-1", "site": "axillary"}
OXIMETER = {"kind": "plx", "address": "F0:00:00:00:00:02", "subject": "bed-2"}


def engine_and_directory(
    zone: str = "Asia/Shanghai", **sections: Any
) -> tuple[RuleEngine, SubjectDirectory]:
    config = rules_config(
        devices=sections.pop("devices", [HTS]), gateway={"timezone": zone}, **sections
    )
    directory = SubjectDirectory.from_config(config)
    return RuleEngine.configured(config.rules, directory), directory


def engine(zone: str = "Asia/Shanghai", **sections: Any) -> RuleEngine:
    return engine_and_directory(zone, **sections)[0]


def local_s(text: str, tz: ZoneInfo = SHANGHAI) -> float:
    """Seconds after T0 of a local time (`2026-11-23 07:30`) in `tz`."""
    return (datetime.fromisoformat(text).replace(tzinfo=tz) - T0).total_seconds()


def tick(rules: RuleEngine, text: str, tz: ZoneInfo = SHANGHAI) -> list[Alert]:
    """The missed-measurement changes of a tick at local time `text`."""
    return missed(rules.evaluate_tick(at(local_s(text, tz))))


def temperature(
    seq: int, text: str, value: float = 36.6, tz: ZoneInfo = SHANGHAI, **kw: Any
) -> Reading:
    return reading(
        seq,
        Metric.BODY_TEMPERATURE,
        value,
        local_s(text, tz),
        site=Site.AXILLARY,
        device=THERMOMETER,
        **kw,
    )


def missed(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.kind is AlertKind.MISSED_MEASUREMENT]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_missed_evening_measurement_is_raised_at_its_end_and_cleared_next_morning() -> None:
    rules = engine()
    assert tick(rules, "2026-11-23 05:00") == []  # the gateway's first tick
    assert missed(rules.evaluate([temperature(1, "2026-11-23 07:30")])) == []
    assert tick(rules, "2026-11-23 10:01") == []  # the morning was measured
    assert tick(rules, "2026-11-23 22:00:59") == []  # a minute's grace for one on its way
    (raised,) = tick(rules, "2026-11-23 22:01")
    assert raised.state is AlertState.RAISED and raised.subject == "bed-1"
    assert raised.kind.alert_class is AlertClass.ADHERENCE and raised.severity is None
    assert raised.detail == "no temperature in the evening window 18:00-22:00 of 2026-11-23"
    assert raised.value is None and raised.threshold is None and raised.device == THERMOMETER
    # Local time is Shanghai's: 22:01 there is 14:01 UTC.
    assert raised.raised_at == utc("2026-11-23 14:01")
    assert tick(rules, "2026-11-23 22:02") == []  # raised once
    morning = temperature(2, "2026-11-24 07:10")
    (cleared,) = missed(rules.evaluate([morning]))
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED
    assert cleared.cleared_at == morning.received_at and cleared.evidence == [morning.id]
    assert tick(rules, "2026-11-24 10:01") == []  # and that morning counts as measured


def test_without_grace_it_is_raised_on_the_tick_at_the_window_end() -> None:
    rules = engine(rules={"missed_measurement": {"grace_s": 0.0}})
    tick(rules, "2026-11-23 17:00")
    assert tick(rules, "2026-11-23 21:59:59") == []
    (raised,) = tick(rules, "2026-11-23 22:00")
    assert raised.raised_at == utc("2026-11-23 14:00")


def test_a_temperature_in_the_window_satisfies_it_and_earlier_windows_are_not_judged() -> None:
    rules = engine()
    # Installed at 08:00, mid-morning: that morning is not judged.
    assert tick(rules, "2026-11-23 08:00") == []
    assert tick(rules, "2026-11-23 10:01") == []
    rules.evaluate([temperature(1, "2026-11-23 21:59:30")])
    assert tick(rules, "2026-11-23 22:01") == []
    # The next morning is.
    (raised,) = tick(rules, "2026-11-24 10:01")
    assert raised.detail == "no temperature in the morning window 06:00-10:00 of 2026-11-24"


def test_an_installation_at_23_00_finds_nothing_missed_that_day() -> None:
    rules = engine()
    assert tick(rules, "2026-11-23 23:00") == []
    assert tick(rules, "2026-11-24 05:00") == []
    assert len(tick(rules, "2026-11-24 10:01")) == 1


def test_intermediate_and_flagged_temperatures_neither_satisfy_nor_clear() -> None:
    rules = engine()
    tick(rules, "2026-11-23 17:00")
    rules.evaluate(
        [
            temperature(1, "2026-11-23 19:00", quality=frozenset({Quality.INTERMEDIATE})),
            temperature(2, "2026-11-23 19:01", quality=frozenset({Quality.DEVICE_FAULT})),
        ]
    )
    (raised,) = tick(rules, "2026-11-23 22:01")
    settling = temperature(3, "2026-11-23 22:30", quality=frozenset({Quality.INTERMEDIATE}))
    assert missed(rules.evaluate([settling])) == []
    (cleared,) = missed(rules.evaluate([temperature(4, "2026-11-23 22:31")]))
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED


def test_a_subject_without_a_thermometer_never_misses_a_measurement() -> None:
    rules = engine(devices=[HTS, OXIMETER])
    tick(rules, "2026-11-23 05:00")
    assert [a.subject for a in tick(rules, "2026-11-24 23:00")] == ["bed-1"]


def test_a_thermometer_bound_later_is_judged_from_the_first_window_after() -> None:
    rules, directory = engine_and_directory(devices=[OXIMETER])
    assert tick(rules, "2026-11-23 05:00") == []
    directory.put_binding(Binding(THERMOMETER, "hts", "bed-2", thermometer=True))
    assert tick(rules, "2026-11-23 12:00") == []  # the morning, before it: not judged
    (raised,) = tick(rules, "2026-11-23 22:01")
    assert raised.subject == "bed-2" and "evening" in (raised.detail or "")


def test_another_missed_window_updates_the_open_alert_and_keeps_its_acknowledgement() -> None:
    rules = engine()
    tick(rules, "2026-11-23 17:00")
    (raised,) = tick(rules, "2026-11-23 22:01")
    rules.acknowledge(raised.id, "doctor-3", utc("2026-11-23 14:30"))
    (updated,) = tick(rules, "2026-11-24 10:01")
    assert updated.id == raised.id and updated.state is AlertState.UPDATED
    assert updated.updated_at == utc("2026-11-24 02:01")
    assert updated.detail == (
        "no temperature in 2 windows in a row: from the evening window 18:00-22:00 of"
        " 2026-11-23 to the morning window 06:00-10:00 of 2026-11-24"
    )
    assert updated.acknowledged_by == "doctor-3"


def restarted(before: RuleEngine, stopped: str, started: str) -> RuleEngine:
    """A new engine as the service builds one after a restart: the open alerts, then the
    state saved when the gateway stopped at local time `stopped`."""
    state = before.save_state(at(local_s(stopped)))
    after = engine()
    after.restore([a.payload() for a in before.open_alerts()])
    after.load_state(state, Instant(at(local_s(started)).wall, 12.5))  # a new monotonic clock
    return after


def test_a_window_that_ended_while_the_gateway_was_off_is_judged_on_its_first_tick() -> None:
    first = engine()
    tick(first, "2026-11-23 17:00")
    first.evaluate([temperature(1, "2026-11-23 19:00")])
    tick(first, "2026-11-23 21:00")
    second = restarted(first, "2026-11-23 21:00", "2026-11-24 12:00")
    # The evening was measured before the stop; the next morning passed while it was off.
    (raised,) = tick(second, "2026-11-24 12:00")
    assert raised.detail == "no temperature in the morning window 06:00-10:00 of 2026-11-24"
    assert raised.raised_at == utc("2026-11-24 04:00")


def test_a_day_off_is_one_alert_naming_every_window_and_it_goes_on_after_another_restart() -> None:
    first = engine()
    tick(first, "2026-11-23 17:00")
    second = restarted(first, "2026-11-23 17:00", "2026-11-25 07:00")
    (raised,) = tick(second, "2026-11-25 07:00")
    assert raised.state is AlertState.RAISED
    assert raised.detail == (
        "no temperature in 3 windows in a row: from the evening window 18:00-22:00 of"
        " 2026-11-23 to the evening window 18:00-22:00 of 2026-11-24"
    )
    third = restarted(second, "2026-11-25 07:00", "2026-11-25 10:30")
    (updated,) = tick(third, "2026-11-25 10:30")
    assert updated.id == raised.id and updated.state is AlertState.UPDATED
    assert updated.detail == (
        "no temperature in 4 windows in a row: from the evening window 18:00-22:00 of"
        " 2026-11-23 to the morning window 06:00-10:00 of 2026-11-25"
    )


def test_a_clock_set_back_never_judges_a_window_twice() -> None:
    rules = engine()
    tick(rules, "2026-11-23 17:00")
    (raised,) = tick(rules, "2026-11-23 22:01")
    (cleared,) = missed(rules.evaluate([temperature(1, "2026-11-23 22:30")]))
    assert cleared.id == raised.id
    assert tick(rules, "2026-11-23 21:00") == []  # NTP sets the clock back
    assert tick(rules, "2026-11-23 22:01") == []


def test_berlin_on_the_day_its_clocks_go_forward() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    rules = engine("Europe/Berlin")
    assert tick(rules, "2026-03-29 01:00", berlin) == []  # before the change (CET)
    # 07:30 CEST is 05:30 UTC: in the morning window.
    rules.evaluate([temperature(1, "2026-03-29 07:30", tz=berlin)])
    assert tick(rules, "2026-03-29 10:01", berlin) == []
    (raised,) = tick(rules, "2026-03-29 22:01", berlin)
    assert raised.raised_at == utc("2026-03-29 20:01")  # 22:01 CEST
    assert raised.detail == "no temperature in the evening window 18:00-22:00 of 2026-03-29"


def test_a_clock_set_forward_judges_none_of_the_windows_it_skipped() -> None:
    """A Pi that booted with no time (2000-01-01) and was set by NTP to 2026: its wall
    clock jumps 26 years between two ticks, its monotonic clock one second. No window
    in between was missed (it judged twenty years of them: ~19,000 windows, and as many
    ledger days); the windows after the jump are judged as ever."""
    rules, directory = engine_and_directory()
    book = LedgerBook(directory, rules_config().rules.missed_measurement)
    booted = datetime(2000, 1, 1, 8, 0, tzinfo=UTC)
    real = datetime.fromisoformat("2026-11-22 17:00").replace(tzinfo=SHANGHAI)
    boot_tick = Instant(booted, 100.0)
    set_tick = Instant(real, 101.0)  # one second later on the monotonic clock
    for instant in (boot_tick, set_tick):
        assert missed(rules.evaluate_tick(instant)) == []
        assert book.on_tick(instant) == []
    # Still watched: the evening after the clock was set is judged as ever.
    evening_over = Instant(real.replace(hour=22, minute=1), 101.0 + 5 * 3600 + 60)
    (alert,) = missed(rules.evaluate_tick(evening_over))
    assert alert.state is AlertState.RAISED and "evening" in (alert.detail or "")
    (day,) = book.on_tick(evening_over)
    assert day["date"] == "2026-11-22"
