"""`bedside-gateway replay`: recorded readings through the real rules, the clock ticking
through the gaps; every alert event printed as its `alerts` payload, or one line naming
the bad input line and exit 2. The scenarios of tests/scenarios/ are its timelines."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.model import Alert, AlertKind, Instant, Reading
from gateway.replay import replay
from gateway.rules.engine import RuleEngine
from tests.conftest import REPO
from tests.gateway.helpers import T0, reading
from tests.scenarios.build import Scenario, load, scenario_files, timeline


def run_replay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; in UTC, so a replay without a configuration (the
    system's time zone) is the same on every machine."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "replay", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "TZ": "UTC"},
    )


def replayed(*args: str | Path) -> list[dict[str, Any]]:
    """The events printed by a replay that must succeed."""
    done = run_replay(*args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [json.loads(line) for line in done.stdout.splitlines()]


def scenario_args(scenario: Scenario, tmp_path: Path) -> list[str | Path]:
    args: list[str | Path] = [scenario.write_readings(tmp_path / f"{scenario.name}.jsonl")]
    if scenario.config is not None:
        args += ["--config", scenario.config]
    if scenario.until is not None:
        args += ["--until", scenario.until.isoformat()]
    return args


def assert_lifecycle(payloads: list[dict[str, Any]]) -> None:
    """Complete `alerts` payloads; one open alert per (kind, subject): a raised alert
    has a new id, its later events carry it; a clear closes it."""
    open_ids: dict[tuple[str, str], str] = {}
    seen: set[str] = set()
    for p in payloads:
        assert Alert.from_payload(p).payload() == p
        key = (p["kind"], p["subject"] or f"device:{p['device']}")
        if p["state"] == "raised":
            assert key not in open_ids and p["id"] not in seen, f"raised twice: {p}"
            open_ids[key] = p["id"]
            seen.add(p["id"])
        else:
            assert open_ids.get(key) == p["id"], f"{p['state']} of no open alert: {p}"
            if p["state"] == "cleared":
                del open_ids[key]


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_scenario_timeline(path: Path, tmp_path: Path) -> None:
    scenario = load(path)
    payloads = replayed(*scenario_args(scenario, tmp_path))
    got = timeline(payloads)
    if got != scenario.expected:
        rows = "\n".join(
            [
                "expected:",
                *map(scenario.row, scenario.expected),
                "printed:",
                *map(scenario.row, got),
            ]
        )
        pytest.fail(f"{scenario.name}: the timeline differs\n{rows}")
    assert_lifecycle(payloads)


# --- what is read ----------------------------------------------------------------------

FEVER = load(REPO / "tests" / "scenarios" / "fever.toml")
SPO2 = load(REPO / "tests" / "scenarios" / "low_spo2_sustained.toml")


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_each_event_is_the_alerts_payload_with_its_id_times_and_evidence(tmp_path: Path) -> None:
    raised, updated, cleared = replayed(FEVER.write_readings(tmp_path / "fever.jsonl"))
    alert_id = "fever:bed-1:" + str(int(FEVER.start.timestamp() * 1000))
    assert raised == {
        "id": alert_id,
        "kind": "fever",
        "class": "physiological",
        "state": "raised",
        "severity": "warning",
        "subject": "bed-1",
        "device": "hts-f00000000001",
        "value": 37.5,
        "threshold": 37.3,
        "site": "axillary",
        "raised_at": "2026-11-22T08:00:00.000+00:00",
        "updated_at": "2026-11-22T08:00:00.000+00:00",
        "cleared_at": None,
        "evidence": ["gw-scenario-1"],
        "detail": None,
        "acknowledged_by": None,
        "acknowledged_at": None,
    }
    assert (updated["id"], updated["value"], updated["evidence"]) == (
        alert_id,
        39.2,
        ["gw-scenario-1", "gw-scenario-2"],
    )
    assert (cleared["id"], cleared["cleared_at"]) == (alert_id, "2026-11-22T20:00:00.000+00:00")


def test_readings_in_arrival_order_are_replayed_in_received_at_order(tmp_path: Path) -> None:
    in_order = replayed(SPO2.write_readings(tmp_path / "in_order.jsonl"), "--config", SPO2.config)
    lines = [json.dumps(r) for r in SPO2.readings]
    # the gateway sends live readings ahead of its backlog: the capture's order
    arrival = lines[100:] + lines[:100]
    random.Random(7).shuffle(arrival)
    shuffled = replayed(write_lines(tmp_path / "arrival.jsonl", arrival), "--config", SPO2.config)
    assert shuffled == in_order
    assert [p["state"] for p in in_order] == ["raised", "updated", "cleared"]


def test_a_tail_capture_and_whole_messages_replay_like_readings(tmp_path: Path) -> None:
    """What `bedside-gateway tail` printed on the township side after an outage: live
    messages ahead of the backlog, other topics passed over, a message sent twice (at
    least once) replayed once (else its readings would count twice as evidence)."""
    plain = replayed(SPO2.write_readings(tmp_path / "plain.jsonl"), "--config", SPO2.config)
    root = "vitals/v1/river-town/gw-scenario"
    oximeter = "plx-f00000000002"

    def line(topic: str, payload: Any, retained: bool = False) -> str:
        return json.dumps({"topic": f"{root}/{topic}", "payload": payload, "retained": retained})

    def message(n: int) -> dict[str, Any]:
        """The n-th 30 s of the scenario as one message."""
        return {"gateway": "gw-scenario", "device": oximeter, "backlog": n < 3,
                "readings": SPO2.readings[n * 30 : n * 30 + 30]}  # fmt: skip

    capture = [
        line("status", {"gateway": "gw-scenario", "state": "offline"}, retained=True),
        *(line(f"readings/{oximeter}", message(n)) for n in (3, 4, 5)),  # live first
        line("alerts", plain[0]),
        *(line(f"readings/{oximeter}", message(n)) for n in (0, 1, 2)),  # then the backlog
        json.dumps(message(2)),  # the breach's message again: a whole message on its own
    ]
    events = replayed(write_lines(tmp_path / "capture.jsonl", capture), "--config", SPO2.config)
    assert events == plain


def test_until_runs_the_clock_on_and_leaves_later_readings_out(tmp_path: Path) -> None:
    path = FEVER.write_readings(tmp_path / "fever.jsonl")
    events = replayed(path, "--until", "2026-11-22T14:00:00+00:00")
    assert [(p["state"], p["severity"]) for p in events] == [
        ("raised", "warning"),
        ("updated", "high"),
    ]


def test_replay_writes_no_store_and_never_calls_the_broker(tmp_path: Path) -> None:
    with socket.socket() as broker:
        broker.bind(("127.0.0.1", 0))
        broker.listen()
        config = tmp_path / "gateway.toml"
        config.write_text(
            (REPO / "tests" / "scenarios" / "configs" / "bed1_oximeter.toml")
            .read_text(encoding="utf-8")
            .replace('"/nonexistent/replay"', json.dumps(str(tmp_path / "data")))
            + f'\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker.getsockname()[1]}"\n',
            encoding="utf-8",
        )
        events = replayed(SPO2.write_readings(tmp_path / "spo2.jsonl"), "--config", config)
        broker.setblocking(False)
        with pytest.raises(BlockingIOError):
            broker.accept()  # nobody connected
    assert [p["state"] for p in events] == ["raised", "updated", "cleared"]
    assert not (tmp_path / "data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.toml", "spo2.jsonl"]


# --- bad input: one line naming it, exit 2, no events ----------------------------------


def spo2_line(**changes: Any) -> str:
    return json.dumps({**SPO2.readings[0], **changes})


def without(field: str) -> str:
    return json.dumps({k: v for k, v in SPO2.readings[0].items() if k != field})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "{'id': 'gw-1'}",
            "line 3: not JSON: Expecting property name enclosed in double quotes (column 2)",
        ),
        ("[1, 2]", "line 3: not a JSON object"),
        (without("received_at"), "line 3: received_at: missing"),
        (
            spo2_line(metric="spo3"),
            "line 3: metric: Input should be 'spo2', 'pulse_rate',"
            " 'perfusion_index', 'body_temperature', 'door_open' or 'battery' (got \"spo3\")",
        ),
        (
            spo2_line(received_at="2026-11-22T08:00:00.000"),
            "line 3: received_at: '2026-11-22T08:00:00.000' has no zone offset",
        ),
        (spo2_line(value="97"), 'line 3: value: Input should be a valid number (got "97")'),
        (spo2_line(recieved_at="x"), "line 3: recieved_at: unknown field"),
        (
            json.dumps(
                {
                    "gateway": "gw",
                    "device": "d",
                    "backlog": False,
                    "readings": [SPO2.readings[0], {**SPO2.readings[1], "seq": "2"}],
                }
            ),
            'line 3: readings[1].seq: Input should be a valid integer (got "2")',
        ),
        (
            json.dumps({"topic": "v/t/gw/readings/d", "payload": "garbage", "retained": False}),
            'line 3: payload: Input should be an object (got "garbage")',
        ),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "missing-field",
        "bad-metric",
        "time-without-zone",
        "value-a-string",
        "misspelt-field",
        "bad-reading-in-a-message",
        "tail-line-not-a-message",
    ],
)
def test_a_bad_line_is_named_and_nothing_is_printed(tmp_path: Path, bad: str, message: str) -> None:
    """The first two lines raise a fever: no event of a file with a bad line is printed."""
    fever = [json.dumps(r) for r in FEVER.readings[:2]]
    done = run_replay(write_lines(tmp_path / "bad.jsonl", [*fever, bad, *fever]))
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")


def test_a_time_without_zone_for_until_is_refused() -> None:
    done = run_replay(REPO / "tests" / "scenarios" / "fever.jsonl", "--until", "2026-11-22T14:00")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "--until: '2026-11-22T14:00' has no zone offset\n"


# --- the simulated clock ----------------------------------------------------------------


class ClockProbe:
    """A rule that raises nothing and notes what it is shown, in order."""

    kind = AlertKind.DEVICE_SILENT
    metrics = None

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def on_reading(self, r: Reading) -> list[Alert]:
        self.seen.append(("reading", r.rule_time - T0.timestamp()))
        return []

    def on_tick(self, now: Instant) -> list[Alert]:
        assert now.rule == now.wall.timestamp() and now.wall.utcoffset() == timedelta(0)
        self.seen.append(("tick", now.rule - T0.timestamp()))
        return []

    def restore(self, alert: Alert) -> None: ...

    def open_alerts(self) -> list[Alert]:
        return []

    def save_state(self, epoch_offset: float) -> None: ...

    def load_state(self, state: object, epoch_offset: float) -> None: ...


def ticks_of(readings: list[Reading], until: datetime | None = None) -> list[tuple[str, float]]:
    probe = ClockProbe()
    assert list(replay(readings, RuleEngine([probe]), until)) == []
    return probe.seen


def test_the_clock_ticks_every_second_between_readings_and_on_to_until() -> None:
    readings = [reading(1, at_s=0.0), reading(2, at_s=3.5), reading(3, at_s=4.0)]
    assert ticks_of(readings, until=T0 + timedelta(seconds=6.5)) == [
        ("reading", 0.0),
        ("tick", 1.0),
        ("tick", 2.0),
        ("tick", 3.0),
        ("reading", 3.5),
        ("tick", 4.0),  # time reaches 4 s before the reading received then
        ("reading", 4.0),
        ("tick", 5.0),
        ("tick", 6.0),
    ]
    assert ticks_of(readings)[-1] == ("reading", 4.0)  # no --until: ends at the last reading


def test_a_long_gap_is_ticked_through_once_per_second() -> None:
    day = 86400.0
    seen = ticks_of([reading(1, at_s=0.0), reading(2, at_s=day)], until=T0 + timedelta(days=2))
    ticks = [t for what, t in seen if what == "tick"]
    assert ticks == [float(s) for s in range(1, 2 * 86400 + 1)]
