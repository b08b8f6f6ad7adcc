"""The table: each gateway figure next to the baseline measured in the same run, and the
ratio between them (absolute figures drift between machines and runs; ratios hold)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import FLOOR_DEVICES, HOUSEHOLD_DEVICES, METRICS_PER_DEVICE, Result
from bench.runner import Outcome

#: The goals of issue 12. A 1,000,000-reading backlog drains in 5 s at most: as a rate,
#: whatever N the run uses.
E2E_RATIO_GOAL = 0.2
DRAIN_READINGS_GOAL, DRAIN_SECONDS_GOAL = 1_000_000, 5.0
LATENCY_P99_GOAL_MS = 5.0
PEAK_RSS_GOAL_MB = 80.0
CPU_US_PER_READING_GOAL = 8.0
HOUSEHOLD_BYTES_PER_READING_GOAL = 1024
HOUSEHOLD_CPU_PERCENT_GOAL = 1.0
HOUSEHOLD_RSS_GOAL_MB = 64.0
_LATENCY_GOAL = f"p99 <= {LATENCY_P99_GOAL_MS:.0f} ms"


@dataclass
class Row:
    key: str
    measure: str
    n: str
    result: str
    baseline: str = ""
    ratio: str = ""
    goal: str = "-"
    met: str = "-"

    def judge(self, goal: str, met: bool | None) -> Row:
        """Set the goal, and whether it was met (`None`: not measured)."""
        self.goal = goal
        self.met = "?" if met is None else "yes" if met else "no"
        return self


#: The runs of a real `GatewayService`, whose stop is timed.
_GATEWAY_RUNS = ("ingest", "e2e", "backlog", "household", "idle")


def _num(x: float) -> str:
    return f"{x:,.0f}"


def _throughput_ratio(value: float, base: float) -> str:
    ratio = value / base
    text = f"{ratio:.3f}" if ratio >= 0.01 else f"{ratio:.4f}"
    return f"{text} (1/{base / value:,.0f})" if ratio < 1 else f"{ratio:.2f}"


def _latency(summary: dict[str, Any]) -> str:
    if not summary["samples"]:
        return "no samples (run too short)"
    return f"p50 {summary['p50_ms']:.1f} / p99 {summary['p99_ms']:.1f} ms"


def _latency_row(key: str, label: str, lat: dict[str, Any], b_lat: Result | None) -> Row:
    """A latency row against baseline B', judged on its p99."""
    row = Row(key, label, _num(lat["samples"]), _latency(lat))
    if b_lat and b_lat["samples"] and lat["samples"]:
        row.baseline = f"B' {_latency(b_lat)}"
        p50, p99 = lat["p50_ms"] / b_lat["p50_ms"], lat["p99_ms"] / b_lat["p99_ms"]
        row.ratio = f"x{p50:.0f} / x{p99:.1f}"
    met = lat["p99_ms"] <= LATENCY_P99_GOAL_MS if lat["samples"] else None
    return row.judge(_LATENCY_GOAL, met)


def _get(outcomes: dict[str, Outcome], key: str) -> Result | None:
    outcome = outcomes.get(key)
    return outcome.result if outcome is not None else None


