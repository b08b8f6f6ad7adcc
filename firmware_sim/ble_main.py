"""`python -m firmware_sim ble`: a thermometer and an oximeter (and on request the twin
of any other connected device kind, and door sensors) on a virtual radio that a gateway
reaches over HCI/TCP, or the same in-process through `SimulatedWard`:

    async with SimulatedWard(scenario="fever") as ward:
        async with open_ble_adapter(f"bumble:{ward.hci_spec}") as adapter: ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import cast

from bumble import hci
from bumble.link import LocalLink

from drivers.kinds import KINDS, Transport, kinds_of
from firmware_sim.ble_radio import HciTcpServer
from firmware_sim.devices.peripheral import ScenarioClock, SimulatedPeripheral, TwinOptions
from firmware_sim.door_ward import DOOR_KINDS, DoorSensors
from firmware_sim.scenarios import SCENARIOS, check_scenario
from firmware_sim.twins import twin_class

#: The twin of every connected (GATT) device kind, by kind.
GATT_TWINS: dict[str, type[SimulatedPeripheral]] = {
    kind: cast(type[SimulatedPeripheral], twin_class(KINDS[kind], SimulatedPeripheral))
    for kind in kinds_of(Transport.GATT)
}
#: The kinds a ward has unless told otherwise: a thermometer and a PLX oximeter.
DEFAULT_KINDS = ("hts", "plx")

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
    """Simulated devices on one virtual link, behind an HCI/TCP server: the connected
    devices in `devices` (kind -> address, None for the twin's default address; by
    default a thermometer and a PLX oximeter) and door sensors of the kinds given (each
    at its default address and key).

    `speed` runs the scenario faster than real time (readings and range changes alike);
    `interval` is the thermometer's period in scenario seconds, the oximeters send every
    scenario second. `intermediate` in-progress values precede each final temperature;
    `spot_check_interval` adds PLX spot-checks; `malformed_every` cuts every Nth packet
    of the thermometer and PLX oximeter short; `garbage_every` puts stray bytes before
    every Nth packet of the streaming oximeters.
    """

    def __init__(
        self,
        *,
        scenario: str = "normal",
        host: str = "127.0.0.1",
        port: int = 0,
        devices: Mapping[str, str | None] | None = None,
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
        self.options = TwinOptions(
            scenario=check_scenario(scenario),
            interval=interval,
            fahrenheit=fahrenheit,
            intermediate=intermediate,
            spot_check_interval=spot_check_interval,
            malformed_every=malformed_every,
            garbage_every=garbage_every,
            advertising_interval_ms=advertising_interval_ms,
        )
        wanted = dict.fromkeys(DEFAULT_KINDS) if devices is None else dict(devices)
        unknown = [kind for kind in wanted if kind not in GATT_TWINS]
        if unknown:
            raise ValueError(f"no simulated {unknown[0]!r}; choose from {', '.join(GATT_TWINS)}")
        #: Kind -> the address its twin is at.
        self.addresses = {
            kind: _static_address(address or GATT_TWINS[kind].default_address)
            for kind, address in wanted.items()
        }
        if len(set(self.addresses.values())) != len(self.addresses):
            raise ValueError(f"each simulated device needs its own address, not {self.addresses}")
        unknown = [kind for kind in doors if kind not in DOOR_KINDS]
        if unknown:
            raise ValueError(f"unknown door sensor {unknown[0]!r}; choose from {DOOR_KINDS}")
        self._door_kinds = list(doors)
        self._host = host
        self._port = port
        self._speed = speed
        self._server: HciTcpServer | None = None
        self._doors: DoorSensors | None = None
        self.devices: list[SimulatedPeripheral] = []

    @property
    def scenario(self) -> str:
        return self.options.scenario

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
        parts = [f"hci={self.hci_spec}"]
        parts += [f"{kind}={address}" for kind, address in self.addresses.items()]
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
            advertising_interval_ms=self.options.advertising_interval_ms,
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
        return [
            GATT_TWINS[kind].simulate(link, address, clock, self.options)
            for kind, address in self.addresses.items()
        ]

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
    for kind, twin in GATT_TWINS.items():
        default = twin.default_address
        parser.add_argument(
            f"--{kind}",
            nargs="?",
            const=default,
            metavar="ADDR",
            help=f"a simulated {KINDS[kind].description} (default address {default})"
            + (", in every ward unless --only is given" if kind in DEFAULT_KINDS else ""),
        )
    parser.add_argument(
        "--only",
        action="store_true",
        help=f"only the devices asked for, not the default {' and '.join(DEFAULT_KINDS)}",
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
        asked = {kind: getattr(args, kind) for kind in GATT_TWINS if getattr(args, kind)}
        defaults = {} if args.only else dict.fromkeys(DEFAULT_KINDS)
        ward = SimulatedWard(
            scenario=args.scenario,
            host=host,
            port=port,
            devices={**defaults, **asked},
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
