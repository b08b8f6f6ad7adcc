"""Alerts are raised, updated and cleared as the clinical rules say, and only on
trustworthy values."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from drivers.measurement import Metric, Quality, Site
from gateway.clock import ClockWatch
from gateway.config import parse_config
from gateway.devices import DeviceRegistry
from gateway.ledger import LedgerBook
from gateway.model import Alert, AlertKind, AlertState, ClockState, Instant, Reading, Severity
from gateway.pipeline import Pipeline
from gateway.rules.base import HeldAlerts, new_alert_id, snapshot
from gateway.rules.engine import RuleEngine
from gateway.rules.fever import FeverAlerts, FeverParams
from gateway.store import StoreThread
from gateway.subjects import SubjectDirectory
from tests.gateway.helpers import T0, at, reading, rules_config, rules_engine, until

TEMP = Metric.BODY_TEMPERATURE


def configured() -> RuleEngine:
    """The gateway's rules with their default parameters."""
    return rules_engine()


def spo2_series(values: list[float], start_seq: int = 1, start_s: float = 0.0, **kw):  # type: ignore[no-untyped-def]
    return [reading(start_seq + i, value=v, at_s=start_s + i, **kw) for i, v in enumerate(values)]


def test_low_spo2_raises_only_after_15_seconds_of_valid_low_samples() -> None:
    engine = configured()
    assert engine.evaluate(spo2_series([92] * 15)) == []  # 0..14 s: not yet 15 s
    (alert,) = engine.evaluate(spo2_series([92], start_seq=16, start_s=15))
    assert alert.state is AlertState.RAISED and alert.severity is Severity.HIGH
    assert alert.kind.value == "low_spo2" and alert.subject == "bed-1"
    assert alert.threshold == 93 and alert.value == 92
    assert alert.evidence[-1] == "gw-test-16" and len(alert.evidence) == 16


def test_a_brief_dip_does_not_alert() -> None:
    engine = configured()
    assert engine.evaluate(spo2_series([97, 91, 90, 91, 96] + [92] * 10 + [97] * 30)) == []


def test_probe_off_samples_never_start_the_timer() -> None:
    engine = configured()
    flagged = spo2_series([85] * 60, quality=frozenset({Quality.PROBE_OFF}))
    assert engine.evaluate(flagged) == []


def test_a_flagged_sample_within_a_breach_neither_counts_nor_restarts_it() -> None:
    engine = configured()
    mixed = spo2_series([92] * 10, start_seq=100, start_s=100)
    mixed += [reading(110, value=85, at_s=110, quality=frozenset({Quality.PROVISIONAL}))]
    mixed += spo2_series([92] * 10, start_seq=111, start_s=111)
    (alert,) = engine.evaluate(mixed)
    # 15 s from the breach's first sample (100 s), the flagged second included.
    assert alert.state is AlertState.RAISED and alert.raised_at == T0 + timedelta(seconds=115)
    assert alert.severity is Severity.HIGH  # the flagged 85 % did not count
    assert "gw-test-110" not in alert.evidence and alert.evidence[0] == "gw-test-100"


def test_a_gap_in_samples_restarts_the_count() -> None:
    engine = configured()
    series = spo2_series([92] * 10) + spo2_series([92] * 10, start_seq=11, start_s=30)
    assert engine.evaluate(series) == []


def test_low_spo2_escalates_to_critical_then_clears_after_60_s_recovered() -> None:
    engine = configured()
    raised = engine.evaluate(spo2_series([92] * 16))
    assert [a.state for a in raised] == [AlertState.RAISED]
    (updated,) = engine.evaluate(spo2_series([87], start_seq=17, start_s=16))
    assert updated.state is AlertState.UPDATED and updated.severity is Severity.CRITICAL
    assert updated.id == raised[0].id
    # 94 % is not recovered (hysteresis): nothing clears.
    assert engine.evaluate(spo2_series([94] * 70, start_seq=18, start_s=17)) == []
    recovering = spo2_series([96] * 61, start_seq=100, start_s=87)
    (cleared,) = engine.evaluate(recovering)
    assert cleared.state is AlertState.CLEARED and cleared.id == raised[0].id
    assert cleared.cleared_at == recovering[-1].received_at


def test_each_subject_has_its_own_alert() -> None:
    engine = configured()
    bed1 = spo2_series([90] * 16, subject="bed-1")
    bed2 = spo2_series([97] * 16, start_seq=100, subject="bed-2", device="plx-other")
    alerts = engine.evaluate([r for pair in zip(bed1, bed2, strict=True) for r in pair])
    assert [a.subject for a in alerts] == ["bed-1"]


def test_fever_uses_the_line_of_the_measurement_site() -> None:
    engine = configured()
    axillary = reading(1, TEMP, 37.3, site=Site.AXILLARY)
    oral = reading(2, TEMP, 37.5, site=Site.ORAL, subject="bed-2")
    alerts = engine.evaluate([axillary, oral])
    assert [(a.subject, a.state, a.threshold, a.site) for a in alerts] == [
        ("bed-1", AlertState.RAISED, 37.3, "axillary")
    ]


def test_fever_grades_clears_and_ignores_intermediate_values() -> None:
    engine = configured()
    intermediate = reading(
        1, TEMP, 39.5, site=Site.AXILLARY, quality=frozenset({Quality.INTERMEDIATE})
    )
    assert engine.evaluate([intermediate]) == []
    (raised,) = engine.evaluate([reading(2, TEMP, 38.0, site=Site.AXILLARY)])
    assert raised.severity is Severity.WARNING
    (updated,) = engine.evaluate([reading(3, TEMP, 39.4, site=Site.AXILLARY, at_s=600)])
    assert updated.state is AlertState.UPDATED and updated.severity is Severity.HIGH
    (cleared,) = engine.evaluate([reading(4, TEMP, 36.8, site=Site.AXILLARY, at_s=7200)])
    assert cleared.state is AlertState.CLEARED and cleared.id == raised.id
    assert cleared.evidence == ["gw-test-2", "gw-test-3", "gw-test-4"]


