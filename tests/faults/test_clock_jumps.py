"""The wall clock jumps (a Pi boots with no time, then NTP sets it, forward or back):
alerts are neither held back nor hurried. The gateway runs in-process with its wall
clock given by the test; a CMS50 simulator in the hypoxia scenario (low from its 5th
second) on a pseudo-terminal; a real mosquitto."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.service import GatewayService
from tests.conftest import Subscriber, write_config
from tests.faults.conftest import alerts_of, cms50_devices
from tests.gateway.helpers import until


class JumpingClock:
    """The system's clock, moved by `offset` once the test says so."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def low_readings(sub: Subscriber) -> list[dict[str, Any]]:
    return [r for r in sub.readings() if r["metric"] == "spo2" and r["value"] <= 93]


@pytest.mark.asyncio
@pytest.mark.parametrize("jump", [timedelta(hours=-1), timedelta(days=1)], ids=["back", "ahead"])
async def test_a_clock_jump_during_a_low_spo2_episode_neither_delays_nor_hurries_the_alert(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    cms50_factory: Callable[..., Cms50Simulator],
    jump: timedelta,
) -> None:
    clock = JumpingClock()
    devices = cms50_devices(cms50_factory("hypoxia"))
    service = GatewayService(
        load_config(write_config(tmp_path, mosquitto.port, devices=devices)), now=clock
    )
    sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
    await service.start()
    try:
        await until(lambda: len(low_readings(sub)) >= 3, 30, "the episode to begin")
        clock.offset = jump  # NTP sets the clock mid-episode
        await until(lambda: alerts_of(sub, "low_spo2"), 45, "the low SpO2 alert")
        (alert,) = alerts_of(sub, "low_spo2")
        # Raised after 15 s of low readings (1 a second), whatever the wall clock did.
        evidence = set(alert["evidence"])
        await until(  # alert events go out before readings
            lambda: evidence <= {r["id"] for r in sub.readings()}, 10, "the evidence"
        )
        lows_before = [r for r in low_readings(sub) if r["id"] in evidence]
        assert len(lows_before) >= 15, f"raised after {len(lows_before)} low readings"
        assert datetime.fromisoformat(alert["raised_at"]) - datetime.now(UTC) == pytest.approx(
            jump, abs=timedelta(seconds=30)
        ), "stamped with the corrected clock"
    finally:
        await service.stop()
