"""The fleet's gateways: the configuration of one simulated gateway, and two ways to run
one, both the real objects `gateway.service.GatewayService` builds from it:

- `start_full`: the whole service, `GatewayService.start()` (store, pipeline, rules,
  uplink, commands, status page on a free port, device sessions on serial ports that do
  not exist, housekeeping). The fleet runs these.
- `LeanGateway`: only the store, the pipeline (with its rules engine) and the uplink of
  the same object, wired as the service wires them. bench/fleet/feasibility.py
  measures it beside the whole service, to tell what the rest costs: at a household's
  load, little (bench/README.md, "The fleet"), so the fleet keeps the whole service
  and its township commands (the `resend` a township asks for a gap with).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.fleet.feed import device_ports
from gateway.config import Config, parse_config
from gateway.service import GatewayService

TOWNSHIP = "fleettown"
#: Every gateway's status page listens on this port of a loopback address of its own
#: (127.0.0.0/8 is all loopback on Linux): free ports picked by many worker processes
#: at once would collide.
WEB_PORT = 18080


def gateway_id(index: int) -> str:
    return f"gw-{index:05d}"


def gateway_config(
    index: int, devices: int, broker_url: str, data_dir: Path, web: bool = False
) -> Config:
    """One simulated gateway: `devices` CMS50s on absent serial ports, one bed each,
    the contract's defaults but for a quicker reconnect (a broker restart is part of the
    run; 1-5 s with jitter, so 1,000 gateways do not all come back in one second)."""
    settings: dict[str, Any] = {
        "gateway": {"id": gateway_id(index), "township": TOWNSHIP, "data_dir": str(data_dir)},
        "mqtt": {"url": broker_url, "reconnect_min_s": 1.0, "reconnect_max_s": 5.0},
        "devices": [
            {"kind": "cms50", "port": port, "subject": f"bed-{index}-{d}"}
            for d, port in enumerate(device_ports(index, devices))
        ],
    }
    if web:
        host = f"127.{1 + index // 62_500}.{index // 250 % 250}.{index % 250 + 1}"
        settings["web"] = {"listen": f"{host}:{WEB_PORT}"}
    data_dir.mkdir(parents=True, exist_ok=True)
    return parse_config(settings, base_dir=data_dir)


async def start_full(config: Config) -> GatewayService:
    service = GatewayService(config)
    await service.start()
    return service


class LeanGateway:
    """A `GatewayService` of which only the store, pipeline and uplink run: no status
    page, device sessions, commands or housekeeping (so its `status` queue figures are
    those of its start)."""

    def __init__(self, config: Config) -> None:
        self.service = GatewayService(config)

    async def start(self) -> None:
        service = self.service
        await service.store.open()
        await service.care.load()  # subjects and bindings, as the service's start does
        await service.pipeline.start()
        service.supervisor.start("pipeline", service.pipeline.run)
        service.supervisor.start("uplink", service.uplink.run)

    async def stop(self) -> None:
        """As `GatewayService.stop()` does for these parts: every reading handed in is
        committed and synced, `status` offline is published, the store closed."""
        service = self.service
        service.pipeline.request_stop()
        await service.supervisor.stop("pipeline", cancel=False)
        await service.uplink.say_offline()
        await service.supervisor.stop("uplink")
        await service.uplink.close()
        await service.store.close()
