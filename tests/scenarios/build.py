"""Scenario files (`tests/scenarios/*.toml`, described in README.md beside this module)
read into the readings `bedside-gateway replay` takes and the timeline it should print.

A stream's steps, one string each:

- `97 for 60 s`: a reading every `every_s` (default 1 s) for 60 s, the first at the
  step's start;
- `97`: one reading, then `every_s` later the next step;
- `closed until 2026-11-22T23:10:00+08:00`: a reading every `every_s` up to that time
  (or offset after the start, `8 h 10 min`), the next step starting then;
- `nothing for 10 min`, `nothing until 2026-11-22T23:10:00+08:00`: no reading;
- `90 for 20 s (poor_signal at 5, 9)`: the readings 5 s and 9 s into the step carry
  the flag; `(probe_off)`: every reading of the step does; several: `(a at 3; b at 7)`.

Durations and times: `75 s`, `1 min 15 s`, `4 h`, `2 d 6 h` after the scenario's start,
or an RFC 3339 time (`2026-11-22T22:00:00+08:00`).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from drivers.measurement import UNITS, Metric, Quality

HERE = Path(__file__).resolve().parent
#: Offset 0 of a scenario that gives no `start`.
DEFAULT_START = "2026-11-22T08:00:00+00:00"
#: The gateway whose readings the scenarios are (reading ids `gw-scenario-<seq>`).
GATEWAY = "gw-scenario"
#: A timeline's empty column (TOML has no null): no severity, no subject.
NONE = "-"

_UNITS = {"d": 86400, "h": 3600, "min": 60, "s": 1}
_PIECE = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|min|s)\b")
_STEP = re.compile(
    r"^(?P<value>\S+)(?: for (?P<duration>[^(]+?)| until (?P<until>[^(]+?))?"
    r"(?: \((?P<flags>[^)]*)\))?$"
)
_VALUES = {"true": True, "false": False, "open": True, "closed": False}
_KEYS = {"description", "config", "start", "until", "readings", "expect", "stream"}
_STREAM_KEYS = {"device", "subject", "metric", "site", "every_s", "from", "steps"}


@dataclass(frozen=True, slots=True)
class Event:
    """One row of a timeline: when, what, which state, how severe, whose."""

    at: datetime
    kind: str
    state: str
    severity: str
    subject: str


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    start: datetime
    config: Path | None
    until: datetime | None
    #: Reading objects as the township server receives them (the contract's format).
    readings: list[dict[str, Any]]
    expected: list[Event]

    def write_readings(self, path: Path) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in self.readings), encoding="utf-8")
        return path

    def row(self, event: Event) -> str:
        """A row of a timeline as the scenario files write them."""
        return f"{offset(event.at, self.start):>14}  {event.kind:<20} {event.state:<12}" + (
            f" {event.severity:<9} {event.subject}"
        )


def scenario_files() -> list[Path]:
    return sorted(HERE.glob("*.toml"))


def load(path: Path) -> Scenario:
    spec = tomllib.loads(path.read_text(encoding="utf-8"))
    _known(spec, _KEYS, path.name)
    start = datetime.fromisoformat(spec.get("start", DEFAULT_START))
    readings: list[dict[str, Any]] = []
    if "readings" in spec:
        lines = (path.parent / spec["readings"]).read_text(encoding="utf-8").splitlines()
        readings.extend(json.loads(line) for line in lines if line.strip())
    timed = [item for stream in spec.get("stream", []) for item in _stream(stream, start)]
    timed.sort(key=lambda item: item[0])  # stable: streams of one second keep their order
    first_seq = len(readings) + 1
    readings.extend(_reading(seq, at, fields) for seq, (at, fields) in enumerate(timed, first_seq))
    return Scenario(
        name=path.stem,
        description=spec["description"],
        start=start,
        config=path.parent / spec["config"] if "config" in spec else None,
        until=when(spec["until"], start) if "until" in spec else None,
        readings=readings,
        expected=[_event(row, start) for row in spec["expect"]],
    )


def timeline(payloads: list[dict[str, Any]]) -> list[Event]:
    """The rows of the `alerts` payloads `replay` printed: each at its `updated_at` (the
    time of that change)."""
    return [
        Event(
            at=datetime.fromisoformat(p["updated_at"]),
            kind=p["kind"],
            state=p["state"],
            severity=p["severity"] or NONE,
            subject=p["subject"] or NONE,
        )
        for p in payloads
    ]


def when(text: str, start: datetime) -> datetime:
    """`75 s`, `1 min 15 s`... after `start`, or an RFC 3339 time."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return start + duration(text)


