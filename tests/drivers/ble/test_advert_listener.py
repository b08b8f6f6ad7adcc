"""AdvertListener through bleak and the bumble backend, against simulated BTHome and
MiBeacon door sensors on a virtual radio (HCI over TCP, as the simulator serves it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from bleak.exc import BleakError
from bumble.link import LocalLink

from drivers.ble import uuids
from drivers.ble.adapter import BleAdapter, open_ble_adapter
from drivers.ble.advert_listener import AdvertListener
from drivers.ble.bumble import BumbleRadio, BumbleScanner
from drivers.kinds import classify_advertisement
from drivers.listener import LinkState
from drivers.measurement import Metric
from firmware_sim.ble_radio import HciTcpServer
from firmware_sim.devices import bthome_door, mibeacon_door
from firmware_sim.devices.peripheral import ScenarioClock
from firmware_sim.door_ward import DoorSensors
from tests.drivers.recording_listener import RecordingListener

PLAIN = bthome_door.DEFAULT_ADDRESS
ENCRYPTED = bthome_door.DEFAULT_ENCRYPTED_ADDRESS
XIAOMI = mibeacon_door.DEFAULT_ADDRESS
BTHOME_KEY = bthome_door.DEFAULT_KEY
BINDKEY = mibeacon_door.DEFAULT_KEY
WRONG_KEY = bytes(range(16))


@dataclass
class Bench:
    link: LocalLink
    hci_spec: str
    doors: DoorSensors
    adapter: BleAdapter
    recorder: RecordingListener

    def listener(self, devices: Mapping[str, tuple[str, bytes | None]]) -> AdvertListener:
        return AdvertListener(self.adapter, self.recorder, devices)


@pytest_asyncio.fixture
async def bench() -> AsyncIterator[Bench]:
    link = LocalLink()
    server = HciTcpServer(link)
    await server.start()
    try:
        async with (
            DoorSensors(link, advertising_interval_ms=20) as doors,
            open_ble_adapter(f"bumble:{server.hci_spec}") as adapter,
        ):
            yield Bench(link, server.hci_spec, doors, adapter, RecordingListener())
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_a_plain_bthome_door_opening_and_closing_gives_door_and_battery_readings(
    bench: Bench,
) -> None:
    sensor = await bench.doors.add("bthome")
    rec = bench.recorder
    async with bench.listener({PLAIN: ("bthome", None)}) as listener:
        assert listener.scanning_mode == "passive"
        await rec.wait_for(lambda: rec.values(PLAIN, Metric.DOOR_OPEN) == [False], "closed")
        await sensor.open()
        await rec.wait_for(lambda: rec.values(PLAIN, Metric.DOOR_OPEN)[-1:] == [True], "open")
        await sensor.close()
        await rec.wait_for(lambda: rec.values(PLAIN, Metric.DOOR_OPEN)[-1:] == [False], "closed")
        assert listener.last_advert_at is not None

    assert rec.values(PLAIN, Metric.DOOR_OPEN) == [False, True, False]
    assert rec.values(PLAIN, Metric.BATTERY) == [100, 100, 100]
    assert set(rec.of("signal", PLAIN)) == {-50}
    assert rec.of("state", PLAIN) == [
        (LinkState.CONNECTED, "advertising"),
        (LinkState.DISCONNECTED, "listener stopped"),
    ]
    assert rec.of("malformed", PLAIN) == []


@pytest.mark.asyncio
async def test_repeated_advertisements_give_one_reading_per_packet(bench: Bench) -> None:
    sensor = await bench.doors.add("bthome")
    rec = bench.recorder
    async with bench.listener({PLAIN: ("bthome", None)}):
        await rec.wait_for(lambda: rec.of("measurements", PLAIN), "a reading")
        await rec.heard_again(PLAIN)
        await sensor.open()
        await rec.wait_for(lambda: len(rec.of("measurements", PLAIN)) == 2, "open")
        await rec.heard_again(PLAIN)

    assert len(sensor.sent) == len(rec.of("measurements", PLAIN)) == 2
    assert len(rec.of("signal", PLAIN)) > 20


@pytest.mark.asyncio
async def test_an_encrypted_bthome_door_decodes_with_its_key(bench: Bench) -> None:
    sensor = await bench.doors.add("bthome-encrypted")
    rec = bench.recorder
    async with bench.listener({ENCRYPTED: ("bthome", BTHOME_KEY)}):
        await rec.wait_for(lambda: rec.values(ENCRYPTED, Metric.DOOR_OPEN) == [False], "closed")
        await sensor.open()
        await rec.wait_for(lambda: rec.values(ENCRYPTED, Metric.DOOR_OPEN)[-1:] == [True], "open")

    assert sensor.sent[0][0] == 0x41  # version 2, encrypted
    assert rec.values(ENCRYPTED, Metric.BATTERY) == [100, 100]
    assert rec.of("malformed", ENCRYPTED) == []


@pytest.mark.asyncio
async def test_a_wrong_key_gives_no_reading_and_one_malformed_report_per_packet(
    bench: Bench,
) -> None:
    sensor = await bench.doors.add("bthome-encrypted")
    rec = bench.recorder
    async with bench.listener({ENCRYPTED: ("bthome", WRONG_KEY)}):
        await rec.wait_for(lambda: rec.of("malformed", ENCRYPTED), "a malformed report")
        await rec.heard_again(ENCRYPTED)
        await sensor.open()
        await rec.wait_for(lambda: len(rec.of("malformed", ENCRYPTED)) == 2, "a second one")
        await rec.heard_again(ENCRYPTED)

    malformed = rec.of("malformed", ENCRYPTED)
    assert [raw for _, raw in malformed] == sensor.sent
    assert all("MIC mismatch" in str(error) for error, _ in malformed)
    assert rec.of("measurements", ENCRYPTED) == []
    assert rec.of("state", ENCRYPTED)[0] == (LinkState.CONNECTED, "advertising")


@pytest.mark.asyncio
async def test_a_replayed_counter_is_rejected_and_collection_goes_on(bench: Bench) -> None:
    sensor = await bench.doors.add("bthome-encrypted")
    rec = bench.recorder
    async with bench.listener({ENCRYPTED: ("bthome", BTHOME_KEY)}):
        await rec.wait_for(lambda: rec.values(ENCRYPTED, Metric.DOOR_OPEN) == [False], "closed")
        await sensor.open()
        await rec.wait_for(lambda: rec.values(ENCRYPTED, Metric.DOOR_OPEN)[-1:] == [True], "open")
        await sensor.replay()  # the first packet: door closed, counter 1000
        await rec.wait_for(lambda: rec.of("malformed", ENCRYPTED), "the replay rejected")
        await rec.heard_again(ENCRYPTED)
        await sensor.close()
        await rec.wait_for(lambda: len(rec.values(ENCRYPTED, Metric.DOOR_OPEN)) == 3, "closed")

    [(error, raw)] = rec.of("malformed", ENCRYPTED)
    assert raw == sensor.sent[0]
    assert "replayed packet rejected" in str(error)
    assert rec.values(ENCRYPTED, Metric.DOOR_OPEN) == [False, True, False]


@pytest.mark.asyncio
async def test_a_mibeacon_door_sensor_gives_battery_then_door_readings(bench: Bench) -> None:
    sensor = await bench.doors.add("mibeacon")
    rec = bench.recorder
    # Bound in another spelling; reported under bleak's.
    async with bench.listener({XIAOMI.lower().replace(":", "-"): ("mibeacon", BINDKEY)}):
        await rec.wait_for(lambda: rec.values(XIAOMI, Metric.BATTERY) == [95], "battery")
        await sensor.open()
        await rec.wait_for(lambda: rec.values(XIAOMI, Metric.DOOR_OPEN) == [True], "open")
        await sensor.close()
        await rec.wait_for(lambda: rec.values(XIAOMI, Metric.DOOR_OPEN)[-1:] == [False], "closed")

    assert rec.values(XIAOMI, Metric.DOOR_OPEN) == [True, False]
    assert rec.of("malformed", XIAOMI) == []
    assert rec.of("state", XIAOMI)[0] == (LinkState.CONNECTED, "advertising")


@pytest.mark.asyncio
async def test_unbound_sensors_are_discovered_and_give_no_readings(bench: Bench) -> None:
    for kind in ("bthome", "mibeacon", "bthome-encrypted"):
        await bench.doors.add(kind)
    rec = bench.recorder
    async with bench.listener({ENCRYPTED: ("bthome", BTHOME_KEY)}) as listener:
        await rec.wait_for(
            lambda: (
                rec.of("measurements", ENCRYPTED) and {PLAIN, XIAOMI} <= set(listener.discovered)
            ),
            "both unbound sensors",
        )
        await rec.heard_again(ENCRYPTED)

    assert set(listener.discovered) == {PLAIN, XIAOMI}
    plain, xiaomi = listener.discovered[PLAIN], listener.discovered[XIAOMI]
    assert (plain.kind, plain.name, plain.rssi) == ("bthome", "Sim DW", -50)
    assert (xiaomi.kind, xiaomi.name, xiaomi.rssi) == ("mibeacon", None, -50)
    assert listener.last_advert_at is not None and listener.last_advert_at >= plain.last_seen
    assert {address for _, address, _ in rec.events} == {ENCRYPTED}


@pytest.mark.asyncio
async def test_doors_follow_a_scenario(bench: Bench) -> None:
    rec = bench.recorder
    # At 20 scenario seconds per real second the door opens at 0.25 s and closes at 0.75 s.
    async with (
        DoorSensors(
            bench.link,
            ["bthome"],
            scenario="opens_and_closes",
            clock=ScenarioClock(speed=20),
            advertising_interval_ms=20,
        ),
        bench.listener({PLAIN: ("bthome", None)}),
    ):
        await rec.wait_for(
            lambda: rec.values(PLAIN, Metric.DOOR_OPEN)[-2:] == [True, False], "open and closed"
        )


class _PassiveRefusingScanner(BumbleScanner):
    """As bleak's BlueZ backend behaves without BlueZ's experimental features."""

    async def start(self) -> None:
        if self.scanning_mode == "passive":
            raise BleakError("passive scanning on Linux requires BlueZ >= 5.56 --experimental")
        await super().start()


class _PassiveRefusingAdapter(BleAdapter):
    def __init__(self, radio: BumbleRadio) -> None:
        super().__init__("test", radio=radio)
        self._backend = type("Bound", (_PassiveRefusingScanner,), {"radio": radio})

    def scanner_kwargs(self) -> dict[str, Any]:
        return {"backend": self._backend}


@pytest.mark.asyncio
async def test_passive_scanning_falls_back_to_active_when_refused(bench: Bench) -> None:
    await bench.doors.add("bthome")
    rec = bench.recorder
    async with (
        _PassiveRefusingAdapter(BumbleRadio(bench.hci_spec)) as adapter,
        AdvertListener(adapter, rec, {PLAIN: ("bthome", None)}) as listener,
    ):
        assert listener.scanning_mode == "active"
        await rec.wait_for(lambda: rec.values(PLAIN, Metric.DOOR_OPEN), "a reading")


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ({PLAIN: ("shelly", None)}, "unknown advertisement protocol"),
        ({PLAIN: ("bthome", b"short")}, "16 bytes"),
        ({"F0:00:00:00:10": ("mibeacon", BINDKEY)}, "not a MAC address"),
    ],
)
def test_bad_bindings_are_refused(
    devices: dict[str, tuple[str, bytes | None]], message: str
) -> None:
    adapter = open_ble_adapter("bluez")
    with pytest.raises(ValueError, match=message):
        AdvertListener(adapter, RecordingListener(), devices)


#: The published MCCGQ02HL test vector (docs/protocols.md 5.2).
MIBEACON_DOOR_FRAME = bytes.fromhex("58588b09a3ae2181ecaae40e2c553c040000d28a500c")
#: Battery Service (0x180F): advertised beside the thermometer service by some devices.
BATTERY_SERVICE = "0000180f-0000-1000-8000-00805f9b34fb"


@pytest.mark.parametrize(
    ("name", "service_uuids", "service_data", "kind"),
    [
        ("SBDW-002C", [], {uuids.BTHOME_SERVICE_DATA: b"\x40\x2d\x01"}, "bthome"),
        (None, [], {uuids.MIBEACON_SERVICE_DATA: MIBEACON_DOOR_FRAME}, "mibeacon"),
        # Another Xiaomi product (LYWSD03MMC thermometer, 0x055B) is not a door sensor.
        (None, [], {uuids.MIBEACON_SERVICE_DATA: bytes.fromhex("58585b05")}, None),
        ("Sim Oximeter", [uuids.PULSE_OXIMETER_SERVICE], {}, "plx"),
        (
            None,
            ["0000180f-0000-1000-8000-00805f9b34fb", uuids.HEALTH_THERMOMETER_SERVICE],
            {},
            "hts",
        ),
        ("BerryMed", [], {}, "berrymed"),
        (None, [uuids.BERRYMED_SERVICE], {}, "berrymed"),
        ("PC-60F_SN012345", [uuids.NORDIC_UART_SERVICE], {}, "pc60fw"),
        ("pc60fw", [], {}, "pc60fw"),
        ("Some UART gadget", [uuids.NORDIC_UART_SERVICE], {}, None),
        ("Phone", [], {}, None),
        (None, [], {}, None),
    ],
)
def test_classify_advertisement(
    name: str | None, service_uuids: list[str], service_data: dict[str, bytes], kind: str | None
) -> None:
    assert classify_advertisement(name, service_uuids, service_data) == kind
