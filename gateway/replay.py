"""`bedside-gateway replay`: readings as the township server received them, fed through
the gateway's own rules on a simulated clock; every alert event printed as one JSON line
(the `alerts` payload).

Input: one JSON object per line, each either a reading (the contract's `Reading`), a
whole `readings/<device>` message (`ReadingMessage`), or a line of `bedside-gateway
tail` (`{"topic", "payload", "retained"}`: its readings messages are read, every other
topic is passed over). Blank lines are skipped.

- The whole file is read and checked before the rules run: a bad line ends the replay
  with `line N: what is wrong` and no event at all, so a timeline printed is always the
  timeline of the whole file.
- Readings are replayed in `received_at` order (a stable sort): a capture is in arrival
  order, and the gateway sends live readings ahead of its backlog. A reading repeated
  as it was (a resend: delivery is at least once) is replayed once.
- Two passes over the file: the first checks every line and keeps only each reading's
  time and place in the file (about 60 bytes a reading), the second reads them again in
  time order. A fortnight of a 1 Hz oximeter (1.2 M readings) replays in about 60 MB,
  not the 800 MB its readings took held in memory; standard input cannot be replayed.
- The rules' clock is `received_at` (`Reading.rule_time` without a monotonic clock), and
  it ticks at every whole second from the first reading to the last (to `until` when
  given), so rules on time passing (a device silent, a door held open, a missed
  measurement) fire in the gaps as they would have in the gateway. Readings after
  `until` are left out.
- Nothing is written to any store and nothing is sent to any broker.
"""

from __future__ import annotations

import json
import math
import sys
from array import array
from collections.abc import Iterable, Iterator
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import BinaryIO, TextIO

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from drivers.measurement import Measurement
from gateway.config import Config, load_config
from gateway.contract import models as contract
from gateway.model import Alert, Instant, Reading
from gateway.rules.engine import RuleEngine
from gateway.rules.registry import RulesSection
from gateway.subjects import SubjectDirectory


class BadLine(ValueError):
    """A line of the input that is not a reading: `line N: what is wrong`."""


def run_replay(path: str, config_path: str | None, until: str | None, out: TextIO) -> int:
    """The command: exit 0 with the events on `out`, or 2 with one line on stderr (a
    configuration error is raised: the command line reports those)."""
    try:
        end = None if until is None else parse_time(until)
    except ValueError as exc:
        print(f"--until: {exc}", file=sys.stderr)
        return 2
    engine = rule_engine(None if config_path is None else load_config(config_path))
    try:
        with open(path, "rb") as file:
            readings = ReadingsFile(file)
            for alert in replay(readings, engine, end):
                out.write(json.dumps(alert.payload()) + "\n")
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except BadLine as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def parse_time(text: str) -> datetime:
    """An RFC 3339 date-time; ValueError when it is not one or has no zone offset."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"{text!r} has no zone offset")
    return at


def rule_engine(config: Config | None) -> RuleEngine:
    """The gateway's rules as `config` sets them (subjects, bindings, `[rules]`, time
    zone); without one, the defaults, no subject described and no device bound (each
    reading names its subject), in the system's time zone."""
    if config is not None:
        return RuleEngine.configured(config.rules, SubjectDirectory.from_config(config))
    rules = RulesSection()
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return RuleEngine.configured(rules, SubjectDirectory(rules, zone))


