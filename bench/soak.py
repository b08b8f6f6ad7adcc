"""The soak, as the child process runs it: an eldercare floor's traffic for a simulated
hour (60 devices x 3 readings a second), fed `speed` times faster than real time
through the bench's real `GatewayService`, with two broker outages in the middle, while
the process's resident memory is sampled every couple of seconds.

Each simulated second every device hands in one second's worth of readings, on a
schedule (second k at k / speed real seconds), so the gateway sees a steady load and
not a flood; how far feeding fell behind that schedule is reported. The outages stop
the bench's mosquitto and start it again: the backlog builds in the store and drains
while live readings go on.
"""

from __future__ import annotations

import _sqlite3
import asyncio
import ctypes
import gc
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import FLOOR_DEVICES, METRICS_PER_DEVICE, Result
from bench.gateway_runs import RunningGateway, one_second_of_readings, running_gateway, until

#: Broker outages, as fractions of the run: 20-25 and 40-50 minutes into an hour.
OUTAGES = ((20 / 60, 25 / 60), (40 / 60, 50 / 60))
#: Memory before this fraction (the first 10 minutes of an hour, before any outage) is
#: warm-up: caches, pools and the first messages reach their working size.
WARMUP = 10 / 60
SAMPLE_EVERY_S = 2.0
#: Allocation sites listed when `--tracemalloc` compares the heap after warm-up with
#: the heap once the backlog drained. Tracing makes the gateway ~4x slower: at more
#: than --speed 5 the pipeline's queue grows, which is then what the figures show.
TOP_ALLOCATIONS = 15
TRACE_FRAMES = 6


@dataclass
class _Progress:
    """Where the run is, for the sampler."""

    sim_s: int = 0
    broker_up: bool = True
    lag_max_s: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)


async def soak(sim_s: int, speed: float, workdir: Path, trace: bool) -> Result:
    async with running_gateway(workdir) as gw:
        progress = _Progress()
        started = time.perf_counter()
        sampler = asyncio.create_task(_sample(gw, progress, started))
        snapshot: tracemalloc.Snapshot | None = None
        down_at, up_at = ({round(o[k] * sim_s) for o in OUTAGES} for k in (0, 1))
        broker: asyncio.Task[None] | None = None
        pool = one_second_of_readings()
        on_measurements = gw.service.pipeline.on_measurements
        for second in range(sim_s):
            due = started + second / speed
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                progress.lag_max_s = max(progress.lag_max_s, now - due)
            progress.sim_s = second
            if trace and second == round(WARMUP * sim_s):
                snapshot = _heap_snapshot(start=True)
            if second in down_at | up_at:  # feeding goes on while mosquitto stops or starts
                if broker is not None:
                    await broker
                broker = asyncio.create_task(_set_broker(gw, progress, up=second in up_at))
            for i, address in enumerate(gw.addresses):
                on_measurements(address, pool[(second + i) % len(pool)][:METRICS_PER_DEVICE])
        if broker is not None:
            await broker
        if not progress.broker_up:  # a run too short for the last outage to end
            await _set_broker(gw, progress, up=True)
        progress.sim_s = sim_s
        fed_s = time.perf_counter() - started
        readings = sim_s * FLOOR_DEVICES * METRICS_PER_DEVICE
        await _drained(gw, readings, sim_s / speed)
        drained_s = time.perf_counter() - started
        top = _compare(snapshot, _heap_snapshot()) if snapshot is not None else {}
        sampler.cancel()
        progress.samples.append(_sample_now(gw, progress, started))
        trimmed = _rss_after_malloc_trim()
        store_bytes = gw.service.config.store.path.stat().st_size
    return {
        "n": readings,
        "sim_s": sim_s,
        "speed": speed,
        "outages_sim_s": [[round(a * sim_s), round(b * sim_s)] for a, b in OUTAGES],
        "warmup_sim_s": round(WARMUP * sim_s),
        "fed_s": fed_s,
        "drained_s": drained_s,
        "lag_max_s": progress.lag_max_s,
        "store_mb": store_bytes / 1e6,
        "samples": progress.samples,
        "tracemalloc": top,
        "rss_after_trim_mb": trimmed,
        "stop_s": gw.stop_s,
        "stop_stalls": gw.stop_stalls,
    }


