"""`bedside-gateway demo`: the whole chain on one machine.

A simulated thermometer and pulse oximeter play a scenario on a virtual Bluetooth
radio; the gateway reads them through bleak (on the bumble backend), stores, flags and
publishes them; this terminal prints what the township server receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from firmware_sim.ble_main import SimulatedWard
from gateway.broker import InProcessBroker, Mosquitto
from gateway.config import parse_config
from gateway.logs import configure_logging
from gateway.service import GatewayService
from gateway.tail import tail
from gateway.web.auth import PasswordFile

#: `--broker builtin`: the in-process broker, also used when mosquitto is not installed.
BUILTIN = "builtin"


def demo_config(
    data_dir: Path, broker_url: str, protocol: str, http: str, ward: SimulatedWard
) -> dict[str, Any]:
    return {
        "gateway": {"id": "demo-gw", "township": "demo-town", "data_dir": str(data_dir)},
        "mqtt": {"url": broker_url, "protocol": protocol, "status_interval_s": 10.0},
        "bluetooth": {"adapter": f"bumble:{ward.hci_spec}", "reconnect_max_s": 5.0},
        "web": {"listen": http},
        "devices": [
            {
                "kind": "hts",
                "address": ward.addresses["hts"],
                "subject": "bed-1",
                "site": "axillary",
            },
            {"kind": "plx", "address": ward.addresses["plx"], "subject": "bed-1"},
        ],
    }


async def run_demo(broker_url: str | None, http: str, duration: float | None, scenario: str) -> int:
    configure_logging("WARNING")  # alerts and problems only; the messages are the show
    own_mosquitto: Mosquitto | None = None
    own_amqtt: InProcessBroker | None = None
    if broker_url is None:
        try:
            own_mosquitto = Mosquitto().start()
            broker_url = own_mosquitto.url
            print(f"broker: mosquitto started on {broker_url}", flush=True)
        except FileNotFoundError:
            print("broker: mosquitto is not installed", flush=True)
            broker_url = BUILTIN
    if broker_url == BUILTIN:
        own_amqtt = await InProcessBroker().start()
        broker_url = own_amqtt.url
        print(f"broker: in-process broker (amqtt) on {broker_url}", flush=True)
    elif own_mosquitto is None:
        print(f"broker: {broker_url}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tail_stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="bedside-demo-") as data_dir:
        ward = SimulatedWard(scenario=scenario, interval=5.0)
        await ward.start()
        print(
            f"simulator: scenario {scenario!r}; thermometer {ward.addresses['hts']},"
            f" oximeter {ward.addresses['plx']} on {ward.hci_spec}",
            flush=True,
        )
        # amqtt speaks MQTT 3.1.1 only
        protocol = "3.1.1" if own_amqtt is not None else "5"
        config = parse_config(
            demo_config(Path(data_dir), broker_url, protocol, http, ward), Path(data_dir)
        )
        service = GatewayService(config)
        tail_thread = threading.Thread(
            target=tail,
            args=(broker_url, f"{config.topic_root}/#", sys.stdout, tail_stop, protocol),
            daemon=True,
        )
        tail_thread.start()
        try:
            # A demo's own password, new each run (a gateway has none until
            # `set-password`), printed with the page's address.
            password = secrets.token_urlsafe(9)
            PasswordFile(config.password_path).set(password)
            await service.start()
            print(f"status page: {service.web_url} (password {password})", flush=True)
            print("township server receives (one JSON line per message):", flush=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await stop.wait()
        finally:
            await service.stop()
            tail_stop.set()
            tail_thread.join(5)
            await ward.stop()
            if own_mosquitto is not None:
                own_mosquitto.close()
            if own_amqtt is not None:
                await own_amqtt.stop()
    return 0
