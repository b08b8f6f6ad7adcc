"""GattSession against the simulated streaming oximeters (BerryMed BCI, PC-60FW), through
bleak and bumble: byte streams cut across notifications, stray bytes, sentinels, one
reading per second per metric, and a polled battery."""

from __future__ import annotations

import asyncio
import re

import pytest

from drivers.ble.berrymed import decode_bci_packet
from drivers.ble.gatt_profiles import BERRYMED, PC60FW, GattProfile
from drivers.errors import MalformedPacket
from drivers.listener import LinkState
from drivers.measurement import Measurement, Metric
from firmware_sim.devices import berrymed_oximeter, pc60fw_oximeter, plx_oximeter
from firmware_sim.devices.peripheral import StreamingPeripheral
from tests.drivers.ble.gatt_bench import Bench, bench
from tests.drivers.recording_listener import RecordingListener

BERRYMED_ADDRESS = berrymed_oximeter.DEFAULT_ADDRESS
PC60FW_ADDRESS = pc60fw_oximeter.DEFAULT_ADDRESS
OXIMETER = plx_oximeter.DEFAULT_ADDRESS
SUMMARY = re.compile(r"(\w+) stream: (\d+) garbage bytes dropped while resynchronising$")


def oximetry(recorder: RecordingListener, address: str) -> list[list[Measurement]]:
    """The batches of SpO2 and pulse-rate readings, one per reduced second."""
    return [
        batch
        for batch in recorder.of("measurements", address)
        if {m.metric for m in batch} & {Metric.SPO2, Metric.PULSE_RATE}
    ]


async def seconds_of_oximetry(b: Bench, address: str, count: int) -> float:
    """Waits for a first reduced second of oximetry, then for `count` more; returns how
    long those took: at least `count` seconds when reduced, as windows close 1 s apart."""
    await b.recorder.wait_for(lambda: oximetry(b.recorder, address), "oximetry")
    started, seen = asyncio.get_running_loop().time(), len(oximetry(b.recorder, address))
    await b.recorder.wait_for(
        lambda: len(oximetry(b.recorder, address)) >= seen + count, f"{count} more seconds"
    )
    return asyncio.get_running_loop().time() - started


def garbage_reported(recorder: RecordingListener, address: str, stream: str) -> int:
    total = 0
    for error, _raw in recorder.of("malformed", address):
        assert isinstance(error, MalformedPacket)
        match = SUMMARY.match(str(error))
        assert match is not None and match[1] == stream, str(error)
        total += int(match[2])
    return total


def streaming_device(b: Bench, address: str) -> StreamingPeripheral:
    assert b.ward is not None
    device = b.ward.device(address)
    assert isinstance(device, StreamingPeripheral)
    return device


@pytest.mark.asyncio
async def test_a_berrymed_stream_with_stray_bytes_gives_one_clean_reading_per_second() -> None:
    async with bench(
        speed=2, devices={"hts": None, "plx": None, "berrymed": BERRYMED_ADDRESS}, garbage_every=7
    ) as b:
        await b.start(BERRYMED_ADDRESS, BERRYMED)
        elapsed = await seconds_of_oximetry(b, BERRYMED_ADDRESS, 4)
        sent = streaming_device(b, BERRYMED_ADDRESS).garbage_bytes_sent

    batches = oximetry(b.recorder, BERRYMED_ADDRESS)
    # 100 packets a second, each with both values: reduced, one of each per second.
    assert all(sorted(m.metric for m in batch) == ["pulse_rate", "spo2"] for batch in batches)
    assert elapsed > 3.5
    values = [m for batch in batches for m in batch]
    assert {m.value for m in values if m.metric is Metric.SPO2} <= {97, 98}
    assert {m.value for m in values if m.metric is Metric.PULSE_RATE} <= {72, 73}
    assert all(m.quality == frozenset() and m.unit in ("%", "/min") for m in values)
    # Stray bytes every 7 packets, about 28 a second: reported in one summary while
    # connected, one more when the session stopped, never as readings.
    assert 1 <= len(b.recorder.of("malformed", BERRYMED_ADDRESS)) <= 2
    assert 0 < garbage_reported(b.recorder, BERRYMED_ADDRESS, "berrymed") <= sent
    assert b.recorder.states(BERRYMED_ADDRESS)[-1] is LinkState.DISCONNECTED


