"""A subject's schedule windows land on the right moments of each local date, in a zone
without clock changes and across the days a zone changes its clocks."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from gateway.model import DEFAULT_SCHEDULE, Window
from gateway.schedule import local_date, window_at, windows_ended, windows_on

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = (Window("night", time(0, 0), time(6, 0)),)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def spans(day: date, schedule: tuple[Window, ...], tz: ZoneInfo) -> list[tuple[str, str, str]]:
    """Each window of the day as (name, start, end) in UTC."""
    fmt = "%Y-%m-%d %H:%M"
    return [
        (s.window.name, f"{s.start.astimezone(UTC):{fmt}}", f"{s.end.astimezone(UTC):{fmt}}")
        for s in windows_on(day, schedule, tz)
    ]


def test_the_default_windows_of_a_date_in_shanghai() -> None:
    assert spans(date(2026, 11, 23), DEFAULT_SCHEDULE, SHANGHAI) == [
        ("morning", "2026-11-22 22:00", "2026-11-23 02:00"),
        ("evening", "2026-11-23 10:00", "2026-11-23 14:00"),
    ]


def test_a_fixed_offset_zone_gives_the_same_moments() -> None:
    plus8 = timezone(timedelta(hours=8))
    day = date(2026, 11, 23)
    assert spans(day, DEFAULT_SCHEDULE, plus8) == spans(day, DEFAULT_SCHEDULE, SHANGHAI)


def test_windows_keep_their_local_times_on_the_days_berlin_changes_its_clocks() -> None:
    # Spring (29 March 2026): 06:00 local is 05:00 UTC the day before, 04:00 UTC on it.
    assert spans(date(2026, 3, 28), DEFAULT_SCHEDULE, BERLIN)[0][1] == "2026-03-28 05:00"
    assert spans(date(2026, 3, 29), DEFAULT_SCHEDULE, BERLIN) == [
        ("morning", "2026-03-29 04:00", "2026-03-29 08:00"),
        ("evening", "2026-03-29 16:00", "2026-03-29 20:00"),
    ]
    # Autumn (25 October 2026): back to an hour's offset.
    assert spans(date(2026, 10, 25), DEFAULT_SCHEDULE, BERLIN) == [
        ("morning", "2026-10-25 05:00", "2026-10-25 09:00"),
        ("evening", "2026-10-25 17:00", "2026-10-25 21:00"),
    ]


def test_a_window_across_the_change_is_an_hour_shorter_in_spring_longer_in_autumn() -> None:
    (spring,) = windows_on(date(2026, 3, 29), NIGHT, BERLIN)
    (autumn,) = windows_on(date(2026, 10, 25), NIGHT, BERLIN)
    assert spring.end - spring.start == timedelta(hours=5)
    assert autumn.end - autumn.start == timedelta(hours=7)


def test_an_edge_in_the_skipped_hour_falls_at_the_jump_and_in_the_repeated_hour_on_its_first() -> (
    None
):
    small_hours = (Window("small-hours", time(2, 30), time(4, 0)),)
    (spring,) = windows_on(date(2026, 3, 29), small_hours, BERLIN)
    # 02:30 never shows in spring: the window opens when the clocks jump to 03:00 CEST.
    assert spring.start == utc("2026-03-29 01:00") and spring.end == utc("2026-03-29 02:00")
    assert spring.start.astimezone(BERLIN).strftime("%H:%M") == "03:00"
    (autumn,) = windows_on(date(2026, 10, 25), small_hours, BERLIN)
    # 02:30 shows twice in autumn: the first time (CEST) opens it.
    assert autumn.start == utc("2026-10-25 00:30") and autumn.end == utc("2026-10-25 03:00")


def test_the_window_an_instant_falls_in_start_included_end_excluded() -> None:
    def name(text: str) -> str | None:
        slot = window_at(utc(text), DEFAULT_SCHEDULE, SHANGHAI)
        return slot and f"{slot.window.name} {slot.day}"

    assert name("2026-11-22 22:00") == "morning 2026-11-23"  # 06:00 local
    assert name("2026-11-23 01:59:59") == "morning 2026-11-23"
    assert name("2026-11-23 02:00") is None  # 10:00 local: closed
    assert name("2026-11-23 04:00") is None
    assert name("2026-11-23 13:30") == "evening 2026-11-23"
    # Berlin's spring day: 19:30 CEST is 17:30 UTC.
    slot = window_at(utc("2026-03-29 17:30"), DEFAULT_SCHEDULE, BERLIN)
    assert slot is not None and slot.window.name == "evening"
    assert window_at(utc("2026-03-29 20:30"), DEFAULT_SCHEDULE, BERLIN) is None


def test_the_windows_that_ended_between_two_moments_any_days_apart() -> None:
    ended = windows_ended(
        DEFAULT_SCHEDULE, SHANGHAI, utc("2026-11-23 02:00"), utc("2026-11-24 14:00")
    )
    # The morning of the 23rd ended at the first moment: not in (after, until].
    assert [s.key for s in ended] == [
        "2026-11-23 evening",
        "2026-11-24 morning",
        "2026-11-24 evening",
    ]
    assert (
        windows_ended(DEFAULT_SCHEDULE, SHANGHAI, utc("2026-11-23 14:00"), utc("2026-11-23 13:00"))
        == []
    )
    # Berlin's spring day: the evening ends at 20:00 UTC, not 21:00.
    (evening,) = windows_ended(
        DEFAULT_SCHEDULE, BERLIN, utc("2026-03-29 19:00"), utc("2026-03-29 20:00")
    )
    assert evening.key == "2026-03-29 evening"


def test_the_local_date_of_an_instant() -> None:
    assert local_date(utc("2026-11-22 16:30"), SHANGHAI) == date(2026, 11, 23)
    assert local_date(utc("2026-11-22 15:59"), SHANGHAI) == date(2026, 11, 22)
    assert local_date(utc("2026-03-28 23:30"), BERLIN) == date(2026, 3, 29)
