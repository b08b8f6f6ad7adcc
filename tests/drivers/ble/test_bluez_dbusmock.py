"""bleak's real BlueZ backend, driven through the gateway's own code, against
python-dbusmock's `bluez5` template on a private system bus.

This tests the D-Bus contract with BlueZ (what the Pi's bluetoothd says and is asked),
not Bluetooth: the test plays bluetoothd by scripting its objects. The pitfalls of
docs/ble-simulation.md section 2 are handled here: the adapter's `Roles` holds
"central", the GATT objects are added at BlueZ's paths with `AddObject`, and `Connect`
sets `ServicesResolved` as well as `Connected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dbus
import dbusmock
import pytest
import pytest_asyncio
from bleak.exc import BleakError
from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus
from dbusmock.testcase import SpawnedMock

from drivers.backoff import Backoff
from drivers.ble import uuids
from drivers.ble.adapter import open_ble_adapter
from drivers.ble.gatt_profiles import HEALTH_THERMOMETER
from drivers.ble.routes import AdapterRoutes
from drivers.ble.session import GattSession
from drivers.listener import LinkState
from drivers.measurement import Metric, Site
from gateway.config import Config, parse_config
from gateway.scan import nearby_rows, scan_nearby
from gateway.sessions import DeviceSessions
from tests.drivers.recording_listener import RecordingListener

DBUS_DAEMON = shutil.which("dbus-daemon")
BLUEZ = "org.bluez"
ADAPTER_IFACE = "org.bluez.Adapter1"
DEVICE_IFACE = "org.bluez.Device1"
SERVICE_IFACE = "org.bluez.GattService1"
CHARACTERISTIC_IFACE = "org.bluez.GattCharacteristic1"
THERMOMETER = "F0:00:00:00:00:01"
#: A Temperature Measurement (0x2A1C): 37.4 degC, 2024-03-15 10:30:00, armpit.
MEASUREMENT_37_4_AXILLARY = bytes.fromhex("06 76 01 00 FF E8 07 03 0F 0A 1E 00 01")

#: A system bus (`<type>system</type>`) that lets everyone own and call anything.
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private dbus-daemon with the system bus configuration, as the test's system bus."""
    if DBUS_DAEMON is None:
        pytest.skip("dbus-daemon is not installed (Debian package dbus-daemon)")
    # A short directory: a socket path may not exceed 107 bytes.
    with tempfile.TemporaryDirectory(prefix="bus-") as directory:
        config = Path(directory, "system.conf")
        config.write_text(BUS_CONFIG.format(socket=Path(directory, "socket")))
        daemon = subprocess.Popen(
            [DBUS_DAEMON, "--nofork", "--print-address", f"--config-file={config}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert daemon.stdout is not None
            address = daemon.stdout.readline().strip()  # printed once it listens
            assert address, f"dbus-daemon exited with {daemon.wait()}"
            monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
            yield address
        finally:
            daemon.terminate()
            daemon.wait(10)


@dataclass(frozen=True)
class MockThermometer:
    device: str
    measurement: str  # the Temperature Measurement characteristic's object path


class MockBluez:
    """bluetoothd as python-dbusmock plays it, with one adapter, hci0 (unless told to
    start without: then `add_adapter()` plugs it in and `remove_adapter()` out)."""

    ADAPTER = "/org/bluez/hci0"

    def __init__(self, bus: dbus.bus.BusConnection, manager: Any, adapter: bool = True) -> None:
        self._bus = bus
        self._manager = manager
        self._root = dbus.Interface(manager, dbusmock.MOCK_IFACE)
        if adapter:
            self.add_adapter()

    def add_adapter(self) -> None:
        dbus.Interface(self._manager, "org.bluez.Mock").AddAdapter("hci0", "bedside-pi")
        # bleak uses only adapters whose Roles holds "central"; older templates lack it.
        self.mock(self.ADAPTER).UpdateProperties(
            ADAPTER_IFACE, {"Roles": dbus.Array(["central", "peripheral"], signature="s")}
        )

    def remove_adapter(self) -> None:
        """As when the USB adapter is unplugged: it and its devices leave D-Bus."""
        dbus.Interface(self._manager, "org.bluez.Mock").RemoveAdapterWithDevices("hci0")

    def mock(self, path: str) -> Any:
        """The dbusmock control interface of one object."""
        return dbus.Interface(self._bus.get_object(BLUEZ, path), dbusmock.MOCK_IFACE)

    def add_thermometer(self, address: str) -> MockThermometer:
        """A device with a Health Thermometer service whose GATT objects BlueZ would
        have resolved, at BlueZ's paths (the handle in hex at the end)."""
        device = str(
            dbus.Interface(self._manager, "org.bluez.Mock").AddDevice("hci0", address, "SIM-HTS")
        )
        control = self.mock(device)
        control.UpdateProperties(
            DEVICE_IFACE,
            {
                "UUIDs": dbus.Array([uuids.HEALTH_THERMOMETER_SERVICE], signature="s"),
                # The template has empty arrays here; BlueZ sends dictionaries.
                "ManufacturerData": dbus.Dictionary({}, signature="qv"),
                "ServiceData": dbus.Dictionary({}, signature="sv"),
            },
        )
        for method, up in (("Connect", True), ("Disconnect", False)):
            control.AddMethod(
                DEVICE_IFACE,
                method,
                "",
                "",
                f"self.UpdateProperties({DEVICE_IFACE!r},"
                f" {{'Connected': dbus.Boolean({up}), 'ServicesResolved': dbus.Boolean({up})}})",
            )
        service = f"{device}/service000c"
        self._add_object(
            service,
            SERVICE_IFACE,
            {
                "UUID": uuids.HEALTH_THERMOMETER_SERVICE,
                "Device": dbus.ObjectPath(device),
                "Primary": True,
                "Includes": dbus.Array([], signature="o"),
            },
            [],
        )
        measurement = f"{service}/char000d"
        self._add_object(
            measurement,
            CHARACTERISTIC_IFACE,
            {
                "UUID": uuids.TEMPERATURE_MEASUREMENT,
                "Service": dbus.ObjectPath(service),
                "Value": dbus.Array([], signature="y"),
                "Notifying": False,
                "Flags": dbus.Array(["indicate"], signature="s"),
            },
            [
                (
                    name,
                    "",
                    "",
                    f"self.UpdateProperties({CHARACTERISTIC_IFACE!r},"
                    f" {{'Notifying': dbus.Boolean({on})}})",
                )
                for name, on in (("StartNotify", True), ("StopNotify", False))
            ],
        )
        return MockThermometer(device, measurement)

    def _add_object(
        self, path: str, interface: str, properties: dict[str, Any], methods: list[Any]
    ) -> None:
        """AddObject, announced as BlueZ announces it (pitfall 18)."""
        self._root.AddObject(path, interface, properties, methods)
        self._root.EmitSignal(
            "org.freedesktop.DBus.ObjectManager",
            "InterfacesAdded",
            "oa{sa{sv}}",
            [
                dbus.ObjectPath(path),
                dbus.Dictionary(
                    {interface: dbus.Dictionary(properties, signature="sv")}, signature="sa{sv}"
                ),
            ],
        )

    def advertise(self, device: str, rssi: int = -60) -> None:
        """What BlueZ says when it hears an advertisement: the device's RSSI changed."""
        self.mock(device).UpdateProperties(DEVICE_IFACE, {"RSSI": dbus.Int16(rssi)})

    def indicate(self, characteristic: str, value: bytes) -> None:
        self.mock(characteristic).UpdateProperties(
            CHARACTERISTIC_IFACE, {"Value": dbus.Array(value, signature="y")}
        )

    def drop_link(self, device: str) -> None:
        self.mock(device).UpdateProperties(
            DEVICE_IFACE,
            {"Connected": dbus.Boolean(False), "ServicesResolved": dbus.Boolean(False)},
        )

    def calls(self, path: str, method: str) -> list[Any]:
        return list(self.mock(path).GetMethodCalls(method))

    def powered(self) -> bool:
        adapter = self._bus.get_object(BLUEZ, self.ADAPTER)
        return bool(adapter.Get(ADAPTER_IFACE, "Powered", dbus_interface=dbus.PROPERTIES_IFACE))


@contextmanager
def mock_bluez(system_bus: str, tmp_path: Path, adapter: bool = True) -> Iterator[MockBluez]:
    with (
        (tmp_path / "bluez-mock.log").open("wb") as log,
        SpawnedMock.spawn_with_template("bluez5", stdout=log, stderr=subprocess.STDOUT) as server,
    ):
        yield MockBluez(dbus.bus.BusConnection(system_bus), server.obj, adapter)


@pytest.fixture
def bluez(system_bus: str, tmp_path: Path) -> Iterator[MockBluez]:
    with mock_bluez(system_bus, tmp_path) as mock:
        yield mock


@pytest.fixture
def bluez_without_adapter(system_bus: str, tmp_path: Path) -> Iterator[MockBluez]:
    """BlueZ running, no adapter plugged in yet."""
    with mock_bluez(system_bus, tmp_path, adapter=False) as mock:
        yield mock


@asynccontextmanager
async def advertised(bluez: MockBluez) -> AsyncIterator[MockThermometer]:
    """A thermometer that advertises every 100 ms, until its adapter is removed."""
    thermometer = bluez.add_thermometer(THERMOMETER)

    async def advertise() -> None:
        with contextlib.suppress(dbus.exceptions.DBusException):  # the adapter went
            while True:
                bluez.advertise(thermometer.device)
                await asyncio.sleep(0.1)

    task = asyncio.create_task(advertise())
    try:
        yield thermometer
    finally:
        task.cancel()


@pytest_asyncio.fixture
async def advertising(bluez: MockBluez) -> AsyncIterator[MockThermometer]:
    async with advertised(bluez) as thermometer:
        yield thermometer


@pytest.mark.asyncio
async def test_a_gatt_session_finds_connects_subscribes_and_hears_the_thermometer(
    bluez: MockBluez, advertising: MockThermometer
) -> None:
    recorder = RecordingListener()
    async with open_ble_adapter("bluez") as adapter:
        session = GattSession(
            THERMOMETER,
            HEALTH_THERMOMETER,
            AdapterRoutes(adapter, asyncio.Semaphore(1), 10),
            recorder,
            asyncio.Lock(),
            connect_timeout=10,
            backoff=Backoff(base=0.05, maximum=0.2),
        )
        await session.start()
        try:
            await recorder.wait_for(
                lambda: bluez.calls(advertising.measurement, "StartNotify"), "StartNotify"
            )
            assert recorder.states(THERMOMETER) == [LinkState.CONNECTING, LinkState.CONNECTED]
            assert len(bluez.calls(advertising.device, "Connect")) == 1

            bluez.indicate(advertising.measurement, MEASUREMENT_37_4_AXILLARY)
            await recorder.wait_for(
                lambda: recorder.measurements(THERMOMETER, Metric.BODY_TEMPERATURE),
                "temperature",
            )
            (temperature,) = recorder.measurements(THERMOMETER, Metric.BODY_TEMPERATURE)
            assert (temperature.value, temperature.site) == (37.4, Site.AXILLARY)
            assert str(temperature.measured_at) == "2024-03-15 10:30:00"

            bluez.drop_link(advertising.device)
            await recorder.wait_for(
                lambda: LinkState.DISCONNECTED in recorder.states(THERMOMETER), "link loss"
            )
            assert recorder.of("state", THERMOMETER)[2] == (LinkState.DISCONNECTED, "link lost")
        finally:
            await session.stop()


@pytest_asyncio.fixture
async def powered_changes(bluez: MockBluez) -> AsyncIterator[list[bool]]:
    """Every value the adapter's Powered property takes, as its signals announce them."""
    changes: list[bool] = []

    def on_message(message: Message) -> None:
        if message.member == "PropertiesChanged" and message.path == MockBluez.ADAPTER:
            interface, changed, _ = message.body
            if interface == ADAPTER_IFACE and "Powered" in changed:
                changes.append(changed["Powered"].value)

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    bus.add_message_handler(on_message)
    await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=[f"type='signal',member='PropertiesChanged',path='{MockBluez.ADAPTER}'"],
        )
    )
    yield changes
    bus.disconnect()


