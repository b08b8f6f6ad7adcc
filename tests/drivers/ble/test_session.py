"""GattSession against the simulated thermometer and PLX oximeter: what the gateway hears,
and how sessions share the adapter's connection slots."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakScanner

from drivers.ble.adapter import open_ble_adapter
from drivers.ble.gatt_profiles import HEALTH_THERMOMETER, SiteSource
from drivers.ble.hts import parse_temperature_type
from drivers.errors import MalformedPacket
from drivers.listener import LinkState
from drivers.measurement import Measurement, Metric, Quality, Site
from firmware_sim.devices import health_thermometer, plx_oximeter
from firmware_sim.devices.plx_oximeter import PlxOximeter
from tests.drivers.ble.gatt_bench import Bench, bench
from tests.drivers.recording_listener import WAIT_S

THERMOMETER = health_thermometer.DEFAULT_ADDRESS
OXIMETER = plx_oximeter.DEFAULT_ADDRESS
ABSENT = "F0:00:00:00:00:99"
OTHER_ABSENT = "F0:00:00:00:00:98"
REPO = Path(__file__).resolve().parents[3]


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


#: Measurement Interval (0x2A21): a characteristic the simulated thermometer lacks.
MEASUREMENT_INTERVAL = "00002a21-0000-1000-8000-00805f9b34fb"


@pytest.mark.asyncio
async def test_the_configured_site_applies_when_the_device_names_none() -> None:
    # As for a device without the characteristic the profile takes the site from.
    profile = dataclasses.replace(
        HEALTH_THERMOMETER, site=SiteSource(MEASUREMENT_INTERVAL, parse_temperature_type)
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
            OXIMETER, timeout=WAIT_S, **b.adapter.scanner_kwargs()
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
        async with asyncio.timeout(WAIT_S):
            ready = (await simulator.stdout.readline()).decode()
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


@pytest.mark.asyncio
async def test_spot_checks_carry_the_device_time_stamp_and_every_field() -> None:
    async with bench(speed=5, spot_check_interval=2) as b:

        def spot_checks() -> list[Measurement]:
            return [m for m in b.recorder.measurements(OXIMETER) if m.measured_at is not None]

        await b.start(OXIMETER)
        await b.recorder.wait_for(lambda: len(spot_checks()) >= 3, "a spot-check")

    spo2, pulse, perfusion = spot_checks()[:3]
    assert [m.metric for m in (spo2, pulse, perfusion)] == [
        Metric.SPO2,
        Metric.PULSE_RATE,
        Metric.PERFUSION_INDEX,
    ]
    assert spo2.value in (97, 98) and pulse.value in (72, 73) and perfusion.value == 4.5
    assert spo2.quality == frozenset({Quality.SPOT_CHECK})  # "validated", nothing else
    assert spo2.measured_at is not None
    assert abs((datetime.now() - spo2.measured_at).total_seconds()) < 60
    assert any(m.measured_at is None for m in b.recorder.measurements(OXIMETER, Metric.SPO2))


@pytest.mark.asyncio
async def test_plx_features_are_read_once_and_reported_with_the_identity() -> None:
    # Out of range from scenario second 5 to 15: the session connects twice.
    async with bench(scenario="drop_and_return", speed=4, spot_check_interval=5) as b:

        def measured_after_reconnecting() -> bool:
            kinds = [
                value[0] if kind == "state" else kind
                for kind, address, value in b.recorder.events
                if address == OXIMETER
            ]
            connects = [i for i, kind in enumerate(kinds) if kind is LinkState.CONNECTED]
            return len(connects) == 2 and "measurements" in kinds[connects[1] :]

        session = await b.start(OXIMETER)
        await b.recorder.wait_for(measured_after_reconnecting, "readings after reconnecting")
        assert b.ward is not None
        device = b.ward.device(OXIMETER)
        assert isinstance(device, PlxOximeter) and device.features_reads == 1

    [info] = b.recorder.of("info", OXIMETER)
    assert info["model"] == "SIM-PLX-1"
    assert info["plx_features"] == (
        "measurement_status, device_sensor_status, spot_check_timestamp, pulse_amplitude_index"
    )
    assert info["plx_status_support"] == "validated, sensor_unconnected"
    assert session.device_info == info


@pytest.mark.asyncio
async def test_intermediate_temperatures_are_shown_live_and_never_kept() -> None:
    async with bench(speed=5, interval=1, intermediate=2) as b:
        await b.start(THERMOMETER, HEALTH_THERMOMETER)
        await b.recorder.wait_for(
            lambda: len(b.recorder.measurements(THERMOMETER, Metric.BODY_TEMPERATURE)) >= 2,
            "two final temperatures",
        )

    finals = b.recorder.measurements(THERMOMETER, Metric.BODY_TEMPERATURE)
    live = b.recorder.measurements(THERMOMETER, kind="live")
    assert len(live) >= 2
    assert all(Quality.INTERMEDIATE in m.quality and not m.alertable for m in live)
    assert all(m.site is Site.AXILLARY and m.value < 36.7 for m in live)
    assert all(m.quality == frozenset() and m.value in (36.6, 36.7) for m in finals)
    # Two settling values before each final one: "LLF" over and over.
    sequence = "".join(
        "L" if kind == "live" else "F"
        for kind, address, batch in b.recorder.events
        if address == THERMOMETER and kind in ("live", "measurements")
        if batch[0].metric is Metric.BODY_TEMPERATURE
    )
    assert sequence.split("F")[1:-1] == ["LL"] * (len(finals) - 1), sequence


@pytest.mark.asyncio
async def test_with_one_connection_slot_a_second_device_waits_for_the_first_to_stop() -> None:
    async with bench(max_connections=1, speed=5, interval=1) as b:
        oximeter = await b.start(OXIMETER)
        await b.recorder.wait_for(lambda: b.recorder.measurements(OXIMETER), "oximetry")
        await b.start(THERMOMETER, HEALTH_THERMOMETER)
        detail = await b.recorder.wait_state(LinkState.UNREACHABLE, address=THERMOMETER)
        assert detail == "waiting for a free connection slot"
        await b.recorder.wait_new("measurements", 5, OXIMETER, "more oximetry")
        assert b.recorder.states(THERMOMETER) == [LinkState.UNREACHABLE]

        await oximeter.stop()
        await b.recorder.wait_for(
            lambda: b.recorder.measurements(THERMOMETER, Metric.BODY_TEMPERATURE), "temperature"
        )

    assert b.recorder.states(THERMOMETER)[:3] == [
        LinkState.UNREACHABLE,
        LinkState.CONNECTING,
        LinkState.CONNECTED,
    ]
