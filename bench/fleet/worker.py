"""One worker process of the fleet: `python -m bench.fleet.worker FIRST COUNT DEVICES
BROKER_URL DATA_DIR`. Several run side by side, so the gateways are not held to one
core by one interpreter's lock.

It starts COUNT gateways, each a whole `GatewayService` (bench/fleet/gateways.py),
numbered from FIRST, waits until each is connected, says `READY` on stdout, and waits
for a line on stdin: `go` starts the household feed of every device
(bench/fleet/feed.py), `stop` ends it. Once no gateway has a reading left undelivered
in its store it prints `DRAINED {json}`: per gateway, the highest seq it committed (a
fresh store numbers from 1 with no gap, so its reading ids are `<id>-1` .. `<id>-<seq>`).
The gateways keep running (a township that finds a gap asks for it with `resend`)
until `exit`; then they stop as a service stops and `RESULT {json}` gives the feed's
and the uplinks' figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.fleet.feed import HouseholdFeed, device_ports
from bench.fleet.gateways import gateway_config, start_full
from gateway.service import GatewayService
from gateway.uplink import BrokerState

READY, DRAINED, RESULT = "READY", "DRAINED ", "RESULT "
#: How long every gateway may take to deliver what it committed, after the feed.
DRAIN_S = 300.0


async def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def _line() -> str:
    return (await asyncio.to_thread(sys.stdin.readline)).strip()


async def _all_delivered(services: list[GatewayService]) -> bool:
    for service in services:
        if service.pipeline.queued:
            return False
        store = service.store
        left = await store.call(store.store.undelivered, 0, 1, None)
        if left:
            return False
    return True


async def run(
    first: int, count: int, devices: int, broker_url: str, data_dir: Path
) -> dict[str, Any]:
    services = [
        await start_full(gateway_config(i, devices, broker_url, data_dir / f"g{i}", web=True))
        for i in range(first, first + count)
    ]
    await _wait(
        lambda: all(s.uplink.health.state is BrokerState.CONNECTED for s in services),
        120,
        "every gateway connected",
    )
    print(READY, flush=True)
    if await _line() != "go":
        raise RuntimeError("expected go")
    feed = HouseholdFeed(
        [
            (service.pipeline.on_measurements, port)
            for i, service in enumerate(services, start=first)
            for port in device_ports(i, devices)
        ]
    )
    task = asyncio.create_task(feed.run())
    fed_from = time.monotonic()
    await _line()  # stop
    feed_s = time.monotonic() - fed_from
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + DRAIN_S
    while not await _all_delivered(services):
        if time.monotonic() > deadline:
            raise TimeoutError("the gateways did not deliver everything they committed")
        await asyncio.sleep(0.2)
    last_seqs = {}
    for service in services:
        last_seqs[service.config.gateway.id] = await service.store.call(
            service.store.store.last_seq
        )
    print(DRAINED + json.dumps(last_seqs), flush=True)
    await _line()  # exit
    delivered = sum(s.uplink.health.delivered_readings for s in services)
    refused = sum(s.pipeline.counters.get("readings_refused", 0) for s in services)
    connects = sum(s.uplink.health.connects for s in services)
    for service in services:
        await service.stop()
    return {
        "handed_in_per_s": feed.handed_in / feed_s,
        "refused": refused,
        "delivered": delivered,
        "connects": connects,
        "lag_max_s": feed.lag_max_s,
        "late_1s": feed.late_1s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet.worker")
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("devices", type=int)
    parser.add_argument("broker_url")
    parser.add_argument("data_dir", type=Path)
    args = parser.parse_args()
    # The broker's restart makes every gateway warn; errors are what matter here.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    result = asyncio.run(run(args.first, args.count, args.devices, args.broker_url, args.data_dir))
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
