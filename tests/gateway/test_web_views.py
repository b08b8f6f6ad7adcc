"""What the page works out from the service's state: the traffic light, a subject's
isolation in days, a signal in bars."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.web import views
from gateway.web.i18n import translations
from gateway.web.views import (
    Light,
    isolation_view,
    most_urgent_first,
    signal_bars,
    traffic_light,
)

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def health(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "faults": [],
        "broker": {"state": "connected"},
        "queue": {"undelivered": 0, "oldest_undelivered_at": None},
        "clock": "synced",
        "bluetooth": {"state": "up"},
    }
    return {**base, **changes}


def said(reasons: list[Any], locale: str = "en") -> list[str]:
    return [reason.said(translations(locale).gettext) for reason in reasons]


def test_green_only_when_readings_are_collected_stored_and_delivered() -> None:
    light, reasons = traffic_light(health(), NOW)
    assert light is Light.GREEN and said(reasons) == ["All working: readings reach the township"]
    brief = {"undelivered": 3, "oldest_undelivered_at": (NOW - timedelta(seconds=5)).isoformat()}
    assert traffic_light(health(queue=brief), NOW)[0] is Light.GREEN  # a moment's wait


@pytest.mark.parametrize(
    ("changes", "light", "lines"),
    [
        (
            {
                "queue": {
                    "undelivered": 120,
                    "oldest_undelivered_at": (NOW - timedelta(minutes=5)).isoformat(),
                }
            },
            Light.YELLOW,
            ["120 readings wait to be sent"],
        ),
        ({"clock": "unsynced"}, Light.YELLOW, ["The clock is not synchronised"]),
        (  # nothing lost yet: being reached
            {"broker": {"state": "connecting"}},
            Light.YELLOW,
            ["The township's server cannot be reached"],
        ),
        (  # a minute's readings not reaching the township
            {
                "broker": {"state": "disconnected"},
                "queue": {
                    "undelivered": 60,
                    "oldest_undelivered_at": (NOW - timedelta(seconds=61)).isoformat(),
                },
            },
            Light.RED,
            ["The township's server cannot be reached", "60 readings wait to be sent"],
        ),
        (
            {"faults": [{"part": "store", "reason": "disk full", "since": NOW.isoformat()}]},
            Light.RED,
            ["Not working: the store on the SD card"],
        ),
        (
            {"bluetooth": {"state": "unavailable"}, "clock": "unsynced"},
            Light.RED,
            ["The Bluetooth adapter is unavailable", "The clock is not synchronised"],
        ),
    ],
)
def test_yellow_when_readings_wait_red_when_a_part_is_down(
    changes: dict[str, Any], light: Light, lines: list[str]
) -> None:
    shown, reasons = traffic_light(health(**changes), NOW)
    assert shown is light and said(reasons) == lines


def test_an_adapter_no_device_needs_leaves_the_light_green() -> None:
    """A USB-only gateway on which someone opened "Add a device" with no adapter."""
    unavailable = health(bluetooth={"state": "unavailable"})
    assert traffic_light(unavailable, NOW, bluetooth_used=False)[0] is Light.GREEN
    assert traffic_light(unavailable, NOW, bluetooth_used=True)[0] is Light.RED


def test_a_fault_is_told_in_chinese_with_the_parts_name() -> None:
    fault = {"part": "uplink", "reason": "x", "since": NOW.isoformat()}
    _light, reasons = traffic_light(health(faults=[fault]), NOW)
    assert said(reasons, "zh_CN")[0] == "故障：上传到乡镇"  # noqa: RUF001
    assert reasons[0].since == NOW.isoformat()


def test_an_isolation_is_told_in_local_days() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    start = datetime(2026, 11, 25, 20, 0, tzinfo=shanghai)
    subject = {
        "isolated": True,
        "isolation": {
            "start": start.isoformat(),
            "days": 14,
            "end": (start + timedelta(days=14)).isoformat(),
            "ended_early": False,
        },
    }
    view = isolation_view(subject, shanghai, NOW)  # 16:00 on 12-01 in Shanghai
    assert view is not None
    assert (view.start, view.end) == (date(2026, 11, 25), date(2026, 12, 9))
    assert (view.day, view.days, view.days_left) == (7, 14, 7)
    assert view.end_at == start + timedelta(days=14)
    assert isolation_view({"isolation": None}, shanghai, NOW) is None


@pytest.mark.parametrize(
    ("rssi", "bars"), [(None, 0), (-95, 0), (-90, 1), (-75, 2), (-65, 3), (-40, 4)]
)
def test_a_signal_is_drawn_in_bars_as_phones_draw_them(rssi: int | None, bars: int) -> None:
    assert signal_bars(rssi) == bars


def test_alerts_are_listed_most_urgent_first() -> None:
    def alert(name: str, cls: str, severity: str | None, raised: int, by: str | None = None):
        return {
            "id": name,
            "class": cls,
            "severity": severity,
            "raised_at": f"2026-12-01T08:{raised:02d}:00+00:00",
            "acknowledged_by": by,
        }

    alerts = [
        alert("battery", "technical", None, 1),
        alert("fever", "physiological", "warning", 2),
        alert("spo2-seen", "physiological", "critical", 3, by="doctor-07"),
        alert("spo2", "physiological", "critical", 4),
        alert("door", "isolation", None, 5),
        alert("fever-newer", "physiological", "warning", 6),
    ]
    order = [a["id"] for a in most_urgent_first(alerts)]
    assert order == ["spo2", "fever-newer", "fever", "door", "battery", "spo2-seen"]


def test_an_alert_card_leads_to_what_is_wrong() -> None:
    """A resident's alert to the resident; equipment without a resident to its own
    place: the gateway's store to the gateway's details (not a device page that does
    not exist), a proxy to the proxies' cards, a device to its page."""

    def link(kind: str, subject: str | None, device: str) -> str:
        return views.alert_link({"kind": kind, "subject": subject, "device": device})

    assert link("fever", "bed-3", "hts-f00000000001") == "/subjects/bed-3"
    assert link("battery_low", "bed-3", "hts-f00000000001") == "/subjects/bed-3"
    assert link("storage_failure", None, "gw-0001") == "/#details"
    assert link("proxy_silent", None, "east") == "/#proxies"
    assert link("device_silent", None, "bthome-f00000000010") == "/devices/bthome-f00000000010"