async def toggled(changes: list[bool], times: int = 1) -> None:
    """Wait until the adapter was switched off and on `times` times."""
    # The recording listener's bounded wait, here only polling.
    await RecordingListener().wait_for(
        lambda: len(changes) >= 2 * times, f"{times} power cycles; saw {changes}"
    )
    assert changes == [False, True] * times


@pytest.mark.asyncio
@pytest.mark.parametrize("spec", ["bluez", "bluez:hci0"])
async def test_a_power_cycle_switches_the_adapter_off_and_on(
    bluez: MockBluez, powered_changes: list[bool], spec: str
) -> None:
    await open_ble_adapter(spec).power_cycle()

    await toggled(powered_changes)
    assert bluez.powered()


@pytest.mark.asyncio
async def test_a_power_cycle_of_an_absent_adapter_fails(bluez: MockBluez) -> None:
    with pytest.raises(BleakError, match="hci7"):
        await open_ble_adapter("bluez:hci7").power_cycle()


def watched_config(tmp_path: Path, silence_s: float) -> Config:
    """A gateway with the thermometer bound on BlueZ, and a watchdog as quick as given."""
    config = parse_config(
        {
            "gateway": {"id": "gw-test", "township": "testtown", "data_dir": str(tmp_path)},
            "bluetooth": {"adapter": "bluez", "reconnect_min_s": 0.05, "reconnect_max_s": 0.2},
            "devices": [{"kind": "hts", "address": THERMOMETER, "subject": "bed-1"}],
        },
        base_dir=tmp_path,
    )
    # Below the configuration's minimum: the test has no time to wait for a real one.
    bluetooth = config.bluetooth.model_copy(update={"watchdog_silence_s": silence_s})
    return config.model_copy(update={"bluetooth": bluetooth})


