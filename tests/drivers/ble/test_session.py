"""GattSession against the simulated thermometer and oximeter: what the gateway hears."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakScanner

from drivers.ble import uuids
from drivers.ble.adapter import BleAdapter, open_ble_adapter
from drivers.ble.hts import parse_temperature_type
from drivers.ble.profiles import HEALTH_THERMOMETER, PULSE_OXIMETER, GattProfile, SiteSource
from drivers.ble.session import Backoff, GattSession
from drivers.listener import LinkState
from drivers.measurement import MalformedPacket, Measurement, Metric, Quality, Site
from firmware_sim.ble_main import SimulatedWard
from firmware_sim.devices import health_thermometer, plx_oximeter

THERMOMETER = health_thermometer.DEFAULT_ADDRESS
OXIMETER = plx_oximeter.DEFAULT_ADDRESS
ABSENT = "F0:00:00:00:00:99"
OTHER_ABSENT = "F0:00:00:00:00:98"
WAIT = 15.0  # generous: the machine is shared
REPO = Path(__file__).resolve().parents[3]


class Recorder:
    """A SessionListener that keeps every report, in order: (kind, address, value)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self._changed = asyncio.Event()

    def _record(self, kind: str, address: str, value: Any) -> None:
        self.events.append((kind, address, value))
        self._changed.set()

    def on_measurements(self, address: str, measurements: Sequence[Measurement]) -> None:
        self._record("measurements", address, list(measurements))

    def on_link_state(self, address: str, state: LinkState, detail: str = "") -> None:
        self._record("state", address, (state, detail))

    def on_device_info(self, address: str, info: dict[str, str]) -> None:
        self._record("info", address, info)

    def on_malformed(self, address: str, error: MalformedPacket, raw: bytes) -> None:
        self._record("malformed", address, (error, raw))

    def on_signal(self, address: str, rssi: int | None) -> None:
        self._record("signal", address, rssi)

    def of(self, kind: str, address: str) -> list[Any]:
        return [value for k, a, value in self.events if k == kind and a == address]

    def measurements(self, address: str, metric: Metric) -> list[Measurement]:
        batches = self.of("measurements", address)
        return [m for batch in batches for m in batch if m.metric is metric]

    def states(self, address: str) -> list[LinkState]:
        return [state for state, _ in self.of("state", address)]

    async def wait_for(self, predicate: Callable[[], object], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} within {WAIT} s; last: {self.events[-8:]}") from None


class Bench:
    """Sessions on one adapter, sharing one connect lock and one recorder; stopped on exit."""

    def __init__(self, adapter: BleAdapter) -> None:
        self.adapter = adapter
        self.recorder = Recorder()
        self.lock = asyncio.Lock()
        self.sessions: list[GattSession] = []

    async def start(
        self,
        address: str,
        profile: GattProfile = PULSE_OXIMETER,
        *,
        scan_timeout: float = 0.5,
        configured_site: Site | None = None,
    ) -> GattSession:
        session = GattSession(
            address,
            profile,
            self.adapter,
            self.recorder,
            self.lock,
            configured_site=configured_site,
            scan_timeout=scan_timeout,
            connect_timeout=WAIT,
            backoff=Backoff(base=0.05, maximum=0.2),
        )
        self.sessions.append(session)
        await session.start()
        return session

    async def __aenter__(self) -> Bench:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for session in self.sessions:
            await session.stop()


@contextlib.asynccontextmanager
async def bench(**ward_args: Any) -> AsyncIterator[Bench]:
    """A simulated ward in this process, a bumble adapter on it, and a bench."""
    async with (
        SimulatedWard(**ward_args) as ward,
        open_ble_adapter(f"bumble:{ward.hci_spec}") as adapter,
        Bench(adapter) as test_bench,
    ):
        yield test_bench


