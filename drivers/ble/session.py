"""One bound Bluetooth device's connection, from finding it to reconnecting after a drop.

A `GattSession` uses bleak's public API only, with the backend the adapter names, so
the same code drives BlueZ on the Pi and bumble in tests and on a USB dongle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.backends.service import BleakGATTService
from bleak.exc import BleakError

from drivers.ble import uuids
from drivers.ble.adapter import BleAdapter
from drivers.ble.battery import parse_battery_level
from drivers.ble.dis import DIS_STRINGS, decode_dis_string
from drivers.ble.profiles import GattProfile, MeasurementParser
from drivers.listener import LinkState, SessionListener
from drivers.measurement import MalformedPacket, Measurement, Site

logger = logging.getLogger(__name__)

Parse = Callable[[bytes], list[Measurement]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: exponential in the failures so far, capped at `maximum`."""

    base: float = 1.0
    maximum: float = 60.0

    def delay(self, failures: int) -> float:
        """Half fixed, half random, so that devices lost together do not retry together."""
        ceiling = min(self.maximum, self.base * 2 ** min(failures, 32))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class GattSession:
    """Finds the device by address, connects, reads its identity, battery and site,
    subscribes to the profile's measurements and reports everything to the listener;
    after a failure or a drop it tries again with backoff until stopped.

    Connects of all sessions share `connect_lock` (adapters handle one at a time);
    scanning for a device that is away does not hold it.
    """

    def __init__(
        self,
        address: str,
        profile: GattProfile,
        adapter: BleAdapter,
        listener: SessionListener,
        connect_lock: asyncio.Lock,
        *,
        configured_site: Site | None = None,
        scan_timeout: float = 10.0,
        connect_timeout: float = 20.0,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.address = address
        self.profile = profile
        self._adapter = adapter
        self._listener = listener
        self._connect_lock = connect_lock
        self._configured_site = configured_site
        self._scan_timeout = scan_timeout
        self._connect_timeout = connect_timeout
        self._backoff = backoff
        self._state: LinkState | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> LinkState | None:
        return self._state

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"GATT session {self.address}")

    async def stop(self) -> None:
        """Cancel whatever the session is doing and disconnect.

        Cancels again until the task ends: Python 3.11's asyncio.wait_for, used
        throughout bumble, swallows a cancel that races with a result.
        """
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1.0)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                connected = await self._attempt()
            except Exception as error:  # a bug must not end collection from this device
                logger.exception("GATT session %s failed", self.address)
                self._report(LinkState.UNREACHABLE, f"internal error: {error!r}")
                connected = False
            failures = 0 if connected else failures + 1
            await asyncio.sleep(self._backoff.delay(failures))

    async def _attempt(self) -> bool:
        """One find, connect and serve cycle; True when the device was served (set up
        and subscribed), so that a device that connects but cannot be used backs off."""
        try:
            device = await self._find()
        except BleakError as error:  # the adapter cannot scan: off, gone, busy
            self._report(LinkState.UNREACHABLE, f"scan failed: {_describe(error)}")
            return False
        if device is None:
            self._report(LinkState.UNREACHABLE, f"not seen within {self._scan_timeout:g} s")
            return False
        self._report(LinkState.CONNECTING)
        lost = asyncio.Event()
        client = BleakClient(
            device,
            disconnected_callback=lambda _client: lost.set(),
            timeout=self._connect_timeout,
            **self._adapter.client_kwargs(),
        )
        try:
            async with self._connect_lock:
                await client.connect()
        except (BleakError, TimeoutError) as error:
            self._report(LinkState.UNREACHABLE, f"connect failed: {_describe(error)}")
            return False
        served = False
        try:
            self._report(LinkState.CONNECTED)
            await self._set_up(client)
            served = True
            await lost.wait()
            self._report(LinkState.DISCONNECTED, "link lost")
        except (BleakError, TimeoutError) as error:
            self._report(LinkState.DISCONNECTED, _describe(error))
        except asyncio.CancelledError:
            self._report(LinkState.DISCONNECTED, "session stopped")
            raise
        finally:
            await self._disconnect(client)
        return served

    async def _find(self) -> BLEDevice | None:
        heard: list[AdvertisementData] = []

        def is_ours(device: BLEDevice, advertisement: AdvertisementData) -> bool:
            if device.address.upper() != self.address.upper():
                return False
            heard.append(advertisement)
            return True

        device = await BleakScanner.find_device_by_filter(
            is_ours, timeout=self._scan_timeout, **self._adapter.scanner_kwargs()
        )
        if device is not None:
            self._listener.on_signal(self.address, heard[-1].rssi)
        return device

    async def _set_up(self, client: BleakClient) -> None:
        services = client.services
        info = {
            key: decode_dis_string(bytes(await client.read_gatt_char(char)))
            for key, uuid in DIS_STRINGS.items()
            if (char := services.get_characteristic(uuid)) is not None
        }
        if info:
            self._listener.on_device_info(self.address, info)

        if (battery := services.get_characteristic(uuids.BATTERY_LEVEL)) is not None:
            self._deliver(parse_battery_level, bytes(await client.read_gatt_char(battery)))
            if "notify" in battery.properties:
                await client.start_notify(battery, self._handler(parse_battery_level))

        service = services.get_service(self.profile.service_uuid)
        if service is None:
            raise BleakError(f"no {self.profile.name} service {self.profile.service_uuid}")
        site = await self._site(client, service)
        subscriptions = [
            (char, parser)
            for uuid, parser in self.profile.measurements.items()
            if (char := service.get_characteristic(uuid)) is not None
        ]
        if not subscriptions:
            raise BleakError(f"no {self.profile.name} measurement characteristic")
        for char, parser in subscriptions:
            await client.start_notify(char, self._handler(_with_site(parser, site)))

    async def _site(self, client: BleakClient, service: BleakGATTService) -> Site | None:
        """The device's own site (e.g. Temperature Type) if it names one, else the
        configured one."""
        source = self.profile.site
        if source is not None and (char := service.get_characteristic(source.uuid)):
            raw = bytes(await client.read_gatt_char(char))
            try:
                return source.parse(raw)
            except MalformedPacket as error:
                self._listener.on_malformed(self.address, error, raw)
        return self._configured_site

    def _handler(self, parse: Parse) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        return lambda _char, data: self._deliver(parse, bytes(data))

    def _deliver(self, parse: Parse, raw: bytes) -> None:
        self._listener.on_signal(self.address, None)
        try:
            measurements = parse(raw)
        except MalformedPacket as error:
            self._listener.on_malformed(self.address, error, raw)
            return
        if measurements:
            self._listener.on_measurements(self.address, measurements)

    async def _disconnect(self, client: BleakClient) -> None:
        if not client.is_connected:
            return
        with contextlib.suppress(BleakError, TimeoutError):
            async with asyncio.timeout(self._connect_timeout):
                await client.disconnect()

    def _report(self, state: LinkState, detail: str = "") -> None:
        if state != self._state:
            self._state = state
            self._listener.on_link_state(self.address, state, detail)


def _with_site(parser: MeasurementParser, site: Site | None) -> Parse:
    return lambda raw: parser(raw, site)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
