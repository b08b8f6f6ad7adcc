"""A serial port opened, read and written without blocking the event loop, whatever
device is on it; and why an open failed, in words a technician can act on.

I/O model: pyserial opens and closes the port in the loop's default executor (opening
a USB-serial node can be slow, closing can wait for output to drain). While open, the
port's non-blocking file descriptor is watched with `loop.add_reader`; each readiness
event does one non-blocking pyserial read (timeout=0). No thread per port, nothing
that can block the event loop, and closing takes effect at once. Writes (short
commands) go straight to the descriptor: pyserial's non-blocking write spins while the
output buffer is full, so a full buffer here just skips that command.
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

from drivers.listener import LinkState
from drivers.serial.protocol import LineSettings

logger = logging.getLogger(__name__)

_READ_SIZE = 4096


class LinkLost(Exception):
    """The open port failed: hung up, unplugged, or an I/O error."""


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


class SerialLink:
    """An open port; a loop reader callback collects what arrives."""

    def __init__(self, ser: serial.Serial) -> None:
        self._ser = ser
        self._fd = ser.fileno()
        self._loop = asyncio.get_running_loop()
        self._received = bytearray()
        self._arrived = asyncio.Event()
        self._lost: LinkLost | None = None
        self._loop.add_reader(self._fd, self._on_readable)

    @classmethod
    async def open(cls, port: str, settings: LineSettings) -> SerialLink:
        """Raises OSError (pyserial's SerialException is one) when the port won't open."""
        opener = functools.partial(_open_serial, port, settings)
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
            self._lost = LinkLost(f"line lost: {exc}")
        self._arrived.set()

    async def read(self, wait_s: float) -> bytes:
        """What arrived, or b"" when nothing did within `wait_s`. Raises LinkLost."""
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
        """Raises LinkLost."""
        try:
            os.write(self._fd, data)
        except BlockingIOError:
            logger.debug("output buffer full; %d bytes not sent", len(data))
        except OSError as exc:
            raise LinkLost(f"write failed: {exc}") from exc

    async def close(self) -> None:
        self._loop.remove_reader(self._fd)
        await self._loop.run_in_executor(None, self._ser.close)


def _open_serial(port: str, settings: LineSettings) -> serial.Serial:
    """Open at 8N1 first and then set the parity. A port that cannot do parity (a PTY,
    some bridges) drops it silently, and Linux then rejects requesting the same parity
    again with EINVAL: opening at the wanted parity would fail on every second try."""
    ser = serial.Serial(baudrate=settings.baudrate, timeout=0, exclusive=True)  # not open yet
    ser.port = port
    try:
        ser.open()
        ser.parity = settings.parity
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
