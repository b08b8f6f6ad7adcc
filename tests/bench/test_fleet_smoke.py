"""The fleet bench still runs end to end: a tiny fleet (5 gateways of 2 devices, two
township consumers) through a broker restart and a consumer killed mid-run, every
reading the gateways committed found in the township's database. No figure is
asserted: the bench's rates and latencies on a shared machine say nothing about
correctness."""

from __future__ import annotations

import re

from tests.bench.helpers import run_module


def test_a_small_fleet_loses_no_reading_through_a_broker_restart_and_a_consumer_kill() -> None:
    done = run_module(
        "bench.fleet", "--gateways", "5", "--devices", "2", "--consumers", "2",
        "--seconds", "10", "--per-worker", "3", timeout=600,
    )  # fmt: skip
    assert "broker restarted" in done.stderr, done.stderr
    assert "consumer c2 killed and started again" in done.stderr, done.stderr
    committed = re.search(r"readings committed by the gateways\s+([\d,]+)", done.stdout)
    lost = re.search(r"lost \(committed, not in the database at the end\)\s+([\d,]+)", done.stdout)
    assert committed is not None and lost is not None, done.stdout
    # 5 gateways x 2 devices x 3 metrics a second, for about 10 s.
    assert int(committed[1].replace(",", "")) >= 250, done.stdout
    assert lost[1] == "0", done.stdout
