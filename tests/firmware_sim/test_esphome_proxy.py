"""The simulated ESPHome Bluetooth proxy against the real client, aioesphomeapi's
`APIClient` (what bleak-esphome drives), over TCP with noise encryption: the proxy's
radio on a virtual link with a simulated oximeter, thermometer and door sensor."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aioesphomeapi import APIClient, BluetoothProxyFeature, InvalidEncryptionKeyAPIError
from aioesphomeapi.core import BluetoothGATTAPIError
from aioesphomeapi.reconnect_logic import ReconnectLogic
from bumble.core import UUID, AdvertisingData

from drivers.ble.bthome import parse_bthome
from drivers.ble.hts import parse_temperature_type
from drivers.ble.plx import PlxFeature, parse_plx_continuous, parse_plx_features
from drivers.ble.uuids import (
    BATTERY_LEVEL,
    HEALTH_THERMOMETER_SERVICE,
    MANUFACTURER_NAME,
    PLX_CONTINUOUS_MEASUREMENT,
    PLX_FEATURES,
    PULSE_OXIMETER_SERVICE,
    TEMPERATURE_TYPE,
)
from drivers.measurement import Metric, Site
from firmware_sim.devices.bthome_door import DEFAULT_KEY
from firmware_sim.esphome.proxy import SimulatedProxy
from gateway.broker import free_port
from tests.esphome_ward import (
    DOOR,
    OXIMETER,
    THERMOMETER,
    WAIT_S,
    mac_number,
    new_key,
    until,
    ward,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass(eq=False)  # hashable: aioesphomeapi keeps its callbacks in a set
class Heard:
    """What a client received: every raw advertisement, as decoded by aioesphomeapi."""

    adverts: list[Any] = field(default_factory=list)

    def __call__(self, response: Any) -> None:
        self.adverts.extend(response.advertisements)

    def of(self, address: str) -> list[Any]:
        return [a for a in self.adverts if a.address == mac_number(address)]

    def door_states(self) -> list[bool]:
        """The door sensor's states, decrypted by the gateway's own BTHome parser."""
        states = []
        for advert in self.of(DOOR):
            for ad_type, value in AdvertisingData.from_bytes(advert.data).ad_structures:
                if ad_type == AdvertisingData.Type.SERVICE_DATA_16_BIT_UUID:
                    packet = parse_bthome(value[2:], key=DEFAULT_KEY, mac=DOOR)
                    states += [
                        bool(m.value) for m in packet.measurements if m.metric is Metric.DOOR_OPEN
                    ]
        return states


@asynccontextmanager
async def client(port: int, key: str) -> AsyncIterator[APIClient]:
    cli = APIClient("127.0.0.1", port, None, noise_psk=key, client_info="test")
    await cli.connect(login=False)
    try:
        yield cli
    finally:
        await cli.disconnect()


@pytest.mark.asyncio
async def test_a_client_with_the_key_reads_the_proxy_and_hears_the_ward() -> None:
    async with (
        ward() as w,
        SimulatedProxy(
            noise_key=(key := new_key()),
            hci_spec=w.hci_spec,
            name="ward-3-proxy",
            mac="A4:CF:12:00:00:03",
            port=0,
            rssi=-70,
            rssi_for={OXIMETER: -55},
            slots=2,
        ) as proxy,
        client(proxy.port, key) as cli,
    ):
        info = await cli.device_info()
        assert (info.name, info.mac_address, info.bluetooth_mac_address) == (
            "ward-3-proxy",
            "A4:CF:12:00:00:03",
            "A4:CF:12:00:00:03",
        )
        assert cli.api_version is not None
        flags = info.bluetooth_proxy_feature_flags_compat(cli.api_version)
        assert flags & BluetoothProxyFeature.RAW_ADVERTISEMENTS
        assert flags & BluetoothProxyFeature.PASSIVE_SCAN

        slots: list[tuple[int, int, list[int]]] = []
        cli.subscribe_bluetooth_connections_free(lambda *update: slots.append(update))
        heard = Heard()
        cli.subscribe_bluetooth_le_raw_advertisements(heard)
        await until(lambda: heard.of(OXIMETER) and heard.door_states(), "both devices heard")
        assert slots == [(2, 2, [])]

        oximeter = heard.of(OXIMETER)[0]
        assert (oximeter.rssi, oximeter.address_type) == (-55, 1)  # random static
        uuids = AdvertisingData.from_bytes(oximeter.data).get(
            AdvertisingData.Type.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS
        )
        assert uuids == [UUID(PULSE_OXIMETER_SERVICE)]
        assert {a.rssi for a in heard.of(DOOR)} == {-70}

        assert set(heard.door_states()) == {False}
        await w.door.open()
        await until(lambda: True in heard.door_states(), "the door opening relayed")


@pytest.mark.asyncio
async def test_a_wrong_key_is_refused_clearly_and_the_proxy_serves_on() -> None:
    async with (
        ward() as w,
        SimulatedProxy(noise_key=(key := new_key()), hci_spec=w.hci_spec, port=0) as proxy,
        client(proxy.port, key) as good,
    ):
        heard = Heard()
        good.subscribe_bluetooth_le_raw_advertisements(heard)
        await until(lambda: heard.of(DOOR), "the door heard")

        intruder = APIClient("127.0.0.1", proxy.port, None, noise_psk=new_key())
        with pytest.raises(InvalidEncryptionKeyAPIError, match="Invalid encryption key"):
            await intruder.connect(login=False)
        assert proxy.refused == 1

        await w.door.open()
        await until(lambda: True in heard.door_states(), "the first client still served")
        async with client(proxy.port, key) as another:
            assert (await another.device_info()).name == "ward-proxy"


@pytest.mark.asyncio
async def test_two_proxies_hear_one_oximeter_at_their_own_strengths() -> None:
    async with (
        ward() as w,
        SimulatedProxy(
            noise_key=(key := new_key()), hci_spec=w.hci_spec, port=0, rssi_for={OXIMETER: -48}
        ) as near,
        SimulatedProxy(
            noise_key=key,
            hci_spec=w.hci_spec,
            name="far-proxy",
            mac="A4:CF:12:00:00:02",
            port=0,
            rssi_for={OXIMETER: -85},
        ) as far,
        client(near.port, key) as near_client,
        client(far.port, key) as far_client,
    ):
        heard_near, heard_far = Heard(), Heard()
        near_client.subscribe_bluetooth_le_raw_advertisements(heard_near)
        far_client.subscribe_bluetooth_le_raw_advertisements(heard_far)
        await until(lambda: heard_near.of(OXIMETER) and heard_far.of(OXIMETER), "both hear it")
        assert {a.rssi for a in heard_near.of(OXIMETER)} == {-48}
        assert {a.rssi for a in heard_far.of(OXIMETER)} == {-85}
        assert heard_near.of(OXIMETER)[0].data == heard_far.of(OXIMETER)[0].data


async def start_proxy_process(hci_spec: str, port: int, key: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "firmware_sim", "esphome-proxy", "--port", str(port)),
        *("--noise-key", key, "--hci", hci_spec, "--name", "bed-proxy"),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    async with asyncio.timeout(WAIT_S):
        banner = (await process.stdout.readline()).decode()
    assert f"esphome-proxy=127.0.0.1:{port} name=bed-proxy" in banner, banner
    return process


@pytest.mark.asyncio
async def test_a_client_reconnects_to_a_proxy_killed_and_started_again() -> None:
    key, port = new_key(), free_port()
    async with ward() as w:
        proxy = await start_proxy_process(w.hci_spec, port, key)
        cli = APIClient("127.0.0.1", port, None, noise_psk=key, client_info="test")
        connects: list[Heard] = []
        disconnects: list[bool] = []

        async def on_connect() -> None:
            heard = Heard()
            cli.subscribe_bluetooth_le_raw_advertisements(heard)
            connects.append(heard)

        async def on_disconnect(expected: bool) -> None:
            disconnects.append(expected)

        logic = ReconnectLogic(
            client=cli,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            name="127.0.0.1",
            zeroconf_wake=False,  # no mDNS: loopback only
        )
        await logic.start()
        try:
            await until(lambda: connects and connects[0].of(DOOR), "heard before the kill")
            proxy.kill()
            await proxy.wait()
            await until(lambda: disconnects, "the drop noticed")
            assert disconnects == [False]

            proxy = await start_proxy_process(w.hci_spec, port, key)
            await until(lambda: len(connects) == 2 and connects[1].of(DOOR), "heard again")
        finally:
            await logic.stop()
            await cli.disconnect()
            if proxy.returncode is None:
                proxy.terminate()
            await proxy.wait()


CCCD = "00002902-0000-1000-8000-00805f9b34fb"
NOTIFY_ON = b"\x01\x00"


@dataclass(eq=False)
class Link:
    """What one client hears about its connection to one device through the proxy."""

    states: list[tuple[bool, int, int]] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)

    def on_state(self, connected: bool, mtu: int, error: int) -> None:
        self.states.append((connected, mtu, error))

    def on_value(self, _handle: int, value: bytearray) -> None:
        self.values.append(bytes(value))


def characteristic(services: Any, uuid: str) -> Any:
    return next(c for s in services.services for c in s.characteristics if c.uuid == uuid)


async def connect(cli: APIClient, flags: int, address: str) -> Link:
    link = Link()
    await cli.bluetooth_device_connect(
        mac_number(address), link.on_state, feature_flags=flags, address_type=1
    )
    return link


@pytest.mark.asyncio
async def test_a_client_reads_the_oximeter_through_the_proxy_within_its_slots() -> None:
    oximeter, thermometer = mac_number(OXIMETER), mac_number(THERMOMETER)
    async with (
        ward() as w,
        SimulatedProxy(noise_key=(key := new_key()), hci_spec=w.hci_spec, port=0, slots=2) as proxy,
        client(proxy.port, key) as cli,
    ):
        assert cli.api_version is not None
        flags = (await cli.device_info()).bluetooth_proxy_feature_flags_compat(cli.api_version)
        assert flags & BluetoothProxyFeature.ACTIVE_CONNECTIONS
        assert flags & BluetoothProxyFeature.REMOTE_CACHING
        slots: list[tuple[int, int, list[int]]] = []
        cli.subscribe_bluetooth_connections_free(lambda *update: slots.append(update))
        heard = Heard()  # the proxy answers the client that takes its advertisements
        cli.subscribe_bluetooth_le_raw_advertisements(heard)
        await until(lambda: heard.of(OXIMETER) and heard.of(THERMOMETER), "both heard")
        assert slots == [(2, 2, [])]

        spo2 = await connect(cli, flags, OXIMETER)
        assert spo2.states == [(True, 517, 0)]
        await until(lambda: slots[-1] == (1, 2, [oximeter]), "one slot taken")
        services = await cli.bluetooth_gatt_get_services(oximeter)
        assert PULSE_OXIMETER_SERVICE in {s.uuid for s in services.services}

        features = await cli.bluetooth_gatt_read(
            oximeter, characteristic(services, PLX_FEATURES).handle
        )
        assert PlxFeature.MEASUREMENT_STATUS in parse_plx_features(bytes(features)).supported
        continuous = characteristic(services, PLX_CONTINUOUS_MEASUREMENT)
        await cli.bluetooth_gatt_start_notify(oximeter, continuous.handle, spo2.on_value)
        # Connection v3: the client switches the values on, as bleak-esphome does.
        cccd = next(d for d in continuous.descriptors if d.uuid == CCCD)
        await cli.bluetooth_gatt_write_descriptor(oximeter, cccd.handle, NOTIFY_ON)
        await until(lambda: len(spo2.values) >= 2, "oximeter readings relayed")
        metrics = {m.metric for m in parse_plx_continuous(spo2.values[0])}
        assert {Metric.SPO2, Metric.PULSE_RATE} <= metrics

        temperature = await connect(cli, flags, THERMOMETER)
        assert temperature.states == [(True, 517, 0)]
        await until(lambda: slots[-1][:2] == (0, 2), "both slots taken")
        assert sorted(slots[-1][2]) == sorted([oximeter, thermometer])
        hts = await cli.bluetooth_gatt_get_services(thermometer)
        assert HEALTH_THERMOMETER_SERVICE in {s.uuid for s in hts.services}
        site = await cli.bluetooth_gatt_read(
            thermometer, characteristic(hts, TEMPERATURE_TYPE).handle
        )
        assert parse_temperature_type(bytes(site)) is Site.AXILLARY

        refused = await connect(cli, flags, DOOR)
        assert refused.states == [(False, 0, 0)]  # as ESPHome: no error code, no slot taken
        assert slots[-1][:2] == (0, 2)
        before = len(spo2.values)
        await until(lambda: len(spo2.values) > before, "the oximeter still relayed")
        battery = await cli.bluetooth_gatt_read(
            thermometer, characteristic(hts, BATTERY_LEVEL).handle
        )
        assert 5 <= battery[0] <= 100

        await cli.bluetooth_device_disconnect(oximeter)
        await until(lambda: slots[-1] == (1, 2, [thermometer]), "the slot given back")
        assert spo2.states[-1][0] is False
        with pytest.raises(BluetoothGATTAPIError, match="Not connected"):
            await cli.bluetooth_gatt_read(
                oximeter, characteristic(services, MANUFACTURER_NAME).handle
            )


@pytest.mark.asyncio
async def test_a_client_that_leaves_gives_its_connections_back() -> None:
    async with (
        ward() as w,
        SimulatedProxy(noise_key=(key := new_key()), hci_spec=w.hci_spec, port=0, slots=2) as proxy,
    ):
        async with client(proxy.port, key) as first:
            assert first.api_version is not None
            info = await first.device_info()
            flags = info.bluetooth_proxy_feature_flags_compat(first.api_version)
            first.subscribe_bluetooth_le_raw_advertisements(Heard())
            link = await connect(first, flags, THERMOMETER)
            assert link.states == [(True, 517, 0)]

        async with client(proxy.port, key) as second:
            heard = Heard()
            second.subscribe_bluetooth_le_raw_advertisements(heard)
            # The thermometer advertises again only once its link is down.
            await until(lambda: heard.of(THERMOMETER), "the thermometer free again")
            slots: list[tuple[int, int, list[int]]] = []
            second.subscribe_bluetooth_connections_free(lambda *update: slots.append(update))
            await until(lambda: slots, "the slots reported")
            assert slots == [(2, 2, [])]
