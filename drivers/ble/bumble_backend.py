"""A bleak backend on Google's bumble: the gateway's own Bluetooth host stack.

`BumbleRadio` opens one HCI transport (a USB dongle `usb:0`, or the simulator's virtual
controller `tcp-client:127.0.0.1:PORT`) and hands bleak two classes bound to it:

    async with BumbleRadio("tcp-client:127.0.0.1:9001") as radio:
        async with BleakClient(address, backend=radio.client_backend) as client: ...

No bleak module is patched: the classes reach bleak through its `backend=` argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal, TypeVar

from bleak import BleakScanner
from bleak.args import SizedBuffer
from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bumble import att, core, hci
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import AttributeProxy, CharacteristicProxy
from bumble.transport import open_transport
from bumble.transport.common import Transport

logger = logging.getLogger(__name__)

_R = TypeVar("_R")

#: The largest ATT MTU; the peripheral answers with what it supports.
_REQUESTED_MTU = 517

_T = AdvertisingData.Type
_UUID_LIST_SIZES = {
    _T.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _T.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _T.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _T.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _T.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
    _T.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
}
_SERVICE_DATA_UUID_SIZES = {
    _T.SERVICE_DATA_16_BIT_UUID: 2,
    _T.SERVICE_DATA_32_BIT_UUID: 4,
    _T.SERVICE_DATA_128_BIT_UUID: 16,
}


def _uuid_str(value: core.UUID | bytes) -> str:
    """bleak's UUID form (lower-case 128-bit) of a bumble UUID or its little-endian bytes."""
    if isinstance(value, bytes):
        value = core.UUID.from_bytes(value)
    return str(uuid.UUID(bytes=value.to_bytes(force_128=True)[::-1]))


def _advertisement_data(advertisement: Advertisement) -> AdvertisementData:
    name: str | None = None
    uuids: list[str] = []
    service_data: dict[str, bytes] = {}
    manufacturer_data: dict[int, bytes] = {}
    tx_power: int | None = None
    for ad_type, value in advertisement.data.ad_structures:
        if ad_type == _T.COMPLETE_LOCAL_NAME or (ad_type == _T.SHORTENED_LOCAL_NAME and not name):
            name = value.decode("utf-8", errors="replace")
        elif size := _UUID_LIST_SIZES.get(ad_type):
            uuids += [_uuid_str(value[i : i + size]) for i in range(0, len(value), size)]
        elif size := _SERVICE_DATA_UUID_SIZES.get(ad_type):
            service_data[_uuid_str(value[:size])] = value[size:]
        elif ad_type == _T.MANUFACTURER_SPECIFIC_DATA and len(value) >= 2:
            manufacturer_data[int.from_bytes(value[:2], "little")] = value[2:]
        elif ad_type == _T.TX_POWER_LEVEL and value:
            tx_power = int.from_bytes(value[:1], "little", signed=True)
    return AdvertisementData(
        local_name=name,
        manufacturer_data=manufacturer_data,
        service_data=service_data,
        service_uuids=list(dict.fromkeys(uuids)),
        tx_power=tx_power,
        rssi=advertisement.rssi,
        platform_data=(advertisement,),
    )


def _is_fake_scan_response(advertisement: Advertisement) -> bool:
    """bumble's virtual controller reports every advertisement a second time as a scan
    response carrying the same bytes, which bumble merges into doubled data (pitfall 3)."""
    structures = advertisement.data.ad_structures
    half = len(structures) // 2
    return advertisement.is_scan_response and structures[:half] == structures[half:]


