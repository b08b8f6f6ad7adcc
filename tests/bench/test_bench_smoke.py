"""The benchmark still runs against the current gateway (a tiny run; no timing is
asserted: figures from a shared machine say nothing about correctness)."""

from __future__ import annotations

from tests.bench.helpers import run_module


def test_the_benchmark_runs_and_prints_every_row_with_its_goal() -> None:
    done = run_module("bench", "--quick", "--readings", "300", "--household-s", "2", timeout=170)
    for row in (
        "baseline A",
        "baseline B",
        "gateway ingest",
        "gateway end to end",
        "backlog drain",
        "live latency",
        "peak RSS",
        "CPU per reading",
        "household: disk writes per reading",
        "household: CPU",
        "household: RSS",
        "idle latency: 60 devices",
        "headroom",
    ):
        assert row in done.stdout, f"no {row!r} row:\n{done.stdout}"
    assert "FAILED" not in done.stdout
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#  "))
    assert lines[header].split()[-2:] == ["goal", "met?"], done.stdout
    table = lines[header + 2 : lines.index("", header)]
    # Every gateway row with a goal says whether it met it: a household row that
    # measured nothing (no readings committed, no bytes) would show no figure at all.
    for key in ("2", "3", "5", "6", "7", "8", "9", "10"):
        line = next(line for line in table if line.split()[0] == key)
        assert line.split()[-1] in ("yes", "no"), line


def test_only_runs_the_rows_named_and_their_baselines() -> None:
    done = run_module("bench", "--quick", "--household-s", "2", "--only", "9", timeout=120)
    # Row 9's own run and its baseline (a child that only imports), nothing else.
    assert "[1/2] RSS with the gateway modules imported" in done.stderr, done.stderr
    assert "[2/2] household" in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#  "))
    table = lines[header + 2 : lines.index("", header)]
    assert [line.split()[0] for line in table] == ["9"], done.stdout
    assert "imports only" in table[0] and table[0].split()[-1] in ("yes", "no"), table[0]
    assert "headroom" not in done.stdout


def test_only_refuses_a_row_the_table_does_not_have() -> None:
    done = run_module("bench", "--only", "9,11", timeout=60, exit_status=2)
    assert "not 11" in done.stderr, done.stderr