class ReadingsFile:
    """The readings of a file, every line checked first (`BadLine` on the first that is
    not a reading, a readings message or a `tail` line), then read in `received_at`
    order (stable), a reading repeated as it was read once."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        #: Per reading: its time (Unix s), the offset of its line, its place in the line.
        self._times = array("d")
        self._offsets = array("q")
        self._places = array("i")
        self._in_order = True
        offset = 0
        for number, raw in enumerate(file, 1):
            try:
                items = _parse_line(raw.decode("utf-8")) if raw.strip() else []
            except UnicodeDecodeError:
                raise BadLine(f"line {number}: not UTF-8 text") from None
            except ValueError as exc:
                raise BadLine(f"line {number}: {exc}") from None
            for place, item in enumerate(items):
                at = datetime.fromisoformat(item.received_at).timestamp()
                if self._times and at < self._times[-1]:
                    self._in_order = False
                self._times.append(at)
                self._offsets.append(offset)
                self._places.append(place)
            offset += len(raw)

    def __iter__(self) -> Iterator[Reading]:
        times, offsets, places = self._times, self._offsets, self._places
        order: Iterable[int] = range(len(times))
        if not self._in_order:
            order = sorted(order, key=times.__getitem__)

        @lru_cache(maxsize=256)
        def line(offset: int) -> list[contract.Reading]:
            """A line read again (a message's readings mostly come one after another)."""
            self._file.seek(offset)
            return _parse_line(self._file.readline().decode("utf-8"))

        #: A resend carries the reading's stored text, so its time too: look for it only
        #: among the readings of the same time.
        now, ids = math.nan, set[str]()
        for index in order:
            item = line(offsets[index])[places[index]]
            if times[index] != now:
                now, ids = times[index], set()
            if item.id not in ids:
                ids.add(item.id)
                yield _reading(item)


def replay(
    readings: Iterable[Reading], engine: RuleEngine, until: datetime | None = None
) -> Iterator[Alert]:
    """The alert events of `readings` (in `received_at` order), with the clock ticking
    at every whole second between them, then on to `until`."""
    next_tick: int | None = None
    zone: tzinfo | None = None
    for reading in readings:
        at = reading.rule_time
        if until is not None and reading.received_at > until:
            break
        if next_tick is None:
            next_tick = math.floor(at) + 1
        zone = reading.received_at.tzinfo
        while next_tick <= at:
            yield from engine.evaluate_tick(_instant(next_tick, zone))
            next_tick += 1
        yield from engine.evaluate([reading])
    if until is None or next_tick is None:
        return
    end = until.timestamp()
    while next_tick <= end:
        yield from engine.evaluate_tick(_instant(next_tick, zone))
        next_tick += 1


def _instant(second: int, zone: tzinfo | None) -> Instant:
    """A tick, its wall clock in the zone the readings' times were written in."""
    return Instant(datetime.fromtimestamp(second, zone), float(second))


def _parse_line(line: str) -> list[contract.Reading]:
    """The readings of one line (none for a `tail` line of another topic)."""
    try:
        return [contract.Reading.model_validate_json(line, strict=True)]
    except ValidationError as exc:
        as_reading = exc
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    within = ""
    if obj.keys() >= {"topic", "payload"}:  # a line of `bedside-gateway tail`
        topic = obj["topic"]
        if not isinstance(topic, str) or topic.split("/")[-2:-1] != ["readings"]:
            return []
        obj, within = obj["payload"], "payload"
    elif "readings" not in obj:
        raise ValueError(_first_error(as_reading))
    try:
        message = contract.ReadingMessage.model_validate_json(json.dumps(obj), strict=True)
    except ValidationError as exc:
        raise ValueError(_first_error(exc, within)) from None
    return message.readings


def _reading(item: contract.Reading) -> Reading:
    """The contract's reading as the rules see it. Its device time is the device's own
    clock (the gateway added its local offset only to publish it): the offset goes."""
    measured_at = None
    if item.measured_at is not None:
        measured_at = datetime.fromisoformat(item.measured_at).replace(tzinfo=None)
    return Reading(
        seq=item.seq,
        id=item.id,
        device=item.device,
        subject=item.subject,
        measurement=Measurement(
            item.metric, item.value, frozenset(item.quality), item.site, measured_at
        ),
        received_at=datetime.fromisoformat(item.received_at),
        clock=item.clock,
    )


_REASONS = {"missing": "missing", "extra_forbidden": "unknown field"}


def _first_error(exc: ValidationError, within: str = "") -> str:
    """`<field>: <what is wrong>` for the first error; an unknown field first, as a
    misspelt field also shows as the right one missing."""
    errors = exc.errors()
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    where = _path(error, within)
    if error["type"] in _REASONS:
        reason = _REASONS[error["type"]]
    elif error["type"] == "value_error":
        reason = str(error["ctx"]["error"])
    else:
        reason = f"{error['msg']} (got {json.dumps(error['input'])[:60]})"
    return f"{where}: {reason}" if where else reason


def _path(error: ErrorDetails, within: str) -> str:
    """The field an error is about (`readings[3].value`), in `within` (the object it is
    part of). The objects of a readings line hold no objects but readings, so a name
    right after a field's name is pydantic's name of the union member it tried
    (`value.float`): left out."""
    path, named = within, False
    for part in error["loc"]:
        if isinstance(part, int):
            path, named = f"{path}[{part}]", False
        elif named:
            break
        else:
            path, named = (f"{path}.{part}" if path else part), True
    return path
