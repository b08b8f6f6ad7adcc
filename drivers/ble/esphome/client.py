"""The bleak client backend through an ESPHome Bluetooth proxy: one GATT connection held
by the proxy's radio, every request relayed over the proxy's API connection, ESPHome's
errors raised as bleak's.

Connection v3, as bleak-esphome speaks it (ESPHome removed v1): the proxy discovers the
services and sends them once, and this client writes a characteristic's Client
Characteristic Configuration descriptor itself to switch its values on and off. The
proxy keeps no values: `use_cached` reads are read from the device.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from aioesphomeapi import (
    ESP_CONNECTION_ERROR_DESCRIPTION,
    APIClient,
    BLEConnectionError,
    BluetoothProxyFeature,
)
from aioesphomeapi.core import (
    ESPHOME_GATT_ERRORS,
    APIConnectionError,
    BluetoothConnectionDroppedError,
    BluetoothGATTAPIError,
    TimeoutAPIError,
)
from aioesphomeapi.model import ConnectionClosedEvent
from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode

from drivers.ble.esphome.services import service_collection

if TYPE_CHECKING:
    from drivers.ble.esphome.link import ProxyLink

logger = logging.getLogger(__name__)

_R = TypeVar("_R")

CCCD = "00002902-0000-1000-8000-00805f9b34fb"
_NOTIFY_ON = b"\x01\x00"
_INDICATE_ON = b"\x02\x00"
_VALUES_OFF = b"\x00\x00"
_DEFAULT_MTU = 23
#: What a proxy must offer to connect: connections at all, and connection v3.
_GATT_FEATURES = BluetoothProxyFeature.ACTIVE_CONNECTIONS | BluetoothProxyFeature.REMOTE_CACHING
#: ESPHome's own error code: the proxy has no connection to that device.
_NOT_CONNECTED = -1
_ATT_ERRORS = frozenset(int(code) for code in BleakGATTProtocolErrorCode)
_DISCONNECT_TIMEOUT_S = 5.0


class EsphomeClient(BaseBleakClient):
    """bleak client backend; `ProxyLink.client_backend` is this class bound to a proxy.

    The device must be the `BLEDevice` of an advertisement the proxy relayed
    (`details` its `RawAdvert`): ESPHome connects by address and address type.
    """

    link: ClassVar[ProxyLink]

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._ble_device = (
            address_or_ble_device if isinstance(address_or_ble_device, BLEDevice) else None
        )
        self._service_filter = services
        self._number = int(self.address.replace(":", ""), 16)
        self._api: APIClient | None = None
        self._mtu = _DEFAULT_MTU
        self._connected = False
        #: The error code of the proxy's `connected=false` answer to our connect.
        self._refusal = 0
        #: Unsubscribing the connection's callbacks from the API client.
        self._unsubscribes: list[Callable[[], None]] = []
        self._notifying: set[int] = set()

    @property
    def name(self) -> str:
        if self._ble_device is not None and self._ble_device.name:
            return self._ble_device.name
        return self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._mtu

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if pair:
            raise NotImplementedError("pairing is not supported through an ESPHome proxy")
        api = self._usable_api()
        address_type = self._address_type()
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_closed(_event: ConnectionClosedEvent) -> None:
            if not lost.done():
                lost.set_result(None)
            self._ended(f"proxy {self.link.name}'s connection was lost")

        self._api = api
        self._unsubscribes.append(api.add_connection_closed_callback(on_closed))
        try:
            async with asyncio.timeout(self._timeout):
                unsubscribe = await self._unless_lost(
                    lost,
                    api.bluetooth_device_connect(
                        self._number,
                        self._on_state,
                        timeout=self._timeout + 1,  # ours ends first
                        disconnect_timeout=_DISCONNECT_TIMEOUT_S,
                        feature_flags=int(self.link.feature_flags),
                        address_type=address_type,
                    ),
                )
                self._unsubscribes.append(unsubscribe)
                if not self._connected:
                    raise BleakError(self._refused())
                discovered = await self._unless_lost(
                    lost, api.bluetooth_gatt_get_services(self._number)
                )
        except TimeoutError:
            self._abandon()
            raise BleakError(
                f"{self.address} did not connect through proxy {self.link.name}"
                f" within {self._timeout:g} s"
            ) from None
        except APIConnectionError as error:
            self._abandon()
            raise BleakError(f"connecting {self.address}: {self._describe(error)}") from error
        except BaseException:
            self._abandon()
            raise
        self.services = service_collection(discovered, lambda: self._mtu - 3, self._service_filter)
        logger.debug("%s connected through %s (MTU %d)", self.address, self.link.name, self._mtu)

    def _usable_api(self) -> APIClient:
        link = self.link
        if link.api is None:
            raise BleakError(f"proxy {link.name} is not connected: {link.error}")
        missing = _GATT_FEATURES & ~link.feature_flags
        if missing:
            raise BleakError(
                f"proxy {link.name} makes no GATT connections (it lacks {missing.name})"
            )
        if link.slots_free <= 0:
            raise BleakError(
                f"no free connection slot on proxy {link.name} (all {link.slots_limit} in use)"
            )
        return link.api

    def _address_type(self) -> int:
        details = self._ble_device.details if self._ble_device is not None else None
        address_type = getattr(details, "address_type", None)  # a RawAdvert
        if not isinstance(address_type, int):
            raise BleakError(
                f"{self.address}: connecting through proxy {self.link.name} needs the"
                " BLEDevice of an advertisement it relayed (for the address type)"
            )
        return address_type

    async def _unless_lost(
        self, lost: asyncio.Future[None], operation: Coroutine[Any, Any, _R]
    ) -> _R:
        """`operation`, or BleakError as soon as the proxy's connection is lost: the
        proxy's answer to a connect would never come, and the connect would wait out
        its timeout."""
        task = asyncio.ensure_future(operation)
        try:
            await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                task.add_done_callback(_retrieved)
        if not task.done():
            raise BleakError(f"proxy {self.link.name}'s connection was lost")
        return task.result()

    def _on_state(self, connected: bool, mtu: int, error: int) -> None:
        if connected:
            if not self._connected:
                self._connected = True
                self._mtu = mtu or _DEFAULT_MTU
        elif self._connected:
            self._ended(f"disconnected ({_connection_error(error)})")
        else:
            self._refusal = error

    def _refused(self) -> str:
        if self._refusal == 0:  # ESPHome's answer with every slot taken
            return (
                f"no free connection slot on proxy {self.link.name}"
                f" (it refused the connection to {self.address})"
            )
        return (
            f"proxy {self.link.name} could not connect to {self.address}:"
            f" {_connection_error(self._refusal)}"
        )

    def _abandon(self) -> None:
        """A connect that failed: its callbacks go, and a link the proxy opened closes."""
        api, opened = self._api, self._connected
        self._connected = False
        self._release()
        if opened and api is not None and api.is_connected:
            api.bluetooth_device_disconnect_no_wait(self._number)

    def _ended(self, why: str) -> None:
        """The connection has ended (the device, the proxy or we ended it)."""
        if not self._connected:
            return
        self._connected = False
        self.services = None
        self._release()
        logger.debug("%s through %s: %s", self.address, self.link.name, why)
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _release(self) -> None:
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()
        self._notifying.clear()
        self._api = None

    async def disconnect(self) -> None:
        api = self._api
        if not self._connected or api is None:
            return
        try:
            await api.bluetooth_device_disconnect(self._number, timeout=_DISCONNECT_TIMEOUT_S)
        except APIConnectionError as error:  # a proxy gone has dropped the link
            logger.debug("disconnecting %s: %s", self.address, error)
        self._ended("disconnected by the gateway")

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("pairing is not supported through an ESPHome proxy")

    async def unpair(self) -> None:
        raise NotImplementedError("pairing is not supported through an ESPHome proxy")

    def _require(self) -> APIClient:
        if not self._connected or self._api is None:
            raise BleakError(f"not connected to {self.address}")
        return self._api

    async def _call(self, operation: Awaitable[_R]) -> _R:
        """Await a request to the proxy and raise what bleak's other backends raise."""
        try:
            return await operation
        except BluetoothGATTAPIError as error:
            code = error.error.error
            if code in _ATT_ERRORS:
                raise BleakGATTProtocolError(code) from error
            if code == _NOT_CONNECTED:
                self._ended("the proxy has no connection to it")
            raise BleakError(f"{self.address}: {self._describe(error)}") from error
        except TimeoutAPIError as error:
            raise TimeoutError(f"{self.address}: {self._describe(error)}") from error
        except BluetoothConnectionDroppedError as error:
            raise BleakError(f"{self.address} disconnected during the request") from error
        except APIConnectionError as error:
            raise BleakError(f"{self.address}: {self._describe(error)}") from error

    def _describe(self, error: APIConnectionError) -> str:
        if isinstance(error, BluetoothGATTAPIError):
            code = error.error.error
            return (
                f"proxy {self.link.name} answered GATT error {code}"
                f" ({ESPHOME_GATT_ERRORS.get(code, 'unknown')})"
            )
        return f"proxy {self.link.name}: {error}"

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        api = self._require()
        return await self._call(api.bluetooth_gatt_read(self._number, characteristic.handle))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        api = self._require()
        return await self._call(api.bluetooth_gatt_read_descriptor(self._number, descriptor.handle))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        api = self._require()
        await self._call(
            api.bluetooth_gatt_write(self._number, characteristic.handle, bytes(data), response)
        )

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        api = self._require()
        await self._call(
            api.bluetooth_gatt_write_descriptor(self._number, descriptor.handle, bytes(data))
        )

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        api = self._require()
        cccd = _cccd(characteristic)
        handle = characteristic.handle
        await self._call(
            api.bluetooth_gatt_start_notify(
                self._number, handle, lambda _handle, data: callback(data)
            )
        )
        try:
            on = _NOTIFY_ON if "notify" in characteristic.properties else _INDICATE_ON
            await self.write_gatt_descriptor(cccd, on)
        except BaseException:
            api.bluetooth_gatt_stop_notify(self._number, handle)
            raise
        self._notifying.add(handle)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        api = self._require()
        handle = characteristic.handle
        if handle not in self._notifying:
            return
        self._notifying.discard(handle)
        api.bluetooth_gatt_stop_notify(self._number, handle)
        await self.write_gatt_descriptor(_cccd(characteristic), _VALUES_OFF)


def _cccd(characteristic: BleakGATTCharacteristic) -> BleakGATTDescriptor:
    descriptor = characteristic.get_descriptor(CCCD)
    if descriptor is None:
        raise BleakError(
            f"{characteristic.uuid} has no Client Characteristic Configuration descriptor"
        )
    return descriptor


def _connection_error(code: int) -> str:
    """What an ESP32 means by a connection's error code (its GATT, HCI or own codes)."""
    if code == 0:
        return "no reason given"
    try:
        return f"{ESP_CONNECTION_ERROR_DESCRIPTION[BLEConnectionError(code)]} ({code:#x})"
    except (KeyError, ValueError):
        return f"{ESPHOME_GATT_ERRORS.get(code, 'error')} ({code:#x})"


def _retrieved(task: asyncio.Future[Any]) -> None:
    """An abandoned request's outcome, taken so asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()
