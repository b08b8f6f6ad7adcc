"""Which Bluetooth stack bleak drives, chosen once from configuration.

- `bluez` or `bluez:hci0`: bleak's default backend, BlueZ over D-Bus (the Pi).
- `bumble:<transport>`: the bumble host stack in this process, on any bumble transport:
  `bumble:usb:0` for a USB dongle, `bumble:tcp-client:127.0.0.1:9001` for the simulator.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakError

from drivers.ble.bumble import BumbleRadio

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

_BLUEZ = "org.bluez"
_BLUEZ_ADAPTER = "org.bluez.Adapter1"
_USAGE = "use 'bluez', 'bluez:hciN' or 'bumble:<transport>' (e.g. bumble:usb:0)"


class BleAdapter:
    """The backend classes and options to give every BleakScanner and BleakClient."""

    def __init__(
        self, spec: str, *, radio: BumbleRadio | None = None, bluez_adapter: str | None = None
    ) -> None:
        self.spec = spec
        self._radio = radio
        self._bluez_adapter = bluez_adapter

    @property
    def scanner_backend(self) -> type[BaseBleakScanner] | None:
        """None means bleak's platform default (BlueZ on Linux)."""
        return self._radio.scanner_backend if self._radio is not None else None

    @property
    def client_backend(self) -> type[BaseBleakClient] | None:
        return self._radio.client_backend if self._radio is not None else None

    def scanner_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `BleakScanner(...)` and its class methods."""
        return self._kwargs(self.scanner_backend)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `BleakClient(...)`."""
        return self._kwargs(self.client_backend)

    def _kwargs(self, backend: type[Any] | None) -> dict[str, Any]:
        if backend is not None:
            return {"backend": backend}
        if self._bluez_adapter is not None:
            return {"bluez": {"adapter": self._bluez_adapter}}
        return {}

    async def start(self) -> None:
        if self._radio is not None:
            await self._radio.start()

    async def power_cycle(self) -> None:
        """Switch the radio off and on again: a BlueZ adapter through its `Powered`
        property, a bumble radio by closing and reopening its transport. Scanners and
        connections do not survive it. Raises BleakError or OSError when it cannot."""
        if self._radio is not None:
            await self._radio.stop()
            await self._radio.start()
        else:
            await _power_cycle_bluez(self._bluez_adapter)

    async def stop(self) -> None:
        if self._radio is not None:
            await self._radio.stop()

    async def __aenter__(self) -> BleAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def _power_cycle_bluez(name: str | None) -> None:
    # dbus-fast comes with bleak on Linux only.
    from bleak.backends.bluezdbus.utils import assert_reply, get_dbus_authenticator
    from dbus_fast import BusType, Message, Variant
    from dbus_fast.aio import MessageBus

    bus = MessageBus(bus_type=BusType.SYSTEM, auth=get_dbus_authenticator())
    try:
        await bus.connect()
        path = f"/org/bluez/{name}" if name else await _default_bluez_adapter(bus)
        for powered in (False, True):
            reply = await bus.call(
                Message(
                    destination=_BLUEZ,
                    path=path,
                    interface="org.freedesktop.DBus.Properties",
                    member="Set",
                    signature="ssv",
                    body=[_BLUEZ_ADAPTER, "Powered", Variant("b", powered)],
                )
            )
            try:
                assert_reply(reply)
            except BleakError as error:
                state = "on" if powered else "off"
                raise BleakError(f"cannot switch {path} {state}: {error}") from None
    finally:
        bus.disconnect()  # dbus-fast wants it even when connect() failed


async def _default_bluez_adapter(bus: MessageBus) -> str:
    """The adapter bleak uses when none is named: one with the BLE central role, a
    powered one first. One that is off is taken too: switching it on is the point."""
    from bleak.backends.bluezdbus.utils import assert_reply
    from dbus_fast import Message, unpack_variants

    reply = await bus.call(
        Message(
            destination=_BLUEZ,
            path="/",
            interface="org.freedesktop.DBus.ObjectManager",
            member="GetManagedObjects",
        )
    )
    assert_reply(reply)
    candidates = [
        (not props.get("Powered", False), path)
        for path, interfaces in unpack_variants(reply.body[0]).items()
        if (props := interfaces.get(_BLUEZ_ADAPTER)) and "central" in props.get("Roles", ())
    ]
    if not candidates:
        raise BleakError("no Bluetooth adapter with the BLE central role")
    return min(candidates)[1]


def open_ble_adapter(spec: str) -> BleAdapter:
    """The adapter a spec names, not yet started. Raises ValueError on a bad spec."""
    kind, separator, rest = spec.partition(":")
    if kind == "bluez":
        if separator and not re.fullmatch(r"hci\d+", rest):
            raise ValueError(f"bad BlueZ adapter name {rest!r} in {spec!r}: {_USAGE}")
        return BleAdapter(spec, bluez_adapter=rest or None)
    if kind == "bumble":
        if not rest:
            raise ValueError(f"{spec!r} names no bumble transport: {_USAGE}")
        return BleAdapter(spec, radio=BumbleRadio(rest))
    raise ValueError(f"unknown Bluetooth adapter {spec!r}: {_USAGE}")