async def _set_broker(gw: RunningGateway, progress: _Progress, up: bool) -> None:
    if up:
        await asyncio.to_thread(gw.broker.start)
        progress.broker_up = True
    else:
        progress.broker_up = False
        await asyncio.to_thread(gw.broker.stop)


async def _drained(gw: RunningGateway, readings: int, run_s: float) -> None:
    """Every reading fed is committed and none is left undelivered."""
    store = gw.service.store
    await until(lambda: gw.accepted.total() >= readings, 60 + run_s, "every reading accepted")
    last = await store.call(store.store.last_seq)
    deadline = time.monotonic() + 120 + run_s
    while await store.call(store.store.undelivered, 0, 1, last):
        if time.monotonic() > deadline:
            raise TimeoutError("the backlog did not drain")
        await asyncio.sleep(0.1)


async def _sample(gw: RunningGateway, progress: _Progress, started: float) -> None:
    while True:
        progress.samples.append(_sample_now(gw, progress, started))
        await asyncio.sleep(SAMPLE_EVERY_S)


def _sample_now(gw: RunningGateway, progress: _Progress, started: float) -> dict[str, Any]:
    accepted = gw.accepted.total()
    return {
        "real_s": round(time.perf_counter() - started, 1),
        "sim_s": progress.sim_s,
        **memory_mb(),
        "accepted": accepted,
        # Handed in but not committed yet: the pipeline's queue, in memory.
        "queued": progress.sim_s * FLOOR_DEVICES * METRICS_PER_DEVICE - accepted,
        # PUBACK'd so far (a resend after an outage counts again).
        "delivered": gw.service.uplink.health.delivered_readings,
        "broker_up": progress.broker_up,
    }


def _sqlite_memory_used() -> Callable[[], int]:
    """SQLite's own count of the bytes it holds (page caches, statements). It allocates
    with malloc, so tracemalloc never sees it; found through the sqlite3 module."""
    used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    used.restype = ctypes.c_int64
    return lambda: int(used())


_sqlite_used = _sqlite_memory_used()


def memory_mb() -> dict[str, float]:
    """This process's memory now, in MB: resident in all (`rss`) and its parts `anon`
    (the heap) and `file` (mapped libraries and files); of the heap, what SQLite holds
    (`sqlite`); and the Python allocator's blocks in use (`py_blocks`, a count)."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            out[fields[key]] = round(int(value.split()[0]) / 1024, 2)  # kB
    out["threads"] = threading.active_count()
    out["sqlite"] = round(_sqlite_used() / 2**20, 2)
    out["py_blocks"] = sys.getallocatedblocks()
    return out


def _heap_snapshot(start: bool = False) -> tracemalloc.Snapshot:
    if start:
        tracemalloc.start(TRACE_FRAMES)
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),)
    )


def _compare(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> dict[str, Any]:
    """How much the traced (Python) allocations grew in all, what tracing itself holds,
    and the sites that grew most, each with the stack that led to it."""
    stats = after.compare_to(before, "traceback")
    top = []
    for stat in stats[:TOP_ALLOCATIONS]:
        where = " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(stat.traceback[-4:]))
        top.append(f"{stat.size_diff / 1024:+,.0f} KiB, {stat.count_diff:+,} blocks: {where}")
    return {
        "grew_kib": sum(s.size_diff for s in stats) / 1024,
        "overhead_mb": tracemalloc.get_tracemalloc_memory() / 2**20,
        "top": top,
    }


def _rss_after_malloc_trim() -> float | None:
    """RSS once glibc has handed its free memory back to the system: what the heap
    holds that nothing uses any more. None where there is no glibc."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    gc.collect()
    trim(0)
    return memory_mb()["rss"]
