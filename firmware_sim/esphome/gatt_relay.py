"""The proxy's GATT connections, as ESPHome's `bluetooth_proxy` makes them for a client
(connection v3, what aioesphomeapi asks for): a slot taken per device, the link its
radio opens to the device as a central, each request relayed over ATT and each answer
and notification sent back.

As on the device: every answer goes to the client subscribed to advertisements (ESPHome
has one such "API connection"), and that client leaving drops every link; a connect
with every slot taken is answered `connected=false` with error 0 and nothing else (no
slot is taken, no slot update sent); the proxy connects, asks for an MTU of 517,
discovers every service, characteristic and descriptor, then says `connected` with the
MTU and sends the slots; a slot is freed with `connected=false` and the link's HCI
disconnection reason; `BluetoothGATTNotifyRequest` only registers for the values
(`esp_ble_gattc_register_for_notify`): the client writes the CCCD itself, as
bleak-esphome does; notifications and indications both arrive as
`BluetoothGATTNotifyDataResponse` (the radio confirms indications); ATT errors are
relayed as `BluetoothGATTErrorResponse` with the ATT error code; a request for a device
not connected is answered with ESPHome's own -1, "Not connected".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aioesphomeapi import api_pb2 as pb
from bumble import att, core, hci
from bumble.core import UUID
from bumble.device import Connection, Peer
from google.protobuf.message import Message as Protobuf

from drivers.ble.cancel import cancel_until_done
from firmware_sim.esphome.radio import ProxyRadio

logger = logging.getLogger(__name__)

#: ESPHome's own error code: no connection to that device (aioesphomeapi: "Not connected").
GATT_NOT_CONNECTED = -1
#: ESP-IDF's `ESP_GATT_ERROR` (133), what an ESP32 reports for a link that never opened.
GATT_ERROR = 0x85
#: How long the radio tries to reach a device before giving up.
CONNECT_TIMEOUT_S = 20.0
REQUESTED_MTU = 517

_Type = pb.BluetoothDeviceRequestType
_CONNECT_V3 = (
    _Type.BLUETOOTH_DEVICE_REQUEST_TYPE_CONNECT_V3_WITH_CACHE,
    _Type.BLUETOOTH_DEVICE_REQUEST_TYPE_CONNECT_V3_WITHOUT_CACHE,
)


@dataclass(eq=False)
class _Link:
    """One slot in use: the device's address, then its link once open."""

    address: int
    opening: asyncio.Task[None] | None = None
    connection: Connection | None = None
    #: Set once connected and discovered: requests are relayed from then on.
    peer: Peer | None = None
    services: list[pb.BluetoothGATTService] = field(default_factory=list)
    #: The relays registered for values, by characteristic handle.
    listeners: dict[int, Callable[[bytes], None]] = field(default_factory=dict)


def _split_uuid(uuid: UUID) -> list[int]:
    """ESPHome's 128-bit UUID field: the high and the low 64 bits."""
    value = int.from_bytes(uuid.to_bytes(force_128=True), "little")
    return [value >> 64, value & (1 << 64) - 1]


async def _discover(peer: Peer) -> list[pb.BluetoothGATTService]:
    services = []
    for service in await peer.discover_services():
        characteristics = []
        for characteristic in await peer.discover_characteristics(service=service):
            descriptors = await peer.discover_descriptors(characteristic)
            characteristics.append(
                pb.BluetoothGATTCharacteristic(
                    uuid=_split_uuid(characteristic.uuid),
                    handle=characteristic.handle,  # the value's handle, as ESP-IDF's
                    properties=int(characteristic.properties),
                    descriptors=[
                        pb.BluetoothGATTDescriptor(uuid=_split_uuid(d.type), handle=d.handle)
                        for d in descriptors
                    ],
                )
            )
        services.append(
            pb.BluetoothGATTService(
                uuid=_split_uuid(service.uuid),
                handle=service.handle,
                characteristics=characteristics,
            )
        )
    return services


