"""The gateway's side of an ESPHome Bluetooth proxy (`drivers/ble/esphome/`): a
`ProxyLink` kept connected to the simulated proxy (ESPHome's noise-encrypted native API
over TCP), and bleak's `BleakClient` connecting through it to the simulated ward's
devices, whose radio side is a bumble virtual link."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from bleak import BleakClient
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode
from bumble.core import UUID, AdvertisingData

from drivers.backoff import Backoff
from drivers.ble.esphome.client import CCCD
from drivers.ble.esphome.link import KEEPALIVE_S, ProxyLink, ProxyState, RawAdvert
from drivers.ble.hts import parse_temperature_type
from drivers.ble.plx import PlxFeature, parse_plx_continuous, parse_plx_features
from drivers.ble.uuids import (
    PLX_CONTINUOUS_MEASUREMENT,
    PLX_FEATURES,
    PULSE_OXIMETER_SERVICE,
    TEMPERATURE_TYPE,
)
from drivers.measurement import Metric, Site
from firmware_sim.esphome.proxy import SimulatedProxy
from gateway.broker import free_port
from tests.esphome_ward import DOOR, OXIMETER, THERMOMETER, new_key, until, ward

#: Short, so that a refused or unreachable proxy is tried again within the test.
BACKOFF = Backoff(base=0.2, maximum=1.0)
CONNECT_TIMEOUT_S = 20.0
GONE = "F0:00:00:00:00:99"


@dataclass(eq=False)
class Told:
    """What a link told the gateway: every advertisement, and each change as
    (state, error, slots free, slots limit)."""

    adverts: list[RawAdvert] = field(default_factory=list)
    changes: list[tuple[ProxyState, str, int, int]] = field(default_factory=list)

    def on_advertisement(self, _link: ProxyLink, advert: RawAdvert) -> None:
        self.adverts.append(advert)

    def on_change(self, link: ProxyLink) -> None:
        self.changes.append((link.state, link.error, link.slots_free, link.slots_limit))

    def of(self, address: str) -> list[RawAdvert]:
        return [a for a in self.adverts if a.address == address]

    def states(self) -> list[ProxyState]:
        return [state for state, *_ in self.changes]


@asynccontextmanager
async def proxy_link(
    port: int, key: str, *, keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[tuple[ProxyLink, Told]]:
    told = Told()
    link = ProxyLink(
        "ward-3",
        "127.0.0.1",
        port,
        key,
        on_advertisement=told.on_advertisement,
        on_change=told.on_change,
        backoff=BACKOFF,
        keepalive_s=keepalive_s,
    )
    await link.start()
    try:
        yield link, told
    finally:
        await link.stop()


def connected(link: ProxyLink) -> bool:
    return link.state is ProxyState.CONNECTED


async def heard_device(told: Told, address: str) -> BLEDevice:
    """The device as the gateway's scanner view hands it to a session."""
    await until(lambda: told.of(address), f"{address} heard")
    return BLEDevice(address, None, details=told.of(address)[-1])


@dataclass(eq=False)
class Ended:
    """A BleakClient's disconnected callback."""

    times: int = 0

    def __call__(self, _client: BleakClient) -> None:
        self.times += 1


def through(link: ProxyLink, device: BLEDevice, ended: Ended | None = None) -> BleakClient:
    return BleakClient(
        device,
        disconnected_callback=ended,
        timeout=CONNECT_TIMEOUT_S,
        backend=link.client_backend,
    )


@pytest.mark.asyncio
async def test_a_link_connects_reports_the_slots_and_relays_what_the_proxy_hears() -> None:
    async with (
        ward() as w,
        SimulatedProxy(
            noise_key=(key := new_key()),
            hci_spec=w.hci_spec,
            port=0,
            rssi=-70,
            rssi_for={OXIMETER: -55},
            slots=2,
        ) as proxy,
        proxy_link(proxy.port, key) as (link, told),
    ):
        await until(lambda: connected(link), "connected")
        assert (link.error, link.slots_free, link.slots_limit) == ("", 2, 2)
        # Connected is said with the slots known, so no connect is refused for none.
        assert told.changes[0] == (ProxyState.CONNECTED, "", 2, 2)

        await until(lambda: told.of(OXIMETER) and told.of(DOOR), "the ward heard")
        oximeter = told.of(OXIMETER)[0]
        assert (oximeter.address_type, oximeter.rssi) == (1, -55)  # random static
        uuids = AdvertisingData.from_bytes(oximeter.data).get(
            AdvertisingData.Type.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS
        )
        assert uuids == [UUID(PULSE_OXIMETER_SERVICE)]
        assert {a.rssi for a in told.of(DOOR)} == {-70}

        health = link.health()
        assert health["last_heard_s_ago"] is not None and health["connected_s"] is not None
        assert {k: v for k, v in health.items() if not k.endswith("_s_ago")} == {
            "name": "ward-3",
            "host": "127.0.0.1",
            "port": proxy.port,
            "state": "connected",
            "error": "",
            "slots_free": 2,
            "slots_limit": 2,
            "connected_s": health["connected_s"],
        }


