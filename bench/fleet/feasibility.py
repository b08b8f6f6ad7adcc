"""How many gateways one process holds in real time: `python -m bench.fleet.feasibility
--gateways N [--lean] [--seconds S] [--strace]`.

N gateways of 6 CMS50s each (serial ports that do not exist; the full service also runs
its status page on a free port) in this process, against one mosquitto, every device
fed at a household's rate (bench/fleet/feed.py). After a warm-up, over a window of S
seconds: the process's CPU share of one core, its RSS and threads, all divided by N,
and how far feeding fell behind its schedule (a process that cannot keep up falls
behind without bound). `--strace` attaches `strace -f -c` to this process for the
window to count fsync and fdatasync calls (strace slows the process: its CPU figure
is not the one to quote from that run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import HOUSEHOLD_DEVICES, start_broker
from bench.fleet.feed import HouseholdFeed, device_ports
from bench.fleet.gateways import LeanGateway, gateway_config, start_full
from bench.fleet.procstat import cpu_s, status_field
from gateway.uplink import BrokerState

WARMUP_S = 5.0


async def measure(gateways: int, lean: bool, seconds: float, strace: bool, workdir: Path) -> str:
    broker = await asyncio.to_thread(start_broker, workdir / "broker")
    pid = os.getpid()
    rss0, threads0 = status_field(pid, "VmRSS"), status_field(pid, "Threads")
    try:
        started = time.perf_counter()
        running: list[LeanGateway] = []
        services = []
        for i in range(gateways):
            config = gateway_config(i, HOUSEHOLD_DEVICES, broker.url, workdir / f"g{i}", not lean)
            if lean:
                gw = LeanGateway(config)
                await gw.start()
                running.append(gw)
                services.append(gw.service)
            else:
                services.append(await start_full(config))
        start_s = time.perf_counter() - started
        deadline = time.monotonic() + 60
        while not all(s.uplink.health.state is BrokerState.CONNECTED for s in services):
            if time.monotonic() > deadline:
                waiting = [
                    f"{s.config.gateway.id}: {s.uplink.health.last_error or s.uplink.health.state}"
                    for s in services
                    if s.uplink.health.state is not BrokerState.CONNECTED
                ]
                raise TimeoutError(f"not connected within 60 s: {waiting[:5]}")
            await asyncio.sleep(0.1)
        feed = HouseholdFeed(
            [
                (s.pipeline.on_measurements, port)
                for i, s in enumerate(services)
                for port in device_ports(i, HOUSEHOLD_DEVICES)
            ]
        )
        task = asyncio.create_task(feed.run())
        await asyncio.sleep(WARMUP_S)
        tracer = _strace(pid) if strace else None
        cpu0, t0, handed0 = cpu_s(pid), time.perf_counter(), feed.handed_in
        lag0 = feed.lag_max_s
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - t0
        cpu = cpu_s(pid) - cpu0
        handed = feed.handed_in - handed0
        fsyncs = _strace_fsyncs(tracer) if tracer is not None else None
        rss, threads = status_field(pid, "VmRSS"), status_field(pid, "Threads")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        delivered = sum(s.uplink.health.delivered_readings for s in services)
        for gw in running:
            await gw.stop()
        if not lean:
            for service in services:
                await service.stop()
    finally:
        broker.close()
    kind = "lean (store + pipeline + uplink)" if lean else "full GatewayService"
    lines = [
        f"{gateways} x {kind}, 6 devices each, {wall:.0f} s window after {WARMUP_S:.0f} s warm-up",
        f"  start-up of all gateways: {start_s:.1f} s",
        f"  readings handed in: {handed / wall:,.0f}/s (offered {gateways * 18:,}/s);"
        f" delivered in all: {delivered:,}",
        f"  CPU: {cpu / wall * 100:.1f} % of one core = {cpu / wall * 100 / gateways:.2f} %"
        " per gateway",
        f"  RSS: {rss / 1024:.0f} MB, {(rss - rss0) / 1024 / gateways:.1f} MB per gateway"
        f" (before: {rss0 / 1024:.0f} MB)",
        f"  threads: {threads}, {(threads - threads0) / gateways:.1f} per gateway",
        f"  feeding's worst lag: {feed.lag_max_s:.3f} s (at warm-up's end {lag0:.3f} s),"
        f" late by over 1 s {feed.late_1s} times",
    ]
    if fsyncs is not None:
        lines.append(
            f"  fsync + fdatasync: {fsyncs / wall:,.0f}/s = {fsyncs / wall / gateways:.1f}/s"
            " per gateway (under strace)"
        )
    return "\n".join(lines)


def _strace(pid: int) -> subprocess.Popen[str]:
    threads = [f"-p{tid}" for tid in os.listdir(f"/proc/{pid}/task")]  # each thread
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", *threads],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # attached to every thread
    return tracer


def _strace_fsyncs(tracer: subprocess.Popen[str]) -> int:
    tracer.send_signal(signal.SIGINT)
    _, summary = tracer.communicate(timeout=30)
    calls = 0
    for line in summary.splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync"):
            calls += int(parts[3])
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet.feasibility")
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--lean", action="store_true", help="store + pipeline + uplink only")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--strace", action="store_true", help="count fsyncs (slows it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-feasibility-") as tmp:
        print(asyncio.run(measure(args.gateways, args.lean, args.seconds, args.strace, Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