def rows(outcomes: dict[str, Outcome]) -> list[Row]:
    out: list[Row] = []
    a, b, b_lat = (_get(outcomes, k) for k in ("sqlite", "mqtt", "mqtt-latency"))
    ingest, e2e, drain = (_get(outcomes, k) for k in ("ingest", "e2e", "backlog"))
    home, idle = _get(outcomes, "household"), _get(outcomes, "idle")
    imported = _get(outcomes, "import")

    def failed(row_key: str, scenario: str, label: str) -> Row:
        outcome = outcomes.get(scenario)
        return Row(row_key, label, _num(outcome.n) if outcome else "", "FAILED (see below)")

    label = "baseline A: sqlite3 WAL, sync FULL, 500 rows/tx"
    out.append(
        Row("A", label, _num(a["n"]), f"{_num(a['rate'])} rows/s")
        if a
        else failed("A", "sqlite", label)
    )
    label = "baseline B: paho QoS 1, inflight 20, 50 rdg/msg"
    out.append(
        Row("B", label, _num(b["n"]), f"{_num(b['rate'])} readings/s")
        if b
        else failed("B", "mqtt", label)
    )
    label = "baseline B': publish -> subscriber, 1 msg/50 ms"
    out.append(
        Row("B'", label, _num(b_lat["samples"]), _latency(b_lat))
        if b_lat
        else failed("B'", "mqtt-latency", label)
    )

    label = "gateway ingest: on_measurements -> committed"
    if ingest:
        row = Row("1", label, _num(ingest["n"]), f"{_num(ingest['rate'])} readings/s")
        if a:
            row.baseline = f"A {_num(a['rate'])} rows/s"
            row.ratio = _throughput_ratio(ingest["rate"], a["rate"])
        out.append(row)
    else:
        out.append(failed("1", "ingest", label))

    label = "gateway end to end: -> PUBACK'd"
    goal = f"ratio >= {E2E_RATIO_GOAL} vs B"
    if e2e:
        row = Row("2", label, _num(e2e["n"]), f"{_num(e2e['rate'])} readings/s")
        if b:
            row.baseline = f"B {_num(b['rate'])} readings/s"
            row.ratio = _throughput_ratio(e2e["rate"], b["rate"])
        out.append(row.judge(goal, e2e["rate"] / b["rate"] >= E2E_RATIO_GOAL if b else None))
    else:
        out.append(failed("2", "e2e", label).judge(goal, None))

    label = "backlog drain after an outage"
    drain_rate_goal = DRAIN_READINGS_GOAL / DRAIN_SECONDS_GOAL
    if drain:
        row = Row(
            "3",
            label,
            _num(drain["n"]),
            f"{drain['drain_s']:.1f} s, {_num(drain['rate'])} readings/s",
        )
        if b:
            row.baseline = f"B {_num(b['rate'])} readings/s"
            row.ratio = _throughput_ratio(drain["rate"], b["rate"])
        scaled_s = DRAIN_SECONDS_GOAL * drain["n"] / DRAIN_READINGS_GOAL
        goal = f">= {_num(drain_rate_goal)}/s ({_num(drain['n'])} in <= {scaled_s:.2g} s)"
        out.append(row.judge(goal, drain["rate"] >= drain_rate_goal))
        label = "live latency during the drain"
        out.append(_latency_row("4", label, drain["latency"], b_lat))
    else:
        out.append(failed("3", "backlog", label).judge(f">= {_num(drain_rate_goal)}/s", None))
        label = "live latency during the drain"
        out.append(failed("4", "backlog", label).judge(_LATENCY_GOAL, None))

    label = "memory: peak RSS after a gateway run"
    goal = f"<= {PEAK_RSS_GOAL_MB:.0f} MB"
    peaks = {k: r["peak_rss_mb"] for k in ("ingest", "e2e", "backlog") if (r := _get(outcomes, k))}
    if peaks:
        worst = max(peaks, key=lambda k: peaks[k])
        row = Row("5", label, "", f"{peaks[worst]:.1f} MB ({worst})")
        if imported:
            row.baseline = f"imports only {imported['peak_rss_mb']:.1f} MB"
            row.ratio = f"{peaks[worst] / imported['peak_rss_mb']:.2f}x"
        out.append(row.judge(goal, peaks[worst] <= PEAK_RSS_GOAL_MB))

    label = "CPU per reading, end to end (whole process)"
    goal = f"<= {CPU_US_PER_READING_GOAL:.0f} us"
    if e2e:
        cpu_us = e2e["cpu_us_per_reading"]
        row = Row("6", label, _num(e2e["n"]), f"{cpu_us:.1f} us/reading")
        if b:
            row.baseline = f"B {b['cpu_us_per_reading']:.1f} us/reading"
            row.ratio = f"{cpu_us / b['cpu_us_per_reading']:.1f}x"
        out.append(row.judge(goal, cpu_us <= CPU_US_PER_READING_GOAL))
    else:
        out.append(failed("6", "e2e", label).judge(goal, None))

    out.extend(_household_rows(home, imported, failed))
    label = "idle latency: 60 devices, 180 readings/s"
    if idle:
        out.append(_latency_row("10", label, idle["latency"], b_lat))
    else:
        out.append(failed("10", "idle", label).judge(_LATENCY_GOAL, None))
    return out