@pytest.mark.asyncio
@pytest.mark.parametrize("fahrenheit", [False, True])
async def test_thermometer_readings_carry_the_site_of_its_temperature_type(
    fahrenheit: bool,
) -> None:
    async with bench(speed=5, interval=1, fahrenheit=fahrenheit) as b:
        await b.start(THERMOMETER, HEALTH_THERMOMETER, configured_site=Site.ORAL)
        await b.recorder.wait_for(
            lambda: b.recorder.measurements(THERMOMETER, Metric.BODY_TEMPERATURE), "temperature"
        )

    temperature = b.recorder.measurements(THERMOMETER, Metric.BODY_TEMPERATURE)[0]
    assert temperature.value in (36.6, 36.7)
    assert temperature.unit == "Cel"
    assert temperature.site is Site.AXILLARY  # the device's 0x2A1D wins over the configuration
    assert temperature.measured_at is not None
    assert b.recorder.of("info", THERMOMETER)[0] == {
        "manufacturer": "Bedside Sim",
        "model": "SIM-HTS-1",
        "serial": "F00000000001",
        "firmware": "1.0.0",
    }
    assert b.recorder.measurements(THERMOMETER, Metric.BATTERY)[0].value == 95
    assert b.recorder.states(THERMOMETER)[:2] == [LinkState.CONNECTING, LinkState.CONNECTED]


@pytest.mark.asyncio
async def test_the_configured_site_applies_when_the_device_names_none() -> None:
    # As for a device without the characteristic the profile takes the site from.
    profile = dataclasses.replace(
        HEALTH_THERMOMETER, site=SiteSource(uuids.MEASUREMENT_INTERVAL, parse_temperature_type)
    )
    async with bench(speed=5, interval=1) as b:
        await b.start(THERMOMETER, profile, configured_site=Site.ORAL)
        await b.recorder.wait_for(
            lambda: b.recorder.measurements(THERMOMETER, Metric.BODY_TEMPERATURE), "temperature"
        )

    assert b.recorder.measurements(THERMOMETER, Metric.BODY_TEMPERATURE)[0].site is Site.ORAL


@pytest.mark.asyncio
async def test_oximeter_readings_are_spo2_pulse_and_perfusion() -> None:
    async with bench(speed=5) as b:
        await b.start(OXIMETER)
        await b.recorder.wait_for(
            lambda: b.recorder.measurements(OXIMETER, Metric.PERFUSION_INDEX), "oximetry"
        )

    spo2 = b.recorder.measurements(OXIMETER, Metric.SPO2)[0]
    pulse = b.recorder.measurements(OXIMETER, Metric.PULSE_RATE)[0]
    perfusion = b.recorder.measurements(OXIMETER, Metric.PERFUSION_INDEX)[0]
    assert (spo2.value, spo2.unit, spo2.quality) in {(97, "%", frozenset()), (98, "%", frozenset())}
    assert (pulse.value, pulse.unit) in {(72, "/min"), (73, "/min")}
    assert (perfusion.value, perfusion.unit) == (4.5, "%")


@pytest.mark.asyncio
async def test_probe_off_readings_are_flagged_and_not_alertable() -> None:
    async with bench(scenario="probe_off", speed=5) as b:

        def probe_off() -> list[Measurement]:
            return [m for m in b.recorder.measurements(OXIMETER, Metric.SPO2) if m.value == 85]

        await b.start(OXIMETER)
        await b.recorder.wait_for(probe_off, "reading after the probe came off")

    assert Quality.PROBE_OFF in probe_off()[0].quality
    assert not probe_off()[0].alertable
    assert b.recorder.measurements(OXIMETER, Metric.SPO2)[0].alertable  # before it came off


