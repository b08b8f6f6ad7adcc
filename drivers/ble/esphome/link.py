"""One ESPHome Bluetooth proxy's native-API connection, kept up: connected with back-off,
connected again after a drop, the proxy's connection slots and every advertisement it
relays reported to the gateway.

Why aioesphomeapi's `APIClient` directly and not bleak-esphome: bleak-esphome 4.1 needs
habluetooth's `BluetoothManager`, which patches bleak for the whole process, enumerates
adapters over BlueZ's D-Bus and opens the kernel's Bluetooth management socket; the
gateway needs none of that to reach a proxy over TCP. Why our own loop and not
aioesphomeapi's `ReconnectLogic`: its back-off is its own (1.8^n, up to 60 s), it
listens for mDNS unless told not to, and a proxy that is not a Bluetooth proxy would
count as connected; here the back-off is the gateway's (`drivers/backoff.py`) and each
attempt ends in one of four states.

A fresh `APIClient` per connection: nothing of a dead connection (its callbacks, its
GATT links) carries over to the next. Its keepalive is on, and shorter than
aioesphomeapi's default (20 s): aioesphomeapi looks every `keepalive_s`, pings when
nothing came from the proxy since its last look, and drops the connection when no
answer comes within 4.5 times `keepalive_s`. A proxy whose TCP connection stays open
but that has stopped answering (power lost, Wi-Fi gone) is so noticed 5.5 to 6.5 times
`keepalive_s` after its last message: 27.5-32.5 s with the default 5 s (measured: 3.3 s
with 0.5 s), where the default 20 s would take up to 130 s. A proxy relaying
advertisements is never pinged: they are its answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aioesphomeapi import APIClient, BluetoothProxyFeature
from aioesphomeapi.api_pb2 import BluetoothLERawAdvertisementsResponse
from aioesphomeapi.core import (
    APIConnectionError,
    EncryptionPlaintextAPIError,
    InvalidAuthAPIError,
    InvalidEncryptionKeyAPIError,
    PingFailedAPIError,
    SocketClosedAPIError,
    to_human_readable_address,
)
from aioesphomeapi.model import ConnectionClosedEvent
from bleak.backends.client import BaseBleakClient

from drivers.backoff import Backoff
from drivers.ble.cancel import cancel_until_done
from drivers.ble.esphome.client import EsphomeClient

logger = logging.getLogger(__name__)

#: How often aioesphomeapi looks for silence, and pings (see the module docstring).
KEEPALIVE_S = 5.0
#: One connection attempt: TCP, the noise handshake, device info, the first slot report.
CONNECT_TIMEOUT_S = 10.0
#: How long a proxy has to answer our disconnect before the socket is just closed.
DISCONNECT_TIMEOUT_S = 2.0
CLIENT_INFO = "bedside-gateway"


class ProxyState(StrEnum):
    #: Not connected yet (first try, or right after a loss), trying.
    CONNECTING = "connecting"
    CONNECTED = "connected"
    #: An attempt failed (or the link was stopped); retrying with back-off.
    DISCONNECTED = "disconnected"
    #: The proxy refused the noise key, or is not a Bluetooth proxy: retried slowly
    #: (every `Backoff.maximum`), the error says which.
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class RawAdvert:
    """One advertisement as the proxy relayed it."""

    #: "AA:BB:CC:DD:EE:FF", upper case.
    address: str
    #: 0 public, 1 random, as ESPHome sends it.
    address_type: int
    rssi: int
    #: The advertisement's AD structures, as sent.
    data: bytes


class _Refused(Exception):
    """The proxy will not serve us as it is configured; the message says why."""


class ProxyLink:
    """One ESPHome Bluetooth proxy's native-API connection, kept up until `stop()`.

    `on_change` is called on every change of `state`, `error` or the slots;
    `on_advertisement` for every advertisement relayed. `client_backend` is the bleak
    client backend that connects through this proxy (`EsphomeClient` bound to it).
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        noise_key: str,
        *,
        on_advertisement: Callable[[ProxyLink, RawAdvert], None],
        on_change: Callable[[ProxyLink], None],
        backoff: Backoff,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._noise_key = noise_key
        self._on_advertisement = on_advertisement
        self._on_change = on_change
        self._backoff = backoff
        self._keepalive_s = keepalive_s
        self.state = ProxyState.CONNECTING
        #: Why it is not connected; '' while connected. Never holds the key.
        self.error = "not connected yet"
        #: From the proxy's `BluetoothConnectionsFreeResponse`; 0 until it says.
        self.slots_free = 0
        self.slots_limit = 0
        #: What the proxy offers (`DeviceInfo.bluetooth_proxy_feature_flags`).
        self.feature_flags = BluetoothProxyFeature(0)
        #: `time.monotonic()` of the current connection's start, and of the last
        #: advertisement relayed.
        self.connected_since: float | None = None
        self.last_advert_at: float | None = None
        #: The API client while connected; `EsphomeClient` learns of the connection's
        #: loss from its `add_connection_closed_callback`.
        self.api: APIClient | None = None
        #: Its first attempt has ended (connected or not): what it hears can be
        #: compared with what the others hear (`drivers/ble/scanner_view.py`).
        self.tried = False
        self.client_backend: type[BaseBleakClient] = type(
            "EsphomeClient", (EsphomeClient,), {"link": self}
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Returns at once; connects in the background, again and again, until `stop()`."""
        if self._task is None:
            self._stopping = False
            self._set(ProxyState.CONNECTING, "not connected yet")
            self._task = asyncio.create_task(self._run(), name=f"ESPHome proxy {self.name}")

    async def stop(self) -> None:
        """Disconnects: every GATT connection through the proxy ends (the proxy drops
        them when its API client leaves, and each client's disconnected callback fires)."""
        self._stopping = True
        task, self._task = self._task, None
        await cancel_until_done(task)
        api = self.api
        if api is not None:
            try:
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await api.disconnect()
            except (APIConnectionError, TimeoutError):
                pass
            api.force_disconnect()
        self._lost()
        self._set(ProxyState.DISCONNECTED, "stopped")

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "state": self.state.value,
            "error": self.error,
            "slots_free": self.slots_free,
            "slots_limit": self.slots_limit,
            "connected_s": (
                None if self.connected_since is None else round(now - self.connected_since, 1)
            ),
            "last_heard_s_ago": (
                None if self.last_advert_at is None else round(now - self.last_advert_at, 1)
            ),
        }

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                closed = await self._connect()
            except _Refused as refusal:
                self._set(ProxyState.REFUSED, str(refusal))
                delay = self._backoff.maximum
            except (APIConnectionError, OSError, TimeoutError) as error:
                failures += 1
                self._set(
                    ProxyState.DISCONNECTED,
                    f"cannot reach {self.host}:{self.port}: {_reason(error)}",
                )
                delay = self._backoff.delay(failures)
            except Exception as error:  # a bug must not end the proxy's reconnects
                logger.exception("ESPHome proxy %s: connect failed", self.name)
                failures += 1
                self._set(ProxyState.DISCONNECTED, f"internal error: {error!r}")
                delay = self._backoff.delay(failures)
            else:
                failures = 0
                await closed
                delay = self._backoff.delay(0)
            await asyncio.sleep(delay)

    async def _connect(self) -> asyncio.Future[None]:
        """One attempt; returns a future that ends when the connection it made does."""
        loop = asyncio.get_running_loop()
        api = APIClient(
            self.host,
            self.port,
            None,
            client_info=CLIENT_INFO,
            keepalive=self._keepalive_s,
            zeroconf_instance=None,
            noise_psk=self._noise_key,
        )
        closed: asyncio.Future[None] = loop.create_future()
        slots_known: asyncio.Future[None] = loop.create_future()

        def on_closed(event: ConnectionClosedEvent) -> None:
            if not closed.done():
                closed.set_result(None)
            if self.api is api:
                self._lost()
                if not self._stopping:
                    self._set(ProxyState.CONNECTING, f"connection lost: {_loss(event)}")

        def on_slots(free: int, limit: int, _allocated: list[int]) -> None:
            if not slots_known.done():
                slots_known.set_result(None)
            if (free, limit) != (self.slots_free, self.slots_limit):
                self.slots_free, self.slots_limit = free, limit
                if self.api is api:  # while connecting, `CONNECTED` tells of them
                    self._changed()

        api.add_connection_closed_callback(on_closed)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await _refusing(api.connect(login=False, log_errors=False))
                info = await api.device_info()
                assert api.api_version is not None  # set by the handshake
                flags = BluetoothProxyFeature(
                    info.bluetooth_proxy_feature_flags_compat(api.api_version)
                )
                if not flags & BluetoothProxyFeature.RAW_ADVERTISEMENTS:
                    raise _Refused(
                        f"{info.name or 'the device'} is not a Bluetooth proxy that relays"
                        f" raw advertisements (ESPHome bluetooth_proxy:; feature flags"
                        f" {int(flags):#x})"
                    )
                api.subscribe_bluetooth_connections_free(on_slots)
                api.subscribe_bluetooth_le_raw_advertisements(self._relay)
                if flags & BluetoothProxyFeature.ACTIVE_CONNECTIONS:
                    await slots_known  # CONNECTED means the slots are known
        except BaseException:
            api.force_disconnect()
            raise
        if not api.is_connected:  # closed between the last await and now
            raise APIConnectionError("connection closed while setting up")
        self.api = api
        self.feature_flags = flags
        self.connected_since = time.monotonic()
        self._set(ProxyState.CONNECTED, "")
        return closed

    def _relay(self, response: BluetoothLERawAdvertisementsResponse) -> None:
        for advert in response.advertisements:
            self.last_advert_at = time.monotonic()
            try:
                self._on_advertisement(
                    self,
                    RawAdvert(
                        to_human_readable_address(advert.address),
                        advert.address_type,
                        advert.rssi,
                        bytes(advert.data),
                    ),
                )
            except Exception:  # a consumer's bug must not drop the proxy's connection
                logger.exception("ESPHome proxy %s: advertisement handler failed", self.name)

    def _lost(self) -> None:
        """The connection has ended: nothing of it is usable any more (the state
        said next tells of it)."""
        self.api = None
        self.connected_since = None
        self.slots_free = 0

    def _set(self, state: ProxyState, error: str) -> None:
        self.tried = self.tried or state is not ProxyState.CONNECTING
        if (state, error) == (self.state, self.error):
            return
        self.state, self.error = state, error
        trouble = state in (ProxyState.DISCONNECTED, ProxyState.REFUSED)
        logger.log(
            logging.WARNING if trouble else logging.INFO,
            "ESPHome proxy %s (%s:%d): %s%s",
            self.name,
            self.host,
            self.port,
            state.value,
            f": {error}" if error else "",
        )
        self._changed()

    def _changed(self) -> None:
        try:
            self._on_change(self)
        except Exception:  # a consumer's bug must not drop the proxy's connection
            logger.exception("ESPHome proxy %s: change handler failed", self.name)


async def _refusing(connecting: Awaitable[None]) -> None:
    """The connect, with the refusals that retrying soon cannot mend raised as such."""
    try:
        await connecting
    except InvalidEncryptionKeyAPIError as error:
        if isinstance(error.__cause__, ValueError):  # not a key at all; never quoted
            raise _Refused(
                "the noise key is not an api encryption key (32 bytes, base64)"
            ) from None
        raise _Refused("proxy refused the noise key (wrong api encryption key)") from None
    except EncryptionPlaintextAPIError:
        raise _Refused("proxy speaks without encryption: set an api encryption key on it") from None
    except InvalidAuthAPIError:
        raise _Refused("proxy asks for an API password, which is not supported") from None


def _reason(error: BaseException) -> str:
    """The error in a few words: the system's own for a socket's (aioesphomeapi wraps
    them in a list of every address it tried)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__
    if isinstance(error, TimeoutError) and not str(error):
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    return str(error) or type(error).__name__


def _loss(event: ConnectionClosedEvent) -> str:
    if isinstance(event.error, PingFailedAPIError):
        return "the proxy stopped answering (no reply to a ping)"
    if event.error is None or isinstance(event.error, SocketClosedAPIError):
        return "closed by the proxy"
    return _reason(event.error)
