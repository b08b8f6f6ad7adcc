"""`python -m bench [--quick] [--readings N] [--household-s S] [--sync-interval-s S]
[--only ROWS]`: run every measurement (or only those the rows named need), print the
table.
`python -m bench soak [--minutes M] [--speed X] [--tracemalloc]`: the soak instead
(bench/soak_report.py).

Exit status 1 when a measurement failed (the table still shows the others).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from importlib.metadata import version

from bench import report, soak_report
from bench.gateway_runs import SYNC_INTERVAL_ENV
from bench.runner import Outcome, run_child

DEFAULT_READINGS = 30_000
QUICK_READINGS = 3_000
HOUSEHOLD_S, QUICK_HOUSEHOLD_S = 60, 10
#: The scenarios each row of the table needs: its own run and its baseline's.
ROW_SCENARIOS = {
    "A": ("sqlite",),
    "B": ("mqtt",),
    "B'": ("mqtt-latency",),
    "1": ("sqlite", "ingest"),
    "2": ("mqtt", "e2e"),
    "3": ("mqtt", "backlog"),
    "4": ("mqtt-latency", "backlog"),
    "5": ("import", "ingest", "e2e", "backlog"),
    "6": ("mqtt", "e2e"),
    "7": ("household",),
    "8": ("household",),
    "9": ("import", "household"),
    "10": ("mqtt-latency", "idle"),
}


def _plan(readings: int, quick: bool, household_s: int) -> list[tuple[str, str, int]]:
    """(scenario, what it is, n). The baselines are fast, so they get more work than the
    gateway runs to be long enough to time; throughput is a rate, so the ratio holds."""
    floor_a, floor_b, probes = (20_000, 20_000, 20) if quick else (100_000, 200_000, 200)
    return [
        ("import", "RSS with the gateway modules imported", 0),
        ("sqlite", "baseline A: raw sqlite3", max(readings, floor_a)),
        ("mqtt", "baseline B: raw paho-mqtt", max(readings, floor_b)),
        ("mqtt-latency", "baseline B': raw publish -> subscriber latency", probes),
        ("ingest", "gateway ingest", readings),
        ("e2e", "gateway end to end", readings),
        ("backlog", "gateway backlog drain + live latency", readings),
        ("household", "household: 6 devices in real time", household_s),
        ("idle", "idle latency at 60 devices, in real time", 40 if quick else 200),
    ]


def _rows(text: str) -> list[str]:
    """`--only`'s comma-separated row keys, each one of the table's."""
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in ROW_SCENARIOS]
    if not keys or unknown:
        raise argparse.ArgumentTypeError(
            f"rows are {', '.join(ROW_SCENARIOS)}; not {', '.join(unknown) or 'none'}"
        )
    return keys


def _timeout(scenario: str, n: int) -> float:
    if scenario in ("ingest", "e2e", "backlog"):
        return 120 + n / 100  # far beyond anything measured here: a stuck run, not a slow one
    if scenario == "household":
        return 120 + n  # n is the window, in seconds
    return 120


def _environment() -> str:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        first = subprocess.run(
            [mosquitto, "-h"], capture_output=True, text=True, timeout=5
        ).stdout.splitlines()
        broker = first[0].removeprefix("mosquitto ") if first else "?"
    except (OSError, subprocess.TimeoutExpired):
        broker = "not found"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.now().isoformat(timespec='minutes')}  {platform.node()}  "
        f"{os.cpu_count()} CPUs, load {load}  |  Python {platform.python_version()},"
        f" paho-mqtt {version('paho-mqtt')}, SQLite {sqlite3.sqlite_version},"
        f" mosquitto {broker}"
        + (
            f"  |  store.sync_interval_s {interval}"
            if (interval := os.environ.get(SYNC_INTERVAL_ENV))
            else ""
        )
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        return soak_report.main(argv[1:], _environment())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Gateway throughput, latency and memory vs raw sqlite3/paho baselines"
        " measured in the same run (see bench/README.md).",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"small N ({QUICK_READINGS:,}): a smoke run"
    )
    parser.add_argument(
        "--readings",
        type=int,
        metavar="N",
        help=f"readings per gateway run (default {DEFAULT_READINGS:,})",
    )
    parser.add_argument(
        "--household-s",
        type=int,
        metavar="S",
        help=f"the household run's measured window (default {HOUSEHOLD_S} s,"
        f" {QUICK_HOUSEHOLD_S} s with --quick)",
    )
    parser.add_argument(
        "--sync-interval-s",
        type=float,
        metavar="S",
        help="the gateway runs' store.sync_interval_s (default: the gateway's default)",
    )
    parser.add_argument(
        "--only",
        type=_rows,
        metavar="ROWS",
        help="only these rows of the table, comma-separated (e.g. 7,8,9): the runs they"
        " and their baselines need",
    )
    args = parser.parse_args(argv)
    if args.sync_interval_s is not None:
        os.environ[SYNC_INTERVAL_ENV] = str(args.sync_interval_s)  # read by each child
    readings = args.readings or (QUICK_READINGS if args.quick else DEFAULT_READINGS)
    if readings < 1:
        parser.error("--readings must be at least 1")
    household_s = args.household_s or (QUICK_HOUSEHOLD_S if args.quick else HOUSEHOLD_S)
    if household_s < 1:
        parser.error("--household-s must be at least 1")

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    env = _environment()
    print(f"bench: {env}", file=sys.stderr, flush=True)
    outcomes: dict[str, Outcome] = {}
    plan = _plan(readings, args.quick, household_s)
    if args.only:
        needed = {scenario for key in args.only for scenario in ROW_SCENARIOS[key]}
        plan = [step for step in plan if step[0] in needed]
    started = time.monotonic()
    for i, (scenario, what, n) in enumerate(plan, start=1):
        size = f" ({n} s)" if scenario == "household" else f" (n={n:,})" if n else ""
        print(f"[{i}/{len(plan)}] {what}{size} ...", end="", file=sys.stderr, flush=True)
        outcome = run_child(scenario, n, _timeout(scenario, n))
        outcomes[scenario] = outcome
        status = f"{outcome.wall_s:.1f} s" if outcome.ok else "FAILED"
        print(f" {status}", file=sys.stderr, flush=True)

    print()
    print(f"Gateway benchmark, {env}")
    rows = report.rows(outcomes)
    print(report.table([row for row in rows if not args.only or row.key in args.only]))
    if not args.only or "e2e" in outcomes:
        print()
        print(report.headroom(outcomes))
    print()
    for line in report.details(outcomes):
        print(line)
    print(
        f"\ntotal {time.monotonic() - started:.0f} s. Ratios are gateway / baseline;"
        " the machine is shared, so single runs spread widely."
    )
    return 0 if all(o.ok for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
