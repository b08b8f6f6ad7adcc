"""Every long-lived task of the gateway, watched.

A task that ends when nobody asked it to (an exception, or a plain return) is logged
with its cause, counted, and started again after a back-off; while it is down it is a
*fault*: the retained `status`, `/api/status` and the page name the part and the
reason. Parts that are alive but cannot do their whole job (the store refusing writes)
report a fault of their own through `report` / `resolve`.

Our own rather than `asyncio.TaskGroup` or a library: a task group cancels every task
when one fails, the opposite of what a gateway beside a bed needs (the uplink failing
must not stop collection), and the supervisor libraries on PyPI are either Erlang-style
frameworks far larger than this or unmaintained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from drivers.backoff import Backoff

log = logging.getLogger(__name__)

#: A part that has run this long since its last restart counts as recovered: its next
#: failure starts the back-off from the beginning again.
_HEALTHY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class Fault:
    """A part that is down or degraded, and why (one line, for a technician)."""

    part: str
    reason: str
    since: datetime

    def payload(self) -> dict[str, str]:
        return {
            "part": self.part,
            "reason": self.reason,
            "since": self.since.isoformat(timespec="seconds"),
        }


class _Part:
    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.run = run
        self.task: asyncio.Task[None] | None = None
        self.restart: asyncio.TimerHandle | None = None
        self.started_at = 0.0
        self.failures = 0  # in a row
        self.restarts = 0  # since the gateway started
        self.down: Fault | None = None


class Supervisor:
    def __init__(self, backoff: Backoff | None = None) -> None:
        self._backoff = backoff or Backoff(1.0, 30.0)
        self._parts: dict[str, _Part] = {}
        self._reported: dict[str, Fault] = {}
        self._stopping: set[str] = set()

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run()` as the part `name`, and again whenever it ends unasked."""
        part = self._parts[name] = _Part(name, run)
        self._launch(part)

    async def stop(self, name: str, *, cancel: bool = True) -> None:
        """Stop the part: cancel it, or (`cancel=False`) wait for it to finish on its
        own (the caller has asked it to)."""
        part = self._parts.pop(name, None)
        if part is None:
            return
        self._stopping.add(name)
        if part.restart is not None:
            part.restart.cancel()
        task = part.task
        if task is not None:
            if cancel:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stopping.discard(name)

    # --- faults reported by parts that are alive ---------------------------------------

    def report(self, part: str, reason: str) -> None:
        """`part` is alive but failing (e.g. the store refusing writes); kept until
        `resolve`. A changed reason keeps the original `since`."""
        since = self._reported[part].since if part in self._reported else _now()
        self._reported[part] = Fault(part, reason, since)

    def resolve(self, part: str) -> None:
        self._reported.pop(part, None)

    # --- what status reads -------------------------------------------------------------

    def faults(self) -> list[Fault]:
        down = [p.down for p in self._parts.values() if p.down is not None]
        return sorted([*down, *self._reported.values()], key=lambda f: f.part)

    def all_alive(self) -> bool:
        """Every part's task is running (none down waiting for its restart)."""
        return all(p.task is not None and not p.task.done() for p in self._parts.values())

    def restarts(self) -> dict[str, int]:
        return {name: p.restarts for name, p in self._parts.items() if p.restarts}

    # --- the watching itself -----------------------------------------------------------

    def _launch(self, part: _Part) -> None:
        part.restart = None
        part.started_at = asyncio.get_running_loop().time()
        part.task = asyncio.create_task(self._guarded(part), name=part.name)
        part.task.add_done_callback(lambda task: self._ended(part, task))

    async def _guarded(self, part: _Part) -> None:
        try:
            await part.run()
        except SystemExit as exc:  # uvicorn exits on some errors: not ours to exit
            raise RuntimeError(f"exited ({exc.code})") from exc

    def _ended(self, part: _Part, task: asyncio.Task[None]) -> None:
        if part.name in self._stopping or self._parts.get(part.name) is not part:
            return
        if task.cancelled():
            reason = "cancelled"
            exc: BaseException | None = None
        else:
            exc = task.exception()
            reason = f"{type(exc).__name__}: {exc}" if exc is not None else "ended"
        loop = asyncio.get_running_loop()
        if loop.time() - part.started_at >= _HEALTHY_AFTER_S:
            part.failures = 0
        delay = self._backoff.delay(part.failures)
        part.failures += 1
        part.restarts += 1
        part.down = Fault(part.name, reason, _now())
        # The traceback once per run of failures; a part failing again and again
        # logs one line each time, spaced by the back-off.
        log.error(
            "part stopped unexpectedly; restarting",
            extra={"part": part.name, "error": reason, "restart_in_s": round(delay, 2)},
            exc_info=exc if part.failures == 1 else None,
        )
        part.restart = loop.call_later(delay, self._relaunch, part)

    def _relaunch(self, part: _Part) -> None:
        if self._parts.get(part.name) is not part:
            return
        part.down = None
        log.info("part restarted", extra={"part": part.name, "restarts": part.restarts})
        self._launch(part)


def _now() -> datetime:
    return datetime.now(UTC)
