"""One session per configured device, built at start-up from the configuration and
the device-kind registry (`drivers/kinds.py`): a kind's transport says which driver
session serves it. Everything above sees only the `SessionListener` calls.

A kind whose registry entry cannot work, or a session that cannot be built or started,
costs that device only: it is logged and shown on its device record (`unreachable`,
`not served: ...`), and the other devices are served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from drivers.backoff import Backoff
from drivers.kinds import KINDS, DeviceKind, Transport, check_kind
from drivers.listener import AdapterState, LinkState, SessionListener
from gateway.config import Config, DeviceConfig

if TYPE_CHECKING:
    from drivers.ble.adapter import BleAdapter
    from drivers.ble.advert_listener import AdvertListener
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
        uses_ble = any(KINDS[d.kind].bluetooth for d in config.devices if d.kind in KINDS)
        self._adapter_state = AdapterState.STARTING if uses_ble else AdapterState.NOT_USED
        self._adapter_error = ""
        self._connect_lock = asyncio.Lock()  # BlueZ queues connects too; so do we
        #: Held by each GATT session while connected: the adapter's link limit.
        self._connection_slots = asyncio.Semaphore(config.bluetooth.max_connections)
        self._watchdog: AdapterWatchdog | None = None
        self._ble_sessions: list[Session] = []
        self._adverts: AdvertListener | None = None

    async def start(self) -> None:
        if self._adapter_state is AdapterState.STARTING:
            await self._open_adapter()
        self._watchdog = self._new_watchdog()
        served = [
            (device, kind)
            for device in self._config.devices
            if (kind := self._checked_kind(device)) is not None
        ]
        adverts = self._advert_listener(served)
        if adverts is not None and await self._start_guarded(adverts, None):
            self._ble_sessions.append(adverts)
        for device, kind in served:
            if kind.transport is Transport.ADVERT:
                continue  # heard by the one advertisement listener
            try:
                session = self._device_session(device, kind)
            except Exception as exc:  # a bug in a kind's entry or its driver
                self._fail(device, f"session not built: {exc}")
                continue
            if session is not None and await self._start_guarded(session, device):
                if kind.bluetooth:
                    self._ble_sessions.append(session)
                else:
                    self._sessions.append(session)
        self._sessions.extend(self._ble_sessions)
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
            "state": self._adapter_state.value,
            "error": self._adapter_error,
        }
        if self._watchdog is not None:
            watchdog = self._watchdog.health()
            if self._adapter_state is AdapterState.UNAVAILABLE:
                del watchdog["state"], watchdog["error"]
            health.update(watchdog)
        return health

    async def _open_adapter(self) -> None:
        # Imported only when needed: a serial-only gateway never loads bleak or bumble.
        from drivers.ble.adapter import open_ble_adapter

        self._adapter_state = AdapterState.OPENING
        try:
            adapter = open_ble_adapter(self._config.bluetooth.adapter)
            await adapter.start()
        except Exception as exc:  # no adapter must not stop serial devices or the uplink
            self._adapter_state = AdapterState.UNAVAILABLE
            self._adapter_error = str(exc)
            log.error("bluetooth adapter unavailable", extra={"error": str(exc)})
            return
        self._adapter = adapter
        self._adapter_state = AdapterState.UP

    def _checked_kind(self, device: DeviceConfig) -> DeviceKind | None:
        """The start-up self-check of a configured device's registry entry."""
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

    async def _start_guarded(self, session: Session, device: DeviceConfig | None) -> bool:
        """Start a device's session (or, with None, the advertisement listener)."""
        error = await _start(session)
        if error is None:
            return True
        if device is not None:
            self._fail(device, f"session did not start: {error}")
        else:  # the advertisement listener: the adapter cannot scan
            self._adapter_state = AdapterState.UNAVAILABLE
            self._adapter_error = f"{type(session).__name__} did not start: {error}"
        return False

    def _device_session(self, device: DeviceConfig, kind: DeviceKind) -> Session | None:
        """The session for a GATT or serial device; None while Bluetooth is unavailable."""
        if kind.serial is not None:
            from drivers.serial.session import SerialSession

            return SerialSession(str(device.port), kind.serial(), self._listener)
        if self._adapter is None or kind.gatt is None:
            return None
        from drivers.ble.session import GattSession

        bt = self._config.bluetooth
        return GattSession(
            device.address,
            kind.gatt,
            self._adapter,
            self._ble_listener(links=True),
            self._connect_lock,
            self._connection_slots,
            configured_site=device.site,
            connect_timeout=bt.connect_timeout_s,
            backoff=Backoff(bt.reconnect_min_s, bt.reconnect_max_s),
        )

    def _advert_listener(
        self, served: list[tuple[DeviceConfig, DeviceKind]]
    ) -> AdvertListener | None:
        """One scanner for every sensor that only advertises."""
        bound = {d.address: (d.kind, d.key) for d, k in served if k.transport is Transport.ADVERT}
        if self._adapter is None or not bound:
            return None
        from drivers.ble.advert_listener import AdvertListener

        self._adverts = AdvertListener(self._adapter, self._ble_listener(links=False), bound)
        return self._adverts

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
