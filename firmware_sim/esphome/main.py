"""`python -m firmware_sim esphome-proxy`: a simulated ESPHome Bluetooth proxy that
listens on the virtual link of `python -m firmware_sim ble` and serves ESPHome's native
API with noise encryption:

    python -m firmware_sim ble --hci tcp-server:127.0.0.1:9001 --door bthome
    python -m firmware_sim esphome-proxy --port 6053 --noise-key KEY --hci tcp-client:127.0.0.1:9001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from firmware_sim.esphome.proxy import DEFAULT_PORT, DEFAULT_SLOTS, SimulatedProxy

DEFAULT_HCI = "tcp-client:127.0.0.1:9001"


def _strength(text: str) -> tuple[str, int]:
    address, _, rssi = text.rpartition("=")
    try:
        return address, int(rssi)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDR=RSSI") from error


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_sim esphome-proxy",
        description="A simulated ESPHome Bluetooth proxy on the simulator's virtual radio.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="(default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"(default {DEFAULT_PORT})")
    parser.add_argument(
        "--noise-key", required=True, metavar="KEY", help="the API encryption key (base64)"
    )
    parser.add_argument(
        "--hci", default=DEFAULT_HCI, help=f"its radio: the simulator's HCI (default {DEFAULT_HCI})"
    )
    parser.add_argument("--name", default="ward-proxy")
    parser.add_argument("--mac", default="A4:CF:12:00:00:01")
    parser.add_argument(
        "--rssi", type=int, default=-60, help="the strength it hears every device at (dBm)"
    )
    parser.add_argument(
        "--rssi-for",
        type=_strength,
        action="append",
        default=[],
        metavar="ADDR=RSSI",
        help="the strength it hears one device at (repeat for more)",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=DEFAULT_SLOTS,
        help=f"connection slots (default {DEFAULT_SLOTS})",
    )
    return parser.parse_args(argv)


async def _serve(proxy: SimulatedProxy) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with proxy:
        print(proxy.describe(), flush=True)
        await stop.wait()


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    try:
        proxy = SimulatedProxy(
            noise_key=args.noise_key,
            hci_spec=args.hci,
            name=args.name,
            mac=args.mac,
            host=args.host,
            port=args.port,
            rssi=args.rssi,
            rssi_for=dict(args.rssi_for),
            slots=args.slots,
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(proxy))
    except ValueError as error:  # a bad option
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"error: cannot serve on {args.host}:{args.port} or reach {args.hci}: {error}",
            file=sys.stderr,
        )
        return 1
    return 0
