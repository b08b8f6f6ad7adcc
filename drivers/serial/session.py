"""One Contec CMS50 on a USB-serial port: open, detect the firmware generation, read,
reduce to one reading per second, and survive whatever the cable does.

I/O model: pyserial opens and closes the port in the loop's default executor (opening
a USB-serial node can be slow, closing can wait for output to drain). While open, the
port's non-blocking file descriptor is watched with `loop.add_reader`; each readiness
event does one non-blocking pyserial read (timeout=0). No thread per port, nothing
that can block the event loop, and `stop()` takes effect at once. Writes (9-byte
commands) go straight to the descriptor: pyserial's non-blocking write spins while the
output buffer is full, so a full buffer here just skips that keep-alive.

Generation detection: open at 115200 8N1 and send the start command; without five
back-to-back v4.6 packets within `detect_timeout_s`, reopen at 19200 8O1 and look for
legacy packets. Bytes merely arriving prove nothing (noise at the wrong baud rate, or a
legacy device that streams regardless), so the framing must match. The generation
that worked is tried first at the next open.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import pwd
import termios

import serial

from drivers.backoff import Backoff
from drivers.listener import LinkState, SessionListener
from drivers.reduced_stream import ReducedStream
from drivers.serial.contec import V46_KEEPALIVE, V46_START, Generation, StreamDecoder

logger = logging.getLogger(__name__)

_LINE_SETTINGS = {
    Generation.V46: (115200, serial.PARITY_NONE),
    Generation.LEGACY: (19200, serial.PARITY_ODD),
}
_DEVICE_INFO = {
    Generation.LEGACY: "legacy (<= 4.5), 19200 8O1",
    Generation.V46: "4.6 or later, 115200 8N1",
}
_READ_SIZE = 4096
#: Packets in a row, with no garbage between them, that identify a generation. Random
#: bytes match the 5-byte legacy framing about once in 32 positions; five in a row
#: essentially never.
_DETECT_PACKETS = 5


class _LinkLost(Exception):
    """The open port failed: hung up, unplugged, or an I/O error."""


class _NoFrames(Exception):
    """The port opened but spoke neither generation's framing."""


def classify_open_error(port: str, exc: OSError) -> tuple[LinkState, str]:
    """The link state and one-line reason for a failed open (pyserial keeps the errno)."""
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        return LinkState.PERMISSION_DENIED, (
            f"permission denied opening {port}: add the gateway's user to the 'dialout'"
            f" group (sudo usermod -aG dialout {_user_name()}) and restart the gateway"
        )
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return LinkState.UNREACHABLE, f"{port} is absent: the oximeter is unplugged"
    if code in (errno.EBUSY, errno.EAGAIN):
        return LinkState.UNREACHABLE, f"{port} is in use by another program"
    return LinkState.UNREACHABLE, f"cannot open {port}: {exc}"


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


class _Link:
    """An open port; a loop reader callback collects what arrives."""

    def __init__(self, ser: serial.Serial) -> None:
        self._ser = ser
        self._fd = ser.fileno()
        self._loop = asyncio.get_running_loop()
        self._received = bytearray()
        self._arrived = asyncio.Event()
        self._lost: _LinkLost | None = None
        self._loop.add_reader(self._fd, self._on_readable)

    @classmethod
    async def open(cls, port: str, generation: Generation) -> _Link:
        """Raises OSError (pyserial's SerialException is one) when the port won't open."""
        opener = functools.partial(_open_serial, port, generation)
        opening = asyncio.get_running_loop().run_in_executor(None, opener)
        try:
            ser = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_if_opened)
            raise
        return cls(ser)

    def _on_readable(self) -> None:
        try:
            self._received += self._ser.read(_READ_SIZE)
        except OSError as exc:  # SerialException: EIO, or readable with no data (hang-up)
            self._loop.remove_reader(self._fd)
            self._lost = _LinkLost(f"line lost: {exc}")
        self._arrived.set()

    async def read(self, wait_s: float) -> bytes:
        """What arrived, or b"" when nothing did within `wait_s`. Raises _LinkLost."""
        if not self._arrived.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait_s, 0.0)):
                    await self._arrived.wait()
        data = bytes(self._received)
        self._received.clear()
        if not data and self._lost is not None:
            raise self._lost
        if self._lost is None:
            self._arrived.clear()
        return data

    def write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except BlockingIOError:
            logger.debug("output buffer full; %d bytes not sent", len(data))
        except OSError as exc:
            raise _LinkLost(f"write failed: {exc}") from exc

    async def close(self) -> None:
        self._loop.remove_reader(self._fd)
        await self._loop.run_in_executor(None, self._ser.close)


def _open_serial(port: str, generation: Generation) -> serial.Serial:
    """Open at 8N1 first and then set the parity. A port that cannot do parity (a PTY,
    some bridges) drops it silently, and Linux then rejects requesting the same parity
    again with EINVAL: opening at the wanted parity would fail on every second try."""
    baudrate, parity = _LINE_SETTINGS[generation]
    ser = serial.Serial(baudrate=baudrate, timeout=0, exclusive=True)  # not open yet
    ser.port = port
    try:
        ser.open()
        ser.parity = parity
    except termios.error as exc:  # pyserial lets tcsetattr's errors through unwrapped
        ser.close()
        raise OSError(*exc.args) from exc
    except BaseException:
        ser.close()
        raise
    return ser