class GattRelay:
    """`slots` connections through `radio`; `send` delivers a message to the client
    subscribed to advertisements (or drops it when there is none)."""

    def __init__(self, radio: ProxyRadio, slots: int, send: Callable[[Protobuf], None]) -> None:
        self._radio = radio
        self.slots = slots
        self._send = send
        self._links: dict[int, _Link] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def connections_free(self) -> pb.BluetoothConnectionsFreeResponse:
        return pb.BluetoothConnectionsFreeResponse(
            free=self.slots - len(self._links), limit=self.slots, allocated=list(self._links)
        )

    def device_request(self, request: pb.BluetoothDeviceRequest) -> None:
        if request.request_type in _CONNECT_V3:
            self._connect(request)
        elif request.request_type == _Type.BLUETOOTH_DEVICE_REQUEST_TYPE_DISCONNECT:
            self._disconnect(request.address)
        elif request.request_type == _Type.BLUETOOTH_DEVICE_REQUEST_TYPE_CONNECT:
            logger.warning("connection v1 is not offered (ESPHome removed it)")
            self._state(request.address, connected=False)
        else:
            logger.warning("pairing and cache clearing are not offered")

    def drop_all(self) -> None:
        """The subscribed client is gone: as ESPHome does, drop every link it left."""
        for address in list(self._links):
            self._disconnect(address)

    async def stop(self) -> None:
        for task in list(self._tasks):
            await cancel_until_done(task)
        self._links.clear()

    def _state(self, address: int, *, connected: bool, mtu: int = 0, error: int = 0) -> None:
        self._send(
            pb.BluetoothDeviceConnectionResponse(
                address=address, connected=connected, mtu=mtu, error=error
            )
        )

    def _connect(self, request: pb.BluetoothDeviceRequest) -> None:
        link = self._links.get(request.address)
        if link is not None:
            if link.peer is not None and link.connection is not None:
                self._state(link.address, connected=True, mtu=link.connection.att_mtu)
                self._send(self.connections_free())
            return  # already connecting: ignored, as on the device
        if len(self._links) >= self.slots or not request.has_address_type:
            why = "no free connection slot" if request.has_address_type else "no address type"
            logger.warning("refusing a connect to %012X: %s", request.address, why)
            self._state(request.address, connected=False)
            return
        link = _Link(request.address)
        self._links[link.address] = link
        link.opening = self._spawn(self._open(link, request.address_type))
        self._send(self.connections_free())

    async def _open(self, link: _Link, address_type: int) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                connection = await self._radio.connect(link.address, address_type)
        except (TimeoutError, core.BaseBumbleError) as error:
            logger.warning("cannot connect to %012X: %s", link.address, error)
            self._release(link, GATT_ERROR)
            return
        link.connection = connection
        connection.on(connection.EVENT_DISCONNECTION, lambda reason: self._lost(link, reason))
        try:
            peer = Peer(connection)
            await peer.request_mtu(REQUESTED_MTU)
            link.services = await _discover(peer)
        except (TimeoutError, core.BaseBumbleError) as error:
            logger.warning("discovery on %012X failed: %s", link.address, error)
            with contextlib.suppress(core.BaseBumbleError):
                await connection.disconnect()
            return
        link.peer = peer
        self._state(link.address, connected=True, mtu=connection.att_mtu)
        self._send(self.connections_free())

    def _disconnect(self, address: int) -> None:
        link = self._links.get(address)
        if link is None:
            self._state(address, connected=False)
            self._send(self.connections_free())
        elif link.connection is None:  # still connecting: withdrawn
            if link.opening is not None:
                link.opening.cancel()
            self._release(link, 0)
        else:
            self._spawn(self._close(link.connection))

    async def _close(self, connection: Connection) -> None:
        with contextlib.suppress(core.BaseBumbleError):
            await connection.disconnect()

    def _lost(self, link: _Link, reason: int) -> None:
        logger.info("%012X disconnected: %s", link.address, hci.HCI_Constant.error_name(reason))
        if link.opening is not None and not link.opening.done():
            link.opening.cancel()
        self._release(link, reason)

    def _release(self, link: _Link, error: int) -> None:
        if self._links.get(link.address) is not link:
            return
        del self._links[link.address]
        self._state(link.address, connected=False, error=error)
        self._send(self.connections_free())

    def get_services(self, request: pb.BluetoothGATTGetServicesRequest) -> None:
        link = self._connected(request.address, 0)
        if link is None:
            return
        for service in link.services:
            self._send(
                pb.BluetoothGATTGetServicesResponse(address=link.address, services=[service])
            )
        self._send(pb.BluetoothGATTGetServicesDoneResponse(address=link.address))

    def read(
        self, request: pb.BluetoothGATTReadRequest | pb.BluetoothGATTReadDescriptorRequest
    ) -> None:
        address, handle = request.address, request.handle

        async def read(peer: Peer) -> Protobuf:
            data = await peer.read_value(handle)
            return pb.BluetoothGATTReadResponse(address=address, handle=handle, data=data)

        self._relay(address, handle, read)

    def write(
        self, request: pb.BluetoothGATTWriteRequest | pb.BluetoothGATTWriteDescriptorRequest
    ) -> None:
        address, handle, data = request.address, request.handle, request.data
        # A descriptor is always written with a response, as ESPHome writes it.
        with_response = not isinstance(request, pb.BluetoothGATTWriteRequest) or request.response

        async def write(peer: Peer) -> Protobuf:
            await peer.write_value(handle, data, with_response=with_response)
            return pb.BluetoothGATTWriteResponse(address=address, handle=handle)

        self._relay(address, handle, write)

    def notify(self, request: pb.BluetoothGATTNotifyRequest) -> None:
        address, handle = request.address, request.handle
        link = self._connected(address, handle)
        if link is None or link.peer is None:
            return
        client = link.peer.gatt_client
        if request.enable and handle not in link.listeners:

            def listener(value: bytes) -> None:
                self._send(
                    pb.BluetoothGATTNotifyDataResponse(address=address, handle=handle, data=value)
                )

            link.listeners[handle] = listener
            client.notification_subscribers.setdefault(handle, set()).add(listener)
            client.indication_subscribers.setdefault(handle, set()).add(listener)
        elif not request.enable and (registered := link.listeners.pop(handle, None)):
            client.notification_subscribers.get(handle, set()).discard(registered)
            client.indication_subscribers.get(handle, set()).discard(registered)
        self._send(pb.BluetoothGATTNotifyResponse(address=address, handle=handle))

    def _connected(self, address: int, handle: int) -> _Link | None:
        """The link to `address` if it is connected; otherwise the client is told."""
        link = self._links.get(address)
        if link is None or link.peer is None:
            self._send(
                pb.BluetoothGATTErrorResponse(
                    address=address, handle=handle, error=GATT_NOT_CONNECTED
                )
            )
            return None
        return link

    def _relay(
        self, address: int, handle: int, operation: Callable[[Peer], Coroutine[Any, Any, Protobuf]]
    ) -> None:
        link = self._connected(address, handle)
        if link is not None and link.peer is not None:
            self._spawn(self._answer(address, handle, operation(link.peer)))

    async def _answer(
        self, address: int, handle: int, operation: Coroutine[Any, Any, Protobuf]
    ) -> None:
        try:
            answer = await operation
        except att.ATT_Error as error:
            answer = pb.BluetoothGATTErrorResponse(
                address=address, handle=handle, error=error.error_code
            )
        except (TimeoutError, core.BaseBumbleError) as error:
            # The link dropped: its disconnection tells the client.
            logger.warning("request to %012X handle %d failed: %s", address, handle, error)
            return
        self._send(answer)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("GATT relay task failed", exc_info=error)
