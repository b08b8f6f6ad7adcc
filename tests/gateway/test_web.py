"""The status page's JSON API: what a technician's browser reads, and clear errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.listener import LinkState
from drivers.measurement import Measurement, Metric, Quality, Site
from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.service import GatewayService
from gateway.web.models import Status
from tests.conftest import write_config
from tests.contract import assert_exactly, contract_schema
from tests.gateway.helpers import DEVICE, PORT_PATH, Clocks, signed_in, until


@pytest.mark.asyncio
async def test_the_api_reports_health_devices_and_readings(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    service = GatewayService(load_config(write_config(tmp_path, mosquitto.port, devices=DEVICE)))
    await service.start()
    try:
        service.pipeline.on_measurements(
            PORT_PATH, [Measurement(Metric.SPO2, 91, frozenset({Quality.PROBE_OFF}))]
        )
        await until(lambda: service.uplink.health.delivered_readings == 1, what="delivered")
        async with signed_in(service) as web:
            status = (await web.get("/api/status")).json()
            assert status["gateway"] == "gw-test" and status["broker"]["state"] == "connected"
            assert status["clock"] in ("synced", "unsynced")
            (device,) = status["devices"]
            assert device["subject"] == "bed-9"
            assert device["last_values"]["spo2"]["quality"] == ["probe_off"]
            readings = (await web.get("/api/readings", params={"limit": 5})).json()
            assert readings[0]["value"] == 91 and readings[0]["delivered"] is True
            by_device = await web.get("/api/readings", params={"device": device["id"]})
            assert len(by_device.json()) == 1
            page = await web.get("/", headers={"Accept-Language": "en"})
            assert page.status_code == 200 and "Bedside gateway" in page.text
            assert status["refused_packets"] == {"malformed": 0, "security": 0}
            assert_exactly(Status, status)
            # /api/docs shows real types: the API's devices are the MQTT contract's.
            assert (await web.get("/api/docs")).status_code == 200
            api = (await web.get("/openapi.json")).json()
            response = api["paths"]["/api/devices"]["get"]["responses"]["200"]
            listed = response["content"]["application/json"]["schema"]["items"]
            assert listed == {"$ref": "#/components/schemas/Device"}
            schemas = api["components"]["schemas"]
            published = contract_schema("devices.json")["$defs"]["Device"]["properties"]
            assert schemas["Device"]["properties"].keys() == published.keys()
            assert schemas["LinkState"]["enum"] == [s.value for s in LinkState]
    finally:
        await service.stop()


@pytest.mark.asyncio
async def test_bad_requests_get_clear_errors(tmp_path: Path, mosquitto: Mosquitto) -> None:
    service = GatewayService(load_config(write_config(tmp_path, mosquitto.port, devices=DEVICE)))
    await service.start()
    try:
        async with signed_in(service) as web:
            too_many = await web.get("/api/readings", params={"limit": 100000})
            assert too_many.status_code == 422
            assert too_many.json()["detail"][0]["loc"] == ["query", "limit"]
            unknown = await web.get("/api/readings", params={"device": "hts-nothere"})
            assert unknown.status_code == 404
            assert "no device 'hts-nothere'" in unknown.json()["detail"]
            assert (await web.get("/healthz")).json() == {"status": "ok"}
    finally:
        await service.stop()


@pytest.mark.asyncio
async def test_device_identity_and_last_values_survive_a_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = load_config(write_config(tmp_path, mosquitto.port, devices=DEVICE))
    first = GatewayService(config)
    await first.start()
    first.pipeline.on_device_info(PORT_PATH, {"model": "CMS50 (USB serial)"})
    first.pipeline.on_signal(PORT_PATH, -61)
    first.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.BATTERY, 80)])
    await first.stop()
    second = GatewayService(config)
    await second.start()
    try:
        (device,) = second.device_records()
        assert device["id"] == "cms50-usb-absent-cms50"
        assert device["info"] == {"model": "CMS50 (USB serial)"}
        assert (device["battery"], device["rssi"]) == (80, -61)
        assert device["last_seen"] is not None and device["last_values"]["battery"]["value"] == 80
    finally:
        await second.stop()


@pytest.mark.asyncio
async def test_the_api_shows_subjects_and_the_ledger_of_a_day_in_progress(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    thermometer = (
        '[[devices]]\nkind = "hts"\naddress = "F0:00:00:00:00:01"\n'
        'subject = "bed-9"\nsite = "axillary"\n'
    )
    clocks = Clocks(wall=datetime(2026, 11, 22, 17, 59, tzinfo=UTC))
    config = write_config(
        tmp_path,
        mosquitto.port,
        devices=thermometer,
        extra='[[subjects]]\ncode = "bed-9"\nrisk_grade = "red"\n',
        gateway_extra='timezone = "UTC"',
    )
    service = GatewayService(load_config(config), now=clocks.now, monotonic=clocks.monotonic)
    await service.start()
    try:
        day = {"from": "2026-11-22", "to": "2026-11-22"}
        async with signed_in(service) as web:
            await until(
                lambda: service.ledger_book.day("bed-9", clocks.wall.date())["windows"], what="tick"
            )
            clocks.advance(120)  # 18:01: the evening window watched from its start
            service.pipeline.on_measurements(
                "F0:00:00:00:00:01",
                [Measurement(Metric.BODY_TEMPERATURE, 36.7, site=Site.AXILLARY)],
            )

            async def evening() -> dict[str, object]:
                (ledger,) = (await web.get("/api/subjects/bed-9/ledger", params=day)).json()
                return {w["name"]: w for w in ledger["windows"]}["evening"]

            for _ in range(100):
                if (await evening())["status"] == "measured":
                    break
                await asyncio.sleep(0.05)
            window = await evening()
            assert window["status"] == "measured" and window["measurement"]["value"] == 36.7
            (subject,) = (await web.get("/api/subjects")).json()
            assert subject["code"] == "bed-9" and subject["risk_grade"] == "red"
            unknown = await web.get("/api/subjects/bed-404/ledger", params=day)
            assert unknown.status_code == 404 and "bed-404" in unknown.json()["detail"]
            backwards = {"from": "2026-11-22", "to": "2026-11-01"}
            reversed_range = await web.get("/api/subjects/bed-9/ledger", params=backwards)
            assert reversed_range.status_code == 422
            assert "ends before it starts" in reversed_range.json()["detail"]
            not_a_date = await web.get(
                "/api/subjects/bed-9/ledger", params={"from": "x", "to": "y"}
            )
            assert not_a_date.status_code == 422
    finally:
        await service.stop()