def _close_if_opened(opening: asyncio.Future[serial.Serial]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class SerialOximeterSession:
    """Reads one CMS50 at `port` (a stable /dev/serial/by-id/... path) until stopped.

    Reports to `listener` with `port` as the address: one reduced reading per metric
    per second, link state changes, and the detected generation as device info.
    Unplugged, hung up, stalled (no packet for `stall_timeout_s`): the port is closed
    and reopened with exponential backoff and jitter; nothing the line sends ends the
    session. `generation` is a hint for the first open, e.g. remembered from last run.
    """

    def __init__(
        self,
        port: str,
        listener: SessionListener,
        *,
        generation: Generation | None = None,
        detect_timeout_s: float = 2.0,
        stall_timeout_s: float = 5.0,
        keepalive_interval_s: float = 3.0,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        malformed_summary_s: float = 60.0,
    ) -> None:
        self.port = port
        self._malformed_summary_s = malformed_summary_s
        self._listener = listener
        self._generation = generation
        self._detect_timeout_s = detect_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._keepalive_interval_s = keepalive_interval_s
        self._backoff = Backoff(retry_initial_s, retry_max_s)
        self._task: asyncio.Task[None] | None = None
        self._state: tuple[LinkState, str] | None = None
        self._decoder: StreamDecoder | None = None
        self._closed_garbage = 0
        self._closed_bad = 0
        #: Times a live link was lost (hang-up, stall, I/O error) and had to be reopened.
        self.reopens = 0
        #: Of those, the times the line went quiet without hanging up.
        self.stalls = 0

    @property
    def address(self) -> str:
        return self.port

    @property
    def generation(self) -> Generation | None:
        """The generation that last worked; it is tried first at the next open."""
        return self._generation

    @property
    def garbage_bytes(self) -> int:
        """Bytes discarded while resynchronising on a connected line."""
        live = self._decoder.garbage_bytes if self._decoder else 0
        return self._closed_garbage + live

    @property
    def bad_packets(self) -> int:
        live = self._decoder.bad_packets if self._decoder else 0
        return self._closed_bad + live

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"cms50 {self.port}")

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
                logger.exception("CMS50 session on %s failed; retrying", self.port)
                connected = False
            # After a lost link the first retry comes quickly; failures back off from there.
            failures = 0 if connected else failures + 1
            await asyncio.sleep(self._backoff.delay(failures))

    async def _attempt(self) -> bool:
        """Open, detect, read until the link ends. True if it got as far as connected."""
        try:
            link, decoder = await self._open_and_detect()
        except OSError as exc:
            self._report(*classify_open_error(self.port, exc))
            return False
        except (_LinkLost, _NoFrames) as exc:
            self._report(LinkState.UNREACHABLE, str(exc))
            return False
        self._decoder = decoder
        stream = ReducedStream(
            self.port,
            f"CMS50 {decoder.generation.value}",
            decoder,
            self._listener,
            self._malformed_summary_s,
            joining=False,  # detection left the decoder in sync with the line
        )
        reason = "internal error, see the log"
        try:
            self._report(LinkState.CONNECTED, f"{self.port}: CMS50 {decoder.generation.value}")
            self._listener.on_device_info(
                self.port,
                {
                    "manufacturer": "Contec",
                    "model": "CMS50 (USB serial)",
                    "firmware": _DEVICE_INFO[decoder.generation],
                },
            )
            reason = await self._read_until_lost(link, decoder.generation, stream)
        except asyncio.CancelledError:
            reason = "session stopped"
            raise
        finally:
            await link.close()
            self._decoder = None
            self._closed_garbage += decoder.garbage_bytes
            self._closed_bad += decoder.bad_packets
            stream.close(asyncio.get_running_loop().time())
            self._report(LinkState.DISCONNECTED, reason)
        self.reopens += 1
        return True

    async def _open_and_detect(self) -> tuple[_Link, StreamDecoder]:
        first = self._generation or Generation.V46
        second = Generation.LEGACY if first is Generation.V46 else Generation.V46
        for generation in (first, second):
            link = await _Link.open(self.port, generation)
            try:
                decoder = await self._detect(link, generation)
            except BaseException:
                await link.close()
                raise
            if decoder is not None:
                self._generation = generation
                return link, decoder
            await link.close()
        raise _NoFrames(f"no CMS50 packets on {self.port} at 115200 8N1 or 19200 8O1")

    async def _detect(self, link: _Link, generation: Generation) -> StreamDecoder | None:
        """A decoder in sync with the line, or None. The few packets seen are dropped."""
        loop = asyncio.get_running_loop()
        decoder = StreamDecoder(generation)
        if generation is Generation.V46:
            link.write(V46_START)
        deadline = loop.time() + self._detect_timeout_s
        while decoder.packets_in_sync < _DETECT_PACKETS:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            decoder.feed(await link.read(remaining))
        return decoder

    async def _read_until_lost(
        self, link: _Link, generation: Generation, stream: ReducedStream
    ) -> str:
        """Feed the stream until the line fails or stalls; returns why it ended."""
        loop = asyncio.get_running_loop()
        last_packet = loop.time()
        keepalive = generation is Generation.V46
        next_keepalive = last_packet + self._keepalive_interval_s
        try:
            while True:
                now = loop.time()
                if keepalive and now >= next_keepalive:
                    link.write(V46_KEEPALIVE)
                    next_keepalive = now + self._keepalive_interval_s
                wake = last_packet + self._stall_timeout_s
                if keepalive:
                    wake = min(wake, next_keepalive)
                data = await link.read(wake - now)
                now = loop.time()
                if stream.feed(now, data):
                    last_packet = now
                elif now - last_packet >= self._stall_timeout_s:
                    self.stalls += 1
                    return f"no CMS50 packet for {self._stall_timeout_s:g} s"
        except _LinkLost as exc:
            return str(exc)

    def _report(self, state: LinkState, detail: str) -> None:
        if self._state != (state, detail):
            self._state = (state, detail)
            self._listener.on_link_state(self.port, state, detail)
