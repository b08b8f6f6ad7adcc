"""One connection to the MQTT broker, on its own paho client, with asyncio results.

paho runs its network thread and calls back from it; every callback here only hands
its result to the event loop (`call_soon_threadsafe`). A connection is used once: after
a drop or `disconnect()` a new `MqttConnection` (and so a new paho client) is made, so
nothing half-sent inside paho survives, and late callbacks of the old client are
ignored.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from dataclasses import dataclass
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import MqttSection

_T = TypeVar("_T")

#: Seconds to wait for the broker's CONNACK.
_CONNACK_TIMEOUT_S = 10.0


class MqttConnectionError(Exception):
    """The connection could not be made or used; the message says why (refused,
    unreachable, no CONNACK, publish failed, disconnected...)."""


class BrokerUnreachable(MqttConnectionError):
    """No TCP connection to the broker opened (refused, no route, timed out, name not
    resolved): nothing answered, so it is worth trying again as soon as something does.
    A broker that answers and then refuses (password, TLS, CONNACK) is not this."""


#: What a TCP connect fails with, besides refusal and time-out, when nothing answers.
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, ssl.SSLError):  # an OSError, but the broker did answer
        return False
    if isinstance(exc, ConnectionRefusedError | TimeoutError | socket.gaierror):
        return True
    return isinstance(exc, OSError) and exc.errno in _UNREACHABLE


@dataclass(frozen=True)
class LastWill:
    """Published by the broker, retained at QoS 1, when the connection dies without a
    clean disconnect."""

    topic: str
    payload: str


class MqttConnection:
    def __init__(self, settings: MqttSection, client_id: str, will: LastWill) -> None:
        self._settings = settings
        self._client_id = client_id
        self._will = will
        self._client: mqtt.Client | None = None
        self._loop = asyncio.get_running_loop()
        self._acks: dict[int, asyncio.Future[bool]] = {}
        #: Resolves with the reason when the broker connection drops (not after
        #: `disconnect()`).
        self.lost: asyncio.Future[str] = self._loop.create_future()

    async def connect(self) -> None:
        """Connect and wait for the CONNACK; raises `MqttConnectionError` on failure.
        Call `disconnect()` afterwards in either case."""
        connected: asyncio.Future[ReasonCode] = self._loop.create_future()
        settings = self._settings
        try:
            client = self._new_client(connected)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise MqttConnectionError(f"cannot set up the connection: {exc}") from exc
        self._client = client
        try:
            await asyncio.to_thread(
                client.connect, settings.host, settings.port, settings.keepalive_s
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            error = BrokerUnreachable if _unreachable(exc) else MqttConnectionError
            raise error(f"cannot reach {settings.host}:{settings.port}: {exc}") from exc
        client.loop_start()
        try:
            async with asyncio.timeout(_CONNACK_TIMEOUT_S):
                code = await connected
        except TimeoutError:
            raise MqttConnectionError(
                f"no CONNACK from the broker within {_CONNACK_TIMEOUT_S:.0f} s"
            ) from None
        if code.is_failure:
            raise MqttConnectionError(f"broker refused the connection: {code}")

    def publish(self, topic: str, payload: str, retain: bool = False) -> asyncio.Future[bool]:
        """Publish at QoS 1. The future settles on the PUBACK: True if the broker
        accepted the message, False if it refused it (a failing MQTT 5 reason code).
        It is cancelled if the connection is closed first."""
        client = self._client
        if client is None:
            raise MqttConnectionError("no client")
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        ack: asyncio.Future[bool] = self._loop.create_future()
        self._acks[info.mid] = ack
        return ack

    async def disconnect(self) -> None:
        """Close the connection (a clean disconnect: the broker drops the Last Will)."""
        client, self._client = self._client, None
        acks, self._acks = self._acks, {}
        for ack in acks.values():
            ack.cancel()
        if client is None:
            return

        def close() -> None:
            client.disconnect()
            client.loop_stop()

        await asyncio.to_thread(close)

    def _new_client(self, connected: asyncio.Future[ReasonCode]) -> mqtt.Client:
        loop = self._loop
        settings = self._settings
        v5 = settings.protocol == "5"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(0)
        client.connect_timeout = _CONNACK_TIMEOUT_S
        client.will_set(self._will.topic, self._will.payload, qos=1, retain=True)
        if settings.username:
            password = None
            if settings.password_file is not None:
                password = settings.password_file.read_text(encoding="utf-8").strip()
            client.username_pw_set(settings.username, password)
        if settings.tls:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.client_cert) if settings.client_cert else None,
                keyfile=str(settings.client_key) if settings.client_key else None,
            )

        def on_connect(_c: Any, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
            loop.call_soon_threadsafe(_resolve, connected, code)

        def on_disconnect(_c: Any, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
            loop.call_soon_threadsafe(self._on_lost, client, str(code))

        def on_publish(_c: Any, _u: Any, mid: int, code: ReasonCode, _p: Any) -> None:
            loop.call_soon_threadsafe(self._on_ack, client, mid, not code.is_failure)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        return client

    # Callbacks of a dropped client may still arrive: they are ignored.

    def _on_lost(self, client: mqtt.Client, reason: str) -> None:
        if client is self._client:
            _resolve(self.lost, reason)

    def _on_ack(self, client: mqtt.Client, mid: int, ok: bool) -> None:
        if client is not self._client:
            return
        ack = self._acks.pop(mid, None)
        if ack is not None:
            _resolve(ack, ok)


def _resolve(future: asyncio.Future[_T], value: _T) -> None:
    if not future.done():
        future.set_result(value)
