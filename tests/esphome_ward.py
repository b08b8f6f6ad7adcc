"""What the ESPHome proxy tests share: the ward the simulated proxy's radio hears (a PLX
oximeter, a thermometer and an encrypted BTHome door sensor on one virtual link), keys,
and waiting on a condition."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bumble.link import LocalLink

from firmware_sim.ble_main import GATT_TWINS
from firmware_sim.ble_radio import HciTcpServer
from firmware_sim.devices.advertiser import AdvertisingDoorSensor
from firmware_sim.devices.bthome_door import DEFAULT_ENCRYPTED_ADDRESS
from firmware_sim.devices.peripheral import ScenarioClock, TwinOptions
from firmware_sim.door_ward import DoorSensors

WAIT_S = 30.0
OXIMETER = GATT_TWINS["plx"].default_address
THERMOMETER = GATT_TWINS["hts"].default_address
DOOR = DEFAULT_ENCRYPTED_ADDRESS


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def mac_number(address: str) -> int:
    return int(address.replace(":", ""), 16)


async def until(condition: Callable[[], object], what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 - several callbacks feed each condition
            await asyncio.sleep(0.02)
    assert condition(), what


@dataclass
class Ward:
    """The radio side: a PLX oximeter, a thermometer and an encrypted BTHome door sensor
    (moved only by the test) on one virtual link, reached over HCI/TCP."""

    hci_spec: str
    door: AdvertisingDoorSensor


@asynccontextmanager
async def ward() -> AsyncIterator[Ward]:
    link = LocalLink()
    server = HciTcpServer(link)
    twins = [
        GATT_TWINS[kind].simulate(link, address, ScenarioClock(), TwinOptions())
        for kind, address in (("plx", OXIMETER), ("hts", THERMOMETER))
    ]
    async with contextlib.AsyncExitStack() as stack:
        for twin in twins:
            await twin.start()
            stack.push_async_callback(twin.stop)
        doors = await stack.enter_async_context(
            DoorSensors(link, ["bthome-encrypted"], advertising_interval_ms=20)
        )
        await server.start()
        stack.push_async_callback(server.stop)
        yield Ward(server.hci_spec, doors.sensors[0])