class BumbleRadio:
    """One bumble host on one HCI transport, shared by all bleak clients and scanners.

    bumble's Device supports one scan and one pending connection at a time: the radio
    runs a single scan for all active scanners and serializes connects (pitfall 2).
    """

    def __init__(self, transport_spec: str) -> None:
        self.transport_spec = transport_spec
        # Every gateway its own address, or two on one virtual link would get each
        # other's packets.
        self._address = hci.Address.generate_static_address()
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._scanners: set[BumbleScanner] = set()
        self._scan_mode: Literal["active", "passive"] | None = None
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self.client_backend: type[BaseBleakClient] = type(
            "BumbleClient", (BumbleClient,), {"radio": self}
        )
        self.scanner_backend: type[BaseBleakScanner] = type(
            "BumbleScanner", (BumbleScanner,), {"radio": self}
        )

    @property
    def device(self) -> Device:
        if self._device is None:
            raise BleakError(f"bumble radio on {self.transport_spec} is not running")
        return self._device

    async def start(self) -> None:
        self._transport = await open_transport(self.transport_spec)
        try:
            device = Device.with_hci(
                "bedside-gateway", self._address, self._transport.source, self._transport.sink
            )
            device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            device.on(Device.EVENT_FLUSH, self._on_transport_lost)
            await device.power_on()
        except BaseException:
            await self.stop()
            raise
        self._device = device

    async def stop(self) -> None:
        self._device = None
        self._scanners.clear()
        self._scan_mode = None
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    def _on_transport_lost(self) -> None:
        """The HCI transport is gone (dongle unplugged, simulator stopped). bumble has
        dropped every link; fail fast from now on rather than wait on a dead controller."""
        if self._device is None:  # stop() closed it
            return
        logger.error("bumble radio on %s lost its HCI transport", self.transport_spec)
        self._device = None
        self._scan_mode = None

    async def __aenter__(self) -> BumbleRadio:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def connect(self, address: hci.Address) -> Connection:
        """Create an LE connection, one at a time; a cancelled attempt is withdrawn from
        the controller so that the next one is accepted."""
        async with self._connect_lock:
            attempt = asyncio.ensure_future(self.device.connect(address, timeout=None))
            try:
                return await asyncio.shield(attempt)
            except asyncio.CancelledError:
                await self._withdraw(attempt)
                raise

    async def _withdraw(self, attempt: asyncio.Future[Connection]) -> None:
        with contextlib.suppress(hci.HCI_Error):
            await self.device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
        try:
            connection = await attempt
        except core.BaseBumbleError:
            return
        await connection.disconnect()  # it completed just before the cancel

    async def add_scanner(self, scanner: BumbleScanner) -> None:
        self._scanners.add(scanner)
        try:
            await self._update_scan()
        except BaseException:
            self._scanners.discard(scanner)
            raise

    async def remove_scanner(self, scanner: BumbleScanner) -> None:
        self._scanners.discard(scanner)
        await self._update_scan()

    async def _update_scan(self) -> None:
        """Scan actively if any scanner wants it, passively if all do, not at all if none."""
        async with self._scan_lock:
            wanted: Literal["active", "passive"] | None = None
            if self._scanners:
                active = any(s.scanning_mode == "active" for s in self._scanners)
                wanted = "active" if active else "passive"
            if wanted == self._scan_mode:
                return
            device = self.device
            if self._scan_mode is not None:
                await device.stop_scanning()
                self._scan_mode = None
            if wanted is not None:
                await device.start_scanning(active=wanted == "active")
                self._scan_mode = wanted

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        if _is_fake_scan_response(advertisement):
            return
        data = _advertisement_data(advertisement)
        for scanner in list(self._scanners):
            scanner.on_advertisement(advertisement.address, data)


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend; `BumbleRadio.scanner_backend` is this class bound to a radio."""

    radio: ClassVar[BumbleRadio]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"],
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.scanning_mode = scanning_mode

    async def start(self) -> None:
        self.seen_devices = {}
        try:
            await self.radio.add_scanner(self)
        except core.BaseBumbleError as error:
            raise BleakError(f"cannot scan on {self.radio.transport_spec}: {error!r}") from error

    async def stop(self) -> None:
        await self.radio.remove_scanner(self)

    def on_advertisement(self, address: hci.Address, data: AdvertisementData) -> None:
        if not self.is_allowed_uuid(data.service_uuids):
            return
        key = address.to_string(with_type_qualifier=False)
        device = self.create_or_update_device(key, key, data.local_name, address, data)
        self.call_detection_callbacks(device, data)


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
            service_uuid = _uuid_str(service_proxy.uuid)
            if self._service_filter is not None and service_uuid not in self._service_filter:
                continue
            service = BleakGATTService(service_proxy, service_proxy.handle, service_uuid)
            collection.add_service(service)
            for char_proxy in await peer.discover_characteristics(service=service_proxy):
                characteristic = BleakGATTCharacteristic(
                    char_proxy,
                    char_proxy.handle,
                    _uuid_str(char_proxy.uuid),
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
                            _uuid_str(descriptor_proxy.type),
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