@pytest.mark.asyncio
async def test_a_device_that_goes_away_is_reported_and_reconnected() -> None:
    # Out of range from scenario second 5 to 15: real seconds 1.25 to 3.75 at speed 4.
    async with bench(scenario="drop_and_return", speed=4) as b:

        def readings_after_reconnecting() -> list[Any]:
            kinds = [
                value[0] if kind == "state" else kind
                for kind, address, value in b.recorder.events
                if address == OXIMETER and kind in ("state", "measurements")
            ]
            if kinds.count(LinkState.CONNECTED) < 2:
                return []
            return kinds[len(kinds) - kinds[::-1].index(LinkState.CONNECTED) :]

        await b.start(OXIMETER)
        await b.recorder.wait_for(readings_after_reconnecting, "readings after reconnecting")

    assert b.recorder.states(OXIMETER)[:6] == [
        LinkState.CONNECTING,
        LinkState.CONNECTED,
        LinkState.DISCONNECTED,
        LinkState.UNREACHABLE,
        LinkState.CONNECTING,
        LinkState.CONNECTED,
    ]


@pytest.mark.asyncio
async def test_an_absent_device_does_not_hold_up_another_session() -> None:
    async with bench(speed=5) as b:
        searching = await b.start(ABSENT, scan_timeout=3600.0)
        retrying = await b.start(OTHER_ABSENT)
        await b.start(OXIMETER)
        await b.recorder.wait_for(
            lambda: b.recorder.measurements(OXIMETER, Metric.SPO2), "oximetry"
        )
        await b.recorder.wait_for(lambda: retrying.state, "the other absent device's report")

        assert searching.state is None  # still looking
        assert retrying.state is LinkState.UNREACHABLE


@pytest.mark.asyncio
async def test_a_malformed_notification_is_reported_and_readings_go_on() -> None:
    async with bench(speed=5, malformed_every=3) as b:

        def readings_after_malformed() -> list[str]:
            kinds = [kind for kind, address, _ in b.recorder.events if address == OXIMETER]
            if "malformed" not in kinds:
                return []
            return [k for k in kinds[kinds.index("malformed") :] if k == "measurements"]

        await b.start(OXIMETER)
        await b.recorder.wait_for(lambda: len(readings_after_malformed()) >= 2, "readings")

    error, raw = b.recorder.of("malformed", OXIMETER)[0]
    assert isinstance(error, MalformedPacket)
    assert "missing" in str(error)
    assert len(raw) == 3


@pytest.mark.asyncio
async def test_stop_disconnects_so_the_device_advertises_again() -> None:
    async with bench(speed=5) as b:
        session = await b.start(OXIMETER)
        await b.recorder.wait_for(
            lambda: b.recorder.measurements(OXIMETER, Metric.SPO2), "oximetry"
        )
        await session.stop()

        assert b.recorder.of("state", OXIMETER)[-1] == (LinkState.DISCONNECTED, "session stopped")
        seen = await BleakScanner.find_device_by_address(
            OXIMETER, timeout=WAIT, **b.adapter.scanner_kwargs()
        )
        assert seen is not None


@pytest.mark.asyncio
async def test_a_simulator_that_dies_is_a_disconnection_then_a_failing_scan() -> None:
    simulator = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "firmware_sim", "ble", "--hci", "tcp-server:127.0.0.1:0"),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert simulator.stdout is not None
        ready = (await asyncio.wait_for(simulator.stdout.readline(), WAIT)).decode()
        hci_spec = dict(field.split("=", 1) for field in ready.split())["hci"]
        async with open_ble_adapter(f"bumble:{hci_spec}") as adapter, Bench(adapter) as b:
            await b.start(OXIMETER)
            await b.recorder.wait_for(
                lambda: b.recorder.measurements(OXIMETER, Metric.SPO2), "oximetry"
            )
            simulator.kill()  # the HCI connection drops under the gateway's feet
            await b.recorder.wait_for(
                lambda: LinkState.UNREACHABLE in b.recorder.states(OXIMETER), "unreachable"
            )
    finally:
        if simulator.returncode is None:
            simulator.kill()
        await simulator.wait()

    assert b.recorder.of("state", OXIMETER)[2:] == [
        (LinkState.DISCONNECTED, "link lost"),
        (LinkState.UNREACHABLE, f"scan failed: bumble radio on {hci_spec} is not running"),
    ]
