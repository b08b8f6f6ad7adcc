"""A real gateway service publishing to a real mosquitto, the township consumer storing
what it sends: once each, in seq order with the gaps said, alerts and state kept, and
the commands of the township's command line answered and recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from drivers.measurement import Measurement, Metric, Site
from gateway.broker import Mosquitto
from gateway.model import ClockState
from gateway.service import GatewayService
from gateway.township.store import (
    TownshipStore,
    alert_events,
    clock_corrections,
    command_results,
    commands,
    gateways,
    readings,
)
from tests.conftest import GatewayProcess, broker_with_acl
from tests.gateway.helpers import Clocks, until
from tests.gateway.test_commands import documented_acl
from tests.gateway.test_uplink import add_user
from tests.township.helpers import (
    GW,
    alert_states,
    broker_args,
    cli,
    consuming,
    gaps,
    gateway,
    gateway_config,
    measure,
    seqs,
    spo2,
)


@pytest.mark.asyncio
async def test_readings_resent_by_the_resend_command_are_stored_once(
    tmp_path: Path, mosquitto: Mosquitto, sqlite_file: str
) -> None:
    async with (
        consuming(mosquitto.port, sqlite_file) as consumer,
        gateway(tmp_path, mosquitto.port) as service,
    ):
        await spo2(service, 6)
        await until(lambda: seqs(consumer.store) == [1, 2, 3, 4, 5, 6], what="six stored")
        code, out, err = await cli(
            "command", GW, "resend", "--args", '{"from_seq": 1, "to_seq": 6}', "--wait", "20",
            *broker_args(mosquitto.port, sqlite_file),
        )  # fmt: skip
        assert code == 0, err
        result = json.loads(out)
        assert result["ok"] and result["result"] == {"requeued": 6}
        await until(lambda: consumer.counters["duplicates"] == 6, what="the resent six")
        assert seqs(consumer.store) == [1, 2, 3, 4, 5, 6]
        assert consumer.counters["refused_by_database"] == 0
        sent = consumer.store.rows(sa.select(commands.c.gateway, commands.c.name))
        assert [tuple(row) for row in sent] == [(GW, "resend")]
        (answer,) = consumer.store.rows(sa.select(command_results))
        assert answer.ok and answer.command == "resend" and answer.id == result["id"]


@pytest.mark.asyncio
async def test_a_gap_is_reported_and_closed_by_a_resend(
    tmp_path: Path, mosquitto: Mosquitto, sqlite_file: str
) -> None:
    """Readings published before the township ever subscribed never reached it: the gap
    shows in `township gaps` until the gateway sends them again."""
    async with gateway(tmp_path, mosquitto.port) as service:
        await spo2(service, 3)
        await until(lambda: service.uplink.health.delivered_readings == 3, what="published")
        async with consuming(mosquitto.port, sqlite_file) as consumer:
            await spo2(service, 2)
            await until(lambda: seqs(consumer.store) == [4, 5], what="the later two")
            assert gaps(consumer.store) == [(1, 3)]
            code, out, _ = await cli("gaps", "--database", sqlite_file)
            assert code == 0
            assert [line.split()[:4] for line in out.splitlines()[1:]] == [[GW, "1", "3", "3"]]

            code, _, err = await cli(
                "command", GW, "resend", "--args", '{"from_seq": 1, "to_seq": 3}',
                *broker_args(mosquitto.port, sqlite_file),
            )  # fmt: skip
            assert code == 0, err
            await until(lambda: seqs(consumer.store) == [1, 2, 3, 4, 5], what="the gap filled")
            assert gaps(consumer.store) == []
            code, out, _ = await cli("gaps", "--database", sqlite_file)
            assert out.strip() == "no open gaps"


@pytest.mark.asyncio
async def test_a_gap_still_open_once_the_gateway_sent_everything_is_asked_for_again(
    tmp_path: Path, mosquitto: Mosquitto, sqlite_file: str
) -> None:
    async with gateway(tmp_path, mosquitto.port) as service:
        await spo2(service, 3)
        await until(lambda: service.uplink.health.delivered_readings == 3, what="published")
        async with consuming(mosquitto.port, sqlite_file, repair_after_s=0.5) as consumer:
            await spo2(service, 2)
            await until(lambda: seqs(consumer.store) == [1, 2, 3, 4, 5], 30, "the gap filled")
            assert gaps(consumer.store) == []
            assert consumer.counters["resend_requests"] == 1
            sent = consumer.store.rows(sa.select(commands.c.name, commands.c.args))
            assert [tuple(row) for row in sent] == [("resend", {"from_seq": 1, "to_seq": 3})]
            await until(lambda: consumer.store.rows(sa.select(command_results)), what="result")
            (answer,) = consumer.store.rows(sa.select(command_results))
            assert answer.ok and answer.payload["result"] == {"requeued": 3}


@pytest.mark.asyncio
async def test_an_alert_raised_then_cleared(
    tmp_path: Path, mosquitto: Mosquitto, sqlite_file: str
) -> None:
    async with (
        consuming(mosquitto.port, sqlite_file) as consumer,
        gateway(tmp_path, mosquitto.port) as service,
    ):
        store = consumer.store
        await measure_temperature(service, 37.6)
        await until(lambda: alert_states(store) == {"fever": "raised"}, what="fever raised")
        code, out, _ = await cli("alerts", "--database", sqlite_file)
        assert code == 0 and "fever" in out and "bed-9" in out
        await measure_temperature(service, 36.6)
        await until(lambda: alert_states(store) == {"fever": "cleared"}, what="fever cleared")
        events = store.rows(sa.select(alert_events.c.state).order_by(alert_events.c.updated_ms))
        assert [state for (state,) in events] == ["raised", "cleared"]
        _, out, _ = await cli("alerts", "--database", sqlite_file)
        assert out.strip() == "no active alerts"


async def measure_temperature(service: GatewayService, value: float) -> None:
    await measure(service, Measurement(Metric.BODY_TEMPERATURE, value, site=Site.AXILLARY))


def state_of(store: TownshipStore, gateway_id: str = GW) -> str | None:
    rows = store.rows(sa.select(gateways.c.state).where(gateways.c.id == gateway_id))
    return rows[0].state if rows else None


@pytest.mark.asyncio
async def test_online_then_offline_on_a_clean_stop_and_by_the_last_will(
    tmp_path: Path, mosquitto: Mosquitto, sqlite_file: str
) -> None:
    async with consuming(mosquitto.port, sqlite_file) as consumer:
        store = consumer.store
        async with gateway(tmp_path / "clean", mosquitto.port):
            await until(lambda: state_of(store) == "online", what="online")
        await until(lambda: state_of(store) == "offline", what="offline after a clean stop")

        config = gateway_config(tmp_path / "killed", mosquitto.port, "gw-killed")
        process = GatewayProcess(config).start()
        try:
            await until(lambda: state_of(store, "gw-killed") == "online", 60, "online")
        finally:
            process.kill()
        await until(lambda: state_of(store, "gw-killed") == "offline", what="the Last Will")
        code, out, _ = await cli("gateways", "--database", sqlite_file)
        assert code == 0
        states = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:]}
        assert states == {GW: "offline", "gw-killed": "offline"}


@dataclass
class PiClock(Clocks):
    """A Pi's clocks, and whether the kernel calls the wall clock synchronised."""

    synced: bool = False

    def state(self) -> ClockState:
        return ClockState.SYNCED if self.synced else ClockState.UNSYNCED


