"""`python -m bench soak`: an hour of an eldercare floor's traffic, accelerated, through
the gateway in a child process of its own (bench/soak.py); prints its resident memory
over time and whether it stays flat within 2 MB after warm-up."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.common import FLOOR_DEVICES, METRICS_PER_DEVICE, Result
from bench.runner import run_child

#: After warm-up, resident memory may move this much and still count as flat.
FLAT_MB = 2.0
#: Table rows per run: one per 5 minutes of a simulated hour.
ROWS = 12


def main(argv: list[str], environment: str) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak",
        description="An hour of a floor's readings (60 devices x 3/s), accelerated, with"
        " two broker outages: resident memory over time (see bench/README.md).",
    )
    parser.add_argument("--minutes", type=float, default=60, help="simulated (default 60)")
    parser.add_argument(
        "--speed", type=float, default=20, help="times real time (default 20: 3 minutes)"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="list the allocation sites that grew after warm-up (slower: check the lag)",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.speed <= 0:
        parser.error("--minutes and --speed must be positive")
    sim_s = round(args.minutes * 60)
    run_s = sim_s / args.speed
    options = ["--speed", str(args.speed), *(["--tracemalloc"] if args.tracemalloc else [])]
    print(f"soak: {environment}", file=sys.stderr)
    print(
        f"soak: {args.minutes:g} simulated minutes at {args.speed:g}x ({run_s:.0f} s of feeding)"
        " ...",
        file=sys.stderr,
        flush=True,
    )
    outcome = run_child("soak", sim_s, timeout_s=3 * run_s + 300, options=options)
    if outcome.result is None:
        print(f"soak FAILED: {outcome.error}")
        return 1
    print(f"Gateway soak, {environment}")
    for line in report(outcome.result):
        print(line)
    return 0


def report(result: Result) -> list[str]:
    samples: list[dict[str, Any]] = result["samples"]
    per_s = FLOOR_DEVICES * METRICS_PER_DEVICE
    outages = ", ".join(f"{a / 60:g}-{b / 60:g}" for a, b in result["outages_sim_s"])
    lines = [
        f"{result['n']:,} readings: {result['sim_s'] / 60:g} simulated minutes of"
        f" {FLOOR_DEVICES} devices x {METRICS_PER_DEVICE}/s ({per_s} readings/s) at"
        f" {result['speed']:g}x ({per_s * result['speed']:,.0f} readings/s);"
        f" broker down at minutes {outages}",
        f"fed in {result['fed_s']:.0f} s (at most {result['lag_max_s']:.2f} s behind schedule),"
        f" backlog drained at {result['drained_s']:.0f} s; store {result['store_mb']:.0f} MB;"
        f" peak RSS {result['peak_rss_mb']:.1f} MB; GatewayService.stop() took"
        f" {result['stop_s']:.1f} s"
        + (f" (stalled {result['stop_stalls']} x 3 s)" if result["stop_stalls"] else ""),
        "",
        _table(samples, result["sim_s"] / ROWS),
        "",
    ]
    warm = [s for s in samples if s["sim_s"] >= result["warmup_sim_s"]]
    if not warm:
        return [*lines, "no sample after warm-up: run longer"]
    rss = [s["rss"] for s in warm]
    spread = max(rss) - min(rss)
    verdict = "flat" if spread <= FLAT_MB else "NOT flat"
    lines.append(
        f"RSS after warm-up (simulated minute {result['warmup_sim_s'] / 60:g} on,"
        f" {len(warm)} samples): min {min(rss):.1f}, max {max(rss):.1f}, last {rss[-1]:.1f} MB;"
        f" first {rss[0]:.1f} -> last {rss[-1]:.1f} ({rss[-1] - rss[0]:+.1f} MB)."
        f" Spread {spread:.1f} MB: {verdict} within {FLAT_MB:g} MB"
    )
    late = [s["rss"] for s in warm if s["sim_s"] >= result["sim_s"] / 2]
    if late:
        lines.append(
            f"  second half of the run: {late[0]:.1f} -> {late[-1]:.1f} MB"
            f" ({late[-1] - late[0]:+.1f}), max {max(late):.1f}: a leak keeps growing there,"
            " a working set that reached its size earlier does not"
        )
    for key, what in (("anon", "heap (RssAnon)"), ("sqlite", "SQLite's own")):
        mb = [s[key] for s in warm]
        lines.append(f"  {what}: min {min(mb):.1f}, max {max(mb):.1f}, last {mb[-1]:.1f} MB")
    blocks, threads = ([s[k] for s in warm] for k in ("py_blocks", "threads"))
    lines.append(
        f"  Python allocator blocks: min {min(blocks):,}, max {max(blocks):,},"
        f" last {blocks[-1]:,}; threads {min(threads)}-{max(threads)}"
    )
    if max(s["queued"] for s in warm) > FLOOR_DEVICES * METRICS_PER_DEVICE * result["speed"]:
        lines.append(
            "! readings waited in the pipeline's queue for more than a second: the gateway"
            " did not keep up, and that queue is in the figures (lower --speed)"
        )
    if result["rss_after_trim_mb"] is not None:
        lines.append(
            f"  after the run, once glibc's malloc_trim(0) returned free heap to the system:"
            f" RSS {result['rss_after_trim_mb']:.1f} MB"
        )
    traced = result["tracemalloc"]
    if traced:
        lines += [
            "",
            f"tracemalloc, warm-up to the end: Python allocations {traced['grew_kib']:+,.0f} KiB"
            f" in all (tracing itself holds {traced['overhead_mb']:.1f} MB, in the RSS above);"
            " the sites that grew most:",
            *(f"  {line}" for line in traced["top"]),
        ]
    return lines


def _table(samples: list[dict[str, Any]], row_every_sim_s: float) -> str:
    """A row per `row_every_sim_s` (the first sample at or after each), and the end.
    `queued`: handed in, not yet committed (in memory); `unacked`: committed, not yet
    PUBACK'd (the backlog, in the store; resends make it an estimate)."""
    first_of: dict[int, dict[str, Any]] = {}
    for s in samples:
        first_of.setdefault(int(s["sim_s"] // row_every_sim_s), s)
    picked = list(first_of.values())
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    head = (
        f"{'sim min':>7} {'real s':>6} {'RSS MB':>6} {'heap':>5} {'sqlite':>6}"
        f" {'py blocks':>9} {'queued':>7} {'unacked':>8}  broker"
    )
    rows = [
        f"{s['sim_s'] / 60:7.1f} {s['real_s']:6.0f} {s['rss']:6.1f} {s['anon']:5.1f}"
        f" {s['sqlite']:6.2f} {s['py_blocks']:9,} {max(0, s['queued']):7,}"
        f" {max(0, s['accepted'] - s['delivered']):8,}  {'up' if s['broker_up'] else 'DOWN'}"
        for s in picked
    ]
    return "\n".join([head, *rows])