@pytest.mark.asyncio
async def test_a_wrong_key_is_refused_and_said_so_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = new_key()
    async with (
        ward() as w,
        SimulatedProxy(noise_key=new_key(), hci_spec=w.hci_spec, port=0) as proxy,
        proxy_link(proxy.port, wrong) as (link, told),
    ):
        await until(lambda: link.state is ProxyState.REFUSED, "refused")
        assert link.error == "proxy refused the noise key (wrong api encryption key)"
        assert (link.api, link.health()["state"]) == (None, "refused")
        await until(lambda: proxy.refused >= 2, "tried again (slowly)")
        assert told.states() == [ProxyState.REFUSED]  # said once, not at every try
    refusals = [r.getMessage() for r in caplog.records if "refused the noise key" in r.getMessage()]
    assert refusals and all("ward-3" in line for line in refusals)
    assert wrong not in caplog.text


@pytest.mark.asyncio
async def test_a_proxy_stopped_and_started_again_is_connected_again_by_itself() -> None:
    key, port = new_key(), free_port()
    async with ward() as w:
        proxy = SimulatedProxy(noise_key=key, hci_spec=w.hci_spec, port=port)
        await proxy.start()
        try:
            async with proxy_link(port, key) as (link, told):
                await until(lambda: connected(link) and told.adverts, "connected and hearing")
                await proxy.stop()
                # The proxy closes the TCP connection: noticed at once, retried at once.
                await until(lambda: link.state is ProxyState.DISCONNECTED, "the loss noticed")
                assert link.error.startswith(f"cannot reach 127.0.0.1:{port}: ")
                lost = told.changes[told.states().index(ProxyState.CONNECTED) + 1]
                assert lost[0] is ProxyState.CONNECTING
                assert lost[1].startswith("connection lost: ")
                assert (link.slots_free, link.health()["connected_s"]) == (0, None)

                heard_before = len(told.adverts)
                proxy = SimulatedProxy(noise_key=key, hci_spec=w.hci_spec, port=port)
                await proxy.start()
                await until(lambda: connected(link), "connected again")
                await until(lambda: len(told.adverts) > heard_before, "hearing again")
                assert link.slots_free == 3
        finally:
            await proxy.stop()