@pytest.mark.asyncio
async def test_a_pc60fw_stream_gives_spo2_pulse_perfusion_and_battery() -> None:
    # Battery frames come every 10 scenario seconds: every 2 s at this speed.
    async with bench(
        speed=5, devices={"hts": None, "plx": None, "pc60fw": PC60FW_ADDRESS}, garbage_every=5
    ) as b:
        await b.start(PC60FW_ADDRESS, PC60FW)
        elapsed = await seconds_of_oximetry(b, PC60FW_ADDRESS, 3)
        await b.recorder.wait_for(
            lambda: b.recorder.measurements(PC60FW_ADDRESS, Metric.BATTERY), "battery"
        )

    by_metric: dict[Metric, set[float | bool]] = {}
    for m in b.recorder.measurements(PC60FW_ADDRESS):
        assert m.quality == frozenset()
        by_metric.setdefault(m.metric, set()).add(m.value)
    assert by_metric[Metric.SPO2] <= {97, 98} and by_metric[Metric.PULSE_RATE] <= {72, 73}
    assert by_metric[Metric.PERFUSION_INDEX] == {4.5}
    assert by_metric[Metric.BATTERY] == {100}  # 3 bars of 3; it has no Battery Service
    batches = oximetry(b.recorder, PC60FW_ADDRESS)
    assert all(len([m for m in batch if m.metric is Metric.SPO2]) == 1 for batch in batches)
    assert elapsed > 2.5  # five readings frames a second at this speed, reduced to one
    assert garbage_reported(b.recorder, PC60FW_ADDRESS, "pc60fw") > 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("address", "profile", "device"),
    [(BERRYMED_ADDRESS, BERRYMED, "berrymed"), (PC60FW_ADDRESS, PC60FW, "pc60fw")],
)
async def test_with_the_probe_off_the_sentinels_never_become_values(
    address: str, profile: GattProfile, device: str
) -> None:
    # The probe comes off at scenario second 3: real second 0.6.
    async with bench(scenario="probe_off", speed=5, devices={device: address}) as b:
        await b.start(address, profile)
        await b.recorder.wait_state(LinkState.CONNECTED, address=address)
        await b.recorder.heard_again(address, times=3)  # about three seconds of stream

        assert b.recorder.last_state(address) is LinkState.CONNECTED
    readings = b.recorder.measurements(address)
    assert {m.value for m in readings if m.metric is Metric.SPO2} <= {97, 98}
    assert {m.value for m in readings if m.metric is Metric.PULSE_RATE} <= {72, 73}
    assert len(oximetry(b.recorder, address)) <= 2  # only from before the probe came off
    assert b.recorder.of("malformed", address) == []


@pytest.mark.asyncio
async def test_stopping_reports_the_part_of_a_second_already_streamed() -> None:
    async with bench(devices={"hts": None, "plx": None, "berrymed": BERRYMED_ADDRESS}) as b:
        session = await b.start(BERRYMED_ADDRESS, BERRYMED)
        await b.recorder.wait_for(lambda: oximetry(b.recorder, BERRYMED_ADDRESS), "oximetry")
        await session.stop()  # just after a second closed

    kinds = [kind for kind, address, _ in b.recorder.events if address == BERRYMED_ADDRESS]
    assert kinds[-1] == "state" and b.recorder.of("state")[-1][1] == "session stopped"
    assert len(oximetry(b.recorder, BERRYMED_ADDRESS)) == 2
    assert kinds[-2] == "measurements"


@pytest.mark.asyncio
async def test_a_battery_level_without_notification_is_polled() -> None:
    async with bench(devices={"hts": None, "plx": None, "berrymed": BERRYMED_ADDRESS}) as b:
        await b.start(BERRYMED_ADDRESS, BERRYMED, battery_poll_s=0.2)
        await b.start(OXIMETER, battery_poll_s=0.2)
        await b.recorder.wait_for(
            lambda: (
                len(b.recorder.measurements(BERRYMED_ADDRESS, Metric.BATTERY)) >= 4
                and b.recorder.measurements(OXIMETER, Metric.BATTERY)
            ),
            "four battery readings",
        )

    assert set(b.recorder.values(BERRYMED_ADDRESS, Metric.BATTERY)) == {95}
    # The PLX oximeter notifies its level when it changes (once a minute): read once.
    assert b.recorder.values(OXIMETER, Metric.BATTERY) == [95]


def test_the_simulated_packets_are_the_documented_bytes() -> None:
    # docs/protocols.md 4.3 and 4.1.
    assert pc60fw_oximeter.readings_frame(96, 62, 80) == bytes.fromhex("AA550F0801603E005000C008")
    assert berrymed_oximeter.PROBE_OFF_PACKET == bytes.fromhex("A000707F7F")
    sample = decode_bci_packet(berrymed_oximeter.bci_packet(96, 140, 60, beep=True))
    assert [(m.metric, m.value) for m in sample.measurements] == [
        (Metric.SPO2, 96),
        (Metric.PULSE_RATE, 140),
    ]
    assert (sample.pleth, sample.bar_graph, sample.signal_strength, sample.beep) == (60, 9, 5, True)
