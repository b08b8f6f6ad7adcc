"""`python -m bench.fleet --gateways N --devices M --consumers K --seconds S`: the fleet
bench (issue 13). One mosquitto on loopback (gateway.broker.Mosquitto, persistence on),
K township consumers (bench/fleet/consumers.py) in one shared-subscription group
storing into one SQLite file, and N simulated gateways of M devices at a household's
rate in worker processes of `--per-worker` gateways each (bench/fleet/worker.py; what a
simulated gateway is, and why, is in bench/fleet/gateways.py).

The run: every gateway connected and every consumer subscribed, S seconds of feeding;
at 30 % of it the broker is restarted (a clean stop, so it saves its persistent
sessions, and a start on the same port), at 60 % one consumer is SIGKILLed and started
again under its name 2 s later. Then the gateways deliver what they hold; they keep
running while the consumers drain and ask for the gaps they find (`resend`: mosquitto
2.0.11 drops what is published to a shared subscription after a restart until its
consumers subscribe again, though it acknowledged it to the gateway), until every
reading id every gateway committed is in the database or `DRAIN_TIMEOUT_S` has passed.
The table goes to stdout; exit status 1 if a reading is missing.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from bench.common import METRICS_PER_DEVICE
from bench.fleet import consumers as township
from bench.fleet.procstat import cpu_s
from bench.fleet.worker import DRAINED, READY, RESULT
from gateway.broker import Mosquitto

BROKER_RESTART_AT, CONSUMER_KILL_AT = 0.3, 0.6
CONSUMER_DOWN_S = 2.0
DRAIN_TIMEOUT_S = 300.0


def _raise_fd_limit() -> int:
    """Every gateway holds a socket at the broker (and a few files here): raise this
    process's soft limit to the hard one; mosquitto and the workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Worker:
    first: int
    count: int
    proc: subprocess.Popen[str]

    def send(self, line: str) -> None:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def expect(self, mark: str) -> str:
        """The next stdout line starting with `mark` (the worker's own output is that)."""
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line.startswith(mark):
            self.proc.wait(30)
            raise RuntimeError(f"worker {self.first}+{self.count} ended: {line!r}")
        return line[len(mark) :]


@dataclass
class Cpu:
    """CPU seconds per role over the measured window."""

    start: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)

    def begin(self, role: str, seconds: float) -> None:
        self.start[role] = seconds

    def end(self, role: str, seconds: float) -> None:
        self.spent[role] = self.spent.get(role, 0.0) + seconds - self.start.pop(role)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    fd_limit = _raise_fd_limit()
    offered = args.gateways * args.devices * METRICS_PER_DEVICE
    broker = Mosquitto(workdir=tmp / "broker", persistent=True)
    broker.start()
    database = tmp / "township.sqlite3"
    group = [
        township.Consumer(f"c{k}", broker.url, database, tmp) for k in range(1, args.consumers + 1)
    ]
    workers: list[Worker] = []
    try:
        for consumer in group:  # one at a time: the first makes the schema
            consumer.start()
        _say(f"{len(group)} consumers subscribed; starting {args.gateways} gateways")
        for first in range(0, args.gateways, args.per_worker):
            count = min(args.per_worker, args.gateways - first)
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "bench.fleet.worker", str(first), str(count),
                    str(args.devices), broker.url, str(tmp / "gateways"),
                ],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            workers.append(Worker(first, count, proc))
        started = time.monotonic()
        for worker in workers:
            worker.expect(READY)
        _say(f"{args.gateways} gateways connected in {time.monotonic() - started:.1f} s; feeding")

        cpu = Cpu()
        roles = {f"consumer {c.name}": c for c in group}
        broker_pid = broker.pid or 0
        cpu.begin("broker", cpu_s(broker_pid))
        for role, consumer in roles.items():
            cpu.begin(role, consumer.cpu_s())
        for worker in workers:
            cpu.begin(f"worker {worker.first}", cpu_s(worker.proc.pid))
        machine0 = _machine_busy()
        t0_wall, t0 = time.time(), time.monotonic()
        for worker in workers:
            worker.send("go")

        def at(fraction: float) -> None:
            time.sleep(max(0.0, t0 + args.seconds * fraction - time.monotonic()))

        at(BROKER_RESTART_AT)
        restart_wall = time.time()
        cpu.end("broker", cpu_s(broker_pid))
        broker.stop()
        broker.start()
        broker_pid = broker.pid or 0
        cpu.begin("broker", cpu_s(broker_pid))
        broker_down_s = time.time() - restart_wall
        _say(f"broker restarted ({broker_down_s:.2f} s down)")

        at(CONSUMER_KILL_AT)
        victim = group[-1]
        victim.kill()
        time.sleep(CONSUMER_DOWN_S)
        victim.start()
        _say(f"consumer {victim.name} killed and started again")

        at(1.0)
        window_s = time.monotonic() - t0
        t1_wall = time.time()
        cpu.end("broker", cpu_s(broker_pid))
        for role, consumer in roles.items():
            cpu.end(role, consumer.cpu_s())
        for worker in workers:
            cpu.end(f"worker {worker.first}", cpu_s(worker.proc.pid))
        machine = _machine_busy(machine0)
        for worker in workers:
            worker.send("stop")
        _say("feeding stopped; the gateways deliver what they hold")
        last_seqs = {
            gw: seq for worker in workers for gw, seq in _json(worker.expect(DRAINED)).items()
        }
        gateways_drained_s = time.time() - t1_wall
        committed = sum(last_seqs.values())
        _say(f"the gateways delivered all {committed:,} readings; the township stores them")
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while township.stored(database) < committed and time.monotonic() < deadline:
            time.sleep(0.5)
        drained_s = time.time() - t1_wall
        for worker in workers:
            worker.send("exit")
        results = [_json(worker.expect(RESULT)) for worker in workers]
        for worker in workers:
            worker.proc.wait(120)
        for consumer in group:
            consumer.stop()
        lost = township.missing(database, last_seqs)
        steady_to = restart_wall * 1000
        return {
            "gateways": args.gateways,
            "devices": args.devices,
            "consumers": args.consumers,
            "workers": len(workers),
            "fd_limit": fd_limit,
            "window_s": window_s,
            "offered": offered,
            "handed_in": sum(r["handed_in_per_s"] for r in results),
            "refused": sum(r["refused"] for r in results),
            "committed": committed,
            "resent": sum(r["delivered"] for r in results) - committed,
            "stored_in_window": township.stored_between(database, t0_wall * 1000, t1_wall * 1000)
            / window_s,
            "lost": lost,
            "duplicates": township.duplicates(database),
            "latency": township.latencies_ms(database, 0, math.inf),
            "latency_steady": township.latencies_ms(database, (t0_wall + 2) * 1000, steady_to),
            "lag_max_s": max(r["lag_max_s"] for r in results),
            "late_1s": sum(r["late_1s"] for r in results),
            "gateway_drain_s": gateways_drained_s,
            "asked_again": sum(c.asked_again() for c in group),
            "drained_s": drained_s,
            "broker_down_s": broker_down_s,
            "cpu": {role: s / window_s * 100 for role, s in cpu.spent.items()},
            "machine_busy": machine,
        }
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
        for consumer in group:
            consumer.kill()
        broker.close()


