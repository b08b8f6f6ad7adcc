"""The township steers the gateway over MQTT: every command applied or refused with a
clear error, idempotent by id, audited, queued by the broker while the gateway is away,
refused when stale, and only from a client the broker's ACL allows (the ACL of the
contract document, exactly)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.measurement import Measurement, Metric
from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.service import GatewayService
from tests.conftest import REPO, Subscriber, broker_with_acl, write_config
from tests.contract import assert_contract
from tests.gateway.helpers import DEVICE, PORT_PATH, until
from tests.gateway.test_uplink import add_user

ROOT = "vitals/v1/testtown/gw-test"
PASSWORDS = {"gw-test": "s3cret-gw", "township": "s3cret-town", "gw-other": "s3cret-other"}
SUBJECTS = '[[subjects]]\ncode = "bed-9"\n'


def documented_acl(township: str) -> str:
    """The ACL block of docs/mqtt-contract.md, for this township."""
    text = (REPO / "docs" / "mqtt-contract.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```acl\n(.*?)```", text, re.DOTALL)
    return block.replace("TOWNSHIP", township)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwords = tmp_path / "passwd"
    for user, password in PASSWORDS.items():
        add_user(passwords, user, password)
    acl = tmp_path / "acl"
    acl.write_text(documented_acl("testtown"))
    mosquitto = broker_with_acl(tmp_path, passwords, acl)
    yield mosquitto
    mosquitto.close()


def gateway_config(tmp_path: Path, broker: Mosquitto, extra: str = SUBJECTS) -> Path:
    (tmp_path / "pw").write_text(PASSWORDS["gw-test"])
    return write_config(
        tmp_path,
        broker.port,
        devices=DEVICE,
        extra=extra,
        mqtt_extra=f'username = "gw-test"\npassword_file = "{tmp_path / "pw"}"',
    )


class Township:
    """The township server's side: sends commands as `user`, sees every message."""

    def __init__(self, port: int, user: str = "township") -> None:
        self.server = Subscriber(port, f"{ROOT}/#", username=user, password=PASSWORDS[user])
        self.server.start()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.refused: list[int] = []
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish

    def _on_publish(self, _c: Any, _u: Any, mid: int, code: Any, _p: Any) -> None:
        if code.is_failure:
            with self._lock:
                self.refused.append(mid)

    def send(
        self,
        name: str,
        payload: Any,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry_s: int | None = None,
    ) -> int:
        props = Properties(PacketTypes.PUBLISH)
        if response_topic:
            props.ResponseTopic = response_topic
        if correlation:
            props.CorrelationData = correlation
        if expiry_s is not None:
            props.MessageExpiryInterval = expiry_s
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(f"{ROOT}/cmd/{name}", data, qos=1, properties=props)
        info.wait_for_publish(10)
        return info.mid

    def results(self, name: str | None = None) -> list[dict[str, Any]]:
        suffix = f"/cmd/{name}/result" if name else "/result"
        return [p for t, p, _ in self.server.snapshot(suffix) if "/cmd/" in t]

    def result(self, command_id: str | None, name: str | None = None) -> dict[str, Any] | None:
        return next((r for r in self.results(name) if r["id"] == command_id), None)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.server.stop()


@pytest.fixture
def township(broker: Mosquitto) -> Iterator[Callable[..., Township]]:
    made: list[Township] = []

    def make(user: str = "township") -> Township:
        made.append(Township(broker.port, user))
        return made[-1]

    yield make
    for t in made:
        t.close()


async def started(path: Path) -> GatewayService:
    """A gateway connected and subscribed to its commands (before that, a command sent
    to a broker that never saw the gateway's session is lost, as MQTT says)."""
    service = GatewayService(load_config(path))
    await service.start()
    await until(lambda: service.uplink.health.state.value == "connected", what="connected")
    return service


async def answered(town: Township, command_id: str | None, name: str | None = None) -> Any:
    await until(lambda: town.result(command_id, name), what=f"the result of {command_id}")
    return town.result(command_id, name)


