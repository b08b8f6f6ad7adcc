"""`python -m firmware_sim ble`: a thermometer and an oximeter on a virtual radio that a
gateway reaches over HCI/TCP, or the same in-process through `SimulatedWard`:

    async with SimulatedWard(scenario="fever") as ward:
        async with open_ble_adapter(f"bumble:{ward.hci_spec}") as adapter: ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from bumble import hci
from bumble.link import LocalLink

from firmware_sim.ble_radio import HciTcpServer
from firmware_sim.devices import health_thermometer, plx_oximeter
from firmware_sim.devices.health_thermometer import HealthThermometer
from firmware_sim.devices.peripheral import ScenarioClock
from firmware_sim.devices.plx_oximeter import PlxOximeter
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
    """A thermometer and an oximeter on one virtual link, behind an HCI/TCP server.

    `speed` runs the scenario faster than real time (readings and range changes alike);
    `interval` is the thermometer's period in scenario seconds, the oximeter sends every
    scenario second.
    """

    def __init__(
        self,
        *,
        scenario: str = "normal",
        host: str = "127.0.0.1",
        port: int = 0,
        thermometer: str = health_thermometer.DEFAULT_ADDRESS,
        oximeter: str = plx_oximeter.DEFAULT_ADDRESS,
        interval: float = 5.0,
        speed: float = 1.0,
        fahrenheit: bool = False,
        malformed_every: int | None = None,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        self.scenario = check_scenario(scenario)
        self.thermometer_address = _static_address(thermometer)
        self.oximeter_address = _static_address(oximeter)
        if self.thermometer_address == self.oximeter_address:
            raise ValueError("the thermometer and the oximeter need different addresses")
        self._host = host
        self._port = port
        self._interval = interval
        self._speed = speed
        self._fahrenheit = fahrenheit
        self._malformed_every = malformed_every
        self._advertising_interval_ms = advertising_interval_ms
        self._server: HciTcpServer | None = None
        self._devices: list[HealthThermometer | PlxOximeter] = []

    @property
    def hci_spec(self) -> str:
        """bumble transport spec for the gateway: `tcp-client:HOST:PORT`."""
        if self._server is None:
            raise RuntimeError("simulated ward not started")
        return self._server.hci_spec

    async def start(self) -> None:
        link = LocalLink()
        clock = ScenarioClock(self._speed)
        self._devices = [
            HealthThermometer(
                link,
                self.thermometer_address,
                scenario=self.scenario,
                clock=clock,
                interval=self._interval,
                fahrenheit=self._fahrenheit,
                malformed_every=self._malformed_every,
                advertising_interval_ms=self._advertising_interval_ms,
            ),
            PlxOximeter(
                link,
                self.oximeter_address,
                scenario=self.scenario,
                clock=clock,
                malformed_every=self._malformed_every,
                advertising_interval_ms=self._advertising_interval_ms,
            ),
        ]
        self._server = HciTcpServer(link, self._host, self._port)
        try:
            for device in self._devices:
                await device.start()
            await self._server.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for device in self._devices:
            await device.stop()
        self._devices = []
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
        description="Simulated Bluetooth thermometer and pulse oximeter on a virtual radio.",
    )
    parser.add_argument("--hci", default=DEFAULT_HCI, help=f"(default {DEFAULT_HCI})")
    parser.add_argument("--scenario", choices=SCENARIOS, default="normal")
    parser.add_argument("--thermometer", default=health_thermometer.DEFAULT_ADDRESS)
    parser.add_argument("--oximeter", default=plx_oximeter.DEFAULT_ADDRESS)
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between thermometer readings"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="scenario seconds per real second")
    parser.add_argument("--fahrenheit", action="store_true")
    parser.add_argument(
        "--malformed-every",
        type=int,
        metavar="N",
        help="cut every Nth measurement packet short, to test the gateway's error path",
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
        print(
            f"hci={ward.hci_spec} thermometer={ward.thermometer_address}"
            f" oximeter={ward.oximeter_address} scenario={ward.scenario}",
            flush=True,
        )
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
            interval=args.interval,
            speed=args.speed,
            fahrenheit=args.fahrenheit,
            malformed_every=args.malformed_every,
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
