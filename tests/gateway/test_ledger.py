"""The ledger (台账): each subject's day, window by window, with the temperature that
satisfied it or `missed`; completed once the day's last window has been judged."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.measurement import Metric, Quality, Site
from gateway.ledger import DayNotHeld, LedgerBook
from gateway.model import Reading
from gateway.rules.registry import RulesSection
from gateway.subjects import SubjectDirectory
from tests.gateway.helpers import T0, at, reading, rules_config

SHANGHAI = ZoneInfo("Asia/Shanghai")
THERMOMETER = "hts-f00000000001"
HTS = {"kind": "hts", "address": "F0:00:00:00:00:01", "subject": "bed-1", "site": "axillary"}
OXIMETER = {"kind": "plx", "address": "F0:00:00:00:00:02", "subject": "bed-2"}


def book(**sections: Any) -> LedgerBook:
    config = rules_config(
        devices=sections.pop("devices", [HTS]), gateway={"timezone": "Asia/Shanghai"}, **sections
    )
    return LedgerBook(SubjectDirectory.from_config(config), config.rules.missed_measurement)


def local_s(text: str) -> float:
    """Seconds after T0 of a Shanghai local time (`2026-11-23 07:30`)."""
    return (datetime.fromisoformat(text).replace(tzinfo=SHANGHAI) - T0).total_seconds()


def tick(ledger: LedgerBook, text: str) -> list[dict[str, Any]]:
    return ledger.on_tick(at(local_s(text)))


def temperature(seq: int, text: str, value: float = 36.6, **kw: Any) -> Reading:
    return reading(
        seq,
        Metric.BODY_TEMPERATURE,
        value,
        local_s(text),
        site=Site.AXILLARY,
        device=THERMOMETER,
        **kw,
    )


def statuses(day: dict[str, Any]) -> list[tuple[str, str]]:
    return [(w["name"], w["status"]) for w in day["windows"]]


def test_the_day_is_completed_after_its_evening_window_measured_and_missed() -> None:
    ledger = book(subjects=[{"code": "bed-1", "isolation_start": date(2026, 11, 21)}])
    assert tick(ledger, "2026-11-23 05:00") == []
    morning = temperature(7, "2026-11-23 07:30", 36.6)
    ledger.on_reading(morning)
    ledger.on_reading(temperature(8, "2026-11-23 08:15", 36.9))  # the first one counts
    assert tick(ledger, "2026-11-23 12:00") == []
    assert statuses(ledger.day("bed-1", date(2026, 11, 23))) == [
        ("morning", "measured"),
        ("evening", "pending"),
    ]
    assert tick(ledger, "2026-11-23 22:00:59") == []  # the rule's minute of grace
    (completed,) = tick(ledger, "2026-11-23 22:01")
    assert completed == {
        "subject": "bed-1",
        "date": "2026-11-23",
        "timezone": "Asia/Shanghai",
        "isolation": {"day": 3, "days": 14},
        "windows": [
            {
                "name": "morning",
                "start": "06:00",
                "end": "10:00",
                "status": "measured",
                "measurement": {
                    "reading": "gw-test-7",
                    "received_at": "2026-11-22T23:30:00.000+00:00",
                    "value": 36.6,
                    "unit": "Cel",
                    "site": "axillary",
                    "device": THERMOMETER,
                },
            },
            {
                "name": "evening",
                "start": "18:00",
                "end": "22:00",
                "status": "missed",
                "measurement": None,
            },
        ],
    }
    assert json.loads(json.dumps(completed)) == completed  # plain JSON
    assert tick(ledger, "2026-11-23 23:00") == []  # once a day
    assert ledger.day("bed-1", date(2026, 11, 23)) == completed


def test_intermediate_and_flagged_temperatures_are_not_measurements() -> None:
    ledger = book()
    tick(ledger, "2026-11-23 05:00")
    ledger.on_reading(temperature(1, "2026-11-23 07:00", quality=frozenset({Quality.INTERMEDIATE})))
    ledger.on_reading(temperature(2, "2026-11-23 19:00", quality=frozenset({Quality.PROBE_OFF})))
    (completed,) = tick(ledger, "2026-11-23 22:01")
    assert statuses(completed) == [("morning", "missed"), ("evening", "missed")]


def test_the_isolation_day_is_counted_in_local_dates() -> None:
    ledger = book(
        subjects=[
            # Midnight on 1 December: days 1 to 14 are 1 to 14 December.
            {"code": "bed-1", "isolation_start": date(2026, 12, 1)},
            # 15:00 on 1 December: its last hours fall on a 15th date.
            {"code": "bed-3", "isolation_start": datetime(2026, 12, 1, 15, 0)},
            {"code": "bed-4"},
        ]
    )

    def isolation(code: str, day: int) -> Any:
        return ledger.day(code, date(2026, 11, 30) + timedelta(days=day))["isolation"]

    assert isolation("bed-1", 0) is None
    assert isolation("bed-1", 1) == {"day": 1, "days": 14}
    assert isolation("bed-1", 14) == {"day": 14, "days": 14}
    assert isolation("bed-1", 15) is None
    assert isolation("bed-3", 15) == {"day": 15, "days": 14}
    assert isolation("bed-3", 16) is None
    assert isolation("bed-4", 1) is None


def test_a_restart_mid_day_keeps_the_morning_measurement() -> None:
    first = book()
    tick(first, "2026-11-23 05:00")
    first.on_reading(temperature(7, "2026-11-23 07:30"))
    tick(first, "2026-11-23 12:00")
    saved = json.loads(json.dumps(first.save_state()))
    second = book()
    second.load_state(saved)
    second.on_reading(temperature(9, "2026-11-23 19:45", 37.0))
    (completed,) = tick(second, "2026-11-23 22:01")
    assert statuses(completed) == [("morning", "measured"), ("evening", "measured")]
    assert [w["measurement"]["reading"] for w in completed["windows"]] == [
        "gw-test-7",
        "gw-test-9",
    ]


def test_days_that_ended_while_the_gateway_was_off_are_completed_on_its_first_tick() -> None:
    first = book()
    tick(first, "2026-11-23 05:00")
    first.on_reading(temperature(7, "2026-11-23 07:30"))
    tick(first, "2026-11-23 12:00")
    second = book()
    second.load_state(first.save_state())
    completed = tick(second, "2026-11-25 12:00")
    assert [(d["date"], statuses(d)) for d in completed] == [
        ("2026-11-23", [("morning", "measured"), ("evening", "missed")]),
        ("2026-11-24", [("morning", "missed"), ("evening", "missed")]),
    ]


def test_windows_from_before_the_thermometer_are_not_expected() -> None:
    ledger = book(devices=[HTS, OXIMETER])
    assert tick(ledger, "2026-11-23 08:00") == []  # installed mid-morning
    ledger.on_reading(temperature(1, "2026-11-23 19:00"))
    # Only the subject with a thermometer has a ledger.
    (completed,) = tick(ledger, "2026-11-23 22:01")
    assert completed["subject"] == "bed-1"
    assert statuses(completed) == [("morning", "not_expected"), ("evening", "measured")]


def test_the_zone_is_an_offset_when_it_has_no_name_and_old_days_are_the_stores() -> None:
    plus8 = timezone(timedelta(hours=8))
    directory = SubjectDirectory(
        RulesSection(),
        plus8,
        bindings=SubjectDirectory.from_config(rules_config(devices=[HTS])).bindings(),
    )
    ledger = LedgerBook(directory, RulesSection().missed_measurement)
    ledger.on_tick(at(local_s("2026-11-23 05:00")))
    assert ledger.day("bed-1", date(2026, 11, 23))["timezone"] == "+08:00"
    assert ledger.day("bed-1", date(2026, 11, 22))["date"] == "2026-11-22"  # yesterday
    with pytest.raises(DayNotHeld, match="the store has it"):
        ledger.day("bed-1", date(2026, 11, 21))
    with pytest.raises(KeyError):
        ledger.day("bed-7", date(2026, 11, 23))