@pytest.mark.asyncio
async def test_the_watchdog_restarts_scanning_then_power_cycles_a_silent_adapter(
    bluez: MockBluez, powered_changes: list[bool], tmp_path: Path
) -> None:
    sessions = DeviceSessions(watched_config(tmp_path, silence_s=0.4), RecordingListener())
    await sessions.start()
    try:
        assert sessions.adapter_health()["state"] == "up"
        await toggled(powered_changes)
        health = sessions.adapter_health()
    finally:
        await sessions.stop()

    assert health["adapter"] == "bluez"
    assert health["state"] in ("power-cycling", "restarting scan")  # the next round begun
    assert health["scan_restarts"] >= 1 and health["power_cycles"] >= 1
    assert health["last_action_at"] is not None and health["error"] == ""
    # Scanning was restarted: discovery started again after the first one.
    assert len(bluez.calls(MockBluez.ADAPTER, "StartDiscovery")) >= 2


@pytest.mark.asyncio
async def test_a_connected_device_keeps_the_watchdog_quiet(
    bluez: MockBluez, advertising: MockThermometer, tmp_path: Path
) -> None:
    listener = RecordingListener()
    sessions = DeviceSessions(watched_config(tmp_path, silence_s=0.5), listener)
    await sessions.start()
    try:
        await listener.wait_for(
            lambda: bluez.calls(advertising.measurement, "StartNotify"), "StartNotify"
        )
        await asyncio.sleep(1.5)  # three silences without a sound but with the link up
        health = sessions.adapter_health()
    finally:
        await sessions.stop()

    assert health["state"] == "up"
    assert health["scan_restarts"] == health["power_cycles"] == 0
    assert listener.states(THERMOMETER) == [
        LinkState.CONNECTING,
        LinkState.CONNECTED,
        LinkState.DISCONNECTED,
    ]


