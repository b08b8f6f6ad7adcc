"""Which Bluetooth stack bleak drives, chosen once from configuration.

- `bluez` or `bluez:hci0`: bleak's default backend, BlueZ over D-Bus (the Pi).
- `bumble:<transport>`: the bumble host stack in this process, on any bumble transport:
  `bumble:usb:0` for a USB dongle, `bumble:tcp-client:127.0.0.1:9001` for the simulator.

Either can be missing (a dongle not plugged in, BlueZ not running, no adapter on
D-Bus) and go away while in use: `start()` fails while it is missing, `check()` fails
once it has gone, and `wait_for_loss()` wakes at once when a bumble transport is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakError

from drivers.ble.bumble import BumbleRadio

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

_BLUEZ = "org.bluez"
_BLUEZ_ADAPTER = "org.bluez.Adapter1"
_T = TypeVar("_T")
_USAGE = "use 'bluez', 'bluez:hciN' or 'bumble:<transport>' (e.g. bumble:usb:0)"


class Scanning(Protocol):
    """What a scanner is built on: an adapter, or the proxies' scanner view."""

    def scanner_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `BleakScanner(...)` and its class methods."""
        ...


class BleAdapter:
    """The backend classes and options to give every BleakScanner and BleakClient."""

    def __init__(
        self, spec: str, *, radio: BumbleRadio | None = None, bluez_adapter: str | None = None
    ) -> None:
        self.spec = spec
        self._radio = radio
        self._bluez_adapter = bluez_adapter
        #: The BlueZ adapter's object path, found by `start()`.
        self._bluez_path: str | None = None

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
        """Open the bumble radio, or find the BlueZ adapter on D-Bus (the named one, or
        the one bleak would use). Raises BleakError (or, from bumble, OSError) while
        it is missing."""
        if self._radio is not None:
            await self._radio.start()
        else:
            self._bluez_path = await _on_system_bus(
                lambda bus: _bluez_adapter_path(bus, self._bluez_adapter)
            )

    async def check(self) -> None:
        """Raises BleakError when the started adapter has gone: the bumble
        radio lost its transport or could not reopen it, the BlueZ adapter left D-Bus,
        or BlueZ itself did."""
        if self._radio is not None:
            self._radio.check()
            return
        path = self._bluez_path
        if path is None:
            raise BleakError(f"{self.spec} was not started")
        await _on_system_bus(lambda bus: _bluez_adapter_there(bus, path))

    async def wait_for_loss(self, seconds: float) -> None:
        """Wait `seconds`, or less when a bumble radio reports its transport lost; then
        `check()` tells whether the adapter is still there (BlueZ sends no such news
        here: it is looked up again)."""
        if self._radio is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._radio.lost.wait()

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


async def _on_system_bus(exchange: Callable[[MessageBus], Awaitable[_T]]) -> _T:
    """Run `exchange` on a connection of its own to the system bus. D-Bus errors, and
    a system bus that cannot be reached, are raised as BleakError."""
    # dbus-fast comes with bleak on Linux only.
    from bleak.backends.bluezdbus.utils import get_dbus_authenticator
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus
    from dbus_fast.errors import DBusFastError

    bus = MessageBus(bus_type=BusType.SYSTEM, auth=get_dbus_authenticator())
    try:
        try:
            await bus.connect()
        except OSError as error:  # no socket: no D-Bus, so no BlueZ either
            raise BleakError(f"no D-Bus system bus, so no BlueZ ({error})") from error
        return await exchange(bus)
    except DBusFastError as error:  # e.g. a refused authentication
        raise BleakError(f"D-Bus system bus: {error}") from error
    finally:
        bus.disconnect()  # dbus-fast wants it even when connect() failed


async def _power_cycle_bluez(name: str | None) -> None:
    await _on_system_bus(lambda bus: _switch_off_and_on(bus, name))


async def _switch_off_and_on(bus: MessageBus, name: str | None) -> None:
    from bleak.backends.bluezdbus.utils import assert_reply
    from dbus_fast import Message, Variant

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


async def _bluez_adapters(bus: MessageBus) -> dict[str, dict[str, Any]]:
    """Every adapter BlueZ has, by object path, with its properties."""
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
    try:
        assert_reply(reply)
    except BleakError as error:
        raise BleakError(f"BlueZ does not answer on D-Bus: {error}") from None
    return {
        path: props
        for path, interfaces in unpack_variants(reply.body[0]).items()
        if (props := interfaces.get(_BLUEZ_ADAPTER)) is not None
    }


async def _default_bluez_adapter(bus: MessageBus) -> str:
    """The adapter bleak uses when none is named: one with the BLE central role, a
    powered one first. One that is off is taken too: switching it on is the point."""
    candidates = [
        (not props.get("Powered", False), path)
        for path, props in (await _bluez_adapters(bus)).items()
        if "central" in props.get("Roles", ())
    ]
    if not candidates:
        raise BleakError("no Bluetooth adapter with the BLE central role")
    return min(candidates)[1]


async def _bluez_adapter_path(bus: MessageBus, name: str | None) -> str:
    """The object path of the adapter `name` (hciN), or of the default one."""
    if name is None:
        return await _default_bluez_adapter(bus)
    path = f"/org/bluez/{name}"
    if path not in await _bluez_adapters(bus):
        raise BleakError(f"no Bluetooth adapter {name}")
    return path


async def _bluez_adapter_there(bus: MessageBus, path: str) -> None:
    """Raises BleakError unless BlueZ still has the adapter at `path`: one property
    read, not the list of every device BlueZ knows."""
    from bleak.backends.bluezdbus.utils import assert_reply
    from dbus_fast import Message

    reply = await bus.call(
        Message(
            destination=_BLUEZ,
            path=path,
            interface="org.freedesktop.DBus.Properties",
            member="Get",
            signature="ss",
            body=[_BLUEZ_ADAPTER, "Address"],
        )
    )
    try:
        assert_reply(reply)
    except BleakError as error:
        name = path.rsplit("/", 1)[-1]
        raise BleakError(f"Bluetooth adapter {name} is gone: {error}") from None


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
