"""Commissioning as the technician's page does it (`gateway/commissioning.py`), on a real
gateway service against the simulator's virtual radio (`python -m firmware_sim ble`)
and a real mosquitto: devices nearby, a door sensor's key tried on what it sent, bind,
replace, unbind; each change audited and served without a restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.kinds import KeyUse
from gateway.broker import Mosquitto
from gateway.care import Channel, Invalid, NotFound
from gateway.commissioning import (
    Candidate,
    Commissioning,
    KeyProblem,
    KeyRefused,
    strongest_first,
)
from gateway.model import DoorRole
from gateway.service import GatewayService
from tests.conftest import Subscriber, free_port, write_config
from tests.e2e.test_ble_to_broker import Simulator
from tests.gateway.helpers import until
from tests.gateway.test_bind_at_run_time import bindings_audited, readings_of, running

OXIMETER, BERRYMED = "F0:00:00:00:00:02", "F0:00:00:00:00:03"
PLAIN, DOOR, MIBEACON = "F0:00:00:00:00:10", "F0:00:00:00:00:11", "F0:00:00:00:00:12"
DOOR_KEY = "231d39c1d7cc1ab1aee224cd096db932"  # the simulator's encrypted BTHome sensor
WRONG_KEY = "00112233445566778899aabbccddeeff"
DOOR_ID, PLX_ID, BERRYMED_ID = "bthome-f00000000011", "plx-f00000000002", "berrymed-f00000000003"


def commissioning(service: GatewayService) -> Commissioning:
    return Commissioning(service.sessions, service.care, service.directory)


def link(service: GatewayService, device: str) -> str:
    return next((d["link"] for d in service.device_records() if d["id"] == device), "")


@pytest.mark.asyncio
async def test_a_fresh_gateway_lists_devices_nearby_checks_a_door_sensors_key_and_binds_them(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Callable[..., Subscriber]
) -> None:
    sim = Simulator("--only", "--plx", "--door", "bthome-encrypted", "--door", "bthome")
    try:
        server = subscriber_factory(mosquitto.port, "vitals/v1/#")
        async with running(write_config(tmp_path, mosquitto.port, adapter=sim.adapter)) as service:
            page = commissioning(service)
            assert service.sessions.adapter_health()["state"] == "not used"
            assert page.nearby() == []
            assert await service.sessions.discover(60) == ""
            await until(
                lambda: {c.address for c in page.nearby()} == {OXIMETER, DOOR, PLAIN},
                30,
                "the oximeter and both door sensors nearby",
            )
            nearby = page.nearby()
            assert nearby == strongest_first(nearby)
            assert {c.rssi for c in nearby} == {-50}  # no radio physics (ble-simulation.md)
            found = {c.address: c for c in nearby}
            oximeter, door = found[OXIMETER], found[DOOR]
            assert (oximeter.kind, oximeter.name, oximeter.device_id) == (
                "plx",
                "Sim Oximeter",
                PLX_ID,
            )
            assert (oximeter.key, oximeter.site, oximeter.role) == (KeyUse.NONE, False, False)
            assert (door.kind, door.device_id) == ("bthome", DOOR_ID)
            assert (door.key, door.site, door.role) == (KeyUse.OPTIONAL, False, True)

            # Keys refused, with a reason the page can say; nothing saved.
            audited = await bindings_audited(service)
            with pytest.raises(KeyRefused, match=f"^key: does not decrypt .* from {DOOR}") as no:
                page.check_key(DOOR, "bthome", WRONG_KEY)
            assert no.value.problem is KeyProblem.WRONG
            assert WRONG_KEY not in str(no.value)
            with pytest.raises(Invalid, match=r"^key: must be 32 hex digits"):
                page.check_key(DOOR, "bthome", "231d39c1")
            with pytest.raises(KeyRefused, match=r"^key: .* cannot be read without a key") as no:
                page.check_key(DOOR, "bthome", None)
            assert no.value.problem is KeyProblem.UNREADABLE
            with pytest.raises(KeyRefused, match=f"^key: {PLAIN} sends .* unencrypted") as no:
                page.check_key(PLAIN, "bthome", DOOR_KEY)
            assert no.value.problem is KeyProblem.UNENCRYPTED
            with pytest.raises(KeyRefused, match=f"^key: no mibeacon advertisement .* {MIBEACON}"):
                page.check_key(MIBEACON, "mibeacon", DOOR_KEY)
            with pytest.raises(Invalid, match=r"^key: a mibeacon needs its 32-hex-digit key"):
                page.check_key(MIBEACON, "mibeacon", "")
            door_entry = {"kind": "bthome", "address": DOOR, "subject": "room-12"}
            for key in (WRONG_KEY, "not a key"):
                with pytest.raises(Invalid, match=r"^key: "):
                    await page.bind({**door_entry, "key": key}, by="tech-1")
            assert service.device_records() == []
            assert await bindings_audited(service) == audited

            page.check_key(DOOR, "bthome", DOOR_KEY)
            page.check_key(PLAIN, "bthome", None)
            record = await page.bind(
                {"kind": "plx", "address": OXIMETER, "subject": "bed-1"}, by="tech-1"
            )
            assert record["id"] == PLX_ID
            await until(lambda: readings_of(server, PLX_ID, "spo2"), 30, "SpO2 readings")
            assert {r["subject"] for r in readings_of(server, PLX_ID)} == {"bed-1"}
            assert [c.address for c in page.nearby()] == [PLAIN, DOOR], "bound ones not offered"

            # The discovery ends: with no door sensor bound, nothing is heard any more.
            assert await service.sessions.discover(0.1) == ""
            await until(
                lambda: min(c.seen_s_ago for c in page.nearby()) >= 2, 20, "the scan stopped"
            )
            # The binding starts it again.
            record = await page.bind({**door_entry, "key": DOOR_KEY}, by="tech-1")
            assert (record["id"], record["subject"]) == (DOOR_ID, "room-12")
            await until(lambda: readings_of(server, DOOR_ID, "door_open"), 30, "the door")
            assert link(service, DOOR_ID) == "connected"
            assert [c.address for c in page.nearby()] == [PLAIN]

            created = {a["detail"]["what"]: a["detail"] for a in await bindings_audited(service)}
            assert set(created) == {DOOR_ID, PLX_ID}
            assert {(d["channel"], d["by"]) for d in created.values()} == {("web", "tech-1")}
            assert created[DOOR_ID]["new"]["entry"]["key"] == "***"
    finally:
        sim.stop()


@pytest.mark.asyncio
async def test_replacing_keeps_the_subject_and_a_refused_replacement_keeps_the_old_device(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Callable[..., Subscriber]
) -> None:
    """An oximeter replaced by another kind at another address; a door sensor bound with
    a wrong key replaced by itself with the right one (the same address: it cannot be
    bound before the old binding goes); then unbound."""
    sim = Simulator("--only", "--plx", "--berrymed", "--door", "bthome-encrypted")
    wrongly_keyed = (
        f'[[devices]]\nkind = "bthome"\naddress = "{DOOR}"\nsubject = "room-12"\n'
        f'key = "{WRONG_KEY}"\nrole = "night"\n'
    )
    try:
        server = subscriber_factory(mosquitto.port, "vitals/v1/#")
        path = write_config(tmp_path, mosquitto.port, adapter=sim.adapter, devices=wrongly_keyed)
        async with running(path) as service:
            page = commissioning(service)
            assert await service.sessions.discover(60) == ""
            await page.bind({"kind": "plx", "address": OXIMETER, "subject": "bed-1"}, by="tech-1")
            await until(lambda: readings_of(server, PLX_ID, "spo2"), 30, "SpO2 from the PLX")
            await until(lambda: BERRYMED in {c.address for c in page.nearby()}, 30, "BerryMed")

            before = (service.device_records(), await bindings_audited(service))
            berrymed = {"kind": "berrymed", "address": BERRYMED}
            for fields, refused in (
                ({**berrymed, "subject": "bed-2"}, "^subject: a replacement measures bed-1"),
                ({**berrymed, "kind": "thermo9"}, "^kind: 'thermo9' is not one of"),
                ({**berrymed, "site": "oral"}, "^site: only hts devices have a site"),
            ):
                with pytest.raises(Invalid, match=refused):
                    await page.replace(PLX_ID, fields, by="tech-1")
            with pytest.raises(NotFound):
                await page.replace("plx-f000000000ff", berrymed, by="tech-1")
            assert (service.device_records(), await bindings_audited(service)) == before

            record = await page.replace(PLX_ID, berrymed, by="tech-1")
            assert (record["id"], record["subject"]) == (BERRYMED_ID, "bed-1")
            await until(lambda: readings_of(server, BERRYMED_ID, "spo2"), 30, "SpO2 from BerryMed")
            assert {r["subject"] for r in readings_of(server, BERRYMED_ID)} == {"bed-1"}
            assert PLX_ID not in {d["id"] for d in service.device_records()}
            removed, created = (await bindings_audited(service))[:2][::-1]
            assert (removed["action"], removed["detail"]["what"]) == ("binding.removed", PLX_ID)
            assert removed["detail"]["old"]["subject"] == "bed-1"
            assert (created["action"], created["detail"]["what"]) == (
                "binding.created",
                BERRYMED_ID,
            )
            assert created["detail"]["new"]["subject"] == "bed-1"
            assert {removed["detail"]["channel"], created["detail"]["channel"]} == {"web"}

            # The discovery ends; the door sensor bound all along is still heard.
            assert await service.sessions.discover(0.1) == ""
            ended = time.monotonic() + 0.1
            await until(
                lambda: (service.devices.heard_at(DOOR_ID) or 0) > ended + 1,
                20,
                "the door heard after the discovery ended",
            )
            # The wrong key is refused against the sensor's own advertisements.
            await until(
                lambda: any(d["security_rejections"] for d in service.device_records()),
                30,
                "the wrong key refused by the listener",
            )
            assert readings_of(server, DOOR_ID) == []
            door = {"kind": "bthome", "address": DOOR}
            with pytest.raises(KeyRefused, match=r"^key: .* cannot be read without a key"):
                await page.replace(DOOR_ID, door, by="tech-1")
            with pytest.raises(KeyRefused, match=r"^key: does not decrypt"):
                await page.replace(DOOR_ID, {**door, "key": DOOR_KEY[::-1]}, by="tech-1")
            record = await page.replace(DOOR_ID, {**door, "key": DOOR_KEY}, by="tech-1")
            assert (record["id"], record["subject"]) == (DOOR_ID, "room-12")
            binding = service.directory.binding(DOOR_ID)
            assert binding is not None and binding.door_role is DoorRole.NIGHT
            await until(lambda: readings_of(server, DOOR_ID, "door_open"), 30, "the door read")
            assert {r["subject"] for r in readings_of(server, DOOR_ID)} == {"room-12"}
            assert [
                a["action"]
                for a in await bindings_audited(service)
                if a["detail"]["what"] == DOOR_ID
            ][:2] == ["binding.created", "binding.removed"]

            await service.care.unbind_device(BERRYMED_ID, channel=Channel.WEB, by="tech-1")
            assert [d["id"] for d in service.device_records()] == [DOOR_ID]
            (unbound, *_) = await bindings_audited(service)
            assert (unbound["action"], unbound["detail"]["what"]) == (
                "binding.removed",
                BERRYMED_ID,
            )
        seen = max(r["seq"] for r in server.readings())
        # The configuration still has the wrong key: the replacement is what counts.
        async with running(path) as service:
            assert [d["id"] for d in service.device_records()] == [DOOR_ID]
            await until(
                lambda: [r for r in readings_of(server, DOOR_ID) if r["seq"] > seen],
                30,
                "the door read after a restart",
            )
    finally:
        sim.stop()


@pytest.mark.asyncio
async def test_discovery_without_an_adapter_says_why(tmp_path: Path, mosquitto: Mosquitto) -> None:
    absent = f"bumble:tcp-client:127.0.0.1:{free_port()}"  # a dongle not plugged in
    async with running(write_config(tmp_path, mosquitto.port, adapter=absent)) as service:
        reason = await service.sessions.discover()
        health = service.sessions.adapter_health()
        assert health["state"] == "unavailable"
        assert reason and reason == health["error"]
        assert commissioning(service).nearby() == []


def test_the_strongest_signal_comes_first_and_an_unknown_one_last() -> None:
    """The simulator reports every signal at -50 dBm, so the order is shown here."""

    def heard(address: str, rssi: int | None) -> Candidate:
        return Candidate(address, "plx", None, rssi, 0, KeyUse.NONE, False, False, "plx-x")

    candidates = [heard("F0:00:00:00:00:01", -80), heard("F0:00:00:00:00:02", None)]
    candidates += [heard("F0:00:00:00:00:03", -40), heard("F0:00:00:00:00:04", -80)]
    assert [c.address[-2:] for c in strongest_first(candidates)] == ["03", "01", "04", "02"]
