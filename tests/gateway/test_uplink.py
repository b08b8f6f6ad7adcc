"""The uplink against real mosquitto brokers configured as townships run them: TLS,
passwords, ACLs, MQTT 3.1.1, a broker that refuses or dies.

The gateway runs in-process here so a test can hand readings straight to its pipeline
(the device side is covered by the end-to-end tests); everything from the pipeline to
the subscriber is the real thing.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from drivers.measurement import Measurement, Metric, Site
from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.service import GatewayService
from tests.certs import make_ca_and_server_cert
from tests.conftest import Subscriber, broker_with_acl, write_config
from tests.gateway.helpers import DEVICE, PORT_PATH, until

ROOT = "vitals/v1/testtown/gw-test"


def add_user(password_file: Path, user: str, password: str) -> None:
    flags = ["-b"] if password_file.exists() else ["-c", "-b"]
    subprocess.run(
        ["mosquitto_passwd", *flags, str(password_file), user, password],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Passwords and ACLs: the gateway may only write under its own topics, the
    server may only read."""
    passwords = tmp_path / "passwd"
    add_user(passwords, "gw-test", "s3cret-gw")
    add_user(passwords, "server", "s3cret-srv")
    acl = tmp_path / "acl"
    acl.write_text(
        f"user gw-test\ntopic write {ROOT}/status\ntopic write {ROOT}/alerts\n"
        f"topic write {ROOT}/alerts/active\ntopic write {ROOT}/devices\n"
        f"topic write {ROOT}/readings/#\n\nuser server\ntopic read vitals/v1/#\n"
    )
    broker = broker_with_acl(tmp_path, passwords, acl)
    yield broker
    broker.close()


def config_with_password(
    tmp_path: Path, broker: Mosquitto, password: str, gateway_id: str = "gw-test"
) -> Path:
    """A gateway that logs in as the broker user gw-test with `password`."""
    (tmp_path / "pw").write_text(password)
    return write_config(
        tmp_path,
        broker.port,
        devices=DEVICE,
        gateway_id=gateway_id,
        mqtt_extra=f'username = "gw-test"\npassword_file = "{tmp_path / "pw"}"',
    )


@pytest_asyncio.fixture
async def gateway_in_process(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[Path], asyncio.Future[GatewayService]]]:
    services: list[GatewayService] = []

    async def start(config_path: Path) -> GatewayService:
        service = GatewayService(load_config(config_path))
        await service.start()
        services.append(service)
        return service

    yield start  # type: ignore[misc]
    for service in services:
        await service.stop()


def measure(service: GatewayService, *measurements: Measurement) -> None:
    service.pipeline.on_measurements(PORT_PATH, measurements)


