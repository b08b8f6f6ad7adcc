"""Device sessions built from the kind registry: a kind whose entry cannot work costs
that device only, never the running service."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from drivers.kinds import KINDS, Transport
from drivers.measurement import Measurement, Metric
from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.service import GatewayService
from tests.conftest import write_config
from tests.gateway.helpers import DEVICE, PORT_PATH, until

BROKEN_ADDRESS = "F0:00:00:00:00:42"


@pytest.mark.asyncio
async def test_a_broken_kind_entry_is_reported_and_the_other_devices_go_on(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A GATT kind that forgot its profile, as a half-finished registry entry would.
    broken = dataclasses.replace(KINDS["hts"], name="thermo2", transport=Transport.GATT, gatt=None)
    monkeypatch.setitem(KINDS, "thermo2", broken)
    devices = DEVICE + f'[[devices]]\nkind = "thermo2"\naddress = "{BROKEN_ADDRESS}"\n'
    service = GatewayService(load_config(write_config(tmp_path, mosquitto.port, devices=devices)))
    await service.start()
    try:
        record = next(d for d in service.device_records() if d["id"] == "thermo2-f00000000042")
        assert record["link"] == "unreachable"
        assert record["link_detail"] == "not served: device kind 'thermo2' (gatt) declares no gatt"
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 97)])
        await until(lambda: service.uplink.health.delivered_readings == 1, what="delivered")
    finally:
        await service.stop()
