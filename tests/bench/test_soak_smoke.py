"""The soak still runs against the current gateway: a few simulated minutes, both broker
outages included. No figure is asserted: memory on a shared machine says nothing about
correctness, and the soak itself says whether RSS stayed flat."""

from __future__ import annotations

from tests.bench.helpers import run_module


def test_the_soak_runs_through_both_outages_and_reports_rss_over_time() -> None:
    done = run_module("bench", "soak", "--minutes", "3", "--speed", "30", timeout=170)
    assert "32,400 readings" in done.stdout, done.stdout
    assert "RSS after warm-up" in done.stdout, done.stdout
