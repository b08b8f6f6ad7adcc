"""SerialSession running the CMS50 protocol through real pseudo-terminals, opened with
pyserial, against the simulated CMS50 (firmware_sim.cms50)."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import serial

from drivers.listener import LinkState
from drivers.measurement import Measurement, Metric
from drivers.serial.cms50 import Cms50Protocol
from drivers.serial.contec import V46_START, Cms50StreamDecoder, Generation
from drivers.serial.port import classify_open_error
from drivers.serial.session import SerialSession
from firmware_sim.cms50 import Cms50Simulator
from tests.drivers.recording_listener import WAIT_S, RecordingListener

REPO = Path(__file__).resolve().parents[3]


@asynccontextmanager
async def running(
    port: str, generation: Generation | None = None, stall_timeout_s: float = 1.5
) -> AsyncIterator[tuple[SerialSession[Cms50Protocol], RecordingListener]]:
    recorder = RecordingListener()
    protocol = Cms50Protocol(generation, stall_timeout_s=stall_timeout_s, keepalive_interval_s=0.5)
    session = SerialSession(
        port, protocol, recorder, detect_timeout_s=1.0, retry_initial_s=0.1, retry_max_s=0.5
    )
    await session.start()
    try:
        yield session, recorder
    finally:
        await session.stop()
    for error, _raw in recorder.of("malformed"):  # summaries, never one report per byte
        summary = r"CMS50 (legacy|v46) stream: .*dropped.*|garbage on the line .* refused .*"
        assert re.fullmatch(summary, str(error)), error


@contextmanager
def simulator(generation: Generation, tmp_path: Path, **options: Any) -> Iterator[Cms50Simulator]:
    sim = Cms50Simulator(generation, link=str(tmp_path / "by-id-cms50"), **options)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def assert_normal(readings: Sequence[Sequence[Measurement]]) -> None:
    """One clean SpO2 and one clean pulse rate per window, as scenario `normal` says."""
    for window in readings:
        by_metric = {m.metric: m for m in window}
        assert len(window) == 2 and set(by_metric) == {Metric.SPO2, Metric.PULSE_RATE}
        assert by_metric[Metric.SPO2].value in (97, 98)
        assert by_metric[Metric.PULSE_RATE].value in (72, 73)
        assert all(m.alertable for m in window)


@pytest.mark.asyncio
@pytest.mark.parametrize("generation", list(Generation))
async def test_one_reading_per_second_with_the_scenario_values(
    generation: Generation, tmp_path: Path
) -> None:
    # The v4.6 device gives up after 1.5 s without a keep-alive; 3 windows prove they flow.
    with simulator(generation, tmp_path, keepalive_timeout_s=1.5) as sim:
        async with running(sim.path) as (session, rec):
            assert_normal(await rec.wait_new("measurements", 3))
            assert session.protocol.generation is generation
            assert rec.states() == [LinkState.CONNECTING, LinkState.CONNECTED]
            assert rec.of("info")[0]["manufacturer"] == "Contec" and len(rec.of("signal")) >= 3
            assert rec.of("malformed") == [], "a clean line: nothing refused"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("device", "remembered"),
    [(Generation.LEGACY, Generation.V46), (Generation.V46, Generation.LEGACY)],
)
async def test_the_wrong_generation_is_detected_and_corrected(
    device: Generation, remembered: Generation, tmp_path: Path
) -> None:
    with simulator(device, tmp_path) as sim:
        async with running(sim.path, generation=remembered) as (session, rec):
            assert_normal(await rec.wait_new("measurements", 2))
            assert session.protocol.generation is device
            assert rec.of("state")[1] == (LinkState.CONNECTED, f"{sim.path}: CMS50 {device.value}")


@pytest.mark.asyncio
@pytest.mark.parametrize("generation", list(Generation))
async def test_unplug_then_replug_resumes_without_a_restart(
    generation: Generation, tmp_path: Path
) -> None:
    with simulator(generation, tmp_path) as sim:
        async with running(sim.path) as (_session, rec):
            await rec.wait_new("measurements", 1)
            mark = len(rec.of("state"))
            sim.unplug()
            await rec.wait_state(LinkState.DISCONNECTED, mark)
            assert "unplugged" in await rec.wait_state(LinkState.UNREACHABLE, mark)
            sim.replug()
            await rec.wait_state(LinkState.CONNECTED, mark)
            assert_normal(await rec.wait_new("measurements", 2))
            assert rec.states().count(LinkState.CONNECTED) == 2 and sim.plug_count == 2


@pytest.mark.asyncio
async def test_scheduled_hang_up_and_return(tmp_path: Path) -> None:
    with simulator(Generation.V46, tmp_path, hangup_at=1.5, return_after=1.0) as sim:
        async with running(sim.path) as (_session, rec):
            await rec.wait_state(LinkState.DISCONNECTED)
            mark = len(rec.of("state"))
            await rec.wait_state(LinkState.CONNECTED, mark)
            assert_normal(await rec.wait_new("measurements", 2))


@pytest.mark.asyncio
async def test_garbage_is_counted_and_readings_continue(tmp_path: Path) -> None:
    with simulator(Generation.LEGACY, tmp_path, garbage_every=15) as sim:
        async with running(sim.path) as (_session, rec):
            assert_normal(await rec.wait_new("measurements", 3))
            assert rec.states() == [LinkState.CONNECTING, LinkState.CONNECTED], "never reopened"
        # The first drop is reported at once, the rest (at most once a minute) as summaries,
        # and stopping closes the stream with a last summary: every stray byte, no more.
        summaries = [(str(error), raw) for error, raw in rec.of("malformed")]
        assert all("garbage bytes dropped while resynchronising" in e and r for e, r in summaries)
        reported = sum(int(re.search(r"(\d+) garbage bytes", e).group(1)) for e, _ in summaries)
        assert 0 < reported <= sim.garbage_bytes_sent


@pytest.mark.asyncio
@pytest.mark.parametrize("generation", list(Generation))
async def test_garbage_before_every_third_packet_is_still_the_device(
    generation: Generation, tmp_path: Path
) -> None:
    with simulator(generation, tmp_path, garbage_every=3) as sim:
        async with running(sim.path) as (session, rec):
            assert_normal(await rec.wait_new("measurements", 2))
            assert rec.states() == [LinkState.CONNECTING, LinkState.CONNECTED]
            assert session.protocol.generation is generation
            await rec.wait_for(lambda: rec.of("malformed"), "the garbage reported")


@pytest.mark.asyncio
async def test_a_line_of_noise_is_reported_as_garbage_with_counts(tmp_path: Path) -> None:
    with simulator(Generation.LEGACY, tmp_path, noise_only=True) as sim:
        async with running(sim.path) as (_session, rec):
            detail = await rec.wait_state(LinkState.UNREACHABLE)
        assert re.fullmatch(
            rf"garbage on the line {re.escape(sim.path)}, not enough CMS50 packets:"
            r" \d+ bytes refused at 115200 8N1; \d+ bytes refused at 19200 8O1",
            detail,
        ), detail
        (error, raw), *_ = rec.of("malformed")
        assert str(error) == detail and raw and set(raw) <= set(b"\xff\x00\x55")
        assert rec.of("measurements") == []


@pytest.mark.asyncio
async def test_a_stalled_line_is_reopened(tmp_path: Path) -> None:
    with simulator(Generation.V46, tmp_path) as sim:
        async with running(sim.path, stall_timeout_s=1.0) as (_session, rec):
            await rec.wait_new("measurements", 1)
            mark = len(rec.of("state"))
            sim.stall(2.0)
            assert "no CMS50 packet for 1 s" in await rec.wait_state(LinkState.DISCONNECTED, mark)
            await rec.wait_state(LinkState.CONNECTED, mark)
            assert_normal(await rec.wait_new("measurements", 2))


@pytest.mark.asyncio
async def test_random_bytes_never_end_the_session(tmp_path: Path) -> None:
    """Noise mixed with real packets on a bare PTY: the session keeps reading."""
    master, slave = os.openpty()
    stop = threading.Event()
    rng = random.Random(4)

    def line() -> None:
        packet = bytes.fromhex("852A054861")
        while not stop.wait(0.01):
            chunk = packet * rng.randint(0, 8) + rng.randbytes(rng.randint(0, 30))
            os.write(master, chunk)

    writer = threading.Thread(target=line, daemon=True)
    writer.start()
    try:
        async with running(os.ttyname(slave)) as (session, rec):
            await rec.wait_for(lambda: rec.of("malformed"), "garbage to be reported")
            (error, _raw), *_ = rec.of("malformed")
            assert "garbage bytes dropped while resynchronising" in str(error)
            assert rec.last_state() is LinkState.CONNECTED
            assert session.protocol.generation is Generation.LEGACY
    finally:
        stop.set()
        writer.join()
        os.close(master)
        os.close(slave)


@pytest.mark.asyncio
async def test_an_absent_port_is_unreachable_and_stop_is_prompt(tmp_path: Path) -> None:
    async with running(str(tmp_path / "nothing-here")) as (_session, rec):
        detail = await rec.wait_state(LinkState.UNREACHABLE)
        assert "is absent: the oximeter is unplugged" in detail
    assert rec.last_state() is LinkState.UNREACHABLE


@pytest.mark.parametrize(
    ("code", "state", "words"),
    [
        (errno.EACCES, LinkState.PERMISSION_DENIED, "'dialout' group"),
        (errno.EPERM, LinkState.PERMISSION_DENIED, "usermod -aG dialout"),
        (errno.ENOENT, LinkState.UNREACHABLE, "unplugged"),
        (errno.EBUSY, LinkState.UNREACHABLE, "in use by another program"),
        (errno.EIO, LinkState.UNREACHABLE, "cannot open /dev/x"),
    ],
)
def test_open_errors_are_classified(code: int, state: LinkState, words: str) -> None:
    got_state, detail = classify_open_error("/dev/x", serial.SerialException(code, "boom"))
    assert got_state is state and words in detail and "\n" not in detail


def test_permission_denied_for_real_names_the_dialout_group() -> None:
    """Root bypasses permission checks, so a forked child drops to `nobody` and runs a
    real session against a PTY only root may open: pyserial gets a real EACCES."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.chmod(path, 0o600)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            else:
                os.chmod(path, 0o000)
            os.write(write_end, asyncio.run(_first_state(path)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            report = pipe.read().decode()
    finally:
        os.waitpid(pid, 0)
        os.close(master)
        os.close(slave)
    state, _, detail = report.partition(" ")
    assert state == LinkState.PERMISSION_DENIED.value, report
    assert "'dialout' group" in detail and path in detail


async def _first_state(path: str) -> str:
    async with running(path) as (_session, rec):
        await rec.wait_for(lambda: len(rec.of("state")) >= 2, "a failed open")
        state, detail = rec.of("state")[1]
        return f"{state.value} {detail}"


def test_the_simulator_command_prints_the_port_and_plays_a_v46_device(tmp_path: Path) -> None:
    link = tmp_path / "by-id-cms50"
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "cms50", "--generation", "v46", "--link", str(link)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(link)
        with serial.Serial(str(link), 115200, timeout=0.2) as port:
            port.write(V46_START)
            decoder = Cms50StreamDecoder(Generation.V46)
            deadline = time.monotonic() + WAIT_S
            while decoder.packets < 30 and time.monotonic() < deadline:
                decoder.feed(port.read(512))
        assert decoder.packets >= 30 and decoder.garbage_bytes == 0
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, stderr
    assert "received the start command" in stderr and "unplugged" in stderr
    assert not link.exists()