def duration(text: str) -> timedelta:
    pieces = _PIECE.findall(text)
    if not pieces or _PIECE.sub("", text).strip():
        raise ValueError(f"{text!r} is not a duration like '90 s', '1 min 30 s', '4 h', '2 d'")
    return timedelta(seconds=sum(float(n) * _UNITS[unit] for n, unit in pieces))


def offset(at: datetime, start: datetime) -> str:
    """The inverse of `when` for times after `start`: `1 min 15 s`."""
    seconds = (at - start).total_seconds()
    if seconds < 0:
        return at.isoformat()
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count:g} {unit}")
    return " ".join(parts) or "0 s"


def _event(row: list[str], start: datetime) -> Event:
    at, kind, state, severity, subject = row
    return Event(when(at, start), kind, state, severity, subject)


def _stream(spec: dict[str, Any], start: datetime) -> list[tuple[datetime, dict[str, Any]]]:
    """(time, fields) of each reading of one `[[stream]]`."""
    _known(spec, _STREAM_KEYS, "[[stream]] (a key after it belongs to it: timeline first)")
    every = timedelta(seconds=spec.get("every_s", 1))
    at = when(spec["from"], start) if "from" in spec else start
    metric = Metric(spec["metric"])
    out = []
    for step in spec["steps"]:
        match = _STEP.match(step.strip())
        if match is None:
            raise ValueError(
                f"step {step!r}: not 'VALUE [for DURATION | until TIME] [(FLAG [at S, ...])]'"
            )
        length = _length(match, at, start, every)
        if match["value"] == "nothing":
            at += length
            continue
        word = match["value"]
        value = _VALUES[word] if word in _VALUES else float(word)
        flags = _flags(match["flags"] or "")
        elapsed = timedelta(0)
        while elapsed < length:
            quality = sorted(
                flag for flag, at_s in flags if at_s is None or at_s == elapsed.total_seconds()
            )
            fields = {
                "device": spec["device"],
                "subject": spec.get("subject"),
                "metric": metric.value,
                "value": value,
                "unit": UNITS[metric],
                "site": spec.get("site"),
                "quality": quality,
            }
            out.append((at + elapsed, fields))
            elapsed += every
        at += length
    return out


def _length(step: re.Match[str], at: datetime, start: datetime, every: timedelta) -> timedelta:
    """How long a step lasts: `for` a duration, `until` a time, or one reading's `every_s`."""
    if step["duration"]:
        return duration(step["duration"])
    if not step["until"]:
        return every
    length = when(step["until"], start) - at
    if length <= timedelta(0):
        raise ValueError(f"step {step[0]!r}: {step['until']} is not after {at.isoformat()}")
    return length


def _known(spec: dict[str, Any], keys: set[str], where: str) -> None:
    if unknown := sorted(spec.keys() - keys):
        raise ValueError(f"{where}: unknown keys {unknown} (allowed: {sorted(keys)})")


def _flags(text: str) -> list[tuple[str, float | None]]:
    """`poor_signal at 5, 9; probe_off` -> (flag, seconds into the step or None: all)."""
    out: list[tuple[str, float | None]] = []
    for group in filter(None, (g.strip() for g in text.split(";"))):
        flag, _, times = group.partition(" at ")
        Quality(flag.strip())  # a misspelt flag fails here, not as a silent good value
        if not times:
            out.append((flag.strip(), None))
        out.extend((flag.strip(), float(t)) for t in times.split(",") if t.strip())
    return out


def _reading(seq: int, at: datetime, fields: dict[str, Any]) -> dict[str, Any]:
    """A reading object exactly as the gateway publishes it (`Reading.payload()`)."""
    return {
        "id": f"{GATEWAY}-{seq}",
        "seq": seq,
        **fields,
        "measured_at": None,
        "received_at": at.isoformat(timespec="milliseconds"),
        "clock": "synced",
    }