@pytest.mark.asyncio
async def test_readings_travel_with_password_and_acl_and_secrets_stay_out_of_logs(
    tmp_path: Path,
    secured_broker: Mosquitto,
    gateway_in_process: Callable[[Path], asyncio.Future[GatewayService]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = Subscriber(secured_broker.port, "vitals/v1/#", username="server", password="s3cret-srv")
    sub.start()
    config = config_with_password(tmp_path, secured_broker, "s3cret-gw\n")
    service = await gateway_in_process(config)
    measure(service, Measurement(Metric.SPO2, 96))
    await until(lambda: sub.readings(), what="a reading through the secured broker")
    assert sub.readings()[0]["value"] == 96 and sub.readings()[0]["subject"] == "bed-9"
    assert "s3cret" not in caplog.text
    sub.stop()


@pytest.mark.asyncio
async def test_a_wrong_password_is_reported_and_readings_wait_in_the_store(
    tmp_path: Path,
    secured_broker: Mosquitto,
    gateway_in_process: Callable[[Path], asyncio.Future[GatewayService]],
) -> None:
    config = config_with_password(tmp_path, secured_broker, "wrong")
    service = await gateway_in_process(config)
    measure(service, Measurement(Metric.SPO2, 96), Measurement(Metric.PULSE_RATE, 70))
    await until(lambda: "refused" in service.uplink.health.last_error, what="a refusal")
    assert "wrong" not in service.uplink.health.last_error
    await until(lambda: service.pipeline.counters.get("readings_accepted") == 2, what="stored")
    stats = await service.store.call(service.store.store.queue_stats)
    assert stats.undelivered == 2


@pytest.mark.asyncio
async def test_a_message_the_acl_refuses_is_not_marked_delivered(
    tmp_path: Path,
    secured_broker: Mosquitto,
    gateway_in_process: Callable[[Path], asyncio.Future[GatewayService]],
) -> None:
    """MQTT 5 brokers answer a forbidden publish with a failing PUBACK: the reading
    must stay in the outbox, not be counted as delivered."""
    # gw-other's topics are outside what the ACL lets the user gw-test write
    config = config_with_password(tmp_path, secured_broker, "s3cret-gw", "gw-other")
    service = await gateway_in_process(config)
    measure(service, Measurement(Metric.SPO2, 96))
    await until(lambda: service.pipeline.counters.get("readings_accepted") == 1, what="stored")
    # status, alerts/active, devices and the reading: every one refused by the ACL
    await until(lambda: service.uplink.health.rejected_messages >= 4, what="refused PUBACKs")
    stats = await service.store.call(service.store.store.queue_stats)
    assert stats.undelivered == 1
    assert service.uplink.health.delivered_readings == 0


@pytest.mark.asyncio
async def test_tls_to_the_broker(
    tmp_path: Path, gateway_in_process: Callable[[Path], asyncio.Future[GatewayService]]
) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    broker = Mosquitto(
        extra_config=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n", workdir=tmp_path / "b"
    ).start()
    try:
        sub = Subscriber(broker.port, "vitals/v1/#", ca_file=ca).start()
        config = write_config(tmp_path, broker.port, devices=DEVICE, mqtt_extra=f'ca_file = "{ca}"')
        config.write_text(config.read_text().replace("mqtt://", "mqtts://"))
        service = await gateway_in_process(config)
        measure(service, Measurement(Metric.BODY_TEMPERATURE, 37.5, site=Site.AXILLARY))
        await until(lambda: sub.readings() and sub.alerts(), what="reading and alert over TLS")
        assert sub.alerts()[0]["kind"] == "fever"
        sub.stop()
    finally:
        broker.close()


@pytest.mark.asyncio
async def test_a_gateway_that_does_not_trust_the_broker_certificate_refuses_it(
    tmp_path: Path, gateway_in_process: Callable[[Path], asyncio.Future[GatewayService]]
) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
    broker = Mosquitto(
        extra_config=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n", workdir=tmp_path / "b"
    ).start()
    try:
        config = write_config(
            tmp_path, broker.port, devices=DEVICE, mqtt_extra=f'ca_file = "{other_ca}"'
        )
        config.write_text(config.read_text().replace("mqtt://", "mqtts://"))
        service = await gateway_in_process(config)
        await until(lambda: "certificate" in service.uplink.health.last_error.lower(), what="TLS")
        assert service.uplink.health.state.value != "connected"
    finally:
        broker.close()


@pytest.mark.asyncio
async def test_mqtt_3_1_1_works_too(
    tmp_path: Path,
    mosquitto: Mosquitto,
    gateway_in_process: Callable[[Path], asyncio.Future[GatewayService]],
) -> None:
    sub = Subscriber(mosquitto.port, "vitals/v1/#").start()
    config = write_config(tmp_path, mosquitto.port, devices=DEVICE, mqtt_extra='protocol = "3.1.1"')
    service = await gateway_in_process(config)
    measure(service, Measurement(Metric.PULSE_RATE, 64))
    await until(lambda: sub.readings(), what="a reading over MQTT 3.1.1")
    await until(lambda: service.uplink.health.delivered_readings == 1, what="its PUBACK")
    sub.stop()


@pytest.mark.asyncio
async def test_alerts_go_out_ahead_of_the_backlog(
    tmp_path: Path, gateway_in_process: Callable[[Path], asyncio.Future[GatewayService]]
) -> None:
    broker = Mosquitto(workdir=tmp_path / "b", persistent=True)
    broker.start()
    sub = Subscriber(broker.port, "vitals/v1/#", persistent_id="server").start()
    config = write_config(tmp_path, broker.port, devices=DEVICE)
    service = await gateway_in_process(config)
    await until(lambda: service.uplink.health.state.value == "connected", what="connected")
    broker.stop()
    await until(lambda: service.uplink.health.state.value != "connected", what="the outage")
    for _ in range(40):  # 2,000 routine readings pile up while the broker is away
        measure(service, *[Measurement(Metric.SPO2, 97)] * 50)
        await asyncio.sleep(0)
    measure(service, Measurement(Metric.BODY_TEMPERATURE, 38.5, site=Site.AXILLARY))
    await until(lambda: service.pipeline.counters.get("readings_accepted", 0) >= 2001, what="ok")
    broker.start()
    sub.reconnect()
    try:
        await until(lambda: len(sub.readings()) >= 2001 and sub.alerts(), 60, "everything")
        topics = [t for t, _, _ in sub.snapshot() if "/readings/" in t or t.endswith("/alerts")]
        assert topics.index(f"{ROOT}/alerts") == 0, "the alert before any reading"
    finally:
        sub.stop()
        broker.close()


@pytest.mark.asyncio
async def test_the_last_will_says_offline_when_the_gateway_dies(
    tmp_path: Path,
    mosquitto: Mosquitto,
    gateway_factory: Callable[[Path], object],
) -> None:
    sub = Subscriber(mosquitto.port, f"{ROOT}/status").start()
    gateway = gateway_factory(write_config(tmp_path, mosquitto.port, devices=DEVICE))
    await until(lambda: sub.snapshot("/status"), what="online status")
    assert sub.snapshot("/status")[-1][1]["state"] == "online"
    gateway.kill()  # type: ignore[attr-defined]
    await until(lambda: sub.snapshot("/status")[-1][1]["state"] == "offline", what="the will")
    late = Subscriber(mosquitto.port, f"{ROOT}/status").start()
    await until(lambda: late.snapshot(), what="the retained status")
    _, payload, retained = late.snapshot()[-1]
    assert retained and payload == {"gateway": "gw-test", "state": "offline"}
    late.stop()
    sub.stop()


@pytest.mark.asyncio
async def test_a_clean_stop_leaves_the_retained_status_offline(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    service = GatewayService(load_config(write_config(tmp_path, mosquitto.port, devices=DEVICE)))
    await service.start()
    await until(lambda: service.uplink.health.state.value == "connected", what="connected")
    await service.stop()  # a clean disconnect: the broker does not send the Last Will
    late = Subscriber(mosquitto.port, f"{ROOT}/status").start()
    await until(lambda: late.snapshot(), what="the retained status")
    assert late.snapshot()[-1][1] == {"gateway": "gw-test", "state": "offline"}
    late.stop()


@pytest.mark.asyncio
async def test_interleaved_devices_still_fill_whole_messages(
    tmp_path: Path, gateway_in_process: Callable[[Path], asyncio.Future[GatewayService]]
) -> None:
    """Six devices handing in readings in turn: each message carries one device's
    readings, up to readings_per_message, not just the few that happen to be adjacent."""
    ports = [f"/dev/serial/by-id/usb-absent-{n}" for n in range(6)]
    devices = "".join(f'[[devices]]\nkind = "cms50"\nport = "{p}"\n' for p in ports)
    broker = Mosquitto(workdir=tmp_path / "b")  # not started yet: everything queues
    config = write_config(tmp_path, broker.port, devices=devices, mqtt_extra="")
    service = await gateway_in_process(config)
    for _ in range(100):
        for port in ports:
            service.pipeline.on_measurements(port, [Measurement(Metric.SPO2, 97)])
    await until(lambda: service.pipeline.counters.get("readings_accepted") == 600, what="ok")
    broker.start()
    sub = Subscriber(broker.port, "vitals/v1/#").start()
    try:
        await until(lambda: len(sub.readings()) >= 600, 30, "all 600 readings")
        messages = [p for t, p, _ in sub.snapshot() if "/readings/" in t]
        assert len(messages) <= 6 * 2 + 2, f"{len(messages)} messages for 600 readings"
        assert all(len({r["device"] for r in m["readings"]}) == 1 for m in messages)
    finally:
        sub.stop()
        broker.close()
