"""A serial line full of garbage is reported as garbage, not as silence: the simulated
CMS50 on a pseudo-terminal, the gateway as its own process, a real mosquitto, and what
the township server sees in `devices`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from gateway.broker import Mosquitto
from tests.conftest import GatewayProcess, Subscriber, write_config


@pytest.fixture
def line(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscriber_factory: Callable[..., Subscriber],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> Iterator[Callable[..., tuple[Subscriber, GatewayProcess]]]:
    """Plays a CMS50 with the given faults, and a gateway reading it."""
    sims: list[Cms50Simulator] = []

    def make(generation: Generation, **faults: Any) -> tuple[Subscriber, GatewayProcess]:
        sim = Cms50Simulator(generation, link=str(tmp_path / "usb-Contec-if00"), **faults)
        sim.start()
        sims.append(sim)
        sub = subscriber_factory(mosquitto.port, "vitals/v1/#")
        devices = f'[[devices]]\nkind = "cms50"\nport = "{sim.path}"\nsubject = "bed-2"\n'
        return sub, gateway_factory(write_config(tmp_path, mosquitto.port, devices=devices))

    yield make
    for sim in sims:
        sim.stop()


def cms50(sub: Subscriber) -> dict[str, Any] | None:
    """The oximeter's entry in the last `devices` inventory."""
    inventories = sub.snapshot("/devices")
    return inventories[-1][1]["devices"][0] if inventories else None


@pytest.mark.parametrize("generation", list(Generation))
def test_garbage_before_every_third_packet_is_counted_and_the_readings_flow(
    generation: Generation,
    line: Callable[..., tuple[Subscriber, GatewayProcess]],
) -> None:
    # Before: detection asked for five packets in a row, which such a line never has:
    # "no CMS50 packets on ...", malformed_packets 0 and not one reading.
    sub, gw = line(generation, garbage_every=3)
    sub.wait_for(lambda s: len(s.readings()) >= 4, 30, "readings among the garbage")
    counted = sub.wait_for(
        lambda s: (d := cms50(s)) is not None and d["malformed_packets"] > 0 and d,
        20,
        "the garbage counted in the inventory",
    )
    assert counted["link"] == "connected", counted
    assert counted["link_detail"].endswith(f"CMS50 {generation.value}")
    dropped = [r for r in gw.log_records() if r.get("msg") == "malformed packet dropped"]
    assert dropped and "garbage bytes dropped while resynchronising" in dropped[0]["error"]
    after = max(r["seq"] for r in sub.readings())
    sub.wait_for(
        lambda s: len([r for r in s.readings() if r["seq"] > after]) >= 4,
        20,
        "readings still arriving once the garbage was counted",
    )
    spo2 = {r["value"] for r in sub.readings() if r["metric"] == "spo2"}
    pulse = {r["value"] for r in sub.readings() if r["metric"] == "pulse_rate"}
    assert spo2 <= {97, 98} and pulse <= {72, 73}, "nothing was made of the garbage"


def test_a_line_of_pure_garbage_is_shown_as_garbage_with_counts(
    line: Callable[..., tuple[Subscriber, GatewayProcess]],
) -> None:
    # Before: "no CMS50 packets on ... at 115200 8N1 or 19200 8O1", as for a silent line,
    # and malformed_packets 0.
    sub, gw = line(Generation.V46, noise_only=True)
    device = sub.wait_for(
        lambda s: (d := cms50(s)) is not None and d["malformed_packets"] > 0 and d,
        30,
        "the garbage counted in the inventory",
    )
    assert device["link"] == "unreachable", device
    detail = device["link_detail"]
    assert detail.startswith("garbage on the line "), detail
    for settings in ("115200 8N1", "19200 8O1"):
        refused = detail.split(f" bytes refused at {settings}")[0].rsplit(" ", 1)[-1]
        assert refused.isdigit() and int(refused) > 0, detail
    assert "no CMS50 packets" not in detail
    dropped = [r for r in gw.log_records() if r.get("msg") == "malformed packet dropped"]
    assert dropped and dropped[0]["error"].startswith("garbage on the line "), dropped
    assert dropped[0]["bytes"], "the offending bytes are logged"
    status = sub.wait_for(
        lambda s: [p for _, p, _ in s.snapshot("/status") if p["refused_packets"]["malformed"]],
        15,
        "the status counting them",
    )
    assert status[-1]["refused_packets"]["malformed"] > 0
    assert sub.readings() == [], "noise never becomes a reading"
