"""The adapter watchdog's escalation, on an injected clock, and what it hears through
the listener it puts in front of the gateway's; a bumble radio's power cycle. (BlueZ's
power cycle and the watchdog in the gateway's sessions: test_bluez_dbusmock.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from bleak import BleakScanner

from drivers.ble.adapter import open_ble_adapter
from drivers.ble.watchdog import AdapterWatchdog
from drivers.errors import MalformedPacket
from drivers.listener import AdapterState, LinkState, SessionListener
from drivers.measurement import Measurement, Metric
from firmware_sim.ble_main import SimulatedWard
from firmware_sim.devices import health_thermometer
from gateway.contract.models import Bluetooth
from tests.drivers.recording_listener import WAIT_S, RecordingListener

SILENCE = 300.0
DEVICE = "F0:00:00:00:00:01"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Bench:
    """A watchdog whose steps are recorded, and may be told to fail."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.steps: list[str] = []
        self.failure: Exception | None = None
        self.scanner_heard_at: float | None = None
        self.watchdog = AdapterWatchdog(
            SILENCE,
            lambda: self._step("restart scan"),
            lambda: self._step("power cycle"),
            scanner_heard_at=lambda: self.scanner_heard_at,
            clock=self.clock,
        )

    async def _step(self, name: str) -> None:
        self.steps.append(name)
        if self.failure is not None:
            raise self.failure

    async def at(self, seconds: float) -> AdapterState:
        """Check at `seconds` after the start; the state after the check."""
        self.clock.now = 1000.0 + seconds
        await self.watchdog.check()
        return self.watchdog.state


@pytest.mark.asyncio
async def test_silence_restarts_scanning_then_power_cycles_then_starts_over() -> None:
    bench = Bench()

    assert await bench.at(SILENCE - 1) is AdapterState.UP
    assert bench.steps == []
    assert await bench.at(SILENCE) is AdapterState.RESTARTING_SCAN
    assert await bench.at(2 * SILENCE - 1) is AdapterState.RESTARTING_SCAN
    assert await bench.at(2 * SILENCE) is AdapterState.POWER_CYCLING
    assert await bench.at(3 * SILENCE) is AdapterState.RESTARTING_SCAN
    assert await bench.at(4 * SILENCE) is AdapterState.POWER_CYCLING
    assert bench.steps == ["restart scan", "power cycle"] * 2

    health = bench.watchdog.health()
    assert health["state"] == "power-cycling" and health["error"] == ""
    assert health["last_action"] == "power cycle" and health["last_action_at"] is not None
    assert (health["scan_restarts"], health["power_cycles"]) == (2, 2)
    # The status message's contract, for its `bluetooth` part.
    Bluetooth.model_validate_json(json.dumps({"adapter": "bluez", **health}), strict=True)


@pytest.mark.asyncio
async def test_a_device_heard_puts_the_next_step_off_and_the_adapter_back_up() -> None:
    bench = Bench()
    bench.clock.now += 200
    bench.watchdog.heard()

    assert await bench.at(SILENCE) is AdapterState.UP
    assert await bench.at(200 + SILENCE) is AdapterState.RESTARTING_SCAN

    bench.clock.now += 5
    bench.watchdog.heard()
    assert bench.watchdog.state is AdapterState.UP
    assert await bench.at(200 + 2 * SILENCE) is AdapterState.UP
    assert bench.steps == ["restart scan"]


@pytest.mark.asyncio
async def test_a_link_that_is_up_is_proof_of_a_working_adapter_however_quiet() -> None:
    bench = Bench()
    bench.watchdog.link_changed(DEVICE, up=True)

    assert await bench.at(10 * SILENCE) is AdapterState.UP
    bench.watchdog.link_changed(DEVICE, up=False)
    assert await bench.at(11 * SILENCE - 1) is AdapterState.UP
    assert await bench.at(11 * SILENCE) is AdapterState.RESTARTING_SCAN


@pytest.mark.asyncio
async def test_advertisements_of_unbound_devices_count_as_heard() -> None:
    bench = Bench()
    bench.scanner_heard_at = 1000.0 + 250

    assert await bench.at(SILENCE) is AdapterState.UP
    assert await bench.at(250 + SILENCE) is AdapterState.RESTARTING_SCAN


