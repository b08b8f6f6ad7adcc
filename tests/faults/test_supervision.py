"""A long-lived part that ends unasked is logged with its cause, shown as a fault while
it is down, and started again; the watchdog is pinged only while every part runs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from drivers.backoff import Backoff
from gateway.supervision import Supervisor
from tests.gateway.helpers import until


class _FlakyPart:
    """Fails with `error` on its first `failures` runs, then runs until cancelled."""

    def __init__(self, failures: int, error: Exception | None) -> None:
        self.failures = failures
        self.error = error
        self.runs = 0
        self.release = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        await self.release.wait()
        if self.runs <= self.failures:
            if self.error is not None:
                raise self.error
            return  # ends without being asked: also a fault
        await asyncio.Event().wait()


@pytest.mark.asyncio
async def test_a_part_that_raises_is_logged_shown_as_a_fault_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(Backoff(0.2, 0.2))
    part = _FlakyPart(1, OSError(28, "No space left on device"))
    supervisor.start("uplink", part.run)
    await until(lambda: part.runs == 1, 5, "the first run")
    assert supervisor.all_alive() and supervisor.faults() == []
    with caplog.at_level(logging.ERROR):
        part.release.set()
        await until(lambda: supervisor.faults(), 5, "the fault")
    (fault,) = supervisor.faults()
    assert fault.part == "uplink" and "No space left on device" in fault.reason
    assert not supervisor.all_alive()
    (record,) = [r for r in caplog.records if r.getMessage().startswith("part stopped")]
    assert record.__dict__["part"] == "uplink" and record.exc_info is not None
    await until(lambda: part.runs == 2, 5, "the restart")
    assert supervisor.faults() == [] and supervisor.all_alive()
    assert supervisor.restarts() == {"uplink": 1}
    await supervisor.stop("uplink")


@pytest.mark.asyncio
async def test_a_part_that_returns_unasked_is_a_fault_too() -> None:
    supervisor = Supervisor(Backoff(0.2, 0.2))
    part = _FlakyPart(1, None)
    part.release.set()
    supervisor.start("pipeline", part.run)
    await until(lambda: supervisor.faults(), 5, "the fault")
    assert supervisor.faults()[0].reason == "ended"
    await until(lambda: part.runs == 2 and supervisor.all_alive(), 5, "the restart")
    await supervisor.stop("pipeline")
    assert supervisor.faults() == []


@pytest.mark.asyncio
async def test_a_part_failing_again_and_again_logs_its_traceback_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(Backoff(0.05, 0.05))
    part = _FlakyPart(4, RuntimeError("broken"))
    part.release.set()
    with caplog.at_level(logging.ERROR):
        supervisor.start("web", part.run)
        await until(lambda: part.runs == 5, 10, "four failures and a fifth run")
    failures = [r for r in caplog.records if r.getMessage().startswith("part stopped")]
    assert len(failures) == 4
    assert [r.exc_info is not None for r in failures] == [True, False, False, False]
    await supervisor.stop("web")


@pytest.mark.asyncio
async def test_a_stopped_part_is_not_restarted_and_a_reported_fault_lasts_until_resolved() -> None:
    supervisor = Supervisor(Backoff(0.05, 0.05))
    finished = asyncio.Event()

    async def finishes_when_asked() -> None:
        await finished.wait()

    supervisor.start("pipeline", finishes_when_asked)
    supervisor.report("store", "disk full")
    supervisor.report("store", "disk full: 12 readings held in memory")
    (fault,) = supervisor.faults()
    assert fault.reason.endswith("held in memory")
    finished.set()
    await supervisor.stop("pipeline", cancel=False)
    await asyncio.sleep(0.2)  # longer than the back-off: a restart would have come
    assert [f.part for f in supervisor.faults()] == ["store"]
    supervisor.resolve("store")
    assert supervisor.faults() == [] and supervisor.all_alive()
