"""`bedside-gateway tail`: subscribe as the township server would and print every
message as one JSON line: {"topic": ..., "payload": <decoded JSON>, "retained": bool}."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def message_line(topic: str, payload: bytes, retained: bool) -> str:
    try:
        decoded: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        decoded = payload.decode("utf-8", errors="replace")
    return json.dumps({"topic": topic, "payload": decoded, "retained": retained})


def tail(
    broker_url: str,
    topic_filter: str = "#",
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
    protocol: str = "5",
) -> int:
    """Print messages until `stop` is set (or forever). Returns an exit status."""
    parts = urlsplit(broker_url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        print(f"error: --broker {broker_url!r} is not mqtt://HOST:PORT", file=sys.stderr)
        return 2
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
    )
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    if parts.scheme == "mqtts":
        client.tls_set()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, code: Any, _p: Any) -> None:
        c.subscribe(topic_filter, qos=1)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        out.write(message_line(msg.topic, bytes(msg.payload), bool(msg.retain)) + "\n")
        out.flush()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(parts.hostname, parts.port or 1883, keepalive=30)
    except OSError as exc:
        print(f"error: cannot reach {parts.hostname}:{parts.port or 1883}: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return 0