@pytest.mark.asyncio
async def test_each_command_is_applied_answered_and_audited(
    tmp_path: Path, broker: Mosquitto, township: Callable[..., Township]
) -> None:
    town = township()
    service = await started(gateway_config(tmp_path, broker))
    try:
        town.send("ping", {"id": "p-1"})
        ping = await answered(town, "p-1")
        assert ping["ok"] and ping["result"]["gateway"] == "gw-test" and ping["error"] is None

        town.send("set_subject", {"id": "s-1", "args": {"subject": "bed-9", "risk_grade": "red"}})
        assert (await answered(town, "s-1"))["result"]["risk_grade"] == "red"
        town.send("start_isolation", {"id": "i-1", "args": {"subject": "bed-9", "days": 3}})
        isolated = await answered(town, "i-1")
        assert isolated["result"]["isolated"] is True
        assert isolated["result"]["isolation"]["days"] == 3
        town.send("start_isolation", {"id": "i-2", "args": {"subject": "bed-9"}})
        assert (await answered(town, "i-2"))["error"]["code"] == "conflict"
        town.send("end_isolation", {"id": "i-3", "args": {"subject": "bed-9"}})
        assert (await answered(town, "i-3"))["result"]["isolated"] is False
        town.send("end_isolation", {"id": "i-4", "args": {"subject": "bed-404"}})
        assert (await answered(town, "i-4"))["error"]["code"] == "not_found"

        # An alert raised by readings, acknowledged by command.
        service.pipeline.on_measurements(
            PORT_PATH, [Measurement(Metric.BODY_TEMPERATURE, 38.6, site=None)]
        )
        await until(lambda: town.server.alerts(), what="the fever alert")
        alert_id = town.server.alerts()[0]["id"]
        town.send("ack_alert", {"id": "a-1", "args": {"alert": alert_id, "by": "doctor-3"}})
        acked = await answered(town, "a-1")
        assert acked["result"]["state"] == "acknowledged"
        await until(
            lambda: town.server.alerts()[-1]["acknowledged_by"] == "doctor-3",
            what="the acknowledged event on alerts",
        )
        town.send("ack_alert", {"id": "a-2", "args": {"alert": "fever:bed-9:0", "by": "doctor-3"}})
        assert (await answered(town, "a-2"))["error"]["code"] == "not_found"

        # Resend: the server lost the readings; they come again, same ids, as backlog.
        await until(lambda: town.server.readings(), what="the reading")
        (first,) = town.server.readings()
        town.send(
            "resend", {"id": "r-1", "args": {"from_seq": first["seq"], "to_seq": first["seq"]}}
        )
        assert (await answered(town, "r-1"))["result"] == {"requeued": 1}
        await until(lambda: len(town.server.readings()) == 2, what="the reading sent again")
        assert town.server.readings()[1]["id"] == first["id"]
        town.send("resend", {"id": "r-2", "args": {"from_seq": 10**9, "to_seq": 10**9}})
        assert (await answered(town, "r-2"))["error"]["code"] == "not_found"

        today = datetime.now(UTC).date().isoformat()
        town.send(
            "get_ledger", {"id": "l-1", "args": {"subject": "bed-9", "from": today, "to": today}}
        )
        assert (await answered(town, "l-1"))["ok"]
        town.send("get_config", {"id": "c-1"})
        config = (await answered(town, "c-1"))["result"]
        assert config["gateway"]["id"] == "gw-test" and config["devices"][0]["subject"] == "bed-9"
        town.send("reboot", {"id": "u-1"})
        assert (await answered(town, "u-1"))["error"]["code"] == "unknown_command"

        audited = await service.store.call(service.store.store.audit_trail, 100, "command.")
        assert {a["detail"]["id"] for a in audited} >= {"p-1", "s-1", "i-2", "u-1"}
        sent = {"p-1", "s-1", "i-1", "i-2", "i-3", "i-4", "a-1", "a-2", "r-1", "r-2", "l-1"}
        sent |= {"c-1", "u-1"}
        await until(
            lambda: {p["id"] for _, p, _ in town.server.snapshot("/audit")} == sent,
            what="an audit message for each command",
        )
        for topic, payload, _ in town.server.snapshot():
            if "/cmd/" in topic or topic.endswith("/audit"):
                assert_contract(topic, payload)
    finally:
        await service.stop()