class Relay:
    """A TCP relay in front of the proxy. `go_silent()` makes the connections through it
    do what a proxy that lost its power does to them: the proxy's side is gone, ours
    stays open and nothing answers. New connections pass again."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._pipes: list[
            tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[asyncio.Task[None]]]
        ] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        copies = [
            asyncio.create_task(_copy(reader, up_writer)),
            asyncio.create_task(_copy(up_reader, writer)),
        ]
        self._pipes.append((writer, up_writer, copies))

    def go_silent(self) -> None:
        for _ours, theirs, copies in self._pipes:
            for copy in copies:
                copy.cancel()
            theirs.close()

    async def stop(self) -> None:
        self.go_silent()
        for ours, _theirs, _copies in self._pipes:
            ours.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(4096):
            sink.write(data)
            await sink.drain()
    sink.close()


@pytest.mark.asyncio
async def test_a_proxy_that_stops_answering_is_noticed_by_the_keepalive() -> None:
    keepalive_s = 0.5  # noticed 2.75-3.25 s after its last message
    async with (
        ward() as w,
        SimulatedProxy(noise_key=(key := new_key()), hci_spec=w.hci_spec, port=0) as proxy,
    ):
        relay = Relay(proxy.port)
        await relay.start()
        try:
            async with proxy_link(relay.port, key, keepalive_s=keepalive_s) as (link, told):
                await until(lambda: connected(link) and told.adverts, "connected and hearing")
                relay.go_silent()
                await until(lambda: not connected(link), "the silence noticed")
                assert link.error == (
                    "connection lost: the proxy stopped answering (no reply to a ping)"
                )
                await until(lambda: connected(link), "connected again through a new connection")
        finally:
            await relay.stop()


@pytest.mark.asyncio
async def test_bleak_reads_the_oximeter_and_thermometer_through_the_proxy() -> None:
    async with (
        ward() as w,
        SimulatedProxy(noise_key=(key := new_key()), hci_spec=w.hci_spec, port=0, slots=2) as proxy,
        proxy_link(proxy.port, key) as (link, told),
    ):
        await until(lambda: connected(link), "connected")
        oximeter = through(link, await heard_device(told, OXIMETER), ended := Ended())
        await oximeter.connect()
        assert oximeter.is_connected and oximeter.mtu_size == 517
        await until(lambda: link.slots_free == 1, "one slot taken")

        service = oximeter.services.get_service(PULSE_OXIMETER_SERVICE)
        assert service is not None
        features = await oximeter.read_gatt_char(PLX_FEATURES)
        assert PlxFeature.MEASUREMENT_STATUS in parse_plx_features(bytes(features)).supported
        values: list[bytes] = []
        continuous = service.get_characteristic(PLX_CONTINUOUS_MEASUREMENT)
        assert continuous is not None
        await oximeter.start_notify(continuous, lambda _char, data: values.append(bytes(data)))
        await until(lambda: len(values) >= 2, "readings notified")
        assert {Metric.SPO2, Metric.PULSE_RATE} <= {
            m.metric for m in parse_plx_continuous(values[0])
        }
        cccd = continuous.get_descriptor(CCCD)
        assert cccd is not None
        assert await oximeter.read_gatt_descriptor(cccd.handle) == b"\x01\x00"
        await oximeter.stop_notify(continuous)
        assert await oximeter.read_gatt_descriptor(cccd.handle) == b"\x00\x00"
        with pytest.raises(BleakGATTProtocolError) as refused:  # the device's own answer
            await oximeter.read_gatt_descriptor(BleakGATTDescriptor(None, 0xFFF0, CCCD, continuous))
        assert refused.value.code is BleakGATTProtocolErrorCode.INVALID_HANDLE

        async with through(link, await heard_device(told, THERMOMETER)) as thermometer:
            site = await thermometer.read_gatt_char(TEMPERATURE_TYPE)
            assert parse_temperature_type(bytes(site)) is Site.AXILLARY
            assert link.slots_free == 0

        await oximeter.disconnect()
        assert not oximeter.is_connected and ended.times == 1
        await until(lambda: link.slots_free == 2, "both slots given back")


@pytest.mark.asyncio
async def test_a_connect_with_every_slot_taken_says_so() -> None:
    async with (
        ward() as w,
        SimulatedProxy(noise_key=(key := new_key()), hci_spec=w.hci_spec, port=0, slots=1) as proxy,
        proxy_link(proxy.port, key) as (link, told),
    ):
        await until(lambda: connected(link), "connected")
        async with through(link, await heard_device(told, OXIMETER)):
            await until(lambda: link.slots_free == 0, "the one slot taken")
            second = through(link, await heard_device(told, THERMOMETER))
            with pytest.raises(BleakError, match="no free connection slot on proxy ward-3"):
                await second.connect()
            assert not second.is_connected


@pytest.mark.asyncio
async def test_a_proxy_killed_ends_its_connections_and_its_connects() -> None:
    async with (
        ward() as w,
        SimulatedProxy(noise_key=(key := new_key()), hci_spec=w.hci_spec, port=0, slots=2) as proxy,
        proxy_link(proxy.port, key) as (link, told),
    ):
        await until(lambda: connected(link), "connected")
        oximeter = through(link, await heard_device(told, OXIMETER), ended := Ended())
        await oximeter.connect()
        # A device that has gone away: the proxy's radio tries to reach it for 20 s.
        away = BLEDevice(GONE, None, details=RawAdvert(GONE, 1, -80, b""))
        connecting = asyncio.create_task(through(link, away).connect())
        await until(lambda: link.slots_free == 0, "the connect under way")

        await proxy.stop()
        await until(lambda: ended.times == 1, "the oximeter's disconnected callback")
        assert not oximeter.is_connected
        with pytest.raises(BleakError, match="proxy ward-3's connection was lost"):
            async with asyncio.timeout(CONNECT_TIMEOUT_S / 2):  # not its own timeout
                await connecting
        assert not connected(link)


@pytest.mark.asyncio
async def test_stopping_the_link_ends_its_connections() -> None:
    async with (
        ward() as w,
        SimulatedProxy(noise_key=(key := new_key()), hci_spec=w.hci_spec, port=0) as proxy,
    ):
        async with proxy_link(proxy.port, key) as (link, told):
            await until(lambda: connected(link), "connected")
            thermometer = through(link, await heard_device(told, THERMOMETER), ended := Ended())
            await thermometer.connect()
            await link.stop()
            assert ended.times == 1 and not thermometer.is_connected
            assert (link.state, link.error, link.slots_free) == (
                ProxyState.DISCONNECTED,
                "stopped",
                0,
            )
            with pytest.raises(BleakError, match="proxy ward-3 is not connected: stopped"):
                await through(link, await heard_device(told, OXIMETER)).connect()
