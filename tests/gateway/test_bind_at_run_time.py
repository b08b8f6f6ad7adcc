"""Devices bound and unbound while the gateway runs, through the care service (what the
`bind_device` and `unbind_device` commands call): real simulated devices (a CMS50 on a
pseudo-terminal, Bluetooth devices on the virtual radio) reporting to a real
mosquitto; both decisions kept across a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from gateway.care import Channel, Conflict, Invalid, NotFound
from gateway.config import load_config
from gateway.service import GatewayService
from tests.conftest import Subscriber, write_config
from tests.e2e.test_ble_to_broker import Simulator
from tests.gateway.helpers import DEVICE, PORT_PATH, until

ROOT = "vitals/v1/testtown/gw-test"
CMS50 = "cms50-usb-contec-if00"
CONFIGURED = "cms50-usb-absent-cms50"  # helpers.DEVICE, bound to bed-9
THERMOMETER, OXIMETER, DOOR = "F0:00:00:00:00:01", "F0:00:00:00:00:02", "F0:00:00:00:00:11"
DOOR_KEY = "231d39c1d7cc1ab1aee224cd096db932"  # the simulator's encrypted BTHome sensor


@asynccontextmanager
async def running(path: Path) -> AsyncIterator[GatewayService]:
    service = GatewayService(load_config(path))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
def cms50(tmp_path: Path) -> Iterator[Cms50Simulator]:
    """A v4.6 CMS50 behind a stable by-id style link: it streams only while a session
    sends it the start command and keep-alives."""
    with Cms50Simulator(Generation.V46, "normal", link=str(tmp_path / "usb-Contec-if00")) as sim:
        yield sim


def readings_of(server: Subscriber, device: str, metric: str | None = None) -> list[Any]:
    return [
        r
        for r in server.readings()
        if r["device"] == device and (metric is None or r["metric"] == metric)
    ]


def listed(server: Subscriber) -> list[str]:
    """The device ids of the last `devices` inventory the server got."""
    inventories = server.snapshot(f"{ROOT}/devices")
    return [d["id"] for d in inventories[-1][1]["devices"]] if inventories else []


async def retained_devices(port: int) -> list[str]:
    """The device ids of the retained `devices`, as a server connecting now gets it."""
    late = Subscriber(port, f"{ROOT}/devices").start()
    try:
        await until(late.snapshot, what="the retained devices")
        _topic, payload, retained = late.snapshot()[0]
        assert retained
        return [d["id"] for d in payload["devices"]]
    finally:
        late.stop()


async def bindings_audited(service: GatewayService) -> list[dict[str, Any]]:
    return await service.store.call(service.store.store.audit_trail, 100, "binding.")


async def drained(service: GatewayService) -> None:
    """Until every reading committed has reached the broker."""
    async with asyncio.timeout(20):
        stats = service.store.store.queue_stats
        while (await service.store.call(stats)).undelivered:  # noqa: ASYNC110 - PUBACKs mark them
            await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_a_cms50_bound_at_run_time_reports_with_its_subject_and_again_after_a_restart(
    tmp_path: Path,
    mosquitto: Mosquitto,
    cms50: Cms50Simulator,
    subscriber_factory: Callable[..., Subscriber],
) -> None:
    server = subscriber_factory(mosquitto.port, "vitals/v1/#")
    path = write_config(tmp_path, mosquitto.port)  # no devices
    async with running(path) as service:
        assert service.device_records() == []
        record = await service.care.bind_device(
            {"kind": "cms50", "port": cms50.path, "subject": "bed-2"},
            channel=Channel.MQTT,
            by="tech-1",
        )
        assert (record["id"], record["kind"], record["subject"]) == (CMS50, "cms50", "bed-2")
        assert record["address"] == cms50.path
        await until(lambda: len(readings_of(server, CMS50, "spo2")) >= 3, 30, "SpO2 readings")
        assert {r["subject"] for r in readings_of(server, CMS50)} == {"bed-2"}
        assert {r["value"] for r in readings_of(server, CMS50, "spo2")} <= {97, 98}
        await until(lambda: CMS50 in listed(server), what="the device in `devices`")
        assert await retained_devices(mosquitto.port) == [CMS50]
        (created,) = await bindings_audited(service)
        assert created["action"] == "binding.created"
        detail = created["detail"]
        assert (detail["channel"], detail["by"], detail["old"]) == ("mqtt", "tech-1", None)
        assert detail["new"]["entry"] == {"kind": "cms50", "port": cms50.path}
        assert detail["new"]["subject"] == "bed-2"
    before = max(r["seq"] for r in server.readings())
    # The configuration still names no device: the store's binding is served again.
    async with running(path) as service:
        assert [d["id"] for d in service.device_records()] == [CMS50]
        await until(
            lambda: len([r for r in readings_of(server, CMS50) if r["seq"] > before]) >= 3,
            30,
            "readings after the restart",
        )
        assert {r["subject"] for r in readings_of(server, CMS50)} == {"bed-2"}
        assert await retained_devices(mosquitto.port) == [CMS50]


@pytest.mark.asyncio
async def test_a_configured_cms50_unbound_at_run_time_stops_and_stays_unbound_after_a_restart(
    tmp_path: Path,
    mosquitto: Mosquitto,
    cms50: Cms50Simulator,
    subscriber_factory: Callable[..., Subscriber],
) -> None:
    server = subscriber_factory(mosquitto.port, "vitals/v1/#")
    devices = f'[[devices]]\nkind = "cms50"\nport = "{cms50.path}"\nsubject = "bed-3"\n'
    path = write_config(tmp_path, mosquitto.port, devices=devices)
    async with running(path) as service:
        await until(lambda: len(readings_of(server, CMS50)) >= 2, 30, "readings")
        await until(lambda: CMS50 in listed(server), what="the device in `devices`")
        assert await service.care.unbind_device(CMS50, channel=Channel.WEB, by="tech-1") == {
            "device": CMS50
        }
        unbound_at = datetime.now(UTC)
        # Nobody sends it keep-alives any more: the oximeter stops streaming.
        await until(lambda: not cms50.streaming, 30, "the oximeter left idle")
        assert service.device_records() == []
        await until(lambda: CMS50 not in listed(server), what="the device gone from `devices`")
        assert await retained_devices(mosquitto.port) == []
        await drained(service)
        (removed,) = [
            a for a in await bindings_audited(service) if a["action"] != "binding.created"
        ]
        assert removed["action"] == "binding.removed"
        assert removed["detail"]["old"]["subject"] == "bed-3"
        assert (removed["detail"]["channel"], removed["detail"]["by"]) == ("web", "tech-1")
    sent = readings_of(server, CMS50)
    assert all(datetime.fromisoformat(r["received_at"]) <= unbound_at for r in sent)
    inventories = len(server.snapshot(f"{ROOT}/devices"))
    # The file still names the device: unbound it stays.
    async with running(path) as service:
        assert service.device_records() == []
        assert service.directory.binding(CMS50) is None
        await until(
            lambda: len(server.snapshot(f"{ROOT}/devices")) > inventories,
            what="the inventory of the restarted gateway",
        )
        assert listed(server) == []
        # A binding made again is served again.
        await service.care.bind_device(
            {"kind": "cms50", "port": cms50.path, "subject": "bed-4"}, channel=Channel.MQTT
        )
        await until(
            lambda: any(r["subject"] == "bed-4" for r in readings_of(server, CMS50)),
            30,
            "readings of the device bound again",
        )


@pytest.mark.asyncio
async def test_binding_a_bound_device_again_is_a_conflict_and_changes_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    other = {"kind": "cms50", "port": "/dev/serial/by-id/usb-other-absent", "subject": "bed-5"}
    async with running(write_config(tmp_path, mosquitto.port, devices=DEVICE)) as service:
        with pytest.raises(Conflict, match=f"{CONFIGURED} is bound already"):
            await service.care.bind_device(
                {"kind": "cms50", "port": PORT_PATH, "subject": "bed-1"}, channel=Channel.MQTT
            )
        await service.care.bind_device(other, channel=Channel.MQTT)
        audited = await bindings_audited(service)
        with pytest.raises(Conflict, match="cms50-usb-other-absent is bound already"):
            await service.care.bind_device({**other, "subject": "bed-6"}, channel=Channel.MQTT)
        assert {r["id"]: r["subject"] for r in service.device_records()} == {
            CONFIGURED: "bed-9",
            "cms50-usb-other-absent": "bed-5",
        }
        assert await bindings_audited(service) == audited


@pytest.mark.asyncio
async def test_unbinding_an_unknown_device_is_not_found(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with running(write_config(tmp_path, mosquitto.port, devices=DEVICE)) as service:
        with pytest.raises(NotFound, match="no device hts-f00000000001"):
            await service.care.unbind_device("hts-f00000000001", channel=Channel.MQTT)
        await service.care.unbind_device(CONFIGURED, channel=Channel.MQTT)
        with pytest.raises(NotFound, match=f"no device {CONFIGURED}"):
            await service.care.unbind_device(CONFIGURED, channel=Channel.MQTT)
        assert [a["action"] for a in await bindings_audited(service)] == [
            "binding.removed",
            "binding.created",
        ]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"kind": "thermo9", "address": THERMOMETER},
            "kind: 'thermo9' is not one of ",
        ),
        ({"kind": "hts", "address": "F0-00"}, "address: 'F0-00' is not a Bluetooth address"),
        ({"kind": "hts"}, "address: missing"),
        ({"kind": "cms50"}, "port: missing"),
        ({"kind": "cms50", "port": "/dev/ttyUSB0", "address": OXIMETER}, "address: a cms50"),
        ({"kind": "bthome", "address": DOOR, "key": "0123"}, "key: must be 32 hex digits"),
        ({"kind": "hts", "address": THERMOMETER, "colour": "red"}, "colour: unknown key"),
        (
            {"kind": "hts", "address": THERMOMETER, "subject": "Zhang San"},
            "subject: must be a bed or pseudonymous code",
        ),
    ],
)
async def test_a_bad_entry_is_refused_naming_its_key_and_nothing_changes(
    tmp_path: Path, mosquitto: Mosquitto, entry: dict[str, Any], message: str
) -> None:
    async with running(write_config(tmp_path, mosquitto.port, devices=DEVICE)) as service:
        with pytest.raises(Invalid) as refused:
            await service.care.bind_device(entry, channel=Channel.MQTT)
        assert str(refused.value).startswith(message), str(refused.value)
        assert refused.value.code == "malformed"
        assert [r["id"] for r in service.device_records()] == [CONFIGURED]
        assert [a["action"] for a in await bindings_audited(service)] == ["binding.created"]
        assert service.sessions.adapter_health()["state"] == "not used"


@pytest.mark.asyncio
async def test_bluetooth_devices_bound_at_run_time_report_and_an_unbound_one_frees_its_slot(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One connection slot: the thermometer bound while the oximeter holds it waits,
    and takes it once the oximeter is unbound. The gateway starts with no device at
    all: the Bluetooth side is brought up by the first binding."""
    caplog.set_level(logging.DEBUG, logger="gateway")
    caplog.set_level(logging.DEBUG, logger="drivers")
    sim = Simulator("--scenario", "normal", "--door", "bthome-encrypted")
    try:
        server = subscriber_factory(mosquitto.port, "vitals/v1/#")
        path = write_config(tmp_path, mosquitto.port, adapter=sim.adapter)
        path.write_text(
            path.read_text().replace("[bluetooth]\n", "[bluetooth]\nmax_connections = 1\n")
        )
        async with running(path) as service:
            assert service.sessions.adapter_health()["state"] == "not used"
            bind = service.care.bind_device
            await bind(
                {"kind": "plx", "address": OXIMETER, "subject": "bed-1"}, channel=Channel.MQTT
            )
            await until(lambda: readings_of(server, "plx-f00000000002", "spo2"), 30, "SpO2")
            assert service.sessions.adapter_health()["state"] == "up"
            door = await bind(
                {"kind": "bthome", "address": DOOR, "subject": "room-12", "key": DOOR_KEY},
                channel=Channel.MQTT,
            )
            assert door["id"] == "bthome-f00000000011"
            await until(
                lambda: readings_of(server, "bthome-f00000000011", "door_open"), 45, "the door"
            )
            assert {r["subject"] for r in readings_of(server, "bthome-f00000000011")} == {"room-12"}
            await bind(
                {"kind": "hts", "address": THERMOMETER, "subject": "bed-1", "site": "axillary"},
                channel=Channel.MQTT,
            )

            def thermometer() -> dict[str, Any]:
                return next(d for d in service.device_records() if d["id"] == "hts-f00000000001")

            await until(
                lambda: thermometer()["link_detail"] == "waiting for a free connection slot",
                30,
                "the thermometer waiting for the oximeter's slot",
            )
            assert readings_of(server, "hts-f00000000001") == []
            await service.care.unbind_device("plx-f00000000002", channel=Channel.MQTT)
            await until(
                lambda: readings_of(server, "hts-f00000000001", "body_temperature"),
                45,
                "a temperature once the slot is free",
            )
            (temperature, *_) = readings_of(server, "hts-f00000000001", "body_temperature")
            assert (temperature["subject"], temperature["site"]) == ("bed-1", "axillary")
            await until(
                lambda: sorted(listed(server)) == ["bthome-f00000000011", "hts-f00000000001"],
                what="`devices` without the oximeter",
            )
            (door_bound,) = [
                a
                for a in await bindings_audited(service)
                if a["detail"]["what"] == "bthome-f00000000011"
            ]
            assert door_bound["detail"]["new"]["entry"]["key"] == "***"
        before = max(r["seq"] for r in server.readings())
        # The key was kept (in the store, never in the audit): the door reads after a restart.
        async with running(path) as service:
            await until(
                lambda: [
                    r for r in readings_of(server, "bthome-f00000000011") if r["seq"] > before
                ],
                45,
                "the door read again after the restart",
            )
        assert all(DOOR_KEY not in str(payload) for _, payload, _ in server.snapshot())
        assert DOOR_KEY not in caplog.text
        assert all(DOOR_KEY not in str(vars(record)) for record in caplog.records)
    finally:
        sim.stop()
