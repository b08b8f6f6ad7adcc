"""Household rates for many gateways from one task: every device of every gateway hands
in one second's readings (SpO2, pulse rate, perfusion index) once a second, as a CMS50
reduced to 1 Hz does, through its gateway's `Pipeline.on_measurements`, as a device
session does. The devices are spread evenly over each second (device k of n at k/n s),
on a schedule kept from the start; how far feeding fell behind it says whether the
process kept up in real time."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.common import METRICS_PER_DEVICE
from bench.gateway_runs import one_second_of_readings
from drivers.measurement import Measurement

#: A device's pipeline entry point and its address (a CMS50's serial port).
Device = tuple[Callable[[str, Sequence[Measurement]], None], str]

_PORT = "/dev/serial/by-id/usb-fleet-absent-{}"  # never opened successfully


def device_ports(gateway: int, devices: int) -> list[str]:
    """The serial ports (absent) of one gateway's CMS50s."""
    return [_PORT.format(f"g{gateway}-d{d}") for d in range(devices)]


@dataclass
class HouseholdFeed:
    devices: Sequence[Device]
    handed_in: int = 0
    #: How far behind its schedule feeding fell at worst, and how often by over 1 s.
    lag_max_s: float = 0.0
    late_1s: int = 0

    async def run(self) -> None:
        pool = one_second_of_readings()
        n = len(self.devices)
        start = time.perf_counter()
        for tick in itertools.count():
            second, k = divmod(tick, n)
            due = start + second + k / n
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                lag = now - due
                self.lag_max_s = max(self.lag_max_s, lag)
                self.late_1s += lag > 1.0
            on_measurements, address = self.devices[k]
            on_measurements(address, pool[(second + k) % len(pool)][:METRICS_PER_DEVICE])
            self.handed_in += METRICS_PER_DEVICE
