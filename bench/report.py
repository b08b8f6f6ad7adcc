"""The table: each gateway figure next to the baseline measured in the same run, and the
ratio between them (absolute figures drift between machines and runs; ratios hold)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.common import FLOOR_DEVICES, HOUSEHOLD_DEVICES, METRICS_PER_DEVICE, Result
from bench.runner import Outcome


@dataclass
class Row:
    key: str
    measure: str
    n: str
    result: str
    baseline: str = ""
    ratio: str = ""


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


def _get(outcomes: dict[str, Outcome], key: str) -> Result | None:
    outcome = outcomes.get(key)
    return outcome.result if outcome is not None else None


def rows(outcomes: dict[str, Outcome]) -> list[Row]:
    out: list[Row] = []
    a, b, b_lat = (_get(outcomes, k) for k in ("sqlite", "mqtt", "mqtt-latency"))
    ingest, e2e, drain = (_get(outcomes, k) for k in ("ingest", "e2e", "backlog"))
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
    if e2e:
        row = Row("2", label, _num(e2e["n"]), f"{_num(e2e['rate'])} readings/s")
        if b:
            row.baseline = f"B {_num(b['rate'])} readings/s"
            row.ratio = _throughput_ratio(e2e["rate"], b["rate"])
        out.append(row)
    else:
        out.append(failed("2", "e2e", label))

    label = "backlog drain after an outage"
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
        out.append(row)
        lat = drain["latency"]
        row = Row("4", "live latency during the drain", _num(lat["samples"]), _latency(lat))
        if b_lat and b_lat["samples"] and lat["samples"]:
            row.baseline = f"B' {_latency(b_lat)}"
            row.ratio = (
                f"x{lat['p50_ms'] / b_lat['p50_ms']:.0f} / x{lat['p99_ms'] / b_lat['p99_ms']:.1f}"
            )
        out.append(row)
    else:
        out.append(failed("3", "backlog", label))

    peaks = {k: r["peak_rss_mb"] for k in ("ingest", "e2e", "backlog") if (r := _get(outcomes, k))}
    if peaks:
        worst = max(peaks, key=lambda k: peaks[k])
        row = Row(
            "5", "memory: peak RSS after a gateway run", "", f"{peaks[worst]:.0f} MB ({worst})"
        )
        if imported:
            row.baseline = f"imports only {imported['peak_rss_mb']:.0f} MB"
            row.ratio = f"{peaks[worst] / imported['peak_rss_mb']:.2f}x"
        out.append(row)
    return out


def table(rows_: list[Row]) -> str:
    header = Row("#", "measure", "n", "result", "baseline (same run)", "ratio")
    cells = [[r.key, r.measure, r.n, r.result, r.baseline, r.ratio] for r in [header, *rows_]]
    widths = [max(len(c[i]) for c in cells) for i in range(6)]
    right = {2}  # n
    lines = []
    for i, c in enumerate(cells):
        parts = [c[j].rjust(widths[j]) if j in right else c[j].ljust(widths[j]) for j in range(6)]
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
        f"{k} {r['peak_rss_mb']:.0f} MB"
        for k in ("ingest", "e2e", "backlog")
        if (r := _get(outcomes, k))
    ]
    if peaks:
        lines.append("5   peak RSS per run: " + ", ".join(peaks))
    stops = [
        f"{k} {r['stop_s']:.1f} s" for k in ("ingest", "e2e", "backlog") if (r := _get(outcomes, k))
    ]
    if stops:
        lines.append("    GatewayService.stop() took: " + ", ".join(stops))
    stalls = sum(
        int(r.get("stop_stalls", 0))
        for k in ("ingest", "e2e", "backlog")
        if (r := _get(outcomes, k))
    )
    if stalls:
        lines.append(
            f"!   GatewayService.stop() stalled {stalls} time(s) for 3 s (see"
            " bench/gateway_runs.py, stop_with_watchdog)"
        )
    for outcome in outcomes.values():
        if not outcome.ok:
            lines.append(f"!   {outcome.scenario} FAILED: {outcome.error}")
    return lines
