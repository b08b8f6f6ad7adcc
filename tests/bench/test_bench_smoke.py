"""The benchmark still runs against the current gateway (a tiny run; no timing is
asserted: figures from a shared machine say nothing about correctness)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_benchmark_runs_and_prints_every_row_with_its_goal() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--readings", "300", "--household-s", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stdout + done.stderr
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
