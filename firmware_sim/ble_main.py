"""`python -m firmware_sim ble`: a thermometer and an oximeter (and on request BerryMed
and PC-60FW oximeters and door sensors) on a virtual radio that a gateway reaches over
HCI/TCP, or the same in-process through `SimulatedWard`:

    async with SimulatedWard(scenario="fever") as ward:
        async with open_ble_adapter(f"bumble:{ward.hci_spec}") as adapter: ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bumble import hci
from bumble.link import LocalLink

from firmware_sim.ble_radio import HciTcpServer
from firmware_sim.devices import (
    berrymed_oximeter,
    health_thermometer,
    pc60fw_oximeter,
    plx_oximeter,
)
from firmware_sim.devices.berrymed_oximeter import BerryMedOximeter
from firmware_sim.devices.health_thermometer import HealthThermometer
from firmware_sim.devices.pc60fw_oximeter import Pc60fwOximeter
from firmware_sim.devices.peripheral import ScenarioClock, SimulatedPeripheral
from firmware_sim.devices.plx_oximeter import PlxOximeter
from firmware_sim.door_ward import DOOR_KINDS, DoorSensors
from firmware_sim.scenarios import SCENARIOS, check_scenario

DEFAULT_HCI = "tcp-server:127.0.0.1:9001"


def _static_address(address: str) -> str:
    try:
        parsed = hci.Address(address)
    except ValueError as error:
        raise ValueError(f"{address!r} is not a Bluetooth address") from error
    if not parsed.is_static:
        raise ValueError(f"{address} is not a random static address (must start with C0-FF)")
    return parsed.to_string(with_type_qualifier=False)


class SimulatedWard:
    """Simulated devices on one virtual link, behind an HCI/TCP server: a thermometer and
    a PLX oximeter always; a BerryMed and a PC-60FW oximeter at the addresses given;
    door sensors of the kinds given (each at its default address and key).

    `speed` runs the scenario faster than real time (readings and range changes alike);
    `interval` is the thermometer's period in scenario seconds, the oximeter sends every
    scenario second. `intermediate` in-progress values precede each final temperature;
    `spot_check_interval` adds PLX spot-checks; `garbage_every` puts stray bytes before
    every Nth packet of the streaming oximeters.
    """

    def __init__(
        self,
        *,
        scenario: str = "normal",
        host: str = "127.0.0.1",
        port: int = 0,
        thermometer: str = health_thermometer.DEFAULT_ADDRESS,
        oximeter: str = plx_oximeter.DEFAULT_ADDRESS,
        berrymed: str | None = None,
        pc60fw: str | None = None,
        doors: Sequence[str] = (),
        interval: float = 5.0,
        speed: float = 1.0,
        fahrenheit: bool = False,
        intermediate: int = 0,
        spot_check_interval: float | None = None,
        malformed_every: int | None = None,
        garbage_every: int | None = None,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        self.scenario = check_scenario(scenario)
        self.thermometer_address = _static_address(thermometer)
        self.oximeter_address = _static_address(oximeter)
        self.berrymed_address = None if berrymed is None else _static_address(berrymed)
        self.pc60fw_address = None if pc60fw is None else _static_address(pc60fw)
        addresses = [
            a
            for a in (
                self.thermometer_address,
                self.oximeter_address,
                self.berrymed_address,
                self.pc60fw_address,
            )
            if a is not None
        ]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"each simulated device needs its own address, not {addresses}")
        unknown = [kind for kind in doors if kind not in DOOR_KINDS]
        if unknown:
            raise ValueError(f"unknown door sensor {unknown[0]!r}; choose from {DOOR_KINDS}")
        self._door_kinds = list(doors)
        self._host = host
        self._port = port
        self._interval = interval
        self._speed = speed
        self._fahrenheit = fahrenheit
        self._intermediate = intermediate
        self._spot_check_interval = spot_check_interval
        self._malformed_every = malformed_every
        self._garbage_every = garbage_every
        self._advertising_interval_ms = advertising_interval_ms
        self._server: HciTcpServer | None = None
        self._doors: DoorSensors | None = None
        self.devices: list[SimulatedPeripheral] = []

    @property
    def hci_spec(self) -> str:
        """bumble transport spec for the gateway: `tcp-client:HOST:PORT`."""
        if self._server is None:
            raise RuntimeError("simulated ward not started")
        return self._server.hci_spec

    @property
    def doors(self) -> DoorSensors:
        if self._doors is None:
            raise RuntimeError("simulated ward not started")
        return self._doors

    def device(self, address: str) -> SimulatedPeripheral:
        """The running device at `address`."""
        return next(d for d in self.devices if d.address == _static_address(address))

    def describe(self) -> str:
        """One line for the banner: the HCI spec, each device's address, the scenario."""
        named = {
            "thermometer": self.thermometer_address,
            "oximeter": self.oximeter_address,
            "berrymed": self.berrymed_address,
            "pc60fw": self.pc60fw_address,
        }
        parts = [f"hci={self.hci_spec}"]
        parts += [f"{name}={address}" for name, address in named.items() if address]
        parts += [f"scenario={self.scenario}", self.doors.describe()]
        return " ".join(part for part in parts if part)

    async def start(self) -> None:
        link = LocalLink()
        clock = ScenarioClock(self._speed)
        self.devices = self._create_devices(link, clock)
        self._doors = DoorSensors(
            link,
            self._door_kinds,
            scenario="opens_and_closes",
            clock=clock,
            advertising_interval_ms=self._advertising_interval_ms,
        )
        self._server = HciTcpServer(link, self._host, self._port)
        try:
            for device in self.devices:
                await device.start()
            await self._doors.start()
            await self._server.start()
        except BaseException:
            await self.stop()
            raise

    def _create_devices(self, link: LocalLink, clock: ScenarioClock) -> list[SimulatedPeripheral]:
        common: dict[str, Any] = {
            "scenario": self.scenario,
            "clock": clock,
            "advertising_interval_ms": self._advertising_interval_ms,
        }
        devices: list[SimulatedPeripheral] = [
            HealthThermometer(
                link,
                self.thermometer_address,
                interval=self._interval,
                fahrenheit=self._fahrenheit,
                intermediate=self._intermediate,
                malformed_every=self._malformed_every,
                **common,
            ),
            PlxOximeter(
                link,
                self.oximeter_address,
                spot_check_interval=self._spot_check_interval,
                malformed_every=self._malformed_every,
                **common,
            ),
        ]
        if self.berrymed_address is not None:
            devices.append(
                BerryMedOximeter(
                    link, self.berrymed_address, garbage_every=self._garbage_every, **common
                )
            )
        if self.pc60fw_address is not None:
            devices.append(
                Pc60fwOximeter(
                    link, self.pc60fw_address, garbage_every=self._garbage_every, **common
                )
            )
        return devices

    async def stop(self) -> None:
        if self._doors is not None:
            await self._doors.stop()
        for device in self.devices:
            await device.stop()
        self.devices = []
        if self._server is not None:
            await self._server.stop()

    async def __aenter__(self) -> SimulatedWard:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _parse_hci(spec: str) -> tuple[str, int]:
    kind, _, rest = spec.partition(":")
    host, _, port = rest.rpartition(":")
    if kind != "tcp-server" or not host or not port.isdigit():
        raise ValueError(f"--hci must be tcp-server:HOST:PORT, not {spec!r}")
    return host, int(port)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_sim ble",
        description="Simulated Bluetooth thermometer, pulse oximeters and door sensors"
        " on a virtual radio.",
    )
    parser.add_argument("--hci", default=DEFAULT_HCI, help=f"(default {DEFAULT_HCI})")
    parser.add_argument("--scenario", choices=SCENARIOS, default="normal")
    parser.add_argument("--thermometer", default=health_thermometer.DEFAULT_ADDRESS)
    parser.add_argument("--oximeter", default=plx_oximeter.DEFAULT_ADDRESS)
    parser.add_argument(
        "--berrymed",
        nargs="?",
        const=berrymed_oximeter.DEFAULT_ADDRESS,
        metavar="ADDR",
        help=f"add a BerryMed BCI oximeter (default {berrymed_oximeter.DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--pc60fw",
        nargs="?",
        const=pc60fw_oximeter.DEFAULT_ADDRESS,
        metavar="ADDR",
        help=f"add a PC-60FW oximeter (default {pc60fw_oximeter.DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--door",
        action="append",
        choices=DOOR_KINDS,
        default=[],
        help="add a door sensor that opens and closes (repeat for more)",
    )
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between thermometer readings"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="scenario seconds per real second")
    parser.add_argument("--fahrenheit", action="store_true")
    parser.add_argument(
        "--intermediate",
        type=int,
        default=0,
        metavar="N",
        help="intermediate temperatures (0x2A1E) before each final one",
    )
    parser.add_argument(
        "--spot-check",
        type=float,
        metavar="SECONDS",
        help="the oximeter also sends a spot-check (0x2A5E) this often",
    )
    parser.add_argument(
        "--malformed-every",
        type=int,
        metavar="N",
        help="cut every Nth measurement packet short, to test the gateway's error path",
    )
    parser.add_argument(
        "--garbage-every",
        type=int,
        metavar="N",
        help="stray bytes before every Nth packet of the BerryMed and PC-60FW streams",
    )
    parser.add_argument(
        "--advertising-interval", type=float, default=50.0, metavar="MS", help="(20-100 ms)"
    )
    return parser.parse_args(argv)


async def _serve(ward: SimulatedWard) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ward:
        print(ward.describe(), flush=True)
        await stop.wait()


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    try:
        host, port = _parse_hci(args.hci)
        ward = SimulatedWard(
            scenario=args.scenario,
            host=host,
            port=port,
            thermometer=args.thermometer,
            oximeter=args.oximeter,
            berrymed=args.berrymed,
            pc60fw=args.pc60fw,
            doors=args.door,
            interval=args.interval,
            speed=args.speed,
            fahrenheit=args.fahrenheit,
            intermediate=args.intermediate,
            spot_check_interval=args.spot_check,
            malformed_every=args.malformed_every,
            garbage_every=args.garbage_every,
            advertising_interval_ms=args.advertising_interval,
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(ward))
    except ValueError as error:  # a bad option, found by the ward or a device
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot serve HCI on {args.hci}: {error}", file=sys.stderr)
        return 1
    return 0
