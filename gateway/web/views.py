"""What the pages show, worked out from the service's state: pure functions of the
payloads the service already publishes (so the page and the township see the same
facts), kept apart from the routes so they are tested without a browser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any

from drivers.kinds import KINDS
from drivers.listener import AdapterState
from drivers.measurement import Metric
from gateway.config import LOCAL_RADIO
from gateway.model import AlertKind
from gateway.web.i18n import NEVER
from gateway.web.labels import N_, PARTS

#: Readings still undelivered after this long turn the light yellow (an outage may be
#: brief), and red while the broker is away: they are not reaching the township.
_WAITING_S = 60.0


#: A proxy's states that are worth a warning: `connecting` lasts a moment.
_PROXY_DOWN = ("disconnected", "refused")


class Light(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


@dataclass(frozen=True, slots=True)
class Reason:
    """One line under the traffic light: a message id, its values, and since when."""

    message: str
    values: dict[str, Any]
    since: str | None = None

    def said(self, gettext: Callable[[str], str]) -> str:
        """In the page's language; a value that is a word (a part's name) translated."""
        return gettext(self.message) % {
            name: gettext(value) if isinstance(value, str) else value
            for name, value in self.values.items()
        }


def traffic_light(
    health: dict[str, Any], now: datetime, *, bluetooth_used: bool = True
) -> tuple[Light, list[Reason]]:
    """Green: collecting, storing and delivering. Yellow: working, but readings wait, the
    broker is being reached, or the clock is unsure. Red: a part is down, readings have
    waited a minute for a broker that is away, or the Bluetooth adapter its devices
    (`bluetooth_used`) need is unavailable (with ESPHome proxies: no radio at all works;
    a proxy that cannot be reached, or refuses the gateway, is yellow: its devices move
    to another radio that hears them)."""
    red: list[Reason] = []
    yellow: list[Reason] = []
    broker, queue = health["broker"], health["queue"]
    for fault in health["faults"]:
        part = PARTS.get(fault["part"], fault["part"])
        red.append(Reason(N_("Not working: %(part)s"), {"part": part}, fault["since"]))
    oldest = queue["oldest_undelivered_at"]
    waiting_s = (now - datetime.fromisoformat(oldest)).total_seconds() if oldest else 0.0
    overdue = queue["undelivered"] > 0 and waiting_s >= _WAITING_S
    if broker["state"] != "connected":
        away = Reason(N_("The township's server cannot be reached"), {})
        (red if overdue else yellow).append(away)
    if overdue:
        yellow.append(
            Reason(N_("%(n)s readings wait to be sent"), {"n": queue["undelivered"]}, oldest)
        )
    if health["clock"] == "unsynced":
        yellow.append(Reason(N_("The clock is not synchronised"), {}))
    bluetooth = health["bluetooth"]
    proxies = bluetooth.get("proxies", [])
    if bluetooth_used and bluetooth["state"] == AdapterState.UNAVAILABLE.value:
        if proxies:
            red.append(Reason(N_("No Bluetooth radio is working"), {}))
        else:
            red.append(Reason(N_("The Bluetooth adapter is unavailable"), {}))
    for proxy in proxies if bluetooth_used else []:
        if proxy["state"] in _PROXY_DOWN:
            name = {"name": proxy["name"]}
            yellow.append(Reason(N_("Bluetooth proxy %(name)s is not connected"), name))
    if red:
        return Light.RED, red + yellow
    if yellow:
        return Light.YELLOW, yellow
    return Light.GREEN, [Reason(N_("All working: readings reach the township"), {})]


@dataclass(frozen=True, slots=True)
class IsolationView:
    start: date
    end: date
    day: int  # day n of the isolation today (1: its first date)
    days: int
    #: When it ends (start + days, at the time of day it started; or when ended early).
    end_at: datetime
    days_left: int  # whole days after today
    isolated: bool
    ended_early: bool


def isolation_view(subject: dict[str, Any], zone: tzinfo, now: datetime) -> IsolationView | None:
    """The subject's latest isolation in local dates, or None when it never had one."""
    isolation = subject.get("isolation")
    if not isolation:
        return None
    start = datetime.fromisoformat(isolation["start"]).astimezone(zone)
    end = datetime.fromisoformat(isolation["end"]).astimezone(zone)
    today = now.astimezone(zone).date()
    day = (today - start.date()).days + 1
    return IsolationView(
        start=start.date(),
        end=end.date(),
        day=max(1, min(day, isolation["days"])),
        days=isolation["days"],
        end_at=end,
        days_left=max(0, isolation["days"] - max(day, 0)),
        isolated=bool(subject.get("isolated")),
        ended_early=bool(isolation["ended_early"]),
    )


