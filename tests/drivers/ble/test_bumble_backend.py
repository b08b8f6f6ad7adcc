"""The bumble backend driven through bleak's public API, against the simulated devices
on the virtual radio (HCI over TCP, as a separate simulator process would serve it)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

from drivers.ble import uuids
from drivers.ble.adapter import BleAdapter, open_ble_adapter
from drivers.ble.berrymed import BciStreamDecoder
from drivers.ble.bumble import BumbleRadio
from drivers.ble.hts import parse_temperature_measurement
from drivers.ble.plx import parse_plx_continuous
from drivers.kinds import classify_advertisement
from drivers.measurement import Metric
from firmware_sim.ble_main import SimulatedWard
from firmware_sim.devices import (
    berrymed_oximeter,
    health_thermometer,
    pc60fw_oximeter,
    plx_oximeter,
)

THERMOMETER = health_thermometer.DEFAULT_ADDRESS
OXIMETER = plx_oximeter.DEFAULT_ADDRESS
BERRYMED = berrymed_oximeter.DEFAULT_ADDRESS
PC60FW = pc60fw_oximeter.DEFAULT_ADDRESS
CCCD = "00002902-0000-1000-8000-00805f9b34fb"
CLIENT_SUPPORTED_FEATURES = "00002b29-0000-1000-8000-00805f9b34fb"
WAIT = 10.0  # generous: the machine is shared
REPO = Path(__file__).resolve().parents[3]


@pytest_asyncio.fixture
async def ward() -> AsyncIterator[SimulatedWard]:
    async with SimulatedWard(speed=5) as ward:
        yield ward


@pytest_asyncio.fixture
async def adapter(ward: SimulatedWard) -> AsyncIterator[BleAdapter]:
    async with open_ble_adapter(f"bumble:{ward.hci_spec}") as adapter:
        yield adapter


async def scan_until(
    adapter: BleAdapter, addresses: set[str], *, times: int = 1, **scanner_args: Any
) -> dict[str, list[tuple[BLEDevice, AdvertisementData]]]:
    """Every report the scanner gives until each address was reported `times` times."""
    reports: dict[str, list[tuple[BLEDevice, AdvertisementData]]] = {}
    done = asyncio.Event()

    def on_report(device: BLEDevice, advertisement: AdvertisementData) -> None:
        reports.setdefault(device.address, []).append((device, advertisement))
        if all(len(reports.get(a, [])) >= times for a in addresses):
            done.set()

    async with BleakScanner(on_report, **scanner_args, **adapter.scanner_kwargs()):
        await asyncio.wait_for(done.wait(), WAIT)
    return reports


async def next_value(queue: asyncio.Queue[bytes]) -> bytes:
    return await asyncio.wait_for(queue.get(), WAIT)


@pytest.mark.asyncio
async def test_active_scan_reports_names_and_service_uuids_without_fake_scan_responses(
    adapter: BleAdapter,
) -> None:
    reports = await scan_until(adapter, {THERMOMETER, OXIMETER}, times=3)

    device, advertisement = reports[OXIMETER][-1]
    assert device.name == advertisement.local_name == "Sim Oximeter"
    assert advertisement.service_uuids == [uuids.PULSE_OXIMETER_SERVICE]
    assert advertisement.rssi == -50
    _, advertisement = reports[THERMOMETER][-1]
    assert advertisement.local_name == "Sim Thermometer"
    assert advertisement.service_uuids == [uuids.HEALTH_THERMOMETER_SERVICE]
    # The virtual controller repeats each advertisement as a scan response (pitfall 3).
    everything = [adv for device_reports in reports.values() for _, adv in device_reports]
    assert not any(adv.platform_data[0].is_scan_response for adv in everything)


@pytest.mark.asyncio
async def test_passive_scan_with_a_service_filter_reports_only_matching_devices(
    adapter: BleAdapter,
) -> None:
    reports = await scan_until(
        adapter,
        {OXIMETER},
        times=5,
        service_uuids=[uuids.PULSE_OXIMETER_SERVICE],
        scanning_mode="passive",
    )

    assert set(reports) == {OXIMETER}


@pytest.mark.asyncio
async def test_connect_exchanges_mtu_discovers_services_and_reads(adapter: BleAdapter) -> None:
    device = (await scan_until(adapter, {OXIMETER}))[OXIMETER][0][0]

    async with BleakClient(device, timeout=WAIT, **adapter.client_kwargs()) as client:
        assert client.mtu_size > 23
        service = client.services.get_service(uuids.PULSE_OXIMETER_SERVICE)
        assert service is not None
        continuous = service.get_characteristic(uuids.PLX_CONTINUOUS_MEASUREMENT)
        assert continuous is not None and continuous.properties == ["notify"]
        assert await client.read_gatt_char(uuids.MANUFACTURER_NAME) == b"Bedside Sim"
        # Measurement status, device & sensor status and PAI; "validated"; "unconnected".
        assert await client.read_gatt_char(uuids.PLX_FEATURES) == bytes.fromhex("43008000000800")


@pytest.mark.asyncio
async def test_write_with_response_is_read_back(adapter: BleAdapter) -> None:
    async with BleakClient(OXIMETER, timeout=WAIT, **adapter.client_kwargs()) as client:
        await client.write_gatt_char(CLIENT_SUPPORTED_FEATURES, b"\x01", response=True)

        assert await client.read_gatt_char(CLIENT_SUPPORTED_FEATURES) == b"\x01"


@pytest.mark.asyncio
async def test_notifications_arrive_until_stop_notify_clears_the_cccd(adapter: BleAdapter) -> None:
    values: asyncio.Queue[bytes] = asyncio.Queue()
    async with BleakClient(OXIMETER, timeout=WAIT, **adapter.client_kwargs()) as client:
        characteristic = client.services.get_characteristic(uuids.PLX_CONTINUOUS_MEASUREMENT)
        assert characteristic is not None
        cccd = characteristic.get_descriptor(CCCD)
        assert cccd is not None

        await client.start_notify(characteristic, lambda _c, data: values.put_nowait(bytes(data)))
        spo2 = parse_plx_continuous(await next_value(values))[0]
        assert await client.read_gatt_descriptor(cccd) == b"\x01\x00"
        await client.stop_notify(characteristic)

        assert spo2.metric is Metric.SPO2 and spo2.value in (97, 98)
        assert await client.read_gatt_descriptor(cccd) == b"\x00\x00"


@pytest.mark.asyncio
async def test_indications_arrive_from_the_thermometer(adapter: BleAdapter) -> None:
    values: asyncio.Queue[bytes] = asyncio.Queue()
    async with BleakClient(THERMOMETER, timeout=WAIT, **adapter.client_kwargs()) as client:
        await client.start_notify(
            uuids.TEMPERATURE_MEASUREMENT, lambda _c, data: values.put_nowait(bytes(data))
        )
        temperature = parse_temperature_measurement(await next_value(values))[0]
        characteristic = client.services.get_characteristic(uuids.TEMPERATURE_MEASUREMENT)
        assert characteristic is not None
        cccd = characteristic.get_descriptor(CCCD)
        assert cccd is not None
        assert await client.read_gatt_descriptor(cccd) == b"\x02\x00"

    assert temperature.value in (36.6, 36.7)
    assert temperature.unit == "Cel"
    assert temperature.measured_at is not None


@pytest.mark.asyncio
async def test_parallel_connects_through_one_radio_all_succeed(adapter: BleAdapter) -> None:
    clients = [
        BleakClient(a, timeout=WAIT, **adapter.client_kwargs()) for a in (THERMOMETER, OXIMETER)
    ]

    await asyncio.gather(*(client.connect() for client in clients))
    try:
        models = [await c.read_gatt_char(uuids.MODEL_NUMBER) for c in clients]
    finally:
        await asyncio.gather(*(client.disconnect() for client in clients))

    assert models == [b"SIM-HTS-1", b"SIM-PLX-1"]


@pytest.mark.asyncio
async def test_link_drop_calls_back_connect_to_an_absent_device_times_out_then_reconnects() -> None:
    # Out of range from scenario second 5 to 15: real seconds 1.25 to 3.75 at speed 4.
    async with (
        SimulatedWard(scenario="drop_and_return", speed=4) as ward,
        open_ble_adapter(f"bumble:{ward.hci_spec}") as adapter,
    ):
        device = (await scan_until(adapter, {OXIMETER}))[OXIMETER][0][0]
        dropped = asyncio.Event()
        client = BleakClient(
            device, lambda _c: dropped.set(), timeout=WAIT, **adapter.client_kwargs()
        )
        await client.connect()
        await asyncio.wait_for(dropped.wait(), WAIT)
        assert not client.is_connected

        # The controller must give up on the absent device (pitfall 1)...
        with pytest.raises(TimeoutError):
            await BleakClient(device, timeout=0.5, **adapter.client_kwargs()).connect()

        # ...and connect again once it is back.
        async with BleakClient(device, timeout=WAIT, **adapter.client_kwargs()) as client:
            assert await client.read_gatt_char(uuids.MODEL_NUMBER) == b"SIM-PLX-1"


@pytest.mark.asyncio
async def test_a_gateway_that_vanished_leaves_no_stale_link(ward: SimulatedWard) -> None:
    crashed = BumbleRadio(ward.hci_spec)
    await crashed.start()
    client = BleakClient(OXIMETER, timeout=WAIT, backend=crashed.client_backend)
    await client.connect()
    await crashed.stop()  # the TCP connection closes without any HCI Disconnect (pitfall 6)

    async with (
        BumbleRadio(ward.hci_spec) as radio,
        BleakClient(OXIMETER, timeout=WAIT, backend=radio.client_backend) as client,
    ):
        assert await client.read_gatt_char(uuids.MODEL_NUMBER) == b"SIM-PLX-1"


@pytest.mark.asyncio
async def test_streaming_oximeters_advertise_like_theirs_and_straddle_notifications() -> None:
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    async with (
        SimulatedWard(
            devices={"hts": None, "plx": None, "berrymed": BERRYMED, "pc60fw": PC60FW}
        ) as ward,
        open_ble_adapter(f"bumble:{ward.hci_spec}") as adapter,
    ):
        reports = await scan_until(adapter, {BERRYMED, PC60FW})
        async with BleakClient(BERRYMED, timeout=WAIT, **adapter.client_kwargs()) as client:
            await client.start_notify(
                uuids.BERRYMED_NOTIFY, lambda _c, data: chunks.put_nowait(bytes(data))
            )
            notifications = [await next_value(chunks) for _ in range(10)]

    berrymed, pc60fw = reports[BERRYMED][0][1], reports[PC60FW][0][1]
    assert (berrymed.local_name, berrymed.service_uuids) == ("BerryMed", [uuids.BERRYMED_SERVICE])
    assert (pc60fw.local_name, pc60fw.service_uuids) == ("PC-60F_SN000004", [])
    for advertisement, kind in ((berrymed, "berrymed"), (pc60fw, "pc60fw")):
        assert (
            classify_advertisement(
                advertisement.local_name, advertisement.service_uuids, advertisement.service_data
            )
            == kind
        )
    # 18-byte notifications of 5-byte packets: most packets straddle two notifications.
    assert {len(n) for n in notifications} == {18}
    assert any(not n[0] & 0x80 for n in notifications)
    stream = b"".join(notifications)
    start = next(i for i, byte in enumerate(stream) if byte & 0x80)
    decoder = BciStreamDecoder()
    samples = decoder.feed(stream[start:])
    assert decoder.garbage_bytes == 0 and len(samples) == (len(stream) - start) // 5
    assert {m.value for s in samples for m in s.measurements} <= {97, 98, 72, 73}


@pytest.mark.asyncio
async def test_the_simulator_command_serves_every_device_its_banner_names() -> None:
    simulator = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "firmware_sim", "ble", "--hci", "tcp-server:127.0.0.1:0"),
        *("--berrymed", "--pc60fw", "--door", "bthome", "--door", "mibeacon"),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert simulator.stdout is not None
        async with asyncio.timeout(WAIT):
            banner = (await simulator.stdout.readline()).decode().split()
        fields = [field.split("=", 1) for field in banner]
        named = {key: value for key, value in fields if key != "door"}
        doors = [value.split(":", 1) for key, value in fields if key == "door"]
        addresses = {named[key] for key in ("hts", "plx", "berrymed", "pc60fw")}
        addresses |= {rest[:17] for _kind, rest in doors}
        async with open_ble_adapter(f"bumble:{named['hci']}") as adapter:
            reports = await scan_until(adapter, addresses)
    finally:
        simulator.terminate()
        await simulator.wait()

    assert set(reports) == addresses and len(addresses) == 6
    assert [kind for kind, _rest in doors] == ["bthome", "mibeacon"]
    assert named["scenario"] == "normal" and simulator.returncode == 0


@pytest.mark.parametrize(
    "spec", ["", "bluetooth", "bluez:", "bluez:eth0", "bumble", "bumble:", "BLUEZ"]
)
def test_a_bad_adapter_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="bluez"):
        open_ble_adapter(spec)


def test_bluez_specs_leave_bleak_on_its_default_backend() -> None:
    default, named = open_ble_adapter("bluez"), open_ble_adapter("bluez:hci1")

    assert default.scanner_backend is None and default.client_backend is None
    assert default.scanner_kwargs() == default.client_kwargs() == {}
    assert named.client_kwargs() == {"bluez": {"adapter": "hci1"}}


def test_a_bumble_spec_gives_backend_classes_bound_to_one_radio() -> None:
    adapter = open_ble_adapter("bumble:usb:0")

    assert adapter.scanner_backend is not None and adapter.client_backend is not None
    assert issubclass(adapter.scanner_backend, BaseBleakScanner)
    assert issubclass(adapter.client_backend, BaseBleakClient)
    assert adapter.client_kwargs() == {"backend": adapter.client_backend}
