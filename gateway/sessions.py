"""One session per configured device, built at start-up from the configuration and
the device-kind registry (`drivers/kinds.py`): a kind's transport says which driver
session serves it. Everything above sees only the `SessionListener` calls.

A kind whose registry entry cannot work, or a session that cannot be built or started,
costs that device only: it is logged and shown on its device record (`unreachable`,
`not served: ...`), and the other devices are served. The Bluetooth devices' sessions
run on the one adapter while it is there (`gateway/bluetooth.py`): a missing adapter
costs the Bluetooth devices only, until it appears. With ESPHome proxies configured,
they run on the proxies instead (`gateway/bluetooth_proxies.py`).

Devices are added and removed while the gateway runs (`add`, `remove`: a binding made
or undone through the care service), without a restart; the Bluetooth code is loaded
when the first Bluetooth device arrives, at start or later, or when the devices nearby
are first listened for (`discover`, for commissioning a gateway with nothing bound yet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from drivers.kinds import KINDS, DeviceKind, check_kind
from drivers.listener import AdapterState, LinkState, SessionListener
from gateway.config import Config, DeviceConfig
from gateway.devices import DeviceExists, UnknownDevice

if TYPE_CHECKING:
    from drivers.ble.advert_listener import ServiceData
    from drivers.serial.protocol import SerialProtocol
    from gateway.bluetooth import BluetoothSessions
    from gateway.bluetooth_proxies import ProxiedBluetooth

log = logging.getLogger(__name__)


class Session(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class DeviceSessions:
    def __init__(self, config: Config, listener: SessionListener) -> None:
        self._config = config
        self._listener = listener
        #: Every device served (or shown as not served), by device id: the
        #: configuration's, then those added and removed.
        self._devices: dict[str, DeviceConfig] = {d.device_id: d for d in config.devices}
        #: The serial sessions running, by device id.
        self._sessions: dict[str, Session] = {}
        #: The Bluetooth side, once a Bluetooth device is served.
        self._bluetooth: BluetoothSessions | ProxiedBluetooth | None = None
        if any(KINDS[d.kind].bluetooth for d in config.devices if d.kind in KINDS):
            self._bluetooth_side()  # `status` says "starting" until the sessions start
        #: Held while the Bluetooth side starts or takes a device: a binding and a
        #: discovery arriving together never start it twice, nor add to it half-started.
        self._bluetooth_lock = asyncio.Lock()
        self._bluetooth_started = False
        self._started = False

    async def start(self) -> None:
        """Start the session of every device (the configuration's, with those added or
        removed before the start)."""
        self._started = True
        served = [
            (device, kind)
            for device in self._devices.values()
            if (kind := self._checked_kind(device)) is not None
        ]
        bluetooth = [(d, k) for d, k in served if k.bluetooth]
        if bluetooth:
            async with self._bluetooth_lock:
                await self._start_bluetooth(bluetooth)
        for device, kind in served:
            if not kind.bluetooth:
                await self._start_serial(device, kind)

    async def stop(self) -> None:
        self._started = False
        for session in reversed(self._sessions.values()):
            await session.stop()
        self._sessions.clear()
        if self._bluetooth is not None:
            await self._bluetooth.stop()
            self._bluetooth_started = False

    async def add(self, device: DeviceConfig) -> None:
        """Serve one more device, at once if running (else from `start`). Raises
        `DeviceExists` for a device id served already; a device that cannot be served
        is shown so on its record, as at start."""
        if device.device_id in self._devices:
            raise DeviceExists(f"device {device.device_id} is served already")
        self._devices[device.device_id] = device
        if not self._started:
            return
        kind = self._checked_kind(device)
        if kind is None:
            return
        if not kind.bluetooth:
            await self._start_serial(device, kind)
            return
        async with self._bluetooth_lock:
            if self._bluetooth_started:
                await self._bluetooth_side().add(device, kind, self._fail)
            else:
                await self._start_bluetooth([(device, kind)])

    async def remove(self, device_id: str) -> None:
        """Stop serving a device: its session stopped (its connection slot freed).
        Raises `UnknownDevice`."""
        device = self._devices.pop(device_id, None)
        if device is None:
            raise UnknownDevice(f"no device {device_id}")
        session = self._sessions.pop(device_id, None)
        if session is not None:
            await session.stop()
        elif self._bluetooth is not None:
            await self._bluetooth.remove(device.address)

    @property
    def devices(self) -> list[DeviceConfig]:
        """The devices served now: configured, or bound at run time."""
        return list(self._devices.values())

    def discovered(self) -> list[dict[str, Any]]:
        """Sensors heard advertising that are not bound to anything: candidates for
        pairing. They never give readings."""
        if self._bluetooth is None:
            return []
        return self._bluetooth.discovered(d.address for d in self._devices.values())

    async def discover(self, for_s: float = 120.0) -> str:
        """Listen for the Bluetooth devices nearby (`discovered`) until `for_s` after the
        last call: the page calls it while its commissioning screen is open. Brings the
        Bluetooth side up if no Bluetooth device is bound (the adapter then stays kept,
        as after a binding). Returns why nearby devices cannot be heard now (the
        adapter's error, as `adapter_health` says it), '' while they are."""
        if not self._started:
            return "the gateway is not running"
        async with self._bluetooth_lock:
            if not self._bluetooth_started:
                await self._start_bluetooth([])
        return await self._bluetooth_side().discover(for_s)

    def service_data(self, address: str) -> ServiceData | None:
        """The last service data heard from an advertisement-only device (bound or not),
        to try a key on; None when none was heard."""
        return None if self._bluetooth is None else self._bluetooth.service_data(address)

    def radio_of(self, address: str) -> str | None:
        """The radio a Bluetooth device is served through (the adapter, or an ESPHome
        proxy: the one it is connected through, or last was); None for the others."""
        return None if self._bluetooth is None else self._bluetooth.radio_of(address)

    def adapter_health(self) -> dict[str, Any]:
        """The Bluetooth adapter's state and why, and the watchdog's figures."""
        if self._bluetooth is None:
            state = AdapterState.NOT_USED
            return {"adapter": self._config.bluetooth.adapter, "state": state.value, "error": ""}
        return self._bluetooth.health()

    async def _start_bluetooth(self, devices: list[tuple[DeviceConfig, DeviceKind]]) -> None:
        """Start the Bluetooth side with `devices` (under `_bluetooth_lock`)."""
        await self._bluetooth_side().start(devices, self._fail)
        self._bluetooth_started = True

    def _bluetooth_side(self) -> BluetoothSessions | ProxiedBluetooth:
        if self._bluetooth is None:
            # Imported only when needed: a serial-only gateway never loads bleak or bumble.
            if self._config.bluetooth.proxies:
                from gateway.bluetooth_proxies import ProxiedBluetooth

                self._bluetooth = ProxiedBluetooth(self._config.bluetooth, self._listener)
            else:
                from gateway.bluetooth import BluetoothSessions

                self._bluetooth = BluetoothSessions(self._config.bluetooth, self._listener)
        return self._bluetooth

    async def _start_serial(self, device: DeviceConfig, kind: DeviceKind) -> None:
        assert kind.serial is not None  # a kind is Bluetooth or serial
        try:
            session = self._serial_session(device, kind.serial)
        except Exception as exc:  # a bug in a kind's entry or its driver
            self._fail(device, f"session not built: {exc}")
            return
        if await self._start_guarded(session, device):
            self._sessions[device.device_id] = session

    def _checked_kind(self, device: DeviceConfig) -> DeviceKind | None:
        """The self-check of a device's registry entry, before its session is built."""
        kind = KINDS.get(device.kind)
        try:
            if kind is None:
                raise ValueError(f"no device kind {device.kind!r} in the registry")
            check_kind(kind)
        except ValueError as exc:
            self._fail(device, str(exc))
            return None
        return kind

    def _fail(self, device: DeviceConfig, reason: str) -> None:
        """No session will serve `device`: say so in the log and on its device record."""
        log.error("device not served", extra={"device": device.device_id, "error": reason})
        self._listener.on_link_state(device.address, LinkState.UNREACHABLE, f"not served: {reason}")

    async def _start_guarded(self, session: Session, device: DeviceConfig) -> bool:
        """Start a device's session; one that does not start costs its device only."""
        try:
            await session.start()
        except Exception as exc:
            log.error(
                "device session did not start",
                extra={"session": type(session).__name__, "error": str(exc)},
            )
            self._fail(device, f"session did not start: {exc}")
            return False
        return True

    def _serial_session(
        self, device: DeviceConfig, protocol: Callable[[], SerialProtocol]
    ) -> Session:
        from drivers.serial.session import SerialSession

        return SerialSession(str(device.port), protocol(), self._listener)
