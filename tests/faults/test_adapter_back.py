"""A Bluetooth adapter missing at start, then removed and put back, is picked up without
a restart: the gateway as its own process on a bumble transport to the simulator's
virtual controller, which is not there at first, then is, then goes away and returns
(`python -m firmware_sim ble` started, stopped and started again on the same port)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.broker import Mosquitto, free_port
from tests.conftest import GatewayProcess, Subscriber, write_config
from tests.e2e.test_ble_to_broker import DEVICES, Simulator
from tests.gateway.helpers import PageApi

BLUETOOTH_DEVICES = {"hts-f00000000001", "plx-f00000000002"}


def statuses(sub: Subscriber, since: int = 0) -> list[dict[str, Any]]:
    """The running gateway's `status` messages (online or degraded), from `since` on."""
    return [p for _, p, _ in sub.snapshot("/status")[since:] if "bluetooth" in p]


def adapter_is(state: str, since: int = 0) -> Callable[[Subscriber], dict[str, Any] | None]:
    """The first `status` from `since` on whose adapter is in `state`."""
    return lambda s: next(
        (p["bluetooth"] for p in statuses(s, since) if p["bluetooth"]["state"] == state), None
    )


def rows_say_unavailable(sub: Subscriber) -> bool:
    inventories = sub.snapshot("/devices")
    return bool(inventories) and all(
        d["link"] == "unreachable"
        and d["link_detail"].startswith("Bluetooth adapter unavailable: ")
        for d in inventories[-1][1]["devices"]
        if d["id"] in BLUETOOTH_DEVICES
    )


def read_from_both(since_seq: int) -> Callable[[Subscriber], bool]:
    def check(sub: Subscriber) -> bool:
        metrics = {r["metric"] for r in sub.readings() if r["seq"] > since_seq}
        return {"body_temperature", "spo2"} <= metrics

    return check


def test_an_adapter_missing_at_start_then_removed_and_put_back_is_picked_up(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    # Before: opened once at start; missing then, Bluetooth stayed unavailable (and the
    # devices unserved) until a restart.
    port = free_port()  # nothing listens here yet: the controller is not plugged in
    sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
    adapter = f"bumble:tcp-client:127.0.0.1:{port}"
    config = write_config(tmp_path, mosquitto.port, adapter=adapter, devices=DEVICES)
    gw = gateway_factory(config)

    missing = sub.wait_for(adapter_is("unavailable"), 20, "the adapter shown unavailable")
    assert missing["adapter"] == adapter and missing["error"], missing
    sub.wait_for(rows_say_unavailable, 20, "the Bluetooth devices saying why they are not read")
    web = next(r["web"] for r in gw.log_records() if r.get("msg") == "gateway started")
    api = PageApi(config).get(web + "api/status")["bluetooth"]
    assert api["state"] in ("unavailable", "opening") and api["error"], api
    assert sub.readings() == []

    sim = Simulator("--scenario", "normal", port=port)  # the adapter appears
    try:
        sub.wait_for(read_from_both(0), 45, "readings once the adapter appeared")
        sub.wait_for(adapter_is("up"), 20, "the adapter shown up")
    finally:
        sim.stop()  # ... and is removed

    gw.wait_log("bluetooth adapter lost", 20)
    lost = [r for r in gw.log_records() if r.get("msg") == "bluetooth adapter lost"]
    assert "lost its HCI transport" in lost[0]["error"], lost
    seen = len(sub.snapshot("/status"))
    gone = sub.wait_for(adapter_is("unavailable", seen), 20, "the adapter unavailable again")
    assert gone["error"], gone
    sub.wait_for(rows_say_unavailable, 20, "the devices saying the adapter is gone")
    silent_from = max(r["seq"] for r in sub.readings())

    sim = Simulator("--scenario", "normal", port=port)  # ... and put back
    try:
        sub.wait_for(read_from_both(silent_from), 45, "readings once the adapter was back")
        seen = len(sub.snapshot("/status"))
        sub.wait_for(adapter_is("up", seen), 20, "the adapter shown up again")
    finally:
        sim.stop()
    spo2 = {r["value"] for r in sub.readings() if r["metric"] == "spo2"}
    assert spo2 <= {97, 98}
