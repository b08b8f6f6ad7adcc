"""GattSessions on a bumble adapter in front of a simulated ward, in this process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from drivers.backoff import Backoff
from drivers.ble.adapter import BleAdapter, open_ble_adapter
from drivers.ble.gatt_profiles import PULSE_OXIMETER, GattProfile
from drivers.ble.routes import AdapterRoutes
from drivers.ble.session import GattSession
from drivers.measurement import Site
from firmware_sim.ble_main import SimulatedWard
from tests.drivers.recording_listener import WAIT_S, RecordingListener


class Bench:
    """Sessions on one adapter, sharing one connect lock, the adapter's connection slots
    and one recorder; stopped on exit."""

    def __init__(
        self, adapter: BleAdapter, ward: SimulatedWard | None = None, max_connections: int = 5
    ) -> None:
        self.adapter = adapter
        self.ward = ward
        self.recorder = RecordingListener()
        self.lock = asyncio.Lock()
        self.slots = asyncio.Semaphore(max_connections)
        self.sessions: list[GattSession] = []

    async def start(
        self,
        address: str,
        profile: GattProfile = PULSE_OXIMETER,
        *,
        scan_timeout: float = 0.5,
        configured_site: Site | None = None,
        **options: Any,
    ) -> GattSession:
        session = GattSession(
            address,
            profile,
            AdapterRoutes(self.adapter, self.slots, scan_timeout),
            self.recorder,
            self.lock,
            configured_site=configured_site,
            connect_timeout=WAIT_S,
            backoff=Backoff(base=0.05, maximum=0.2),
            **options,
        )
        self.sessions.append(session)
        await session.start()
        return session

    async def __aenter__(self) -> Bench:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for session in self.sessions:
            await session.stop()


@contextlib.asynccontextmanager
async def bench(max_connections: int = 5, **ward_args: Any) -> AsyncIterator[Bench]:
    """A simulated ward in this process, a bumble adapter on it, and a bench."""
    async with (
        SimulatedWard(**ward_args) as ward,
        open_ble_adapter(f"bumble:{ward.hci_spec}") as adapter,
        Bench(adapter, ward, max_connections) as test_bench,
    ):
        yield test_bench
