"""What every simulated Bluetooth peripheral does, whatever it measures.

A peripheral is a bumble `Device` with its own controller on the shared virtual link.
It advertises while it is in range and unconnected, drops its link and falls silent while
the scenario takes it out of range, and sends what is due each period to its subscribers.
`StreamingPeripheral` is the base of the devices that stream bytes, not packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from bumble import gatt, hci
from bumble.core import UUID, AdvertisingData
from bumble.device import AdvertisingType, Connection, Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.profiles.device_information_service import DeviceInformationService
from bumble.transport.common import AsyncPipeSink

from firmware_sim.ble_radio import VirtualController
from firmware_sim.scenarios import in_range

logger = logging.getLogger(__name__)

MANUFACTURER = "Bedside Sim"
FIRMWARE_REVISION = "1.0.0"
#: Real time between two looks at the scenario (range, advertising, due readings).
_TICK_SECONDS = 0.02
#: How the Battery Level can be had: read and notified, read only, or no Battery Service.
BatteryMode = Literal["notify", "read"] | None


@dataclass(frozen=True, slots=True)
class TwinOptions:
    """What the simulator's command line sets for every simulated device: each twin
    (`SimulatedPeripheral.simulate`) takes the options that apply to it."""

    scenario: str = "normal"
    #: The thermometer's period, in scenario seconds.
    interval: float = 5.0
    fahrenheit: bool = False
    #: Intermediate temperatures (0x2A1E) before each final one.
    intermediate: int = 0
    #: PLX spot-checks this often (scenario seconds); None: continuous only.
    spot_check_interval: float | None = None
    #: Every Nth measurement packet cut short (GATT packet devices).
    malformed_every: int | None = None
    #: Stray bytes before every Nth packet (streaming devices).
    garbage_every: int | None = None
    advertising_interval_ms: float = 50.0


class ScenarioClock:
    """Scenario seconds since start; `speed` scenario seconds pass per real second."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, not {speed}")
        self.speed = speed
        self._start = asyncio.get_running_loop().time()

    def now(self) -> float:
        return (asyncio.get_running_loop().time() - self._start) * self.speed


