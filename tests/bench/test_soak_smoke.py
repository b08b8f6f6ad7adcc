"""The soak still runs against the current gateway: a few simulated minutes, both broker
outages included. No figure is asserted: memory on a shared machine says nothing about
correctness, and the soak itself says whether RSS stayed flat."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_soak_runs_through_both_outages_and_reports_rss_over_time() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "soak", "--minutes", "3", "--speed", "30"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "32,400 readings" in done.stdout, done.stdout
    assert "RSS after warm-up" in done.stdout, done.stdout