def _household_rows(
    home: Result | None, imported: Result | None, failed: Callable[[str, str, str], Row]
) -> list[Row]:
    """Rows 7-9: a household's disk writes, CPU and memory, in real time."""
    disk_goal = f"<= {HOUSEHOLD_BYTES_PER_READING_GOAL:,} B/reading"
    cpu_goal = f"< {HOUSEHOLD_CPU_PERCENT_GOAL:.0f} % of a core"
    rss_goal = f"<= {HOUSEHOLD_RSS_GOAL_MB:.0f} MB (peak)"
    labels = (
        "household: disk writes per reading",
        "household: CPU, share of one core",
        "household: RSS, end of window / peak",
    )
    if not home:
        return [
            failed(key, "household", label).judge(goal, None)
            for key, label, goal in zip(
                ("7", "8", "9"), labels, (disk_goal, cpu_goal, rss_goal), strict=True
            )
        ]
    n = _num(home["n"])
    per_reading = home["bytes_per_reading"]
    disk = Row(
        "7",
        labels[0],
        n,
        f"{per_reading:,.0f} B/reading, {home['mb_per_day_per_bed']:,.0f} MB/day per bed",
        f"payload {home['payload_bytes']:.0f} B/reading",
        f"x{per_reading / home['payload_bytes']:.1f}" if home["payload_bytes"] else "",
    ).judge(disk_goal, per_reading <= HOUSEHOLD_BYTES_PER_READING_GOAL)
    cpu = Row("8", labels[1], n, f"{home['cpu_percent']:.2f} %").judge(
        cpu_goal, home["cpu_percent"] < HOUSEHOLD_CPU_PERCENT_GOAL
    )
    # ru_maxrss trails VmRSS by the pages not yet counted in the kernel's totals.
    peak = max(home["peak_rss_mb"], home["rss_end_mb"])
    rss = Row("9", labels[2], "", f"{home['rss_end_mb']:.1f} / {peak:.1f} MB")
    if imported:
        rss.baseline = f"imports only {imported['peak_rss_mb']:.1f} MB"
        rss.ratio = f"{peak / imported['peak_rss_mb']:.2f}x"
    return [disk, cpu, rss.judge(rss_goal, peak <= HOUSEHOLD_RSS_GOAL_MB)]


