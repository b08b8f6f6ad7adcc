"""Shared fixtures: real brokers, real subscribers, real gateway processes.

Every test that needs a broker starts its own mosquitto on a free loopback port with
the configuration it needs; nothing relies on a broker the machine happens to run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.broker import Mosquitto, free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent
#: `postgres_server` and `postgres_url`: a private PostgreSQL for the tests that need one.
pytest_plugins = ["tests.postgres"]


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    broker = Mosquitto().start()
    yield broker
    broker.close()


class Subscriber:
    """Subscribes like the township server and keeps every message, decoded."""

    def __init__(
        self,
        port: int,
        topic: str = "#",
        host: str = "127.0.0.1",
        persistent_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """With `persistent_id`, the broker keeps the session (and queues QoS 1
        messages) while this subscriber is away, as a real server's would."""
        self.messages: list[tuple[str, Any, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.topic = topic
        self.port = port
        self.host = host
        self.persistent_id = persistent_id
        self._credentials = (username, password)
        self._ca_file = ca_file
        self.client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            protocol=mqtt.MQTTv5,
            client_id=self.persistent_id or "",
        )
        client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=1)
        client.on_subscribe = lambda *_: self._ready.set()
        client.on_message = self._on_message
        if self._credentials[0]:
            client.username_pw_set(*self._credentials)
        if self._ca_file:
            client.tls_set(ca_certs=str(self._ca_file))
        return client

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:  # a malformed command a test sent: kept as it came
            payload = bytes(msg.payload)
        with self._lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))

    def start(self) -> Subscriber:
        if self.persistent_id:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.client.connect(self.host, self.port, clean_start=False, properties=props)
        else:
            self.client.connect(self.host, self.port)
        self.client.loop_start()
        assert self._ready.wait(10), "subscriber could not subscribe"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def reconnect(self) -> None:
        """After the broker restarted: connect again (and resubscribe)."""
        self.stop()
        self._ready.clear()
        wait_for_port(self.host, self.port)
        self.client = self._new_client()
        self.start()

    def snapshot(self, suffix: str | None = None) -> list[tuple[str, Any, bool]]:
        with self._lock:
            items = list(self.messages)
        return [m for m in items if suffix is None or m[0].endswith(suffix)]

    def readings(self) -> list[dict[str, Any]]:
        """Every reading received, in arrival order, flattened out of their messages."""
        return [
            r for topic, p, _ in self.snapshot() if "/readings/" in topic for r in p["readings"]
        ]

    def alerts(self) -> list[dict[str, Any]]:
        return [p for topic, p, _ in self.snapshot() if topic.endswith("/alerts")]

    def wait_for(
        self, predicate: Callable[[Subscriber], Any], timeout: float = 30.0, what: str = ""
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate(self)
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what or predicate};"
            f" got {len(self.messages)} messages: {self.snapshot()[-5:]}"
        )


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(port: int, topic: str = "#") -> Subscriber:
        sub = Subscriber(port, topic).start()
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.stop()


def write_config(
    directory: Path,
    broker_port: int,
    adapter: str = "bluez",
    devices: str = "",
    extra: str = "",
    mqtt_extra: str = "",
    gateway_id: str = "gw-test",
    gateway_extra: str = "",
) -> Path:
    """A complete gateway config for tests: fast reconnects, a free web port."""
    path = directory / "gateway.toml"
    path.write_text(
        f"""
[gateway]
id = "{gateway_id}"
township = "testtown"
data_dir = "{directory / "data"}"
{gateway_extra}

[mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
status_interval_s = 5
{mqtt_extra}

[bluetooth]
adapter = "{adapter}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
connect_timeout_s = 3.0

[web]
listen = "127.0.0.1:{free_port()}"

{extra}
{devices}
"""
    )
    return path


class ChildProcess:
    """A command of ours in its own process, its output in `log_path`."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.command = command
        self.log_path = log_path
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as systemd stops it (SIGKILL after 15 s); its exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._log.close()
        self.proc = None


class GatewayProcess(ChildProcess):
    """`bedside-gateway run --config PATH` as its own process, as systemd runs it."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)]
        super().__init__(command, config.parent / f"gateway-{time.monotonic_ns()}.log", env)
        self.config = config

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}: {self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the gateway log: {self.log()[-3000:]}")

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


def broker_with_acl(workdir: Path, passwords: Path, acl: Path) -> Mosquitto:
    """A started mosquitto that lets in only the users of the file `passwords`, each
    confined by the ACL file `acl`."""
    return Mosquitto(
        allow_anonymous=False,
        extra_config=f"password_file {passwords}\nacl_file {acl}\n",
        workdir=workdir / "broker",
    ).start()


@pytest.fixture
def gateway_factory() -> Iterator[Callable[..., GatewayProcess]]:
    made: list[GatewayProcess] = []

    def make(config: Path, env: dict[str, str] | None = None) -> GatewayProcess:
        gw = GatewayProcess(config, env).start()
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()