def test_a_temperature_without_a_site_raises_fever_only_at_the_highest_site_line() -> None:
    engine = configured()
    assert engine.evaluate([reading(1, TEMP, 37.9, site=None)]) == []
    (alert,) = engine.evaluate([reading(2, TEMP, 38.0, site=None, at_s=60)])
    assert (alert.state, alert.threshold, alert.site) == (AlertState.RAISED, 38.0, None)


def test_an_active_alert_is_resumed_after_a_restart_and_clears() -> None:
    first = configured()
    (raised,) = first.evaluate([reading(1, TEMP, 38.0, site=Site.AXILLARY)])
    second = configured()
    second.restore([raised.payload()])
    (cleared,) = second.evaluate([reading(2, TEMP, 36.5, site=Site.AXILLARY, at_s=60)])
    assert cleared.id == raised.id and cleared.state is AlertState.CLEARED


def test_replaying_the_same_readings_gives_the_same_alerts() -> None:
    series = spo2_series([97] * 5 + [91] * 20 + [96] * 70)
    a = [x.payload() for x in configured().evaluate(series)]
    b = [x.payload() for x in configured().evaluate(series)]
    assert a == b and [x["state"] for x in a] == ["raised", "cleared"]


def test_a_steady_fever_does_not_repeat_itself() -> None:
    engine = configured()
    steady = [reading(i, TEMP, 38.2, site=Site.AXILLARY, at_s=i * 5) for i in range(1, 6)]
    assert [a.state for a in engine.evaluate(steady)] == [AlertState.RAISED]


class OverdueRound(HeldAlerts):
    """A rule driven by time alone: raised on the first tick at or after `due`. It
    borrows an existing alert kind, being the only rule of its engine."""

    kind = AlertKind.LOW_SPO2

    def __init__(self, due: datetime) -> None:
        super().__init__()
        self.due = due
        self.ticks: list[datetime] = []
        self._alert: Alert | None = None

    def on_reading(self, reading: Reading) -> list[Alert]:
        return []

    def on_tick(self, instant: Instant) -> list[Alert]:
        now = instant.wall
        self.ticks.append(now)
        if self._alert is not None or now < self.due:
            return []
        self._alert = Alert(
            id=new_alert_id(self.kind, "bed-9", now),
            kind=self.kind,
            subject="bed-9",
            device="cms50-usb-absent-cms50",
            severity=Severity.WARNING,
            state=AlertState.RAISED,
            raised_at=now,
            updated_at=now,
            value=0.0,
            threshold=0.0,
        )
        return [snapshot(self._alert)]


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[StoreThread]:
    """The gateway's store on a SQLite file of the test's own."""
    thread = StoreThread(tmp_path / "gateway.sqlite3", 64 * 1024 * 1024)
    await thread.open()
    yield thread
    await thread.close()


@pytest.mark.asyncio
async def test_a_tick_reaches_the_rules_with_the_given_time_and_its_alert_is_saved_and_announced(
    tmp_path: Path, store: StoreThread
) -> None:
    config = parse_config(
        {"gateway": {"id": "gw-test", "township": "t", "data_dir": str(tmp_path)}}, tmp_path
    )
    rule = OverdueRound(due=T0 + timedelta(minutes=30))
    announced: list[Alert] = []
    pipeline = Pipeline(
        config,
        store,
        DeviceRegistry(config.devices, config.mqtt.status_interval_s),
        RuleEngine([rule]),
        LedgerBook(SubjectDirectory.from_config(config), config.rules.missed_measurement),
        ClockWatch(lambda: ClockState.SYNCED),
        on_committed=lambda: None,
        on_alerts=announced.extend,
    )
    await pipeline.start()
    flushing = asyncio.create_task(pipeline.run())
    try:
        pipeline.evaluate_clock(at(0))
        pipeline.evaluate_clock(at(31 * 60))
        await until(lambda: announced, what="the overdue alert to be announced")
        pipeline.evaluate_clock(at(32 * 60))
    finally:
        pipeline.request_stop()
        await flushing
    assert rule.ticks == [T0 + timedelta(minutes=m) for m in (0, 31, 32)]
    (alert,) = announced
    assert alert.state is AlertState.RAISED and alert.raised_at == T0 + timedelta(minutes=31)
    # Saved as any alert change: active, and one event waiting in the uplink's outbox.
    (active,) = await store.call(store.store.active_alerts)
    assert active == alert.payload()
    (event,) = await store.call(store.store.undelivered_alert_events, 0, 10)
    assert json.loads(event.payload) == alert.payload()


def test_silence_neither_raises_nor_clears_the_reading_rules() -> None:
    engine = configured()
    (raised,) = engine.evaluate(spo2_series([90] * 16))
    assert raised.state is AlertState.RAISED
    assert engine.evaluate_tick(at(6 * 3600)) == []
    # Still active after the silence: readings clear it, as always.
    (cleared,) = engine.evaluate(spo2_series([96] * 61, start_seq=17, start_s=21_600))
    assert cleared.state is AlertState.CLEARED and cleared.id == raised.id


def test_two_rules_raising_the_same_kind_of_alert_are_refused() -> None:
    with pytest.raises(ValueError, match="two rules raise 'fever' alerts"):
        context = SubjectDirectory.from_config(rules_config())
        RuleEngine([FeverAlerts(FeverParams(), context), FeverAlerts(FeverParams(), context)])