def _json(text: str) -> dict[str, Any]:
    import json

    result: dict[str, Any] = json.loads(text)
    return result


def _machine_busy(since: tuple[int, int] | None = None) -> Any:
    """(busy, total) jiffies of every CPU from /proc/stat; with `since`, the busy
    share in % of all cores since then (the whole machine: other work included)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    now = (sum(values) - idle, sum(values))
    if since is None:
        return now
    return (now[0] - since[0]) / max(1, now[1] - since[1]) * 100


def table(r: dict[str, Any]) -> str:
    cpu = r["cpu"]
    consumers = sum(v for k, v in cpu.items() if k.startswith("consumer"))
    workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
    lat, steady = r["latency"], r["latency_steady"]
    fleet = f"{r['gateways']:,} x {r['devices']} ({r['workers']})"
    whole = f"{lat['p50']:,.0f} / {lat['p99']:,.0f} / {lat['max']:,.0f}"
    before = f"{steady['p50']:,.0f} / {steady['p99']:,.0f}"
    drains = f"{r['gateway_drain_s']:.1f} / {r['drained_s']:.1f}"
    rows = [
        ("gateways x devices (workers of gateways)", fleet),
        ("consumers (one shared group)", f"{r['consumers']}"),
        ("readings/s offered (handed in)", f"{r['offered']:,} ({r['handed_in']:,.0f})"),
        ("readings/s stored during the window", f"{r['stored_in_window']:,.0f}"),
        ("latency p50 / p99 / max, whole run (ms)", whole),
        ("latency p50 / p99, before the restart (ms)", before),
        ("readings committed by the gateways", f"{r['committed']:,}"),
        ("lost (committed, not in the database at the end)", f"{r['lost']:,}"),
        ("duplicates stored", f"{r['duplicates']:,}"),
        ("resent by the gateways (PUBACKed twice)", f"{r['resent']:,}"),
        ("refused at the gateways (queue full)", f"{r['refused']:,}"),
        ("gap readings asked for again (resend)", f"{r['asked_again']:,}"),
        ("broker CPU (% of one core)", f"{cpu['broker']:.0f}"),
        ("consumers' CPU, all (% of one core)", f"{consumers:.0f}"),
        ("gateway workers' CPU, all (% of one core)", f"{workers:.0f}"),
        ("machine busy (% of all cores, anything)", f"{r['machine_busy']:.0f}"),
        ("feeding's worst lag (s); late by > 1 s", f"{r['lag_max_s']:.2f}; {r['late_1s']:,}"),
        ("broker down at restart (s)", f"{r['broker_down_s']:.2f}"),
        ("after feeding: gateways delivered / all stored (s)", drains),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    head = (
        f"fleet bench {datetime.now():%Y-%m-%d %H:%M}, {r['window_s']:.0f} s window,"
        f" {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    return "\n".join([head, *(f"{k.ljust(width)}  {v}" for k, v in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=6, help="per gateway (6)")
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="feeding (60)")
    parser.add_argument("--per-worker", type=int, default=50, help="gateways per process (50)")
    parser.add_argument(
        "--workdir", type=Path, help="keep the stores, database and logs here (default: removed)"
    )
    args = parser.parse_args()
    if min(args.gateways, args.devices, args.consumers, args.per_worker) < 1:
        parser.error("--gateways, --devices, --consumers and --per-worker must be >= 1")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            result = run(args, Path(tmp))
    print(table(result))
    return 1 if result["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
