"""One device on a USB-serial port, speaking any `SerialProtocol`: open, detect the
line settings it speaks at, read, reduce to one reading per second, and survive
whatever the cable does.

The port I/O is `drivers/serial/port.py`; what is sent, expected and reported is the
protocol's. Detection tries the protocol's line settings in turn, the last that worked
first, until `detect_packets` back-to-back packets arrive within `detect_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Generic, TypeVar

from drivers.backoff import Backoff
from drivers.listener import LinkState, SessionListener
from drivers.reduced_stream import ReducedStream
from drivers.serial.port import LinkLost, SerialLink, classify_open_error
from drivers.serial.protocol import LineSettings, SerialProtocol, SerialStream

logger = logging.getLogger(__name__)

P = TypeVar("P", bound=SerialProtocol)


class _NoFrames(Exception):
    """The port opened but spoke the protocol at none of its line settings."""


class SerialSession(Generic[P]):
    """Reads the device speaking `protocol` at `port` (a stable /dev/serial/by-id/...
    path) until stopped.

    Reports to `listener` with `port` as the address: one reduced reading per metric
    per second, link state changes, and the protocol's device info on connecting.
    Unplugged, hung up, stalled (no packet for the protocol's `stall_timeout_s`): the
    port is closed and reopened with exponential backoff and jitter; nothing the line
    sends ends the session.
    """

    def __init__(
        self,
        port: str,
        protocol: P,
        listener: SessionListener,
        *,
        detect_timeout_s: float = 2.0,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        malformed_summary_s: float = 60.0,
    ) -> None:
        self.port = port
        self.protocol = protocol
        self._listener = listener
        self._detect_timeout_s = detect_timeout_s
        self._malformed_summary_s = malformed_summary_s
        self._backoff = Backoff(retry_initial_s, retry_max_s)
        self._task: asyncio.Task[None] | None = None
        self._state: tuple[LinkState, str] | None = None

    @property
    def address(self) -> str:
        return self.port

    async def start(self) -> None:
        if self._task is None:
            name = f"{self.protocol.name} {self.port}"
            self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        self._report(LinkState.CONNECTING, self.port)
        failures = 0
        while True:
            try:
                connected = await self._attempt()
            except Exception:  # a bug, not the line: keep the device served
                logger.exception("%s session on %s failed; retrying", self.protocol.name, self.port)
                connected = False
            # After a lost link the first retry comes quickly; failures back off from there.
            failures = 0 if connected else failures + 1
            await asyncio.sleep(self._backoff.delay(failures))

    async def _attempt(self) -> bool:
        """Open, detect, read until the link ends. True if it got as far as connected."""
        try:
            link, settings, decoder = await self._open_and_detect()
        except OSError as exc:
            self._report(*classify_open_error(self.port, exc))
            return False
        except (LinkLost, _NoFrames) as exc:
            self._report(LinkState.UNREACHABLE, str(exc))
            return False
        variant = self.protocol.variant(settings)
        stream = ReducedStream(
            self.port,
            variant,
            decoder,
            self._listener,
            self._malformed_summary_s,
            joining=False,  # detection left the decoder in sync with the line
        )
        reason = "internal error, see the log"
        try:
            self._report(LinkState.CONNECTED, f"{self.port}: {variant}")
            self._listener.on_device_info(self.port, self.protocol.device_info(settings))
            reason = await self._read_until_lost(link, settings, stream)
        except asyncio.CancelledError:
            reason = "session stopped"
            raise
        finally:
            await link.close()
            stream.close(asyncio.get_running_loop().time())
            self._report(LinkState.DISCONNECTED, reason)
        return True

    async def _open_and_detect(self) -> tuple[SerialLink, LineSettings, SerialStream]:
        protocol = self.protocol
        # A stable sort: the settings that last worked first, the rest in their order.
        for settings in sorted(protocol.line_settings, key=lambda s: s != protocol.preferred):
            link = await SerialLink.open(self.port, settings)
            try:
                decoder = await self._detect(link, settings)
            except BaseException:
                await link.close()
                raise
            if decoder is not None:
                protocol.spoke(settings)
                return link, settings, decoder
            await link.close()
        tried = " or ".join(map(str, protocol.line_settings))
        raise _NoFrames(f"no {protocol.name} packets on {self.port} at {tried}")

    async def _detect(self, link: SerialLink, settings: LineSettings) -> SerialStream | None:
        """A decoder in sync with the line, or None. The few packets seen are dropped."""
        loop = asyncio.get_running_loop()
        decoder = self.protocol.new_stream(settings)
        if command := self.protocol.open_command(settings):
            link.write(command)
        deadline = loop.time() + self._detect_timeout_s
        while decoder.packets_in_sync < self.protocol.detect_packets:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            decoder.feed(await link.read(remaining))
        return decoder

    async def _read_until_lost(
        self, link: SerialLink, settings: LineSettings, stream: ReducedStream
    ) -> str:
        """Feed the stream until the line fails or stalls; returns why it ended."""
        loop = asyncio.get_running_loop()
        stall_timeout_s = self.protocol.stall_timeout_s
        interval_s = self.protocol.keepalive_interval_s
        keepalive = self.protocol.keepalive(settings)
        last_packet = loop.time()
        next_keepalive = last_packet + interval_s
        try:
            while True:
                now = loop.time()
                if keepalive and now >= next_keepalive:
                    link.write(keepalive)
                    next_keepalive = now + interval_s
                wake = last_packet + stall_timeout_s
                if keepalive:
                    wake = min(wake, next_keepalive)
                data = await link.read(wake - now)
                now = loop.time()
                if stream.feed(now, data):
                    last_packet = now
                elif now - last_packet >= stall_timeout_s:
                    return f"no {self.protocol.name} packet for {stall_timeout_s:g} s"
        except LinkLost as exc:
            return str(exc)

    def _report(self, state: LinkState, detail: str) -> None:
        if self._state != (state, detail):
            self._state = (state, detail)
            self._listener.on_link_state(self.port, state, detail)
