"""One device on a USB-serial port, speaking any `SerialProtocol`: open, detect the
line settings it speaks at, read, reduce to one reading per second, and survive
whatever the cable does.

The port I/O is `drivers/serial/port.py`; what is sent, expected and reported is the
protocol's. Detection tries the protocol's line settings in turn, the last that worked
first, until `detect_packets` packets arrive within `detect_timeout_s` with no more
bytes refused than they hold. A line that gives bytes but not that is reported as
garbage, with what each setting gave, and its refused bytes are counted (`on_refused`):
a noisy line is never shown as a silent one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Generic, TypeVar

from drivers.backoff import Backoff
from drivers.errors import MalformedPacket
from drivers.listener import LinkState, SessionListener
from drivers.reduced_stream import ReducedStream
from drivers.serial.port import LinkLost, SerialLink, classify_open_error
from drivers.serial.protocol import LineSettings, SerialProtocol, SerialStream

logger = logging.getLogger(__name__)

P = TypeVar("P", bound=SerialProtocol)


class _NoFrames(Exception):
    """The port opened but spoke the protocol at none of its line settings; with
    `garbage`, the bytes it gave instead (and the last read that held some)."""

    def __init__(self, detail: str, garbage: MalformedPacket | None, raw: bytes) -> None:
        super().__init__(detail)
        self.garbage = garbage
        self.raw = raw


@dataclass(slots=True)
class _Trial:
    """What the line gave at one setting during detection."""

    settings: LineSettings
    stream: SerialStream
    received: int = 0
    #: The last read that held refused bytes, for the log.
    offending: bytes = b""

    def feed(self, data: bytes) -> None:
        refused = self.stream.refused_bytes
        self.received += len(data)
        self.stream.feed(data)
        if self.stream.refused_bytes != refused:
            self.offending = data

    def proves(self, packets: int) -> bool:
        """`packets` decoded, and no more bytes refused than they hold."""
        stream = self.stream
        return stream.packets >= packets and stream.refused_bytes <= stream.packet_bytes

    def __str__(self) -> str:
        if not self.received:
            return f"silent at {self.settings}"
        refused, packets = self.stream.refused_bytes, self.stream.packets
        parts = [f"{refused} bytes refused"] if refused else []
        parts += [f"{packets} packets"] if packets else []
        return f"{', '.join(parts) or f'{self.received} bytes'} at {self.settings}"


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
        except _NoFrames as exc:
            if exc.garbage is not None:
                self._listener.on_refused(self.port, exc.garbage, exc.raw)
            self._report(LinkState.UNREACHABLE, str(exc))
            return False
        except LinkLost as exc:
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
            reason = await self._read_until_lost(link, settings, stream, decoder)
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
        trials: list[_Trial] = []
        # A stable sort: the settings that last worked first, the rest in their order.
        for settings in sorted(protocol.line_settings, key=lambda s: s != protocol.preferred):
            link = await SerialLink.open(self.port, settings)
            try:
                trial = await self._detect(link, settings)
            except BaseException:
                await link.close()
                raise
            if trial.proves(protocol.detect_packets):
                protocol.spoke(settings)
                return link, settings, trial.stream
            await link.close()
            trials.append(trial)
        raise self._no_frames(trials)

    async def _detect(self, link: SerialLink, settings: LineSettings) -> _Trial:
        """What the line gives at `settings`, until it proves the protocol or the time is
        up. The few packets seen are dropped."""
        loop = asyncio.get_running_loop()
        trial = _Trial(settings, self.protocol.new_stream(settings))
        if command := self.protocol.open_command(settings):
            link.write(command)
        deadline = loop.time() + self._detect_timeout_s
        while not trial.proves(self.protocol.detect_packets):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            trial.feed(await link.read(remaining))
        return trial

    def _no_frames(self, trials: list[_Trial]) -> _NoFrames:
        """Silence, too few packets, or garbage: which, and what each setting gave."""
        name = self.protocol.name
        if not any(t.received for t in trials):
            tried = " or ".join(str(t.settings) for t in trials)
            return _NoFrames(f"no {name} packets on {self.port} at {tried}", None, b"")
        gave = "; ".join(map(str, trials))
        if not any(t.stream.refused_bytes for t in trials):
            return _NoFrames(f"too few {name} packets on {self.port}: {gave}", None, b"")
        detail = f"garbage on the line {self.port}, not enough {name} packets: {gave}"
        raw = next(t.offending for t in reversed(trials) if t.offending)
        return _NoFrames(detail, MalformedPacket(detail), raw)

    async def _read_until_lost(
        self,
        link: SerialLink,
        settings: LineSettings,
        stream: ReducedStream,
        decoder: SerialStream,
    ) -> str:
        """Feed the stream until the line fails or stalls; returns why it ended (saying
        so when bytes kept coming but none made a packet)."""
        loop = asyncio.get_running_loop()
        stall_timeout_s = self.protocol.stall_timeout_s
        interval_s = self.protocol.keepalive_interval_s
        keepalive = self.protocol.keepalive(settings)
        last_packet = loop.time()
        refused_then = decoder.refused_bytes
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
                    last_packet, refused_then = now, decoder.refused_bytes
                elif now - last_packet >= stall_timeout_s:
                    stalled = f"no {self.protocol.name} packet for {stall_timeout_s:g} s"
                    if refused := decoder.refused_bytes - refused_then:
                        return f"{stalled}, only garbage: {refused} bytes refused"
                    return stalled
        except LinkLost as exc:
            return str(exc)

    def _report(self, state: LinkState, detail: str) -> None:
        if self._state != (state, detail):
            self._state = (state, detail)
            self._listener.on_link_state(self.port, state, detail)
