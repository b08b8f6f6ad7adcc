"""100 SIGKILLs at random points of the gateway's life lose no committed reading, and
no reading id ever carries two different contents.

A CMS50 simulator (pseudo-terminal) and the township server (a persistent MQTT
subscriber) run for the whole test; only the gateway process dies and comes back. Each
life is killed at a point drawn from a seeded RNG: the seed is printed and
`SIGKILL_SEED=<seed>` replays the same schedule. A point first waits for the condition
it names (the store opened, a log line, a reading arrived), then, where it says so, for
a random delay: the delay picks the point, it never stands in for a condition.

At the end the oximeter is unplugged (nothing new is measured), a clean run drains the
backlog, and, with the gateway stopped, the store says what was ever committed.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber
from tests.e2e.test_delivery import _status_url, gateway_config, persistent_subscriber
from tests.gateway.helpers import PageApi

KILLS = 100
#: Spawn to "gateway started" takes ~1.1 s here (0.9 s of it Python imports);
#: `STARTING` kills land anywhere in that span.
START_UP_S = 1.2
#: An outage life lasts until a second's readings (the CMS50 gives three) were
#: committed in it, and a random delay more, so the next life has a backlog.
OUTAGE_READINGS = 3
WAIT_S = 30.0


class Point(StrEnum):
    """Where in its life a gateway is killed."""

    STARTING = "starting"  # a delay after spawn: imports, config, store, web, sessions
    STORE_OPEN = "store open"  # the moment the process holds the store file open
    STARTED = "started"  # a delay after "gateway started": broker connect, serial detection
    LIVE = "live"  # a delay after a reading of this life reached the server
    OUTAGE = "outage"  # broker unreachable: a delay after readings were committed
    BACKLOG = "backlog"  # after an outage, the moment the first backlog message arrives


#: How often each point is drawn; an OUTAGE life is always followed by a BACKLOG one.
#: Lives that need a reading cost 2.5-4 s here, the others about 1 s: these weights
#: keep 100 kills near 2.5 minutes on 2 cores.
WEIGHTS = {
    Point.STARTING: 38,
    Point.STORE_OPEN: 16,
    Point.STARTED: 20,
    Point.LIVE: 18,
    Point.OUTAGE: 8,
}
#: Each point's delay is drawn between 0 and this.
MAX_DELAY_S = {
    Point.STARTING: START_UP_S,
    Point.STORE_OPEN: 0.03,  # inside the store's opening, migrations, restore, audit
    Point.STARTED: 0.6,
    Point.LIVE: 1.0,  # readings are committed once a second
    Point.OUTAGE: 1.5,
    Point.BACKLOG: 0.0,
}


@dataclass
class Life:
    number: int
    point: Point
    delay_s: float
    #: The highest seq in the store once this life was killed.
    committed: int = 0

    def __str__(self) -> str:
        return f"life {self.number} ({self.point}, +{self.delay_s:.3f} s)"


def _poll(predicate: Callable[[], object], gw: GatewayProcess, what: str, every: float) -> None:
    """Wait for `predicate`; a gateway that exits by itself is a finding, not a wait."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if gw.proc is None or gw.proc.poll() is not None:
            raise AssertionError(f"the gateway exited by itself waiting for {what}: {gw.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {WAIT_S} s: {gw.log()[-3000:]}")
        time.sleep(every)