class SimulatedPeripheral(ABC):
    """Lifecycle shared by the simulated devices; subclasses supply services and bytes.

    `period` is in scenario seconds. With `malformed_every=N` every Nth measurement
    packet is cut to 3 bytes, too short for any of the profiles' measurements.
    `service_uuid`, when given, is advertised with the name.

    A subclass is the simulated twin of a device kind (`drivers/kinds.py` names it):
    `default_address` and `simulate` let the simulator build any twin the same way.
    """

    default_address: ClassVar[str]

    def __init__(
        self,
        link: LocalLink,
        address: str,
        *,
        name: str,
        model: str,
        service_uuid: UUID | None,
        services: list[gatt.Service],
        scenario: str,
        clock: ScenarioClock,
        period: float,
        malformed_every: int | None = None,
        advertising_interval_ms: float = 50.0,
        battery: BatteryMode = "notify",
    ) -> None:
        if period <= 0:
            raise ValueError(f"period must be positive, not {period}")
        if malformed_every is not None and malformed_every < 1:
            raise ValueError(f"malformed_every must be at least 1, not {malformed_every}")
        if not 20.0 <= advertising_interval_ms <= 10240.0:
            raise ValueError("advertising interval must be 20 ms to 10.24 s")
        self.address = address
        self.name = name
        self.scenario = scenario
        self._clock = clock
        self._period = period
        self._malformed_every = malformed_every
        self._advertising_interval_ms = advertising_interval_ms
        self._battery_level = _battery_level_characteristic(battery, self.battery_level)
        self._notified_battery = self.battery_level()
        self._advertising_data = _advertising_data(name, service_uuid)
        if len(self._advertising_data) > 31:
            raise ValueError(f"advertising data of {name!r} exceeds 31 bytes")
        self._controller = VirtualController(name, link=link)
        self.device = Device(
            name=name,
            address=hci.Address(address),
            host=Host(self._controller, AsyncPipeSink(self._controller)),
        )
        if self._battery_level is not None:
            services = [*services, gatt.Service(gatt.GATT_BATTERY_SERVICE, [self._battery_level])]
        self.device.add_services(
            [
                *services,
                DeviceInformationService(
                    manufacturer_name=MANUFACTURER,
                    model_number=model,
                    serial_number=address.replace(":", ""),
                    firmware_revision=FIRMWARE_REVISION,
                ),
            ]
        )
        self._in_range = True
        self._stopping = False
        self._sent = 0
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    def simulate(
        cls, link: LocalLink, address: str, clock: ScenarioClock, options: TwinOptions
    ) -> Self:
        """This twin at `address`: the options every twin takes, and its own."""
        twin: Any = cls  # each twin's constructor takes these keywords, and its own
        return twin(
            link,
            address,
            scenario=options.scenario,
            clock=clock,
            advertising_interval_ms=options.advertising_interval_ms,
            **cls.own_options(options),
        )

    @classmethod
    def own_options(cls, options: TwinOptions) -> dict[str, Any]:
        """The keywords of this twin's constructor that come from `options`."""
        return {}

    @abstractmethod
    async def send_due(self, t: float) -> None:
        """Send what is due at scenario time t; called once per period while in range."""

    def battery_level(self) -> int:
        """Percent; drains one point per scenario minute, down to 5."""
        return max(5, 95 - int(self._clock.now() // 60))

    async def start(self) -> None:
        await self.device.power_on()
        self._task = asyncio.create_task(self._run(), name=f"simulated {self.name}")

    async def stop(self) -> None:
        """Power off: stop sending, drop the link, leave the radio."""
        # The flag ends the loop even when a cancel is lost: Python 3.11's
        # asyncio.wait_for, used throughout bumble, swallows one that races a result.
        self._stopping = True
        tasks = [*self._pending, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._controller.detach()

    @property
    def connection(self) -> Connection | None:
        return next(iter(self.device.connections.values()), None)

    async def _run(self) -> None:
        next_reading = 0.0
        while not self._stopping:
            t = self._clock.now()
            await self._follow_range(in_range(self.scenario, t))
            if t >= next_reading:
                next_reading = max(next_reading + self._period, t)
                if self._in_range:
                    await self.send_due(t)
                    await self._notify_battery()
            await asyncio.sleep(_TICK_SECONDS)

    async def _follow_range(self, reachable: bool) -> None:
        if reachable != self._in_range:
            self._in_range = reachable
            where = "back in range" if reachable else "out of range"
            logger.info("%s %s %s", self.name, self.address, where)
            if not reachable:
                await self.device.stop_advertising()
                if (connection := self.connection) is not None:
                    await connection.disconnect(hci.HCI_CONNECTION_TIMEOUT_ERROR)
        if reachable and self.connection is None and not self.device.is_advertising:
            await self.device.start_advertising(
                advertising_type=AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE,
                advertising_data=self._advertising_data,
                advertising_interval_min=self._advertising_interval_ms,
                advertising_interval_max=self._advertising_interval_ms,
            )

    async def send_packet(self, characteristic: gatt.Characteristic[bytes], packet: bytes) -> None:
        """Indicate or notify (as the characteristic allows) one measurement packet."""
        self._sent += 1
        if self._malformed_every and self._sent % self._malformed_every == 0:
            packet = packet[:3]
        if characteristic.properties & gatt.Characteristic.Properties.INDICATE:
            # An indication waits for the confirmation (or 30 s once the link is gone):
            # never let it hold up the clock.
            self._spawn(self.device.indicate_subscribers(characteristic, packet))
        else:
            await self.device.notify_subscribers(characteristic, packet)

    async def _notify_battery(self) -> None:
        level = self.battery_level()
        if level == self._notified_battery or self._battery_level is None:
            return
        self._notified_battery = level
        if self._battery_level.properties & gatt.Characteristic.Properties.NOTIFY:
            await self.device.notify_subscribers(self._battery_level)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._sent_or_failed)

    def _sent_or_failed(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.debug("%s: indication not confirmed: %s", self.name, error)


class StreamingPeripheral(SimulatedPeripheral):
    """A device that streams packets at a fixed rate (in scenario time) through a UART
    bridge: the bytes go out in notifications of `notification_size` bytes that ignore
    packet boundaries, as such modules forward whatever their UART buffer holds.

    With `garbage_every=N` the `garbage` bytes go out before every Nth packet, as line
    noise would; `garbage_bytes_sent` counts them.
    """

    #: Bytes that decode as no packet and make a decoder resynchronise.
    garbage: bytes

    @classmethod
    def own_options(cls, options: TwinOptions) -> dict[str, Any]:
        return {"garbage_every": options.garbage_every}

    def __init__(
        self,
        link: LocalLink,
        address: str,
        *,
        stream: gatt.Characteristic[bytes],
        packet_rate: float,
        notification_size: int,
        garbage_every: int | None = None,
        **peripheral: Any,
    ) -> None:
        if garbage_every is not None and garbage_every < 1:
            raise ValueError(f"garbage_every must be at least 1, not {garbage_every}")
        super().__init__(link, address, period=1 / packet_rate, **peripheral)
        self._stream = stream
        self._packet_rate = packet_rate
        self._notification_size = notification_size
        self._garbage_every = garbage_every
        self._packets = 0
        self._unsent = bytearray()
        self.garbage_bytes_sent = 0

    @abstractmethod
    def packet(self, index: int, t: float) -> bytes:
        """The bytes of packet number `index` (from 0), due at scenario time t."""

    async def send_due(self, t: float) -> None:
        due = int(t * self._packet_rate) + 1
        # After time out of range, resume with the present rather than a burst of the past.
        self._packets = max(self._packets, due - int(self._packet_rate))
        while self._packets < due:
            if self._garbage_every and (self._packets + 1) % self._garbage_every == 0:
                self._unsent += self.garbage
                self.garbage_bytes_sent += len(self.garbage)
            self._unsent += self.packet(self._packets, self._packets / self._packet_rate)
            self._packets += 1
        size = self._notification_size
        while len(self._unsent) >= size:
            chunk = bytes(self._unsent[:size])
            del self._unsent[:size]
            await self.device.notify_subscribers(self._stream, chunk)


def _advertising_data(name: str, service_uuid: UUID | None) -> bytes:
    structures = [
        (
            AdvertisingData.Type.FLAGS,
            bytes(
                [
                    AdvertisingData.LE_GENERAL_DISCOVERABLE_MODE_FLAG
                    | AdvertisingData.BR_EDR_NOT_SUPPORTED_FLAG
                ]
            ),
        ),
        (AdvertisingData.Type.COMPLETE_LOCAL_NAME, name.encode()),
    ]
    if service_uuid is not None:
        value = service_uuid.to_bytes()
        uuid_list = (
            AdvertisingData.Type.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS
            if len(value) == 2
            else AdvertisingData.Type.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS
        )
        structures.append((uuid_list, value))
    return bytes(AdvertisingData(structures))


def _battery_level_characteristic(
    mode: BatteryMode, level: Callable[[], int]
) -> gatt.Characteristic[bytes] | None:
    if mode is None:
        return None
    properties = gatt.Characteristic.Properties.READ
    if mode == "notify":
        properties |= gatt.Characteristic.Properties.NOTIFY
    return gatt.Characteristic[bytes](
        gatt.GATT_BATTERY_LEVEL_CHARACTERISTIC,
        properties,
        gatt.Characteristic.READABLE,
        gatt.CharacteristicValue(read=lambda _connection: bytes([level()])),
    )


def pushed(uuid: UUID, indicate: bool = False) -> gatt.Characteristic[bytes]:
    """A characteristic the device pushes to subscribers (notify, or indicate: the
    central acknowledges each value) and that cannot be read."""
    properties = gatt.Characteristic.Properties
    return gatt.Characteristic[bytes](
        uuid,
        properties.INDICATE if indicate else properties.NOTIFY,
        gatt.Characteristic.Permissions(0),
    )


def uart_characteristics(
    notify: UUID, write: UUID
) -> tuple[gatt.Characteristic[bytes], gatt.Characteristic[bytes]]:
    """The two characteristics of a serial-port-over-BLE service (transparent UART,
    Nordic UART): device-to-host notifications, and host-to-device writes that these
    simulated devices accept and ignore."""
    stream = pushed(notify)
    commands = gatt.Characteristic[bytes](
        write,
        gatt.Characteristic.Properties.WRITE
        | gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
        gatt.Characteristic.WRITEABLE,
        gatt.CharacteristicValue(write=lambda _connection, _value: None),
    )
    return stream, commands