@pytest.mark.asyncio
async def test_an_adapter_plugged_in_later_then_out_and_in_again_is_used_each_time(
    bluez_without_adapter: MockBluez, tmp_path: Path
) -> None:
    # Before: BlueZ was not asked for an adapter at start; the session scanned on none
    # and reported "scan failed" with the adapter said to be "up".
    bluez, listener = bluez_without_adapter, RecordingListener()
    sessions = DeviceSessions(watched_config(tmp_path, silence_s=300), listener)
    await sessions.start()
    try:
        health = sessions.adapter_health()
        assert health["state"] == "unavailable", health
        assert health["error"] == "no Bluetooth adapter with the BLE central role"
        assert listener.of("state", THERMOMETER) == [
            (LinkState.UNREACHABLE, f"Bluetooth adapter unavailable: {health['error']}")
        ]

        for plugged_in in range(2):
            bluez.add_adapter()
            async with advertised(bluez) as thermometer:
                await listener.wait_for(
                    lambda: bluez.calls(thermometer.measurement, "StartNotify"),
                    f"StartNotify after plugging in ({plugged_in})",
                )
                assert sessions.adapter_health()["state"] == "up"
                mark = len(listener.of("state", THERMOMETER))
                bluez.remove_adapter()
                await listener.wait_for(
                    lambda: sessions.adapter_health()["state"] == "unavailable",
                    "the adapter unavailable once unplugged",
                )
            assert "hci0 is gone" in sessions.adapter_health()["error"]
            assert listener.of("state", THERMOMETER)[-1][1].startswith(
                "Bluetooth adapter unavailable: "
            ), listener.of("state", THERMOMETER)[mark:]
    finally:
        await sessions.stop()


@pytest.mark.asyncio
async def test_the_scan_command_hears_the_thermometer_through_bluez(
    advertising: MockThermometer,
) -> None:
    heard = await scan_nearby(open_ble_adapter("bluez"), 0.5)

    assert nearby_rows(heard, ()) == [
        {
            "kind": "hts",
            "address": THERMOMETER,
            "name": "SIM-HTS",
            "rssi": -60,
            "bound": False,
            "device": None,
            "subject": None,
        }
    ]