@pytest.mark.asyncio
async def test_a_failed_step_leaves_the_adapter_unavailable_and_power_cycling_is_retried() -> None:
    bench = Bench()
    await bench.at(SILENCE)
    bench.failure = OSError("no such device")

    assert await bench.at(2 * SILENCE) is AdapterState.UNAVAILABLE
    assert bench.watchdog.health()["error"] == "power cycle failed: no such device"
    bench.failure = None
    assert await bench.at(3 * SILENCE) is AdapterState.POWER_CYCLING
    assert bench.steps == ["restart scan", "power cycle", "power cycle"]
    assert bench.watchdog.health()["error"] == ""

    bench.watchdog.heard()
    assert bench.watchdog.state is AdapterState.UP


@pytest.mark.asyncio
async def test_a_step_that_hangs_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("drivers.ble.watchdog._STEP_TIMEOUT_S", 0.05)
    never = asyncio.Event()
    watchdog = AdapterWatchdog(0.0, never.wait, never.wait, clock=Clock())

    await watchdog.check()

    assert watchdog.state is AdapterState.UNAVAILABLE
    assert watchdog.error == "restart scan failed: TimeoutError"


@pytest.mark.asyncio
async def test_the_watch_runs_by_itself_until_stopped() -> None:
    restarted = asyncio.Event()

    async def restart() -> None:
        restarted.set()

    watchdog = AdapterWatchdog(0.1, restart, restart)
    await watchdog.start()
    try:
        async with asyncio.timeout(5):
            await restarted.wait()
    finally:
        await watchdog.stop()
    assert watchdog.scan_restarts >= 1


def test_the_listener_passes_every_report_on() -> None:
    recorder = RecordingListener()
    listener = Bench().watchdog.listener(recorder, links=True)
    reading = [Measurement(Metric.BODY_TEMPERATURE, 37.4)]

    listener.on_signal(DEVICE, -60)
    listener.on_measurements(DEVICE, reading)
    listener.on_live(DEVICE, reading)
    listener.on_device_info(DEVICE, {"model": "X"})
    error = MalformedPacket("short")
    listener.on_refused(DEVICE, error, b"\x00")
    listener.on_link_state(DEVICE, LinkState.DISCONNECTED, "link lost")

    assert recorder.events == [
        ("signal", DEVICE, -60),
        ("measurements", DEVICE, reading),
        ("live", DEVICE, reading),
        ("info", DEVICE, {"model": "X"}),
        ("malformed", DEVICE, (error, b"\x00")),
        ("state", DEVICE, (LinkState.DISCONNECTED, "link lost")),
    ]


REPORTS: dict[str, Callable[[SessionListener], None]] = {
    "signal": lambda listener: listener.on_signal(DEVICE, None),
    "measurements": lambda listener: listener.on_measurements(DEVICE, []),
    "live": lambda listener: listener.on_live(DEVICE, []),
    "info": lambda listener: listener.on_device_info(DEVICE, {}),
    "malformed": lambda listener: listener.on_refused(DEVICE, MalformedPacket("?"), b""),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("report", REPORTS.values(), ids=REPORTS.keys())
async def test_every_report_of_a_device_counts_as_heard(
    report: Callable[[SessionListener], None],
) -> None:
    bench = Bench()
    bench.clock.now += 100
    report(bench.watchdog.listener(RecordingListener(), links=False))

    assert await bench.at(SILENCE) is AdapterState.UP
    assert await bench.at(100 + SILENCE) is AdapterState.RESTARTING_SCAN


@pytest.mark.asyncio
async def test_only_gatt_sessions_hold_the_watchdog_off_with_a_link() -> None:
    bench = Bench()
    recorder = RecordingListener()
    # The advertisement listener reports a sensor heard once as CONNECTED for good.
    bench.watchdog.listener(recorder, links=False).on_link_state(DEVICE, LinkState.CONNECTED)
    assert await bench.at(SILENCE) is AdapterState.RESTARTING_SCAN

    bench.watchdog.listener(recorder, links=True).on_link_state(DEVICE, LinkState.CONNECTED)
    assert await bench.at(3 * SILENCE) is AdapterState.UP


@pytest.mark.asyncio
async def test_a_bumble_radio_is_power_cycled_by_reopening_it() -> None:
    async with (
        SimulatedWard() as ward,
        open_ble_adapter(f"bumble:{ward.hci_spec}") as adapter,
    ):
        radio = adapter.scanner_backend.radio
        before = radio.device
        await adapter.power_cycle()
        assert radio.device is not before
        found = await BleakScanner.find_device_by_address(
            health_thermometer.DEFAULT_ADDRESS, timeout=WAIT_S, **adapter.scanner_kwargs()
        )

    assert found is not None
