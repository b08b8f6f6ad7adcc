"""A simulated ESPHome Bluetooth proxy: ESPHome's native API over TCP with noise
encryption, relaying what its radio hears on the simulator's virtual link.

The messages are aioesphomeapi's generated protobuf classes and its table of message
numbers, so every byte is what aioesphomeapi (and bleak-esphome over it) decodes from a
real proxy. What the device answers, as ESPHome 2026.1 does with `api: encryption:` and
`bluetooth_proxy:`: hello (API 1.14, no password), device info (name, MAC, the proxy's
feature flags), an empty entity list, ping, disconnect; raw advertisements to the one
client subscribed to them (a second subscriber is ignored until the first leaves, as on
the device); its connection slots to every client that subscribes to them; GATT
connections to the devices it hears (`gatt_relay.py`). Not yet: pairing, cache clearing,
active scanning, batching several advertisements into one message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aioesphomeapi import api_pb2 as pb
from aioesphomeapi.core import MESSAGE_TYPE_TO_PROTO
from aioesphomeapi.model import BluetoothProxyFeature, BluetoothProxySubscriptionFlag
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as Protobuf

from firmware_sim.esphome.gatt_relay import GattRelay
from firmware_sim.esphome.noise_frames import (
    FrameError,
    HandshakeRefused,
    Message,
    NoiseResponder,
    decode_noise_key,
)
from firmware_sim.esphome.radio import Heard, ProxyRadio

logger = logging.getLogger(__name__)

API_VERSION = (1, 14)
ESPHOME_VERSION = "2026.1.0"
#: What the proxy offers (`DeviceInfoResponse.bluetooth_proxy_feature_flags`).
FEATURE_FLAGS = (
    BluetoothProxyFeature.PASSIVE_SCAN
    | BluetoothProxyFeature.ACTIVE_CONNECTIONS
    | BluetoothProxyFeature.REMOTE_CACHING
    | BluetoothProxyFeature.RAW_ADVERTISEMENTS
)
DEFAULT_PORT = 6053
DEFAULT_SLOTS = 3  # ESPHome's default `bluetooth_proxy: connection_slots`

_NUMBER_OF = {cls: number for number, cls in MESSAGE_TYPE_TO_PROTO.items()}


def _check_mac(mac: str) -> str:
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"{mac!r} is not a MAC address (AA:BB:CC:DD:EE:FF)")
    try:
        bytes.fromhex("".join(parts))
    except ValueError as error:
        raise ValueError(f"{mac!r} is not a MAC address (AA:BB:CC:DD:EE:FF)") from error
    return mac.upper()


class SimulatedProxy:
    """The proxy `name` on `host:port`, its radio on `hci_spec`: see the module docstring.

    `rssi` is the strength it reports for every device, `rssi_for` per address;
    `slots` its connection slots.
    """

    def __init__(
        self,
        *,
        noise_key: str,
        hci_spec: str,
        name: str = "ward-proxy",
        mac: str = "A4:CF:12:00:00:01",
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        rssi: int = -60,
        rssi_for: Mapping[str, int] | None = None,
        slots: int = DEFAULT_SLOTS,
    ) -> None:
        if not 0 <= slots <= 9:
            raise ValueError(f"slots must be 0-9 (an ESP32 holds at most 9), not {slots}")
        if not name or len(name) > 31:
            raise ValueError("the proxy's name must be 1-31 characters")
        self._psk = decode_noise_key(noise_key)
        self.name = name
        self.mac = _check_mac(mac)
        self._host = host
        self._port = port
        self.radio = ProxyRadio(hci_spec, self._relay, rssi=rssi, rssi_for=rssi_for)
        self.gatt = GattRelay(self.radio, slots, self._to_subscriber)
        self._server: asyncio.Server | None = None
        self._connections: set[ApiConnection] = set()
        self._advertisements_to: ApiConnection | None = None
        #: Clients refused for a wrong key (or a broken handshake), since start.
        self.refused = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulated proxy not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def describe(self) -> str:
        """One line for the banner."""
        return (
            f"esphome-proxy={self._host}:{self.port} name={self.name} mac={self.mac}"
            f" hci={self.radio.hci_spec} slots={self.gatt.slots}"
        )

    async def start(self) -> None:
        await self.radio.start()
        try:
            self._server = await asyncio.get_running_loop().create_server(
                lambda: ApiConnection(self), self._host, self._port
            )
        except BaseException:
            await self.radio.stop()
            raise

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close()
            await self._server.wait_closed()
            self._server = None
        await self.gatt.stop()
        await self.radio.stop()

    async def __aenter__(self) -> SimulatedProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def psk(self) -> bytes:
        return self._psk

    def joined(self, connection: ApiConnection) -> None:
        self._connections.add(connection)

    def left(self, connection: ApiConnection) -> None:
        self._connections.discard(connection)
        self.unsubscribe_advertisements(connection)

    def subscribe_advertisements(self, connection: ApiConnection) -> None:
        if self._advertisements_to not in (None, connection):
            logger.warning("%s: advertisements already go to another client", self.name)
            return
        self._advertisements_to = connection

    def unsubscribe_advertisements(self, connection: ApiConnection) -> None:
        if self._advertisements_to is connection:
            self._advertisements_to = None
            self.gatt.drop_all()

    def _to_subscriber(self, message: Protobuf) -> None:
        if self._advertisements_to is not None:
            self._advertisements_to.send(message)

    def _relay(self, heard: Heard) -> None:
        if self._advertisements_to is None:
            return
        self._advertisements_to.send(
            pb.BluetoothLERawAdvertisementsResponse(
                advertisements=[
                    pb.BluetoothLERawAdvertisement(
                        address=heard.address,
                        rssi=heard.rssi,
                        address_type=heard.address_type,
                        data=heard.data,
                    )
                ]
            )
        )


class ApiConnection(asyncio.Protocol):
    """One API client of the proxy."""

    def __init__(self, proxy: SimulatedProxy) -> None:
        self._proxy = proxy
        mac = proxy.mac.replace(":", "").lower()  # the server hello's form of it
        self._frames = NoiseResponder(proxy.psk(), proxy.name, mac)
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._handlers: dict[type[Protobuf], Callable[[Any], None]] = {
            pb.HelloRequest: self._hello,
            pb.AuthenticationRequest: self._authenticate,
            pb.DisconnectRequest: self._disconnect,
            pb.DisconnectResponse: lambda _: self.close(),
            pb.PingRequest: lambda _: self.send(pb.PingResponse()),
            pb.PingResponse: lambda _: None,
            pb.DeviceInfoRequest: self._device_info,
            pb.ListEntitiesRequest: lambda _: self.send(pb.ListEntitiesDoneResponse()),
            pb.SubscribeStatesRequest: lambda _: None,
            pb.SubscribeLogsRequest: lambda _: None,
            pb.SubscribeHomeassistantServicesRequest: lambda _: None,
            pb.SubscribeHomeAssistantStatesRequest: lambda _: None,
            pb.SubscribeBluetoothLEAdvertisementsRequest: self._subscribe_advertisements,
            pb.UnsubscribeBluetoothLEAdvertisementsRequest: (
                lambda _: self._proxy.unsubscribe_advertisements(self)
            ),
            pb.SubscribeBluetoothConnectionsFreeRequest: (
                lambda _: self.send(self._proxy.gatt.connections_free())
            ),
            pb.BluetoothDeviceRequest: self._proxy.gatt.device_request,
            pb.BluetoothGATTGetServicesRequest: self._proxy.gatt.get_services,
            pb.BluetoothGATTReadRequest: self._proxy.gatt.read,
            pb.BluetoothGATTReadDescriptorRequest: self._proxy.gatt.read,
            pb.BluetoothGATTWriteRequest: self._proxy.gatt.write,
            pb.BluetoothGATTWriteDescriptorRequest: self._proxy.gatt.write,
            pb.BluetoothGATTNotifyRequest: self._proxy.gatt.notify,
        }

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._proxy.joined(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._proxy.left(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            messages, reply = self._frames.receive(data)
        except HandshakeRefused as refusal:
            self._proxy.refused += 1
            logger.warning("%s: refused %s: %s", self._proxy.name, self._peer, refusal.reason)
            self._write(refusal.reply)
            self.close()
            return
        except FrameError as error:
            logger.warning("%s: closing %s: %s", self._proxy.name, self._peer, error)
            self.close()
            return
        if reply:
            self._write(reply)
        for message in messages:
            self._dispatch(message)

    def send(self, message: Protobuf) -> None:
        self._write(self._frames.encode(_NUMBER_OF[type(message)], message.SerializeToString()))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _dispatch(self, message: Message) -> None:
        kind = MESSAGE_TYPE_TO_PROTO.get(message.type)
        handler = self._handlers.get(kind) if kind is not None else None
        if kind is None or handler is None:
            logger.debug("%s: ignoring message type %d", self._proxy.name, message.type)
            return
        try:
            decoded = kind.FromString(message.payload)
        except DecodeError:
            logger.warning("%s: closing %s: undecodable %s", self._proxy.name, self._peer, kind)
            self.close()
            return
        handler(decoded)

    def _hello(self, request: pb.HelloRequest) -> None:
        logger.info("%s: hello from %s (%s)", self._proxy.name, request.client_info, self._peer)
        self.send(
            pb.HelloResponse(
                api_version_major=API_VERSION[0],
                api_version_minor=API_VERSION[1],
                server_info=ESPHOME_VERSION,
                name=self._proxy.name,
            )
        )

    def _authenticate(self, _: pb.AuthenticationRequest) -> None:
        # ESPHome 2026.1 has no API password: every authenticated (noise) client is in.
        self.send(pb.AuthenticationResponse(invalid_password=False))

    def _disconnect(self, _: pb.DisconnectRequest) -> None:
        self.send(pb.DisconnectResponse())
        self.close()

    def _device_info(self, _: pb.DeviceInfoRequest) -> None:
        proxy = self._proxy
        self.send(
            pb.DeviceInfoResponse(
                name=proxy.name,
                friendly_name=proxy.name,
                mac_address=proxy.mac,
                bluetooth_mac_address=proxy.mac,
                esphome_version=ESPHOME_VERSION,
                model="Simulated Bluetooth proxy",
                manufacturer="bedside-gateway firmware_sim",
                bluetooth_proxy_feature_flags=int(FEATURE_FLAGS),
                api_encryption_supported=True,
            )
        )

    def _subscribe_advertisements(
        self, request: pb.SubscribeBluetoothLEAdvertisementsRequest
    ) -> None:
        if not request.flags & BluetoothProxySubscriptionFlag.RAW_ADVERTISEMENTS:
            logger.warning(
                "%s: %s asked for parsed advertisements; this proxy sends raw ones only",
                self._proxy.name,
                self._peer,
            )
            return
        self._proxy.subscribe_advertisements(self)