def table(rows_: list[Row]) -> str:
    header = Row("#", "measure", "n", "result", "baseline (same run)", "ratio", "goal", "met?")
    cells = [
        [r.key, r.measure, r.n, r.result, r.baseline, r.ratio, r.goal, r.met]
        for r in [header, *rows_]
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    right = {2}  # n
    lines = []
    for i, c in enumerate(cells):
        parts = [c[j].rjust(w) if j in right else c[j].ljust(w) for j, w in enumerate(widths)]
        lines.append("  ".join(parts).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def headroom(outcomes: dict[str, Outcome]) -> str:
    e2e = _get(outcomes, "e2e")
    if not e2e:
        return "headroom: not measured (the end-to-end run failed)"
    floor = FLOOR_DEVICES * METRICS_PER_DEVICE
    home = HOUSEHOLD_DEVICES * METRICS_PER_DEVICE
    return (
        f"headroom: end to end {_num(e2e['rate'])} readings/s / eldercare floor"
        f" ({FLOOR_DEVICES} devices x {METRICS_PER_DEVICE} metrics/s = {floor}/s)"
        f" = {e2e['rate'] / floor:.1f}x   (household, {HOUSEHOLD_DEVICES} devices ="
        f" {home}/s: {e2e['rate'] / home:.0f}x)"
    )


def details(outcomes: dict[str, Outcome]) -> list[str]:
    lines: list[str] = []
    if r := _get(outcomes, "sqlite"):
        lines.append(
            f"A   rounds {r['rounds']} rows/s (median shown); payload {r['payload_bytes']} B"
        )
    if r := _get(outcomes, "mqtt"):
        lines.append(
            f"B   rounds {r['rounds']} readings/s; {_num(r['messages'])} messages of"
            f" {_num(r['message_bytes'])} B; CPU {r['cpu_us_per_reading']:.1f} us/reading"
        )
    if r := _get(outcomes, "mqtt-latency"):
        lines.append(f"B'  {r['samples']} probes, {r['lost']} lost, max {r['max_ms']:.1f} ms")
    if r := _get(outcomes, "ingest"):
        lines.append(
            f"1   fed in {r['feed_s']:.2f} s, all committed after {r['seconds']:.2f} s;"
            f" CPU {r['cpu_us_per_reading']:.0f} us/reading (whole process)"
        )
    if r := _get(outcomes, "e2e"):
        lines.append(
            f"2   committed after {r['accepted_s']:.1f} s, PUBACK'd after {r['seconds']:.1f} s;"
            f" {_num(r['messages'])} messages, {r['readings_per_message']:.1f} readings/message;"
            f" CPU {r['cpu_us_per_reading']:.0f} us/reading"
        )
    if r := _get(outcomes, "backlog"):
        lat = r["latency"]
        lines.append(
            f"3   accepted during the outage in {r['fill_s']:.1f} s; reconnect"
            f" {r['reconnect_s']:.2f} s; drained {r['drain_s']:.1f} s after reconnecting"
            f" ({r['seconds_from_broker_start']:.1f} s after the broker started);"
            f" {_num(r['messages'])} messages, {r['readings_per_message']:.1f} readings/message;"
            f" CPU {r['cpu_us_per_reading']:.0f} us/reading"
        )
        lines.append(
            f"4   {lat['samples']} live probes every 50 ms, {lat['lost']} lost,"
            f" max {lat['max_ms']:.1f} ms"
        )
    peaks = [
        f"{k} {r['peak_rss_mb']:.1f} MB"
        for k in ("ingest", "e2e", "backlog")
        if (r := _get(outcomes, k))
    ]
    if peaks:
        lines.append("5   peak RSS per run: " + ", ".join(peaks))
    if r := _get(outcomes, "household"):
        lines.append(
            f"7-9 {r['feed_s']} s of feeding + stop ({r['stop_s']:.1f} s) = {r['window_s']:.1f} s"
            f" window: {_num(r['handed_in'])} handed in, {_num(r['n'])} committed,"
            f" {_num(r['delivered'])} delivered in {_num(r['messages'])} messages;"
            f" {r['disk_bytes'] / 1e6:.2f} MB written; payload = mean of"
            f" {_num(r['stored_readings'])} stored; feed at worst {r['lag_max_s'] * 1000:.1f} ms"
            " late"
        )
    if r := _get(outcomes, "idle"):
        lat = r["latency"]
        lines.append(
            f"10  {lat['samples']} probes every 50 ms, {lat['lost']} lost, max"
            f" {lat['max_ms']:.1f} ms; {r['devices']} devices; CPU {r['cpu_percent']:.1f} % of"
            f" a core; feed at worst {r['lag_max_s'] * 1000:.1f} ms late"
        )
    stops = [f"{k} {r['stop_s']:.1f} s" for k in _GATEWAY_RUNS if (r := _get(outcomes, k))]
    if stops:
        lines.append("    GatewayService.stop() took: " + ", ".join(stops))
    stalls = sum(int(r.get("stop_stalls", 0)) for k in _GATEWAY_RUNS if (r := _get(outcomes, k)))
    if stalls:
        lines.append(
            f"!   GatewayService.stop() stalled {stalls} time(s) for 3 s (see"
            " bench/gateway_runs.py, stop_with_watchdog)"
        )
    for outcome in outcomes.values():
        if not outcome.ok:
            lines.append(f"!   {outcome.scenario} FAILED: {outcome.error}")
    return lines
