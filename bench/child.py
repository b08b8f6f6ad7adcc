"""One measurement in a process of its own: `python -m bench.child SCENARIO N`
(for `household`, N is the measured window in seconds; for `idle`, the probes; for
`soak`, the simulated seconds, and `--speed` / `--tracemalloc` apply).

Prints its result as one JSON line starting with `BENCH-RESULT `, with the process's
peak RSS added; anything else it prints (gateway warnings) goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench.common import BROKERS, Result, peak_rss_mb

SCENARIOS = (
    "import",
    "sqlite",
    "mqtt",
    "mqtt-latency",
    "ingest",
    "e2e",
    "backlog",
    "household",
    "idle",
    "soak",
)
MARK = "BENCH-RESULT "
IMPORTED = ("gateway.service", "gateway.config", "gateway.broker", "drivers.measurement")


def run(scenario: str, n: int, workdir: Path, speed: float, trace: bool) -> Result:
    if scenario == "import":
        # What every gateway process loads before it does anything: the baseline for
        # its memory.
        for module in IMPORTED:
            importlib.import_module(module)
        return {"n": 0, "modules": list(IMPORTED)}
    if scenario in ("sqlite", "mqtt", "mqtt-latency"):
        from bench import baselines

        if scenario == "sqlite":
            return baselines.sqlite_rows(n, workdir)
        if scenario == "mqtt":
            return baselines.mqtt_publish(n)
        from bench.gateway_runs import PROBE_INTERVAL_S

        return baselines.mqtt_latency(n, PROBE_INTERVAL_S)
    if scenario == "soak":
        from bench.soak import soak

        return asyncio.run(soak(n, speed, workdir, trace))
    from bench import gateway_runs, live_runs

    measure = {
        "ingest": gateway_runs.ingest,
        "e2e": gateway_runs.end_to_end,
        "backlog": gateway_runs.backlog_drain,
        "household": live_runs.household,
        "idle": live_runs.idle_latency,
    }[scenario]
    return asyncio.run(measure(n, workdir))


def _on_signal(tmp: str) -> Callable[[int, FrameType | None], None]:
    """Stopped from outside (timeout, Ctrl-C): kill our brokers and files, at once.
    Nothing waits for the event loop, which may be the thing that is stuck."""

    def die(signum: int, _frame: FrameType | None) -> None:
        for broker in BROKERS:
            broker.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        os._exit(128 + signum)

    return die


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("n", type=int)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    # Warnings (broker down, absent serial ports) are expected here; errors are not.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.scenario}-") as tmp:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _on_signal(tmp))
        result = run(args.scenario, args.n, Path(tmp), args.speed, args.tracemalloc)
    result["peak_rss_mb"] = peak_rss_mb()
    print(MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
