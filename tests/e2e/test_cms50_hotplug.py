"""A USB oximeter unplugged and plugged back: the server sees the device go silent,
then readings resume without restarting the gateway."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber, write_config


def link_states(sub: Subscriber) -> list[str]:
    return [p["devices"][0]["link"] for _, p, _ in sub.snapshot("/devices")]


def test_unplug_and_replug_through_the_gateway(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    sim = Cms50Simulator(Generation.LEGACY, "normal", link=str(tmp_path / "usb-Contec-if00"))
    sim.start()
    try:
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        devices = f'[[devices]]\nkind = "cms50"\nport = "{sim.path}"\nsubject = "bed-2"\n'
        gateway_factory(write_config(tmp_path, mosquitto.port, devices=devices))
        sub.wait_for(lambda s: len(s.readings()) >= 4, 30, "readings before unplugging")
        assert link_states(sub)[-1] == "connected"
        sim.unplug()
        sub.wait_for(lambda s: link_states(s)[-1] in ("disconnected", "unreachable"), 20)
        silent_from = max(r["seq"] for r in sub.readings())
        sim.replug()
        sub.wait_for(lambda s: link_states(s)[-1] == "connected", 30, "the device back")
        sub.wait_for(
            lambda s: len([r for r in s.readings() if r["seq"] > silent_from]) >= 4,
            30,
            "readings after replugging",
        )
        after = [r for r in sub.readings() if r["seq"] > silent_from and r["metric"] == "spo2"]
        assert {r["value"] for r in after} <= {97, 98}
        assert all(r["subject"] == "bed-2" for r in after)
    finally:
        sim.stop()


def test_a_bluetooth_adapter_that_cannot_scan_does_not_stop_the_usb_oximeter(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """BlueZ unreachable (no system D-Bus) with a door sensor configured: the gateway
    keeps running, says why on the page, and the USB oximeter's readings flow."""
    sim = Cms50Simulator(Generation.V46, "normal", link=str(tmp_path / "usb-Contec-if00"))
    sim.start()
    try:
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        devices = (
            f'[[devices]]\nkind = "cms50"\nport = "{sim.path}"\nsubject = "bed-2"\n'
            '[[devices]]\nkind = "bthome"\naddress = "F0:00:00:00:00:10"\nsubject = "room-1"\n'
        )
        config = write_config(tmp_path, mosquitto.port, adapter="bluez", devices=devices)
        no_bus = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no-such-bus'}"}
        gw = gateway_factory(config, no_bus)
        sub.wait_for(lambda s: len(s.readings()) >= 4, 30, "USB oximeter readings")
        sub.wait_for(
            lambda s: [
                p for _, p, _ in s.snapshot("/status") if p["bluetooth"]["state"] == "unavailable"
            ],
            15,
            "the status saying the adapter is unavailable",
        )
        assert gw.proc is not None and gw.proc.poll() is None, "the gateway is still running"
    finally:
        sim.stop()