@pytest.mark.asyncio
async def test_a_repeated_id_gets_the_first_result_and_changes_nothing(
    tmp_path: Path, broker: Mosquitto, township: Callable[..., Township]
) -> None:
    town = township()
    service = await started(gateway_config(tmp_path, broker))
    try:
        town.send("set_subject", {"id": "same", "args": {"subject": "bed-9", "risk_grade": "red"}})
        first = await answered(town, "same")
        town.send(
            "set_subject", {"id": "same", "args": {"subject": "bed-9", "risk_grade": "yellow"}}
        )
        await until(lambda: len(town.results()) == 2, what="the second answer")
        assert town.results() == [first, first]
        assert service.care.subjects_payload()[0]["risk_grade"] == "red"
        changes = await service.store.call(service.store.store.audit_trail, 100, "subject.")
        assert [a["action"] for a in changes] == ["subject.changed", "subject.created"]
    finally:
        await service.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("payload", "command_id", "message"),
    [
        (b"not json {", None, "not JSON"),
        (b"[1, 2]", None, "must be"),
        (json.dumps({"args": {}}).encode(), None, "id: missing"),
        (json.dumps({"id": "m", "args": {}, "extra": 1}).encode(), None, "extra: unknown key"),
        (b'{"id": "big", "args": {"x": "' + b"a" * 70_000 + b'"}}', None, "larger than"),
        (
            json.dumps({"id": "m1", "args": {"subject": "bed-9", "days": "14"}}).encode(),
            "m1",
            "days",
        ),
        (
            json.dumps({"id": "m2", "args": {"subject": "bed-9", "color": "red"}}).encode(),
            "m2",
            "color: unknown key",
        ),
        (json.dumps({"id": "m3", "args": {"subject": "Wang Wei"}}).encode(), "m3", "subject"),
    ],
)
async def test_a_malformed_command_is_answered_malformed_and_changes_nothing(
    tmp_path: Path,
    broker: Mosquitto,
    township: Callable[..., Township],
    payload: bytes,
    command_id: str | None,
    message: str,
) -> None:
    town = township()
    service = await started(gateway_config(tmp_path, broker))
    try:
        before = service.care.subjects_payload()
        town.send("start_isolation", payload)
        await until(lambda: town.results(), what="the answer")
        (answer,) = town.results()
        assert answer["id"] == command_id and answer["ok"] is False
        assert answer["error"]["code"] == "malformed"
        assert message in answer["error"]["message"]
        assert service.care.subjects_payload() == before
        assert_contract(f"{ROOT}/cmd/start_isolation/result", answer)
    finally:
        await service.stop()


@pytest.mark.asyncio
async def test_a_command_sent_while_the_gateway_was_down_is_applied_when_it_returns(
    tmp_path: Path, broker: Mosquitto, township: Callable[..., Township]
) -> None:
    town = township()
    path = gateway_config(tmp_path, broker)
    service = await started(path)  # the broker now keeps the gateway's session
    await service.stop()
    town.send("set_subject", {"id": "away-1", "args": {"subject": "bed-9", "risk_grade": "red"}})
    stale = datetime.now(UTC) - timedelta(days=2)
    town.send("unbind_device", {"id": "old", "args": {"device": "x"}, "sent_at": stale.isoformat()})
    town.send("ping", {"id": "gone"}, expiry_s=1)
    # The broker's own clock (whole seconds, read once per loop) runs the expiry out.
    await asyncio.sleep(3.0)
    service = GatewayService(load_config(path))
    await service.start()
    try:
        assert (await answered(town, "away-1"))["ok"]
        assert service.care.subjects_payload()[0]["risk_grade"] == "red"
        assert (await answered(town, "old"))["error"]["code"] == "expired"
        town.send("ping", {"id": "after"})
        await answered(town, "after")  # answered in order: "gone" would have come first
        assert town.result("gone") is None
    finally:
        await service.stop()