def _holds_open(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        for fd in os.listdir(fds):
            with contextlib.suppress(FileNotFoundError):  # closed since the listing
                if os.readlink(fds / fd) == str(path):
                    return True
    except FileNotFoundError:  # the process is gone (`_poll` says so)
        pass
    return False


def _newest_committed(api: PageApi, status_url: str) -> int:
    url = status_url.removesuffix("api/status") + "api/readings?limit=1"
    try:
        newest = api.get(url)
    except (httpx.HTTPError, ConnectionError):
        return 0
    return int(newest[0]["seq"]) if newest else 0


def _store_rows(store: Path) -> dict[int, bool]:
    """seq -> delivered, read-only, from a store no gateway holds open."""
    if not store.exists():
        return {}
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        try:
            return {s: bool(d) for s, d in conn.execute("SELECT seq, delivered FROM readings")}
        except sqlite3.OperationalError:  # killed before the schema was committed
            return {}


def _max_seq(readings: Iterable[dict[str, Any]]) -> int:
    return max((int(r["seq"]) for r in readings), default=0)


def _backlog_messages(sub: Subscriber) -> int:
    return sum(1 for t, p, _ in sub.snapshot() if "/readings/" in t and p["backlog"])


def _ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def _committed_in(lives: list[Life], seq: int) -> str:
    life = next((life for life in lives if life.committed >= seq), None)
    return f"committed by {life}" if life else "committed in the final run"


@dataclass
class _Context:
    store: Path
    sub: Subscriber
    api: PageApi
    #: The highest seq ever seen in the store, after the last kill.
    committed: int = 0


def _kill_at(point: Point, delay_s: float, gw: GatewayProcess, ctx: _Context) -> None:
    """Wait for `point` in the life of `gw`, then SIGKILL it."""
    assert gw.proc is not None
    pid = gw.proc.pid
    if point is Point.STARTING:
        time.sleep(delay_s)
    elif point is Point.STORE_OPEN:
        _poll(lambda: _holds_open(pid, ctx.store), gw, "store file open", every=0.002)
        time.sleep(delay_s)
    elif point is Point.STARTED:
        gw.wait_log("gateway started", WAIT_S)
        time.sleep(delay_s)
    elif point is Point.LIVE:
        _poll(lambda: _max_seq(ctx.sub.readings()) > ctx.committed, gw, "new reading", 0.01)
        time.sleep(delay_s)
    elif point is Point.OUTAGE:
        gw.wait_log("gateway started", WAIT_S)
        url, floor = _status_url(gw), ctx.committed + OUTAGE_READINGS
        _poll(lambda: _newest_committed(ctx.api, url) >= floor, gw, "readings in the outage", 0.05)
        time.sleep(delay_s)
    else:  # BACKLOG: kill while the rest of the backlog is in flight or being marked
        seen = _backlog_messages(ctx.sub)
        what = "backlog message (readings committed during the outage)"
        _poll(lambda: _backlog_messages(ctx.sub) > seen, gw, what, 0.001)
    if gw.proc.poll() is not None:
        raise AssertionError(f"the gateway exited by itself before the kill: {gw.log()}")
    gw.kill()


@pytest.mark.timeout(420)
def test_100_sigkills_at_random_points_lose_no_committed_reading(
    tmp_path: Path, mosquitto: Mosquitto, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    seed = int(os.environ.get("SIGKILL_SEED") or random.SystemRandom().randrange(2**32))
    print(f"SIGKILL schedule: seed {seed} (SIGKILL_SEED={seed} replays it)")
    rng = random.Random(seed)
    sim = Cms50Simulator(Generation.V46, "normal", link=str(tmp_path / "usb-Contec-CMS50"))
    sim.start()
    sub = persistent_subscriber(mosquitto.port)
    # Bound but never listening: connecting is refused for as long as the test runs.
    no_broker = socket.socket()
    no_broker.bind(("127.0.0.1", 0))
    try:
        config = gateway_config(tmp_path, mosquitto.port, sim)
        outage = tmp_path / "outage.toml"
        outage.write_text(
            config.read_text().replace(
                f"mqtt://127.0.0.1:{mosquitto.port}",
                f"mqtt://127.0.0.1:{no_broker.getsockname()[1]}",
            )
        )
        ctx = _Context(
            store=(tmp_path / "data" / "gateway.sqlite3").resolve(), sub=sub, api=PageApi(config)
        )
        lives: list[Life] = []
        started = time.monotonic()
        while len(lives) < KILLS:
            if lives and lives[-1].point is Point.OUTAGE:
                point = Point.BACKLOG
            else:
                point = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
            life = Life(len(lives) + 1, point, MAX_DELAY_S[point] * rng.random())
            gw = gateway_factory(outage if point is Point.OUTAGE else config)
            try:
                _kill_at(point, life.delay_s, gw, ctx)
            except AssertionError as failed:
                raise AssertionError(f"seed {seed}, {life}: {failed}") from None
            ctx.committed = max(ctx.committed, max(_store_rows(ctx.store), default=0))
            life.committed = ctx.committed
            lives.append(life)
        kill_s = time.monotonic() - started

        sim.unplug()  # nothing new is measured: the clean run only drains the backlog
        everything = set(range(1, ctx.committed + 1))
        final = gateway_factory(config)
        final.wait_log("gateway started", WAIT_S)
        with contextlib.suppress(AssertionError):  # what is missing is reported below
            _poll(lambda: everything <= {r["seq"] for r in sub.readings()}, final, "drain", 0.05)
        assert final.stop() == 0, final.log()[-3000:]
        rows = _store_rows(ctx.store)
    finally:
        no_broker.close()
        sub.stop()
        sim.stop()

    received = sub.readings()
    contents: dict[str, list[dict[str, Any]]] = {}
    for r in received:
        seen = contents.setdefault(r["id"], [])
        if r not in seen:
            seen.append(r)
    arrivals = Counter(r["id"] for r in received)
    print(
        f"{KILLS} kills in {kill_s:.0f} s: {Counter(life.point.value for life in lives)};"
        f" {max(rows, default=0)} readings in the store, {len(received)} arrivals,"
        f" {sum(n - 1 for n in arrivals.values())} resends"
    )
    last = max(ctx.committed, max(rows, default=0))  # the store may have been replaced
    got = {int(r["seq"]) for r in received}
    lost = [
        f"seq {a}-{b}: {_committed_in(lives, a)};"
        f" {'in the store, delivered=' + str(rows[a]) if a in rows else 'not in the store'}"
        for a, b in _ranges(set(range(1, last + 1)) - got)
    ]
    assert not lost, f"seed {seed}: readings committed but never received: {lost}"
    twice = {
        i: f"{c}; {_committed_in(lives, int(c[0]['seq']))}"
        for i, c in contents.items()
        if len(c) > 1
    }
    assert not twice, f"seed {seed}: ids that arrived with different contents: {twice}"
