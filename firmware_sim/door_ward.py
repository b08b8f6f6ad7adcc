"""Advertisement-only door sensors on a virtual link that something else hosts (a test,
or `SimulatedWard` behind its HCI/TCP server):

    async with DoorSensors(link, ["bthome", "mibeacon"], scenario="opens_and_closes"):
        ...

With `scenario=None` nothing moves the doors: the caller opens and closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import cast

from bumble import hci
from bumble.link import LocalLink

from drivers.kinds import KINDS, Transport, kinds_of
from firmware_sim.devices.advertiser import AdvertisingDoorSensor
from firmware_sim.devices.peripheral import ScenarioClock
from firmware_sim.door_scenarios import check_door_scenario, door_open_at
from firmware_sim.twins import twin_class

#: Door sensor name (`--door NAME`) -> its twin class, default address and key: the
#: variants of every advertisement-only kind's twin.
_DEFAULTS: dict[str, tuple[type[AdvertisingDoorSensor], str, bytes | None]] = {
    name: (twin, address, key)
    for twin in (
        cast(type[AdvertisingDoorSensor], twin_class(KINDS[kind], AdvertisingDoorSensor))
        for kind in kinds_of(Transport.ADVERT)
    )
    for name, (address, key) in twin.variants.items()
}
DOOR_KINDS = tuple(_DEFAULTS)
#: Real time between two looks at the door scenario.
_TICK_SECONDS = 0.02


class DoorSensors:
    """Door sensors of the given kinds (each at its default address, with its default
    key) plus any added with `add()`, all following one door scenario when given one."""

    def __init__(
        self,
        link: LocalLink,
        kinds: Iterable[str] = (),
        *,
        scenario: str | None = None,
        clock: ScenarioClock | None = None,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        self._link = link
        self._kinds = list(kinds)
        for kind in self._kinds:
            _defaults(kind)  # an unknown kind fails here, not half-way through start()
        self.scenario = None if scenario is None else check_door_scenario(scenario)
        self._clock = clock
        self._interval_ms = advertising_interval_ms
        self.sensors: list[AdvertisingDoorSensor] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            for kind in self._kinds:
                await self.add(kind)
        except BaseException:
            await self.stop()
            raise
        if self.scenario is not None:
            clock = self._clock or ScenarioClock()
            self._task = asyncio.create_task(self._follow(self.scenario, clock), name="doors")

    async def add(
        self, kind: str, address: str | None = None, key: bytes | None = None
    ) -> AdvertisingDoorSensor:
        """Power on one more sensor; `key` replaces the kind's default key (a plain
        `bthome` sensor has none)."""
        twin, default_address, default_key = _defaults(kind)
        address = hci.Address(address or default_address).to_string(with_type_qualifier=False)
        if any(s.address == address for s in self.sensors):
            raise ValueError(f"two door sensors at {address}")
        sensor = twin.simulate(self._link, address, key or default_key, self._interval_ms)
        try:
            await sensor.start()
        except BaseException:
            await sensor.stop()
            raise
        self.sensors.append(sensor)
        return sensor

    def describe(self) -> str:
        """One line for the simulator's banner: what to configure in the gateway."""
        return " ".join(
            f"door={s.protocol}:{s.address}" + (f":key={s.key.hex()}" if s.key else "")
            for s in self.sensors
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sensor in self.sensors:
            await sensor.stop()
        self.sensors = []

    async def __aenter__(self) -> DoorSensors:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _follow(self, scenario: str, clock: ScenarioClock) -> None:
        while True:
            should_be_open = door_open_at(scenario, clock.now())
            for sensor in self.sensors:
                if sensor.is_open != should_be_open:
                    await (sensor.open() if should_be_open else sensor.close())
            await asyncio.sleep(_TICK_SECONDS)


def _defaults(kind: str) -> tuple[type[AdvertisingDoorSensor], str, bytes | None]:
    if kind not in _DEFAULTS:
        raise ValueError(f"unknown door sensor {kind!r}; choose one of {', '.join(DOOR_KINDS)}")
    return _DEFAULTS[kind]
