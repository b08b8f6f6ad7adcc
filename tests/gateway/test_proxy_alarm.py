"""The `proxy_silent` alert of an ESPHome Bluetooth proxy, on the times a test gives:
raised once a proxy has not been connected, or has relayed nothing, for
`bluetooth.proxy_silent_s` (and not before), updated when the reason changes, cleared
when it relays again, acknowledged, and carried across a restart."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import BluetoothSection
from gateway.model import Alert, AlertClass, AlertKind, AlertState
from gateway.proxy_alarm import ProxyAlarm
from tests.gateway.helpers import at

SILENT = int(BluetoothSection.model_fields["proxy_silent_s"].default)
UNREACHABLE = "cannot reach 10.0.0.7:6053: [Errno 113] No route to host"
REFUSED = "proxy refused the noise key (wrong api encryption key)"


def proxy(
    state: str = "connected",
    error: str = "",
    connected_s: float | None = 100.0,
    last_heard_s_ago: float | None = 0.5,
    name: str = "east",
) -> dict[str, Any]:
    """One proxy as `ProxiedBluetooth.health()["proxies"]` gives it."""
    connected = state == "connected"
    return {
        "name": name,
        "host": "10.0.0.7",
        "port": 6053,
        "state": state,
        "error": error,
        "slots_free": 3 if connected else 0,
        "slots_limit": 3 if connected else 0,
        "connected_s": connected_s if connected else None,
        "last_heard_s_ago": last_heard_s_ago,
        "devices": 0,
    }


def down(error: str = UNREACHABLE, **fields: Any) -> dict[str, Any]:
    return proxy("disconnected", error, **fields)


def every_second(alarm: ProxyAlarm, seen: dict[str, Any], first: int, last: int) -> list[Alert]:
    """The changes of looking at `seen` each second from `first` to `last` inclusive (as
    the service does), the seconds counted from T0."""
    return [change for s in range(first, last + 1) for change in alarm.look([seen], at(s))]


def test_a_proxy_not_connected_raises_after_proxy_silent_s_and_not_before() -> None:
    alarm = ProxyAlarm(SILENT)
    # Down from the gateway's start (its first look): raised SILENT s after it.
    assert every_second(alarm, down(), 0, SILENT - 1) == []
    (raised,) = alarm.look([down()], at(SILENT))
    assert raised.kind is AlertKind.PROXY_SILENT
    assert raised.kind.alert_class is AlertClass.TECHNICAL and raised.severity is None
    assert (raised.state, raised.subject, raised.device) == (AlertState.RAISED, None, "east")
    assert raised.id == f"proxy_silent:proxy:east:{int(at(SILENT).wall.timestamp() * 1000)}"
    assert raised.detail == f"not connected for {SILENT} s: {UNREACHABLE}"
    assert raised.raised_at == at(SILENT).wall
    assert alarm.look([down()], at(SILENT + 30)) == []  # raised once
    assert [a.id for a in alarm.open_alerts()] == [raised.id]


def test_a_proxy_connected_but_relaying_nothing_raises_and_says_so() -> None:
    alarm = ProxyAlarm(SILENT)
    # Relaying, then the advertisements stop (its Bluetooth has hung).
    assert alarm.look([proxy(last_heard_s_ago=1.0)], at(0)) == []
    assert alarm.look([proxy(last_heard_s_ago=SILENT - 1)], at(SILENT - 2)) == []
    (raised,) = alarm.look([proxy(connected_s=300.0, last_heard_s_ago=80.0)], at(80))
    assert raised.detail == "connected but relayed nothing for 80 s"
    # Connected a while ago and never relayed anything: silent since the connection.
    fresh = ProxyAlarm(SILENT)
    assert fresh.look([proxy(connected_s=SILENT - 1, last_heard_s_ago=None)], at(0)) == []
    (never,) = fresh.look([proxy(connected_s=SILENT, last_heard_s_ago=None)], at(1))
    assert never.detail == f"connected but relayed nothing for {SILENT} s"


def test_the_alert_is_updated_when_the_reason_changes_and_cleared_when_it_relays() -> None:
    alarm = ProxyAlarm(SILENT)
    (raised,) = every_second(alarm, down(), 0, SILENT)
    assert every_second(alarm, down(), SILENT + 1, SILENT + 9) == []
    # Someone reflashed it with another key: the same silence, another reason.
    (updated,) = alarm.look([proxy("refused", REFUSED)], at(SILENT + 10))
    assert (updated.id, updated.state) == (raised.id, AlertState.UPDATED)
    assert updated.detail == f"not connected for {SILENT + 10} s: {REFUSED}"
    # Connected again, nothing relayed yet: still open, said after proxy_silent_s more.
    start = SILENT + 20
    assert alarm.look([proxy(connected_s=1.0, last_heard_s_ago=200.0)], at(start)) == []
    quiet = proxy(connected_s=SILENT, last_heard_s_ago=200.0)
    (still,) = alarm.look([quiet], at(start + SILENT))
    assert still.detail == f"connected but relayed nothing for {SILENT} s"
    # The first advertisement relayed since the connection clears it, at once.
    (cleared,) = alarm.look([proxy(connected_s=SILENT + 1, last_heard_s_ago=0.2)], at(200))
    assert (cleared.id, cleared.state) == (raised.id, AlertState.CLEARED)
    assert cleared.cleared_at == at(200).wall and cleared.detail == "connected and relaying again"
    assert alarm.open_alerts() == []
    # A new silence is a new episode, with a new id, after proxy_silent_s again.
    assert alarm.look([down()], at(300)) == []
    (again,) = alarm.look([down()], at(300 + SILENT))
    assert again.id != raised.id and again.state is AlertState.RAISED


def test_a_brief_drop_raises_nothing_and_each_proxy_has_its_own_alert() -> None:
    alarm = ProxyAlarm(SILENT)
    west = proxy(name="west")
    assert alarm.look([proxy(), west], at(0)) == []
    assert alarm.look([down(), west], at(1)) == []
    assert alarm.look([down(), west], at(SILENT)) == []  # down for SILENT - 1 s
    assert alarm.look([proxy(connected_s=1.0, last_heard_s_ago=0.5), west], at(SILENT)) == []
    # It drops again: its silence counts from this drop, not the first.
    assert alarm.look([down(), west], at(SILENT + 1)) == []
    assert alarm.look([down(), west], at(2 * SILENT)) == []
    (raised,) = alarm.look([down(), west], at(2 * SILENT + 1))
    assert raised.device == "east"


def test_acknowledged_it_stays_open_until_the_proxy_relays_again() -> None:
    alarm = ProxyAlarm(SILENT)
    (raised,) = every_second(alarm, down(), 0, SILENT)
    acknowledged = alarm.acknowledge(raised.id, "tech-01", at(SILENT + 5).wall)
    assert acknowledged.state is AlertState.ACKNOWLEDGED
    assert acknowledged.acknowledged_by == "tech-01"
    (held,) = alarm.open_alerts()
    assert held.acknowledged_by == "tech-01"
    with pytest.raises(KeyError):
        alarm.acknowledge("proxy_silent:proxy:west:1", "tech-01", at(SILENT + 5).wall)
    (cleared,) = alarm.look([proxy()], at(SILENT + 9))
    assert cleared.state is AlertState.CLEARED and cleared.acknowledged_by == "tech-01"


def test_an_alert_restored_at_start_stays_open_and_clears_when_the_proxy_relays() -> None:
    before = ProxyAlarm(SILENT)
    (raised,) = every_second(before, down(), 0, SILENT)
    stored = raised.payload()  # as the store keeps it
    after = ProxyAlarm(SILENT)
    after.restore(Alert.from_payload(stored))
    after.restore(Alert.from_payload({**stored, "id": "battery_low:x:1", "kind": "battery_low"}))
    assert [a.id for a in after.open_alerts()] == [raised.id]
    # Still unreachable after the restart: no new alert; the reason is said again once
    # the silence has lasted proxy_silent_s from the start.
    starting = proxy("connecting", "not connected yet")
    assert after.look([starting], at(1000)) == []
    assert every_second(after, down(), 1001, 1000 + SILENT - 1) == []
    (updated,) = after.look([down()], at(1000 + SILENT))
    assert (updated.id, updated.state) == (raised.id, AlertState.UPDATED)
    assert updated.detail == f"not connected for {SILENT} s: {UNREACHABLE}"
    (cleared,) = after.look([proxy()], at(1100 + SILENT))
    assert (cleared.id, cleared.state) == (raised.id, AlertState.CLEARED)


def test_the_alert_of_a_proxy_no_longer_in_use_is_cleared() -> None:
    alarm = ProxyAlarm(SILENT)
    (raised,) = every_second(alarm, down(), 0, SILENT)
    (cleared,) = alarm.look([proxy(name="west")], at(SILENT + 1))
    assert (cleared.id, cleared.state, cleared.detail) == (
        raised.id,
        AlertState.CLEARED,
        "no longer in use",
    )
    assert alarm.look([], at(SILENT + 2)) == [] and alarm.open_alerts() == []
