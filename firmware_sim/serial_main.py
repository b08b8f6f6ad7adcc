"""`python -m firmware_sim cms50 ...`: play a Contec CMS50 on a pseudo-terminal.

The first line on stdout is the port to configure (the --link path if given, else the
PTY); events (plugged, unplugged, stalled) follow on stderr. Runs until interrupted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from firmware_sim.scenarios import SCENARIOS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m firmware_sim cms50",
        description="Simulate a Contec CMS50 oximeter on a pseudo-terminal.",
    )
    p.add_argument("--generation", choices=[g.value for g in Generation], default="v46")
    p.add_argument("--scenario", choices=SCENARIOS, default="normal")
    p.add_argument("--link", metavar="PATH", help="keep a symlink here, like /dev/serial/by-id/...")
    p.add_argument("--rate", type=float, default=60.0, help="packets per second")
    p.add_argument(
        "--garbage-every", type=int, default=0, metavar="N", help="inject garbage every N packets"
    )
    p.add_argument(
        "--noise-only", action="store_true", help="send noise instead of every packet, always"
    )
    p.add_argument("--stall-at", type=float, metavar="S", help="stop sending at S seconds")
    p.add_argument("--stall-for", type=float, default=10.0, metavar="S", help="default 10")
    p.add_argument("--hangup-at", type=float, metavar="S", help="unplug at S seconds")
    p.add_argument(
        "--return-after", type=float, metavar="S", help="plug back in S seconds after the hang-up"
    )
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sim = Cms50Simulator(
        Generation(args.generation),
        args.scenario,
        link=args.link,
        rate_hz=args.rate,
        garbage_every=args.garbage_every,
        noise_only=args.noise_only,
        stall_at=args.stall_at,
        stall_for=args.stall_for,
        hangup_at=args.hangup_at,
        return_after=args.return_after,
    )
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(sim.start(), flush=True)
    try:
        done.wait()
    finally:
        sim.stop()
    return 0