@pytest.mark.asyncio
async def test_the_answer_also_goes_to_the_response_topic_with_its_correlation_data(
    tmp_path: Path, broker: Mosquitto, township: Callable[..., Township]
) -> None:
    town = township()
    replies = Subscriber(
        broker.port, f"{ROOT}/reply/#", username="township", password=PASSWORDS["township"]
    )
    received: list[tuple[bytes | None, dict[str, Any]]] = []
    replies.client.on_message = lambda _c, _u, m: received.append(
        (getattr(m.properties, "CorrelationData", None), json.loads(m.payload))
    )
    replies.start()
    service = await started(gateway_config(tmp_path, broker))
    try:
        town.send(
            "ping", {"id": "rt-1"}, response_topic=f"{ROOT}/reply/srv-7", correlation=b"\x01q7"
        )
        await until(lambda: received, what="the answer on the response topic")
        ((correlation, answer),) = received
        assert correlation == b"\x01q7" and answer["id"] == "rt-1" and answer["ok"]
        assert town.result("rt-1") == answer  # and on cmd/ping/result
    finally:
        await service.stop()
        replies.stop()


@pytest.mark.asyncio
async def test_a_client_the_acl_does_not_allow_cannot_command_the_gateway(
    tmp_path: Path, broker: Mosquitto, township: Callable[..., Township]
) -> None:
    town = township()
    other_gateway = township("gw-other")
    service = await started(gateway_config(tmp_path, broker))
    try:
        mid = other_gateway.send(
            "set_subject", {"id": "intruder", "args": {"subject": "bed-9", "risk_grade": "red"}}
        )
        await until(lambda: mid in other_gateway.refused, what="the broker refusing it")
        town.send("ping", {"id": "after-intruder"})
        await answered(town, "after-intruder")
        assert town.result("intruder") is None
        assert service.care.subjects_payload()[0]["risk_grade"] == "green"
        # Nor may the gateway's own user command it (it writes its topics, not cmd/+).
        gateway_user = township("gw-test")
        mid = gateway_user.send("ping", {"id": "self"})
        await until(lambda: mid in gateway_user.refused, what="the broker refusing it")
    finally:
        await service.stop()


@pytest.mark.asyncio
async def test_a_device_bound_by_command_collects_readings_without_a_restart(
    tmp_path: Path, broker: Mosquitto, township: Callable[..., Township]
) -> None:
    town = township()
    link = tmp_path / "usb-Contec-if00"
    with Cms50Simulator(Generation.V46, "normal", link=str(link)):
        service = await started(gateway_config(tmp_path, broker))
        try:
            entry = {"kind": "cms50", "port": str(link), "subject": "bed-2"}
            town.send("bind_device", {"id": "b-1", "args": entry})
            bound = await answered(town, "b-1")
            assert bound["ok"] and bound["result"]["subject"] == "bed-2"
            device = bound["result"]["id"]
            await until(
                lambda: any(r["device"] == device for r in town.server.readings()),
                what="readings of the device bound by command",
            )
            assert {r["subject"] for r in town.server.readings() if r["device"] == device} == {
                "bed-2"
            }
            town.send("bind_device", {"id": "b-2", "args": entry})
            assert (await answered(town, "b-2"))["error"]["code"] == "conflict"
            town.send("bind_device", {"id": "b-3", "args": {"kind": "cms50"}})
            refused = await answered(town, "b-3")
            assert refused["error"]["code"] == "malformed"
            assert "port" in refused["error"]["message"]
            door_key = "231d39c1d7cc1ab1aee224cd096db932"
            door = {"kind": "bthome", "address": "F0:00:00:00:00:10", "key": door_key}
            town.send("bind_device", {"id": "b-6", "args": {**door, "subject": "room-12"}})
            assert (await answered(town, "b-6"))["ok"]
            town.send("get_config", {"id": "b-7"})
            served = {d["kind"]: d for d in (await answered(town, "b-7"))["result"]["devices"]}
            assert served["cms50"]["subject"] == "bed-2" and served["bthome"]["key"] == "***"
            await until(lambda: len(town.server.snapshot("/audit")) >= 5, what="the audit")
            from_gateway = [
                m for m in town.server.snapshot() if not re.search(r"/cmd/[a-z_]+$", m[0])
            ]  # all but the township's own commands
            assert door_key not in json.dumps(from_gateway)
            town.send("unbind_device", {"id": "b-4", "args": {"device": device}})
            assert (await answered(town, "b-4"))["result"] == {"device": device}
            town.send("unbind_device", {"id": "b-5", "args": {"device": device}})
            assert (await answered(town, "b-5"))["error"]["code"] == "not_found"
        finally:
            await service.stop()
