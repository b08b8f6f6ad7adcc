"""A simulated Contec CMS50 oximeter on a pseudo-terminal, byte for byte.

The device thread writes packets to the PTY master; the gateway opens the slave path
with pyserial as it would open /dev/ttyUSB0. With `link`, a symlink stands in for the
stable /dev/serial/by-id/... path: unplugging removes it and closes the PTY (the
reader sees a hang-up), replugging creates a new PTY and points the link at it.

- legacy: streams 5-byte packets at ~60 Hz whether or not anyone asked.
- v46: silent until it receives the start command; stops streaming when no start or
  keep-alive arrived for `keepalive_timeout_s`. Replugging powers it down too.

Faults, byte for byte: `garbage_every` N puts a cut-off packet and noise before every
Nth packet; `noise_only` sends noise in place of every packet, asked for or not, as a
broken cable or a device at another speed gives: a line with no packet on it at all.

Limitation: a PTY carries bytes, not a line signal. The baud rate and parity a reader
sets are accepted and ignored, so reading at the wrong settings does not garble the
bytes as it would on real hardware. The wrong generation is therefore recognised by
behaviour and framing only: a v4.6 device stays silent until it is sent the start
command, and a legacy device streams regardless, so a reader must check which framing
the bytes match, not merely whether bytes arrive.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import tty

from drivers.serial.contec import V46_KEEPALIVE, V46_START, Generation
from firmware_sim.scenarios import OximeterSample, check_scenario, in_range, oximeter_at

logger = logging.getLogger(__name__)

#: Bytes 2 and 4 of a v4.6 packet have no documented meaning; these are the values of
#: the captured example in docs/protocols.md 4.2.
_V46_BYTE2 = 0x85
_V46_BYTE4 = 0x96
#: Injected after a truncated packet; none of these can start a packet of either kind,
#: so a decoder discards exactly the injected bytes.
_NOISE = b"\xff\x00\x55"
_PARTIAL_LEN = 3


def pleth_at(phase: float) -> int:
    """Plethysmogram sample (1-100) at a fraction of the heartbeat."""
    return max(1, min(100, round(50 + 45 * math.sin(2 * math.pi * phase))))


def legacy_packet(sample: OximeterSample, phase: float, beep: bool = False) -> bytes:
    if sample.probe_off:  # finger out, no signal, no waveform; the stale SpO2 is still sent
        b1, pleth = 0x80 | 0x10, 0
    else:
        b1, pleth = 0x80 | (0x40 if beep else 0) | 5, pleth_at(phase)
    b3 = ((sample.pulse_rate >> 7) & 1) << 6 | pleth * 15 // 100
    return bytes([b1, pleth, b3, sample.pulse_rate & 0x7F, sample.spo2])


def v46_packet(sample: OximeterSample, phase: float) -> bytes:
    if sample.pulse_rate >= 0x7F:
        raise ValueError(f"a v4.6 packet cannot carry pulse rate {sample.pulse_rate}")
    status, pleth = (0xE2, 0) if sample.probe_off else (0xE0, pleth_at(phase))
    body = [status, _V46_BYTE2, pleth, _V46_BYTE4, sample.pulse_rate, sample.spo2, 0x7F, 0x7F]
    return bytes([0x01, *(0x80 | b for b in body)])


def garbage_for(packet: bytes) -> bytes:
    """A partial frame followed by noise, as a loose connector or a line glitch gives."""
    return packet[:_PARTIAL_LEN] + _NOISE


def noise_for(packet: bytes) -> bytes:
    """As many bytes of noise as `packet` has. Sent back to back they frame no packet of
    either generation: FF comes at least every third byte, so no four bytes without
    bit 7 follow a byte with it (legacy), and no byte is 01 (v4.6)."""
    return (_NOISE * len(packet))[: len(packet)]


class Cms50Simulator:
    """Plays one CMS50 in a background thread. `start()` returns the path to open.

    Schedules are in seconds since `start()`. The scenario `drop_and_return` unplugs
    the device while `scenarios.in_range` says it is away. `unplug()`, `replug()` and
    `stall()` act at once, for tests.
    """

    def __init__(
        self,
        generation: Generation,
        scenario: str = "normal",
        *,
        link: str | None = None,
        rate_hz: float = 60.0,
        garbage_every: int = 0,
        noise_only: bool = False,
        stall_at: float | None = None,
        stall_for: float = 0.0,
        hangup_at: float | None = None,
        return_after: float | None = None,
        keepalive_timeout_s: float = 8.0,
    ) -> None:
        self.generation = generation
        self.scenario = check_scenario(scenario)
        self.link = link
        self._period = 1.0 / rate_hz
        self._garbage_every = garbage_every
        self._noise_only = noise_only
        self._stall_at = stall_at
        self._stall_for = stall_for
        self._hangup_at = hangup_at
        self._return_after = return_after
        self._keepalive_timeout_s = keepalive_timeout_s

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._master: int | None = None
        self._slave: int | None = None
        self._pts: str | None = None
        self._unplugged_by_hand = False
        self._stalled_until = 0.0
        self._commands = bytearray()
        self._last_command = -math.inf
        self._streaming = False
        self._phase = 0.0
        self.packets_sent = 0
        self.garbage_bytes_sent = 0
        self.plug_count = 0

    @property
    def path(self) -> str:
        """What to configure as the port: the link if any, else the current PTY."""
        return self.link or self._pts or ""

    @property
    def streaming(self) -> bool:
        return self._streaming if self.generation is Generation.V46 else self._pts is not None

    def start(self) -> str:
        self._t0 = time.monotonic()
        with self._lock:
            self._reconcile(0.0)
        self._thread = threading.Thread(target=self._run, name="cms50-sim", daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._unplug()

    def unplug(self) -> None:
        with self._lock:
            self._unplugged_by_hand = True
            self._reconcile(self._elapsed())

    def replug(self) -> None:
        with self._lock:
            self._unplugged_by_hand = False
            self._reconcile(self._elapsed())

    def stall(self, seconds: float) -> None:
        """Send nothing for `seconds`; the device stays plugged in."""
        self._stalled_until = time.monotonic() + seconds

    def __enter__(self) -> Cms50Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0

    def _run(self) -> None:
        next_due = time.monotonic()
        while not self._stop.wait(max(0.0, next_due - time.monotonic())):
            now = time.monotonic()
            with self._lock:
                t = now - self._t0
                self._reconcile(t)
                if self._master is not None:
                    self._read_commands(now)
                    self._expire_keepalive(now)
                    sending = self.streaming or (self._noise_only and self._pts is not None)
                    if sending and not self._stalled(t, now):
                        self._send(t)
            self._phase = (self._phase + self._period * self._pulse_hz(t)) % 1.0
            next_due = max(next_due + self._period, now - 0.5)  # never a long burst

    def _pulse_hz(self, t: float) -> float:
        return max(oximeter_at(self.scenario, t).pulse_rate, 60) / 60.0

    def _wanted_plugged(self, t: float) -> bool:
        if self._unplugged_by_hand or not in_range(self.scenario, t):
            return False
        if self._hangup_at is None or t < self._hangup_at:
            return True
        return self._return_after is not None and t >= self._hangup_at + self._return_after

    def _reconcile(self, t: float) -> None:
        wanted = self._wanted_plugged(t)
        if wanted and self._master is None:
            self._plug()
        elif not wanted and self._master is not None:
            self._unplug()

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF or XON/XOFF translation before pyserial opens it
        os.set_blocking(master, False)
        # Holding the slave open keeps the master usable while the reader reopens it.
        self._master, self._slave, self._pts = master, slave, os.ttyname(slave)
        self._streaming = False
        self._commands.clear()
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self._pts, tmp)
            os.replace(tmp, self.link)
        self.plug_count += 1
        where = f"{self.link} -> {self._pts}" if self.link else self._pts
        logger.info("cms50 %s plugged in: %s", self.generation.value, where)

    def _unplug(self) -> None:
        if self._master is None:
            return
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)
        os.close(self._master)
        if self._slave is not None:
            os.close(self._slave)
        self._master = self._slave = self._pts = None
        self._streaming = False
        logger.info("cms50 %s unplugged", self.generation.value)

    def _read_commands(self, now: float) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 1024)
        except OSError:  # EAGAIN: nothing was sent to the device
            return
        if self.generation is Generation.LEGACY:
            return  # a legacy device ignores what it is sent during live streaming
        self._commands += data
        for command in (V46_START, V46_KEEPALIVE):
            if command in self._commands:
                self._last_command = now
                if command == V46_START and not self._streaming:
                    self._streaming = True
                    logger.info("cms50 v46 received the start command")
        del self._commands[: max(0, len(self._commands) - (len(V46_START) - 1))]

    def _expire_keepalive(self, now: float) -> None:
        if self._streaming and now - self._last_command > self._keepalive_timeout_s:
            self._streaming = False
            logger.info("cms50 v46 stopped streaming: no keep-alive")

    def _stalled(self, t: float, now: float) -> bool:
        if now < self._stalled_until:
            return True
        return self._stall_at is not None and self._stall_at <= t < self._stall_at + self._stall_for

    def _send(self, t: float) -> None:
        assert self._master is not None
        sample = oximeter_at(self.scenario, t)
        if self.generation is Generation.LEGACY:
            beep = self._phase + self._period * self._pulse_hz(t) >= 1.0
            packet = legacy_packet(sample, self._phase, beep)
        else:
            packet = v46_packet(sample, self._phase)
        self.packets_sent += 1
        out = packet
        if self._noise_only:
            out = noise_for(packet)
            self.garbage_bytes_sent += len(out)
        elif self._garbage_every and self.packets_sent % self._garbage_every == 0:
            garbage = garbage_for(packet)
            self.garbage_bytes_sent += len(garbage)
            out = garbage + packet
        # Like a real UART nobody reads, a full buffer loses bytes; the reader resyncs.
        with contextlib.suppress(BlockingIOError):
            os.write(self._master, out)
