"""One bound Bluetooth device's connection, from finding it to reconnecting after a drop.

A `GattSession` uses bleak's public API only, with the backend its route names, so
the same code drives BlueZ on the Pi, bumble in tests and on a USB dongle, and the
ESPHome proxies' radios.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.service import BleakGATTService
from bleak.exc import BleakError

from drivers.backoff import Backoff
from drivers.ble import uuids
from drivers.ble.battery import parse_battery_level
from drivers.ble.cancel import cancel_until_done
from drivers.ble.dis import DIS_STRINGS, decode_dis_string
from drivers.ble.gatt_profiles import GattProfile, MeasurementParser
from drivers.ble.routes import NoRoute, Route, Routes, describe
from drivers.errors import MalformedPacket
from drivers.listener import LinkState, SessionListener
from drivers.measurement import Measurement, Site
from drivers.reduced_stream import ReducedStream

logger = logging.getLogger(__name__)

Parse = Callable[[bytes], list[Measurement]]
#: `SessionListener.on_measurements` or `on_live`.
Report = Callable[[str, Sequence[Measurement]], None]
Notified = Callable[[BleakGATTCharacteristic, bytearray], None]


class GattSession:
    """Finds the device by address, connects, reads its identity, battery and site,
    subscribes to the profile's characteristics and reports everything to the listener;
    after a failure or a drop it tries again with backoff until stopped.

    Connects of all sessions share `connect_lock` (adapters handle one at a time);
    scanning for a device that is away does not hold it. Each attempt takes a route
    from `routes` (`drivers/ble/routes.py`: the radio, and a slot on it) and holds it
    until its link ends.

    Identity (Device Information and the profile's `info` characteristics) is read on
    the first connection only and kept in `device_info`. A Battery Level the device
    does not notify is read every `battery_poll_s` while connected.

    Byte streams are decoded per connection and reduced to one reading per second per
    metric; what their decoders drop is reported as one summary `on_refused` at most
    every `malformed_summary_s` per connection, and once more when the connection ends.
    The raw bytes reported are the last notification that held dropped bytes.
    """

    def __init__(
        self,
        address: str,
        profile: GattProfile,
        routes: Routes,
        listener: SessionListener,
        connect_lock: asyncio.Lock,
        *,
        configured_site: Site | None = None,
        connect_timeout: float = 20.0,
        backoff: Backoff = Backoff(),
        battery_poll_s: float = 600.0,
        malformed_summary_s: float = 60.0,
    ) -> None:
        self.address = address
        self.profile = profile
        self._routes = routes
        self._listener = listener
        self._connect_lock = connect_lock
        self._configured_site = configured_site
        self._connect_timeout = connect_timeout
        self._backoff = backoff
        self._battery_poll_s = battery_poll_s
        self._malformed_summary_s = malformed_summary_s
        self._state: LinkState | None = None
        self._task: asyncio.Task[None] | None = None
        self._streams: list[ReducedStream] = []
        #: Identity read from the device; None until a connection has read it.
        self.device_info: dict[str, str] | None = None
        #: The radio of the current or last connection (None before the first).
        self.adapter: str | None = None

    @property
    def state(self) -> LinkState | None:
        return self._state

    async def start(self) -> None:
        """Start (again): the first state is reported even if the last was the same,
        as the device's state may have been reported by others meanwhile (its adapter gone)."""
        if self._task is None:
            self._state = None
            self._task = asyncio.create_task(self._run(), name=f"GATT session {self.address}")

    async def stop(self) -> None:
        """Cancel whatever the session is doing and disconnect."""
        task, self._task = self._task, None
        await cancel_until_done(task)

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
        """One route, connect and serve cycle; True when the device was served (set up
        and subscribed), so that a device that connects but cannot be used backs off."""
        try:
            async with self._routes.route(
                self.address, lambda why: self._report(LinkState.UNREACHABLE, why)
            ) as route:
                return await self._connect_and_serve(route)
        except NoRoute as why:
            self._report(LinkState.UNREACHABLE, str(why))
            return False

    async def _connect_and_serve(self, route: Route) -> bool:
        self._listener.on_signal(self.address, route.rssi)
        self.adapter = route.adapter
        self._report(LinkState.CONNECTING)
        lost = asyncio.Event()
        client = BleakClient(
            route.device,
            disconnected_callback=lambda _client: lost.set(),
            timeout=self._connect_timeout,
            **route.client_kwargs,
        )
        try:
            async with self._connect_lock:
                await client.connect()
        except (BleakError, TimeoutError) as error:
            self._report(LinkState.UNREACHABLE, f"connect failed: {describe(error)}")
            return False
        served = False
        ending = "session failed"
        try:
            self._report(LinkState.CONNECTED)
            polled_battery = await self._set_up(client)
            served = True
            await self._serve(client, lost, polled_battery)
            ending = "link lost"
        except (BleakError, TimeoutError) as error:
            ending = describe(error)
        except asyncio.CancelledError:
            ending = "session stopped"
            raise
        finally:
            for stream in self._streams:
                stream.close(asyncio.get_running_loop().time())
            self._streams = []
            self._report(LinkState.DISCONNECTED, ending)
            await self._disconnect(client)
        return served

    async def _set_up(self, client: BleakClient) -> BleakGATTCharacteristic | None:
        """Reads what is read once, subscribes to the profile's characteristics; returns
        the Battery Level to poll, if the device has one it does not notify."""
        service = client.services.get_service(self.profile.service_uuid)
        if service is None:
            raise BleakError(f"no {self.profile.name} service {self.profile.service_uuid}")
        if self.device_info is None:
            self.device_info = await self._identity(client, service)
            if self.device_info:
                self._listener.on_device_info(self.address, self.device_info)
        polled_battery = await self._battery(client)
        site = await self._site(client, service)

        on_measurements, on_live = self._listener.on_measurements, self._listener.on_live
        subscriptions: list[tuple[BleakGATTCharacteristic, Notified]] = [
            (char, self._handler(_with_site(parser, site), on_measurements))
            for uuid, parser in self.profile.measurements.items()
            if (char := service.get_characteristic(uuid)) is not None
        ]
        for uuid, new_stream in self.profile.streams.items():
            if (char := service.get_characteristic(uuid)) is not None:
                stream = ReducedStream(
                    self.address,
                    self.profile.name,
                    new_stream(),
                    self._listener,
                    self._malformed_summary_s,
                )
                self._streams.append(stream)
                subscriptions.append((char, _notified(stream)))
        if not subscriptions:
            raise BleakError(f"no {self.profile.name} measurement characteristic")
        subscriptions += [
            (char, self._handler(_with_site(parser, site), on_live))
            for uuid, parser in self.profile.live.items()
            if (char := service.get_characteristic(uuid)) is not None
        ]
        for char, handler in subscriptions:
            await client.start_notify(char, handler)
        return polled_battery

    async def _identity(self, client: BleakClient, service: BleakGATTService) -> dict[str, str]:
        """Device Information strings, then what the profile's `info` characteristics say."""
        info = {
            key: decode_dis_string(bytes(await client.read_gatt_char(char)))
            for key, uuid in DIS_STRINGS.items()
            if (char := client.services.get_characteristic(uuid)) is not None
        }
        for uuid, read_info in self.profile.info.items():
            if (char := service.get_characteristic(uuid)) is not None:
                raw = bytes(await client.read_gatt_char(char))
                try:
                    info.update(read_info(raw))
                except MalformedPacket as error:
                    self._listener.on_refused(self.address, error, raw)
        return info

    async def _battery(self, client: BleakClient) -> BleakGATTCharacteristic | None:
        """Reads the level now; subscribes when the device notifies it, else returns it."""
        battery = client.services.get_characteristic(uuids.BATTERY_LEVEL)
        if battery is None:
            return None
        await self._read_battery(client, battery)
        if "notify" not in battery.properties:
            return battery
        await client.start_notify(
            battery, self._handler(parse_battery_level, self._listener.on_measurements)
        )
        return None

    async def _read_battery(self, client: BleakClient, battery: BleakGATTCharacteristic) -> None:
        raw = bytes(await client.read_gatt_char(battery))
        self._deliver(parse_battery_level, raw, self._listener.on_measurements)

    async def _serve(
        self,
        client: BleakClient,
        lost: asyncio.Event,
        polled_battery: BleakGATTCharacteristic | None,
    ) -> None:
        """Until the link is lost, reading the battery every `battery_poll_s` if asked."""
        if polled_battery is None:
            await lost.wait()
            return
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._battery_poll_s):
                    await lost.wait()
                    return
            await self._read_battery(client, polled_battery)

    async def _site(self, client: BleakClient, service: BleakGATTService) -> Site | None:
        """The device's own site (e.g. Temperature Type) if it names one, else the
        configured one."""
        source = self.profile.site
        if source is not None and (char := service.get_characteristic(source.uuid)):
            raw = bytes(await client.read_gatt_char(char))
            try:
                return source.parse(raw)
            except MalformedPacket as error:
                self._listener.on_refused(self.address, error, raw)
        return self._configured_site

    def _handler(self, parse: Parse, report: Report) -> Notified:
        return lambda _char, data: self._deliver(parse, bytes(data), report)

    def _deliver(self, parse: Parse, raw: bytes, report: Report) -> None:
        self._listener.on_signal(self.address, None)
        try:
            measurements = parse(raw)
        except MalformedPacket as error:
            self._listener.on_refused(self.address, error, raw)
            return
        if measurements:
            report(self.address, measurements)

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


def _notified(stream: ReducedStream) -> Notified:
    def on_notification(_char: BleakGATTCharacteristic, data: bytearray) -> None:
        stream.feed(asyncio.get_running_loop().time(), bytes(data))

    return on_notification


def _with_site(parser: MeasurementParser, site: Site | None) -> Parse:
    return lambda raw: parser(raw, site)
