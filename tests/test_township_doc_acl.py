"""The credentials and ACL recipe of docs/township.md, run as the document shows it.

The shell block that makes a password and ACL lines for every gateway of `gateways.csv`
is taken from the document and run against a real mosquitto: a real gateway logged in
with its generated password publishes its own `status`, which the server's user reads
through a shared subscription; the same credentials are refused another gateway's topics
and another township's. The generated lines are checked against the contract's ACL.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.service import GatewayService
from tests.conftest import REPO, Subscriber, broker_with_acl, write_config
from tests.gateway.helpers import until

GUIDE = REPO / "docs" / "township.md"
CONTRACT = REPO / "docs" / "mqtt-contract.md"
TOWNS = {"gw-0001": "testtown", "gw-0002": "testtown", "gw-0101": "hilltown"}
#: As TOWNS, with CRLF line ends, a comment, and a last line without its newline, as
#: spreadsheets write.
GATEWAYS = "# id,township\r\ngw-0001,testtown\r\ngw-0002,testtown\r\ngw-0101,hilltown"


def guide_block(info: str, containing: str) -> str:
    """The one fenced block of the guide with this info string that contains the text."""
    blocks = re.findall(rf"```{info}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if containing in b]
    return block


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    """The guide's block run by sh in a folder holding the test's gateways.csv."""
    folder = tmp_path / "admin"
    folder.mkdir()
    (folder / "gateways.csv").write_text(GATEWAYS)
    done = subprocess.run(
        ["sh", "-e", "-c", guide_block("sh", "gateways.csv")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture
def broker(generated: Path, tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = broker_with_acl(tmp_path, generated / "passwd", generated / "acl")
    yield mosquitto
    mosquitto.close()


def password(generated: Path, user: str) -> str:
    return (generated / "secrets" / f"{user}.password").read_text().strip()


class Publisher:
    """An MQTT 5 client logged in as `user`, publishing QoS 1 and reading each PUBACK."""

    def __init__(self, port: int, user: str, secret: str) -> None:
        self.port = port
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            protocol=mqtt.MQTTv5,
            client_id=f"probe-{user}",
        )
        self.client.username_pw_set(user, secret)
        self.connack: ReasonCode | None = None
        self.acks: dict[int, ReasonCode] = {}
        self._event = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish

    def _on_connect(self, _c: object, _u: object, _f: object, code: ReasonCode, _p: object) -> None:
        with self._event:
            self.connack = code
            self._event.notify_all()

    def _on_publish(self, _c: object, _u: object, mid: int, code: ReasonCode, _p: object) -> None:
        with self._event:
            self.acks[mid] = code
            self._event.notify_all()

    def connect(self) -> ReasonCode:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        with self._event:
            assert self._event.wait_for(lambda: self.connack is not None, 10), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def publish(self, topic: str, payload: str) -> ReasonCode:
        mid = self.client.publish(topic, payload, qos=1).mid
        with self._event:
            assert self._event.wait_for(lambda: mid in self.acks, 10), f"no PUBACK for {topic}"
        return self.acks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_each_gateway_gets_the_contracts_acl_for_its_own_township(generated: Path) -> None:
    (contract_acl,) = re.findall(r"```acl\n(.*?)```", CONTRACT.read_text(), re.DOTALL)
    patterns = [line for line in contract_acl.splitlines() if line.startswith("pattern ")]
    assert len(patterns) > 5, "the contract's pattern lines were not found"
    blocks = {
        block.splitlines()[0].removeprefix("user "): block.splitlines()[1:]
        for block in (generated / "acl").read_text().strip().split("\n\n")
    }
    expected = {
        gateway: [
            p.replace("pattern ", "topic ", 1).replace("TOWNSHIP", town).replace("%u", gateway)
            for p in patterns
        ]
        for gateway, town in TOWNS.items()
    }
    server = blocks.pop("township")
    assert blocks == expected
    assert server == ["topic read vitals/v1/#", "topic write vitals/v1/+/+/cmd/+"]
    secrets = sorted(p.name for p in (generated / "secrets").iterdir())
    assert secrets == [f"{u}.password" for u in ("gw-0001", "gw-0002", "gw-0101", "township")]
    assert len({password(generated, u) for u in ("gw-0001", "gw-0002", "gw-0101")}) == 3


@pytest.mark.asyncio
async def test_a_gateway_with_its_generated_password_reaches_the_shared_subscription(
    generated: Path, broker: Mosquitto, tmp_path: Path
) -> None:
    secret = password(generated, "township")
    shared = Subscriber(
        broker.port, "$share/township/vitals/v1/+/+/status", username="township", password=secret
    ).start()
    config = write_config(
        tmp_path,
        broker.port,
        gateway_id="gw-0001",
        mqtt_extra=(
            f'username = "gw-0001"\npassword_file = "{generated / "secrets" / "gw-0001.password"}"'
        ),
    )
    service = GatewayService(load_config(config))
    await service.start()
    try:
        await until(
            lambda: any(p.get("state") == "online" for _, p, _ in shared.snapshot("/status")),
            what="the gateway's status through the shared subscription",
        )
        assert {topic for topic, _, _ in shared.snapshot()} == {"vitals/v1/testtown/gw-0001/status"}
        # The state keeper's plain subscription gets the retained status.
        keeper = Subscriber(
            broker.port, "vitals/v1/testtown/+/status", username="township", password=secret
        ).start()
        try:
            await until(lambda: keeper.snapshot(), what="the retained status")
            topic, payload, retained = keeper.snapshot()[0]
            assert (
                topic.endswith("/gw-0001/status") and retained and payload["gateway"] == "gw-0001"
            )
        finally:
            keeper.stop()
    finally:
        await service.stop()
        shared.stop()


def test_generated_credentials_write_their_own_topics_only(
    generated: Path, broker: Mosquitto
) -> None:
    server = Subscriber(
        broker.port,
        "$share/township/vitals/v1/#",
        username="township",
        password=password(generated, "township"),
    ).start()
    gateway = Publisher(broker.port, "gw-0001", password(generated, "gw-0001"))
    try:
        assert not gateway.connect().is_failure
        refused = [
            "vitals/v1/testtown/gw-0002/status",  # another gateway's
            "vitals/v1/hilltown/gw-0001/status",  # its own id in another township
            "vitals/v1/testtown/gw-0001/cmd/ping",  # a command to itself
        ]
        for topic in refused:
            assert gateway.publish(topic, '{"state":"online"}').getName() == "Not authorized"
        own = gateway.publish("vitals/v1/testtown/gw-0001/status", '{"gateway":"gw-0001"}')
        assert not own.is_failure
        server.wait_for(lambda s: s.snapshot(), what="the gateway's own status")
        assert [topic for topic, _, _ in server.snapshot()] == ["vitals/v1/testtown/gw-0001/status"]
    finally:
        gateway.close()
        server.stop()
    # One gateway's password does not log another in.
    other = Publisher(broker.port, "gw-0002", password(generated, "gw-0001"))
    try:
        assert other.connect().is_failure
    finally:
        other.close()
