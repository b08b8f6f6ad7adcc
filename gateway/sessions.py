"""One session per configured device, built at start-up from the configuration and
the device-kind registry (`drivers/kinds.py`): a kind's transport says which driver
session serves it. Everything above sees only the `SessionListener` calls.

A kind whose registry entry cannot work, or a session that cannot be built or started,
costs that device only: it is logged and shown on its device record (`unreachable`,
`not served: ...`), and the other devices are served. The Bluetooth devices' sessions
run on the one adapter while it is there (`gateway/bluetooth.py`): a missing adapter
costs the Bluetooth devices only, until it appears.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from drivers.kinds import KINDS, DeviceKind, check_kind
from drivers.listener import AdapterState, LinkState, SessionListener
from gateway.config import Config, DeviceConfig

if TYPE_CHECKING:
    from drivers.serial.protocol import SerialProtocol
    from gateway.bluetooth import BluetoothSessions

log = logging.getLogger(__name__)


class Session(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class DeviceSessions:
    def __init__(self, config: Config, listener: SessionListener) -> None:
        self._config = config
        self._listener = listener
        self._sessions: list[Session] = []
        #: The Bluetooth side, only when a Bluetooth device is configured.
        self._bluetooth: BluetoothSessions | None = None
        if any(KINDS[d.kind].bluetooth for d in config.devices if d.kind in KINDS):
            # Imported only when needed: a serial-only gateway never loads bleak or bumble.
            from gateway.bluetooth import BluetoothSessions

            self._bluetooth = BluetoothSessions(config.bluetooth, listener)

    async def start(self) -> None:
        served = [
            (device, kind)
            for device in self._config.devices
            if (kind := self._checked_kind(device)) is not None
        ]
        if self._bluetooth is not None:
            await self._bluetooth.start([(d, k) for d, k in served if k.bluetooth], self._fail)
        for device, kind in served:
            if kind.serial is None:
                continue
            try:
                session = self._serial_session(device, kind.serial)
            except Exception as exc:  # a bug in a kind's entry or its driver
                self._fail(device, f"session not built: {exc}")
                continue
            if await self._start_guarded(session, device):
                self._sessions.append(session)

    async def stop(self) -> None:
        for session in reversed(self._sessions):
            await session.stop()
        self._sessions.clear()
        if self._bluetooth is not None:
            await self._bluetooth.stop()

    def discovered(self) -> list[dict[str, Any]]:
        """Sensors heard advertising that are not bound to anything: candidates for
        pairing. They never give readings."""
        if self._bluetooth is None:
            return []
        return self._bluetooth.discovered(d.address for d in self._config.devices)

    def adapter_health(self) -> dict[str, Any]:
        """The Bluetooth adapter's state and why, and the watchdog's figures."""
        if self._bluetooth is None:
            state = AdapterState.NOT_USED
            return {"adapter": self._config.bluetooth.adapter, "state": state.value, "error": ""}
        return self._bluetooth.health()

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
