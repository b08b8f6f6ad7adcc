"""`/metrics`: what a Prometheus scrape of a running gateway shows, and its token."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from drivers.measurement import Measurement, Metric
from gateway.broker import Mosquitto, free_port
from gateway.config import load_config
from gateway.service import GatewayService
from gateway.uplink import BrokerState
from gateway.web.metrics import metrics_router
from tests.conftest import write_config
from tests.gateway.helpers import DEVICE, PORT_PATH, until

TOKEN = "metrics-token-7f3a9c"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def client(service: GatewayService, token_path: Path | None) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(metrics_router(service, token_path))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def scrape(web: httpx.AsyncClient) -> Samples:
    response = await web.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith("bedside_gateway") and family.documentation
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def undelivered(service: GatewayService) -> int:
    return int(service.health()["queue"]["undelivered"])


@pytest.mark.asyncio
async def test_a_scrape_shows_the_queue_readings_reconnects_and_alerts(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN + "\n")
    service = GatewayService(load_config(write_config(tmp_path, mosquitto.port, devices=DEVICE)))
    await service.start()
    try:
        async with client(service, token_file) as web:
            await until(lambda: service.uplink.health.state is BrokerState.CONNECTED, what="up")
            first = await scrape(web)
            assert first["bedside_gateway_broker_connected", ()] == 1
            assert first["bedside_gateway_broker_connections_total", ()] == 1
            assert first["bedside_gateway_readings_accepted_total", ()] == 0
            assert first["bedside_gateway_queue_undelivered_readings", ()] == 0
            assert first["bedside_gateway_queue_oldest_undelivered_age_seconds", ()] == 0
            (info,) = [labels for name, labels in first if name == "bedside_gateway_info"]
            assert ("gateway", "gw-test") in info and ("township", "testtown") in info
            assert first["bedside_gateway_refused_packets_total", (("reason", "malformed"),)] == 0
            battery = (("class", "technical"), ("kind", "battery_low"))
            assert first["bedside_gateway_open_alerts", battery] == 0

            mosquitto.stop()  # the township's broker goes away: readings queue up
            await until(lambda: service.uplink.health.state is not BrokerState.CONNECTED)
            service.pipeline.on_measurements(
                PORT_PATH, [Measurement(Metric.SPO2, 97), Measurement(Metric.BATTERY, 10)]
            )
            await until(lambda: undelivered(service) == 2, what="the queue stats")
            queued = await scrape(web)
            assert queued["bedside_gateway_queue_undelivered_readings", ()] == 2
            assert queued["bedside_gateway_queue_oldest_undelivered_age_seconds", ()] >= 0
            assert queued["bedside_gateway_readings_accepted_total", ()] == 2
            assert queued["bedside_gateway_broker_connected", ()] == 0
            assert queued["bedside_gateway_open_alerts", battery] == 1
            fever = (("class", "physiological"), ("kind", "fever"))
            assert queued["bedside_gateway_open_alerts", fever] == 0

            mosquitto.start()  # back: the gateway reconnects and delivers the backlog
            await until(lambda: undelivered(service) == 0, what="the backlog delivered")
            after = await scrape(web)
            assert after["bedside_gateway_broker_connections_total", ()] == 2
            assert after["bedside_gateway_delivered_readings_total", ()] == 2
            assert after["bedside_gateway_queue_undelivered_readings", ()] == 0
            assert after["bedside_gateway_devices", (("link", "unreachable"),)] == 1
    finally:
        await service.stop()


@pytest.mark.asyncio
async def test_metrics_answer_only_to_their_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.web.metrics")
    service = GatewayService(load_config(write_config(tmp_path, free_port(), devices=DEVICE)))
    await service.start()
    try:
        async with client(service, None) as web:  # no token file configured
            assert (await web.get("/metrics")).status_code == 404
        token_file = tmp_path / "metrics-token"
        token_file.write_text("  \n")
        async with client(service, token_file) as web:
            for _ in range(3):  # empty: as if not configured, said once in the log
                response = await web.get("/metrics", headers={"Authorization": "Bearer "})
                assert response.status_code == 404
            warnings = [r for r in caplog.records if r.name == "gateway.web.metrics"]
            assert len(warnings) == 1 and "answers 404" in warnings[0].getMessage()

            token_file.write_text(TOKEN + "\n")
            missing = await web.get("/metrics")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            for wrong in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer"):
                response = await web.get("/metrics", headers={"Authorization": wrong})
                assert response.status_code == 401, wrong
            assert await scrape(web)

            token_file.write_text("a-new-token\n")  # changed: read again
            old = await web.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert old.status_code == 401
            new = await web.get("/metrics", headers={"Authorization": "Bearer a-new-token"})
            assert new.status_code == 200

            token_file.unlink()
            assert (await web.get("/metrics")).status_code == 404
        assert TOKEN not in caplog.text and "a-new-token" not in caplog.text
    finally:
        await service.stop()