@pytest.mark.asyncio
async def test_a_clock_correction_is_applied_to_the_readings_received_unsynced(
    tmp_path: Path, mosquitto: Mosquitto, sqlite_file: str
) -> None:
    clock = PiClock(wall=datetime(2000, 1, 1, tzinfo=UTC))
    real = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    async with consuming(mosquitto.port, sqlite_file) as consumer, gateway(
        tmp_path, mosquitto.port, now=clock.now, monotonic=clock.monotonic,
        clock_state=clock.state, boot="boot-1",
    ) as service:  # fmt: skip
        for _ in range(3):
            clock.advance(1)
            await spo2(service, 1)
        await until(lambda: len(seqs(consumer.store)) == 3, what="three readings")
        step = real - clock.wall
        clock.wall, clock.synced = real, True
        await until(lambda: corrected(consumer.store), what="the correction applied")
    offset_ms = int(step / timedelta(milliseconds=1))
    (correction,) = consumer.store.rows(sa.select(clock_corrections))
    assert (correction.from_seq, correction.to_seq, correction.offset_ms) == (1, 3, offset_ms)
    assert correction.readings_corrected == 3
    rows = corrected(consumer.store)
    assert [(r.clock, r.offset_ms, r.corrected_ms - r.received_ms) for r in rows] == [
        ("unsynced", offset_ms, offset_ms)
    ] * 3
    # Received one second apart, the last at the moment the clock was set right.
    last = int(real.timestamp() * 1000)
    assert [r.corrected_ms for r in rows] == [last - 2000, last - 1000, last]


def corrected(store: TownshipStore) -> list[sa.Row[Any]]:
    r = readings.c
    query = sa.select(r.clock, r.received_ms, r.offset_ms, r.corrected_ms).order_by(r.seq)
    rows = store.rows(query)
    return rows if rows and all(row.corrected_ms is not None for row in rows) else []


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Mosquitto]:
    """Passwords and the broker ACL of docs/mqtt-contract.md."""
    passwords = tmp_path / "passwd"
    for user in ("gw-test", "township"):
        add_user(passwords, user, f"s3cret-{user}")
        (tmp_path / f"{user}.pw").write_text(f"s3cret-{user}\n")
    acl = tmp_path / "acl"
    acl.write_text(documented_acl("testtown"))
    broker = broker_with_acl(tmp_path, passwords, acl)
    yield broker
    broker.close()


@pytest.mark.asyncio
async def test_the_consumer_and_its_commands_work_under_the_documented_acl(
    tmp_path: Path, secured: Mosquitto, sqlite_file: str
) -> None:
    password = tmp_path / "township.pw"
    login = f'username = "gw-test"\npassword_file = "{tmp_path / "gw-test.pw"}"'
    async with (
        consuming(
            secured.port, sqlite_file, username="township", password_file=password
        ) as consumer,
        gateway(tmp_path / "gw", secured.port, mqtt_extra=login) as service,
    ):
        await spo2(service, 2)
        await until(lambda: seqs(consumer.store) == [1, 2], what="readings under the ACL")
        await until(lambda: state_of(consumer.store) == "online", what="the retained status")
        code, out, err = await cli(
            "command", GW, "ping", "--username", "township", "--password-file", str(password),
            *broker_args(secured.port, sqlite_file),
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["result"]["gateway"] == GW
