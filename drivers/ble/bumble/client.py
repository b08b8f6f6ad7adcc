"""The bleak client backend: one GATT connection through its radio, bumble's errors
raised as bleak's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from bleak import BleakScanner
from bleak.args import SizedBuffer
from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bumble import att, core, hci
from bumble.device import Connection, Peer
from bumble.gatt_client import AttributeProxy, CharacteristicProxy

from drivers.ble.bumble.uuids import uuid_str

if TYPE_CHECKING:
    from drivers.ble.bumble.radio import BumbleRadio

logger = logging.getLogger(__name__)

_R = TypeVar("_R")

#: The largest ATT MTU; the peripheral answers with what it supports.
_REQUESTED_MTU = 517


class BumbleClient(BaseBleakClient):
    """bleak client backend; `BumbleRadio.client_backend` is this class bound to a radio."""

    radio: ClassVar[BumbleRadio]

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
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    @property
    def name(self) -> str:
        if self._ble_device is not None and self._ble_device.name:
            return self._ble_device.name
        return self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else att.ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if pair:
            raise NotImplementedError("pairing is not supported by the bumble backend")
        async with asyncio.timeout(self._timeout):
            connection = await self._call(self.radio.connect(await self._peer_address()))
            self._connection = connection
            connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
            try:
                self._peer = Peer(connection)
                await self._call(self._peer.request_mtu(_REQUESTED_MTU))
                self.services = await self._call(self._discover())
            except BaseException:
                await self.disconnect()
                raise

    async def _peer_address(self) -> hci.Address:
        """The bumble address (with its type) of the peripheral, scanning for it when
        bleak was given a string, as bleak's other backends do."""
        if self._ble_device is None:
            found = await BleakScanner.find_device_by_address(
                self.address, timeout=self._timeout, backend=self.radio.scanner_backend
            )
            if found is None:
                raise BleakDeviceNotFoundError(self.address, f"{self.address} was not found")
            self._ble_device = found
        details = self._ble_device.details
        assert isinstance(details, hci.Address)
        return details

    async def _discover(self) -> BleakGATTServiceCollection:
        peer = self._require_peer()
        collection = BleakGATTServiceCollection()
        for service_proxy in await peer.discover_services():
            service_uuid = uuid_str(service_proxy.uuid)
            if self._service_filter is not None and service_uuid not in self._service_filter:
                continue
            service = BleakGATTService(service_proxy, service_proxy.handle, service_uuid)
            collection.add_service(service)
            for char_proxy in await peer.discover_characteristics(service=service_proxy):
                characteristic = BleakGATTCharacteristic(
                    char_proxy,
                    char_proxy.handle,
                    uuid_str(char_proxy.uuid),
                    list(gatt_char_props_to_strs(int(char_proxy.properties))),
                    lambda: self.mtu_size - 3,
                    service,
                )
                collection.add_characteristic(characteristic)
                for descriptor_proxy in await peer.discover_descriptors(char_proxy):
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor_proxy,
                            descriptor_proxy.handle,
                            uuid_str(descriptor_proxy.type),
                            characteristic,
                        )
                    )
        return collection

    def _on_disconnection(self, reason: int) -> None:
        """Also called when the HCI transport is lost: bumble then drops every link."""
        logger.debug("%s disconnected: %s", self.address, hci.HCI_Constant.error_name(reason))
        self._connection = None
        self._peer = None
        self.services = None
        self._subscribers.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _require_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError(f"not connected to {self.address}")
        return self._peer

    async def _call(self, operation: Awaitable[_R]) -> _R:
        """Await a bumble operation and raise what bleak's other backends raise.

        bumble cancels a pending request when the link or the transport drops; that is
        reported as a BleakError, not as a cancellation of the caller.
        """
        try:
            return await operation
        except att.ATT_Error as error:
            raise BleakGATTProtocolError(error.error_code) from error
        except core.TimeoutError as error:
            raise TimeoutError(str(error)) from error
        except core.BaseBumbleError as error:
            raise BleakError(str(error)) from error
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._connection is None and task is not None and not task.cancelling():
                raise BleakError(f"{self.address} disconnected") from None
            raise

    async def disconnect(self) -> None:
        if self._connection is None:
            return
        with contextlib.suppress(hci.HCI_Error):
            await self._connection.disconnect()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("pairing is not supported by the bumble backend")

    async def unpair(self) -> None:
        raise NotImplementedError("pairing is not supported by the bumble backend")

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(characteristic.obj, use_cached)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(descriptor.obj, use_cached)

    async def _read(self, attribute: AttributeProxy[bytes], use_cached: bool) -> bytearray:
        peer = self._require_peer()
        cached = peer.gatt_client.cached_values.get(attribute.handle)
        if use_cached and cached is not None:
            return bytearray(cached[1])
        value: bytes = await self._call(peer.read_value(attribute))
        return bytearray(value)

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        peer = self._require_peer()
        await self._call(peer.write_value(characteristic.obj, bytes(data), response))

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        peer = self._require_peer()
        await self._call(peer.write_value(descriptor.obj, bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        peer = self._require_peer()
        proxy: CharacteristicProxy[bytes] = characteristic.obj

        def subscriber(value: bytes) -> None:
            callback(bytearray(value))

        await self._call(peer.subscribe(proxy, subscriber))
        self._subscribers[characteristic.handle] = subscriber

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peer = self._require_peer()
        subscriber = self._subscribers.pop(characteristic.handle, None)
        await self._call(peer.unsubscribe(characteristic.obj, subscriber))
