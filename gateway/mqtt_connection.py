"""One connection to the MQTT broker, on its own paho client, with asyncio results.

paho runs its network thread and calls back from it; every callback here only hands
its result to the event loop (`call_soon_threadsafe`). A connection is used once: after
a drop or `disconnect()` a new `MqttConnection` (and so a new paho client) is made, so
nothing half-sent inside paho survives, and late callbacks of the old client are
ignored.

Commands come in on the same connection: it subscribes to the filters it is given
(QoS 1) on a persistent session (MQTT 5 session expiry; `clean_session=False` on
3.1.1), so commands sent while the gateway was away are queued by the broker and
arrive when it returns. Each is acknowledged only when the caller says it was handled
(`InboundMessage.ack`): a command received and not yet recorded when the gateway dies
is sent again by the broker.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
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


@dataclass(frozen=True)
class InboundMessage:
    """A message the broker delivered on a subscription."""

    topic: str
    payload: bytes
    #: MQTT 5: where the sender wants the answer, with its correlation data.
    response_topic: str | None = None
    correlation_data: bytes | None = None
    #: MQTT 5: seconds left of the message's expiry when it was delivered.
    expiry_left_s: int | None = None
    #: Tells the broker the message was handled (QoS 1 PUBACK).
    ack: Callable[[], None] = field(default=lambda: None, repr=False, compare=False)


class MqttConnection:
    def __init__(
        self,
        settings: MqttSection,
        client_id: str,
        will: LastWill | None,
        subscriptions: tuple[str, ...] = (),
        on_message: Callable[[InboundMessage], None] = lambda message: None,
    ) -> None:
        """`subscriptions` (QoS 1) are made on every connection; `on_message` is called
        on the event loop for each message delivered on them."""
        self._settings = settings
        self._client_id = client_id
        self._will = will
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._client: mqtt.Client | None = None
        self._loop = asyncio.get_running_loop()
        self._acks: dict[int, asyncio.Future[bool]] = {}
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
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
        session: dict[str, Any] = {}  # 3.1.1: clean_session=False on the client
        if settings.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = settings.session_expiry_s
            session = {"clean_start": False, "properties": properties}
        try:
            await asyncio.to_thread(
                client.connect, settings.host, settings.port, settings.keepalive_s, **session
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
        await self._subscribe(client)

    async def _subscribe(self, client: mqtt.Client) -> None:
        """Subscribe and wait for each SUBACK: once connected, commands are coming."""
        for topic in self._subscriptions:
            granted: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
            result, mid = client.subscribe(topic, qos=1)
            if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
                raise MqttConnectionError(
                    f"cannot subscribe to {topic}: {mqtt.error_string(result)}"
                )
            self._subacks[mid] = granted  # its SUBACK is handed to the loop after this
            try:
                async with asyncio.timeout(_CONNACK_TIMEOUT_S):
                    codes = await granted
            except TimeoutError:
                raise MqttConnectionError(f"no SUBACK for {topic}") from None
            if any(code.is_failure for code in codes):
                raise MqttConnectionError(f"broker refused the subscription to {topic}: {codes[0]}")

    def publish(
        self,
        topic: str,
        payload: str,
        retain: bool = False,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> asyncio.Future[bool]:
        """Publish at QoS 1. The future settles on the PUBACK: True if the broker
        accepted the message, False if it refused it (a failing MQTT 5 reason code).
        It is cancelled if the connection is closed first. `correlation_data`: MQTT 5,
        for an answer on a response topic; `response_topic`: MQTT 5, where to answer
        this one."""
        client = self._client
        if client is None:
            raise MqttConnectionError("no client")
        properties = None
        if self._settings.protocol == "5" and (correlation_data, response_topic) != (None, None):
            properties = Properties(PacketTypes.PUBLISH)
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
            if response_topic is not None:
                properties.ResponseTopic = response_topic
        info = client.publish(topic, payload, qos=1, retain=retain, properties=properties)
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
            # The session (subscriptions, commands queued while away) outlives a
            # connection: MQTT 5 by its expiry, set on connect; 3.1.1 for ever.
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(0)
        client.connect_timeout = _CONNACK_TIMEOUT_S
        if self._will is not None:
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

        def on_subscribe(_c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
            loop.call_soon_threadsafe(self._on_suback, client, mid, codes)

        def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
            loop.call_soon_threadsafe(self._received, client, message)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        return client

    # Callbacks of a dropped client may still arrive: they are ignored.

    def _on_lost(self, client: mqtt.Client, reason: str) -> None:
        if client is self._client:
            _resolve(self.lost, reason)

    def _on_suback(self, client: mqtt.Client, mid: int, codes: list[ReasonCode]) -> None:
        granted = self._subacks.pop(mid, None)
        if client is self._client and granted is not None:
            _resolve(granted, list(codes))

    def _received(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        if client is not self._client:
            return  # the broker sends it again on the next connection
        props = getattr(message, "properties", None)
        response = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        expiry = getattr(props, "MessageExpiryInterval", None) if props else None
        mid, qos = message.mid, message.qos

        def ack() -> None:
            if client is self._client and qos > 0:
                client.ack(mid, qos)

        self._on_message(
            InboundMessage(
                message.topic, bytes(message.payload), response, correlation, expiry, ack
            )
        )

    def _on_ack(self, client: mqtt.Client, mid: int, ok: bool) -> None:
        if client is not self._client:
            return
        ack = self._acks.pop(mid, None)
        if ack is not None:
            _resolve(ack, ok)


def _resolve(future: asyncio.Future[_T], value: _T) -> None:
    if not future.done():
        future.set_result(value)