def ledger_range(zone: tzinfo, now: datetime, days: int = 14) -> tuple[date, date]:
    """The dates the subject page's ledger shows: the last `days`, today included."""
    today = now.astimezone(zone).date()
    return today - timedelta(days=days - 1), today


def seconds_ago(now: datetime, seconds: float | None) -> datetime | None:
    """The moment `seconds` before `now` (a proxy's `last_heard_s_ago`), to be said as
    "5 秒前"; None for never."""
    return None if seconds is None else now - timedelta(seconds=seconds)


def radio_words(radio: str | None) -> Reason:
    """What a Bluetooth device's card says of the radio serving it (`radio_of`: the
    one it is connected through, or last was; for a door sensor the one hearing it best)."""
    if radio is None:
        return Reason(N_("no radio hears it yet"), {})
    if radio == LOCAL_RADIO:
        return Reason(N_("via the gateway's own adapter"), {})
    return Reason(N_("via %(radio)s"), {"radio": radio})


def alert_link(alert: dict[str, Any]) -> str:
    """Where an alert's card leads: its subject's page; for equipment without a
    subject, what is wrong with it (a proxy's card, the gateway's own details, a
    device's page)."""
    if alert["subject"]:
        return f"/subjects/{alert['subject']}"
    if alert["kind"] == AlertKind.PROXY_SILENT:
        return "/#proxies"
    if alert["kind"] == AlertKind.STORAGE_FAILURE:
        return "/#details"
    return f"/devices/{alert['device']}"


def bluetooth_kind(kind: str) -> bool:
    """Whether devices of `kind` are served by a Bluetooth radio (they show which)."""
    return kind in KINDS and KINDS[kind].bluetooth


def signal_bars(rssi: int | None) -> int:
    """0-4 bars for a signal strength in dBm, as phones draw them."""
    if rssi is None:
        return 0
    return sum(rssi >= edge for edge in (-90, -80, -70, -60))


#: The order alerts are listed in: the body first, most severe first; then the routine,
#: the isolation, the equipment.
_CLASS_ORDER = ["physiological", "isolation", "adherence", "technical"]
_SEVERITY_ORDER = ["critical", "high", "warning", None]


def most_urgent_first(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Not yet acknowledged before acknowledged; then by class and severity; then the
    newest first."""
    newest_first = sorted(alerts, key=lambda a: a["raised_at"], reverse=True)
    return sorted(
        newest_first,
        key=lambda a: (
            a["acknowledged_by"] is not None,
            _CLASS_ORDER.index(a["class"]),
            _SEVERITY_ORDER.index(a["severity"]),
        ),
    )


#: The metric each physiological alert's value is of (its unit, its digits).
ALERT_METRICS: dict[str, Metric] = {
    AlertKind.LOW_SPO2: Metric.SPO2,
    AlertKind.FEVER: Metric.BODY_TEMPERATURE,
    AlertKind.HYPOTHERMIA: Metric.BODY_TEMPERATURE,
    AlertKind.TACHYCARDIA: Metric.PULSE_RATE,
    AlertKind.BRADYCARDIA: Metric.PULSE_RATE,
}


def number(value: float | int | bool | None, metric: str | None = None) -> str:
    """A value as a clinician reads it: a temperature with one decimal (36.8), SpO2 and
    pulse whole when they are (97, not 97.0)."""
    if value is None:
        return NEVER
    if metric == Metric.BODY_TEMPERATURE:
        return f"{value:.1f}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def for_subject(items: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [item for item in items if item.get("subject") == code]
