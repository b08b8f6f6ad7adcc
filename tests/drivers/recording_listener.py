"""A SessionListener for driver tests: keeps every report, in order, and lets a test
wait for what it expects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from drivers.errors import RefusedPacket
from drivers.listener import LinkState
from drivers.measurement import Measurement, Metric

T = TypeVar("T")
WAIT_S = 15.0  # generous: the machine is shared
#: How often a wait looks again when nothing was reported (the predicate may read
#: a session's counters, which change without a report).
_POLL_S = 0.05


class RecordingListener:
    """Events are (kind, address, value) with kind one of: measurements, live (lists of
    Measurement), state ((LinkState, detail)), info (dict), malformed ((error, raw)),
    signal (rssi or None)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self._changed = asyncio.Event()

    def _record(self, kind: str, address: str, value: Any) -> None:
        self.events.append((kind, address, value))
        self._changed.set()

    def on_measurements(self, address: str, measurements: Sequence[Measurement]) -> None:
        self._record("measurements", address, list(measurements))

    def on_live(self, address: str, measurements: Sequence[Measurement]) -> None:
        self._record("live", address, list(measurements))

    def on_link_state(self, address: str, state: LinkState, detail: str = "") -> None:
        self._record("state", address, (state, detail))

    def on_device_info(self, address: str, info: dict[str, str]) -> None:
        self._record("info", address, dict(info))

    def on_refused(self, address: str, error: RefusedPacket, raw: bytes) -> None:
        self._record("malformed", address, (error, raw))

    def on_signal(self, address: str, rssi: int | None) -> None:
        self._record("signal", address, rssi)

    def of(self, kind: str, address: str | None = None) -> list[Any]:
        """The values of one kind of report, from one address or from any."""
        return [v for k, a, v in self.events if k == kind and address in (None, a)]

    def measurements(
        self, address: str | None = None, metric: Metric | None = None, kind: str = "measurements"
    ) -> list[Measurement]:
        """Every measurement reported (or, with kind="live", shown), flattened."""
        return [m for batch in self.of(kind, address) for m in batch if metric in (None, m.metric)]

    def values(self, address: str, metric: Metric) -> list[float | bool]:
        return [m.value for m in self.measurements(address, metric)]

    def states(self, address: str | None = None) -> list[LinkState]:
        return [state for state, _ in self.of("state", address)]

    def last_state(self, address: str | None = None) -> LinkState | None:
        states = self.states(address)
        return states[-1] if states else None

    async def wait_for(self, predicate: Callable[[], T], what: str, within: float = WAIT_S) -> T:
        """The predicate's first truthy result; AssertionError after `within` seconds."""
        try:
            async with asyncio.timeout(within):
                while not (result := predicate()):
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_POLL_S):
                            await self._changed.wait()
                return result
        except TimeoutError:
            raise AssertionError(
                f"no {what} within {within:g} s; last reports: {self.events[-8:]}"
            ) from None

    async def wait_new(
        self, kind: str, count: int, address: str | None = None, what: str = ""
    ) -> list[Any]:
        """The next `count` reports of a kind, after those already recorded."""
        start = len(self.of(kind, address))
        await self.wait_for(
            lambda: len(self.of(kind, address)) >= start + count, what or f"{count} {kind}"
        )
        return self.of(kind, address)[start:]

    async def wait_state(self, state: LinkState, after: int = 0, address: str | None = None) -> str:
        """The detail of the first `state` reported at or after state report `after`."""

        def found() -> tuple[str] | None:
            reports = self.of("state", address)[after:]
            return next(((detail,) for s, detail in reports if s is state), None)

        (detail,) = await self.wait_for(found, f"link state {state}")
        return detail

    async def heard_again(self, address: str, times: int = 10) -> None:
        """Wait until the device was heard `times` more times (advert or packet)."""
        await self.wait_new("signal", times, address, f"{times} more signals")
