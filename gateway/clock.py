"""Is the system clock trustworthy? A Pi has no battery-backed clock: until NTP (or
another source) has synchronised it, wall time may be anything.

The kernel knows: adjtimex(2) returns TIME_ERROR while the clock is unsynchronised
(chrony, systemd-timesyncd and ntpd all clear it once they have set the time).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import uuid
from collections.abc import Callable
from pathlib import Path

from gateway.model import ClockState

_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: 25 longs/ints in practice; a generous buffer
    # keeps the call safe on 32- and 64-bit ABIs since only the return value is used.
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 256)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """Found once: `find_library` runs `ldconfig -p` in a new process each time, and
    the clock is read every second."""
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name, use_errno=True)


def kernel_clock_state() -> ClockState:
    """SYNCED when the kernel says the clock is synchronised, else UNSYNCED."""
    libc = _libc()
    if libc is None:
        return ClockState.UNSYNCED
    timex = _Timex()
    timex.modes = 0  # read only
    result = libc.adjtimex(ctypes.byref(timex))
    if result < 0 or result == _TIME_ERROR:
        return ClockState.UNSYNCED
    return ClockState.SYNCED


class ClockWatch:
    """Caches the clock state; refreshed by the supervisor every few seconds so the
    hot path never makes a system call per reading."""

    def __init__(self, probe: Callable[[], ClockState] = kernel_clock_state) -> None:
        self._probe = probe
        self.state = probe()

    def refresh(self) -> ClockState:
        self.state = self._probe()
        return self.state


_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def kernel_boot_id() -> str:
    """The boot the monotonic clock counts from (Linux); elsewhere a new id each run, so
    no span is ever resumed across a restart there, and every start counts as a new
    boot."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return uuid.uuid4().hex
