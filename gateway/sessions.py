"""One session per configured device, built from the configuration at start-up.

This is the one place that knows which driver serves which device kind; everything
above it sees only the `SessionListener` calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from drivers.backoff import Backoff
from drivers.listener import SessionListener
from drivers.serial.session import SerialOximeterSession
from gateway.config import ADVERT_KINDS, BLE_KINDS, GATT_KINDS, Config, DeviceConfig

if TYPE_CHECKING:
    from drivers.ble.adapter import BleAdapter
    from drivers.ble.adverts import AdvertListener
    from drivers.ble.watchdog import AdapterWatchdog

log = logging.getLogger(__name__)


class Session(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class DeviceSessions:
    def __init__(self, config: Config, listener: SessionListener) -> None:
        self._config = config
        self._listener = listener
        self._sessions: list[Session] = []
        self._adapter: BleAdapter | None = None
        uses_ble = any(d.kind in BLE_KINDS for d in config.devices)
        self._adapter_state = "starting" if uses_ble else "not used"
        self._adapter_error = ""
        self._connect_lock = asyncio.Lock()  # BlueZ queues connects too; so do we
        #: Held by each GATT session while connected: the adapter's link limit.
        self._connection_slots = asyncio.Semaphore(config.bluetooth.max_connections)
        self._watchdog: AdapterWatchdog | None = None
        self._ble_sessions: list[Session] = []
        self._adverts: AdvertListener | None = None

    async def start(self) -> None:
        if self._adapter_state == "starting":
            await self._open_adapter()
        self._watchdog = self._new_watchdog()
        sessions: list[Session | None] = [self._advert_listener()]
        for device in self._config.devices:
            if device.kind == "cms50":
                sessions.append(SerialOximeterSession(device.address, self._listener))
            elif device.kind in GATT_KINDS:
                sessions.append(self._gatt_session(device))
        for session in sessions:
            if session is None:
                continue
            error = await _start(session)
            if error is None:
                self._sessions.append(session)
            else:  # e.g. the adapter cannot scan: the other devices are served
                self._adapter_state = "unavailable"
                self._adapter_error = f"{type(session).__name__} did not start: {error}"
        self._ble_sessions = [s for s in self._sessions if not isinstance(s, SerialOximeterSession)]
        if self._watchdog is not None:
            await self._watchdog.start()

    async def stop(self) -> None:
        if self._watchdog is not None:
            await self._watchdog.stop()
            self._watchdog = None
        for session in reversed(self._sessions):
            await session.stop()
        self._sessions.clear()
        if self._adapter is not None:
            await self._adapter.stop()
            self._adapter = None

    def discovered(self) -> list[dict[str, Any]]:
        """Sensors heard advertising that are not bound to anything: candidates for
        pairing. They never give readings."""
        if self._adverts is None:
            return []
        now = time.monotonic()
        bound = {d.address for d in self._config.devices}
        return [
            {
                "address": address,
                "kind": seen.kind,
                "name": seen.name,
                "rssi": seen.rssi,
                "seen_s_ago": round(now - seen.last_seen),
            }
            for address, seen in sorted(self._adverts.discovered.items())
            if address not in bound
        ]

    def adapter_health(self) -> dict[str, Any]:
        """With the watchdog on, its state and error replace the opening's (unless a
        session could not even start), and its last action and counts are added."""
        health: dict[str, Any] = {
            "adapter": self._config.bluetooth.adapter,
            "state": self._adapter_state,
            "error": self._adapter_error,
        }
        if self._watchdog is not None:
            watchdog = self._watchdog.health()
            if self._adapter_state == "unavailable":
                del watchdog["state"], watchdog["error"]
            health.update(watchdog)
        return health

    async def _open_adapter(self) -> None:
        # Imported only when needed: a serial-only gateway never loads bleak or bumble.
        from drivers.ble.adapter import open_ble_adapter

        self._adapter_state = "opening"
        try:
            adapter = open_ble_adapter(self._config.bluetooth.adapter)
            await adapter.start()
        except Exception as exc:  # no adapter must not stop serial devices or the uplink
            self._adapter_state = "unavailable"
            self._adapter_error = str(exc)
            log.error("bluetooth adapter unavailable", extra={"error": str(exc)})
            return
        self._adapter = adapter
        self._adapter_state = "up"

    def _advert_listener(self) -> Session | None:
        """One scanner for every sensor that only advertises."""
        bound = {d.address: (d.kind, d.key) for d in self._config.devices if d.kind in ADVERT_KINDS}
        if self._adapter is None or not bound:
            return None
        from drivers.ble.adverts import AdvertListener

        self._adverts = AdvertListener(self._adapter, self._ble_listener(links=False), bound)
        return self._adverts

    def _gatt_session(self, device: DeviceConfig) -> Session | None:
        if self._adapter is None:
            return None
        from drivers.ble.profiles import PROFILES
        from drivers.ble.session import GattSession

        bt = self._config.bluetooth
        return GattSession(
            device.address,
            PROFILES[device.kind],
            self._adapter,
            self._ble_listener(links=True),
            self._connect_lock,
            self._connection_slots,
            configured_site=device.site,
            connect_timeout=bt.connect_timeout_s,
            backoff=Backoff(bt.reconnect_min_s, bt.reconnect_max_s),
        )

    def _new_watchdog(self) -> AdapterWatchdog | None:
        adapter, bt = self._adapter, self._config.bluetooth
        if adapter is None or not bt.watchdog_enabled:
            return None
        from drivers.ble.watchdog import AdapterWatchdog

        return AdapterWatchdog(
            bt.watchdog_silence_s,
            self._restart_ble_sessions,
            lambda: self._power_cycle(adapter),
            scanner_heard_at=lambda: self._adverts.last_advert_at if self._adverts else None,
        )

    def _ble_listener(self, *, links: bool) -> SessionListener:
        """The listener for a Bluetooth session: the watchdog listens in."""
        if self._watchdog is None:
            return self._listener
        return self._watchdog.listener(self._listener, links=links)

    async def _restart_ble_sessions(self) -> None:
        """The watchdog's first step: every Bluetooth session scans anew."""
        for session in self._ble_sessions:
            await session.stop()
        await self._start_ble_sessions()

    async def _power_cycle(self, adapter: BleAdapter) -> None:
        for session in self._ble_sessions:
            await session.stop()
        try:
            await adapter.power_cycle()
        finally:
            await self._start_ble_sessions()

    async def _start_ble_sessions(self) -> None:
        for session in self._ble_sessions:
            await _start(session)


async def _start(session: Session) -> Exception | None:
    """Start one session; a failure is logged and returned, never raised, so that one
    device (or an adapter that cannot scan) does not stop the others."""
    try:
        await session.start()
    except Exception as exc:
        log.error(
            "device session did not start",
            extra={"session": type(session).__name__, "error": str(exc)},
        )
        return exc
    return None
