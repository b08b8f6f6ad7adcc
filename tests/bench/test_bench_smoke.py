"""The benchmark still runs against the current gateway (a tiny run; no timing is
asserted: figures from a shared machine say nothing about correctness)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_benchmark_runs_and_prints_every_row() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--readings", "300"],
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
        "headroom",
    ):
        assert row in done.stdout, f"no {row!r} row:\n{done.stdout}"
    assert "FAILED" not in done.stdout
