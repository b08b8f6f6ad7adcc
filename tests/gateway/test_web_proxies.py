"""The technician's page of a gateway with no radio of its own and one ESPHome Bluetooth
proxy. One that nothing answers for (a free loopback port): shown not connected and why,
in Chinese; the oximeter's card says no radio hears it; the `proxy_silent` alert raised
once the proxy has been silent `proxy_silent_s`; the proxy's noise key nowhere (the page,
the JSON API, `status`). A simulated proxy hearing the simulated ward: shown connected
with its slots, and the oximeter "via" it."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest

from drivers.ble.esphome.link import ProxyState
from firmware_sim.esphome.proxy import SimulatedProxy
from gateway.broker import Mosquitto, free_port
from gateway.contract.models import ProxyLinkState, Status
from gateway.service import GatewayService
from gateway.web import labels
from gateway.web.i18n import translations
from tests.conftest import Subscriber, write_config
from tests.contract import assert_contract, assert_exactly
from tests.esphome_ward import OXIMETER, ward
from tests.gateway.helpers import Clocks, form_token, running, signed_in, until

ZH = translations("zh_CN").gettext
KEY = base64.b64encode(os.urandom(32)).decode()
OXIMETER_ID = "plx-" + OXIMETER.replace(":", "").lower()
BOUND_OXIMETER = f"""
[[devices]]
kind = "plx"
address = "{OXIMETER}"
subject = "bed-1"
"""


def proxy_table(port: int) -> str:
    return f"""
[[bluetooth.proxies]]
name = "east"
host = "127.0.0.1"
port = {port}
noise_key = "{KEY}"
"""


def east(service: GatewayService) -> dict[str, Any]:
    (proxy,) = service.health()["bluetooth"]["proxies"]
    return dict(proxy)


def test_the_page_has_words_for_every_state_of_a_proxy() -> None:
    states = {state.value for state in ProxyState}
    assert set(get_args(ProxyLinkState)) == states  # the contract's, without the link's imports
    assert set(labels.PROXY_STATES) == states
    for words in labels.PROXY_STATES.values():
        assert ZH(words) != words


@pytest.mark.asyncio
async def test_a_proxy_nothing_answers_for_is_shown_not_connected_alerted_and_keyless(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Callable[[int], Subscriber]
) -> None:
    township = subscriber_factory(mosquitto.port)
    port = free_port()
    path = write_config(
        tmp_path, mosquitto.port, adapter="none", devices=BOUND_OXIMETER, extra=proxy_table(port)
    )
    clocks = Clocks()
    async with running(path, clocks) as service:
        await until(lambda: east(service)["state"] == "disconnected", what="a failed attempt")
        assert east(service)["error"].startswith(f"cannot reach 127.0.0.1:{port}: ")
        async with signed_in(service) as web:
            page = (await web.get("/")).text
            proxies = page.split('id="proxies"', 1)[1]
            assert ZH("Bluetooth proxies") in proxies and 'data-proxy="east"' in proxies
            assert f"127.0.0.1:{port}" in proxies
            assert ZH("not connected: it cannot be reached on the network") in proxies
            assert f"cannot reach 127.0.0.1:{port}" in proxies  # the technician's detail
            assert ZH("never heard") in proxies
            assert ZH("devices connected through it: %(n)s") % {"n": 0} in proxies
            card = page.split(f'data-device="{OXIMETER_ID}"', 1)[1].split("</article>")[0]
            assert ZH("no radio hears it yet") in card
            # The light warns: the floor's devices near this proxy may not be heard.
            light = page.split('id="light"', 1)[1].split("</section>")[0]
            assert ZH("Bluetooth proxy %(name)s is not connected") % {"name": "east"} in light
            status = (await web.get("/api/status")).json()
            (shown,) = status["bluetooth"]["proxies"]
            assert (shown["name"], shown["state"], shown["port"]) == ("east", "disconnected", port)

            # Silent for proxy_silent_s on the gateway's duration clock: the alert.
            clocks.advance(service.config.bluetooth.proxy_silent_s)
            await until(
                lambda: any(a["kind"] == "proxy_silent" for a in township.alerts()),
                what="proxy_silent on the alerts topic",
            )
            (alert,) = [a for a in township.alerts() if a["kind"] == "proxy_silent"]
            assert (alert["state"], alert["device"], alert["subject"]) == ("raised", "east", None)
            assert alert["detail"].startswith("not connected for ")
            assert f"cannot reach 127.0.0.1:{port}" in alert["detail"]
            page = (await web.get("/")).text
            card = page.split(f'data-alert="{alert["id"]}"', 1)[1].split("</article>")[0]
            assert ZH("Bluetooth proxy silent") in card and 'href="/#proxies"' in card

            # The technician acknowledges it on the page; the township is told.
            answer = await web.post(
                f"/alerts/{alert['id']}/ack",
                data={"by": "tech-01", "back": "/", "csrf": form_token(page)},
            )
            assert answer.status_code == 303, answer.text
            await until(
                lambda: any(
                    a["id"] == alert["id"] and a["state"] == "acknowledged"
                    for a in township.alerts()
                ),
                what="the acknowledgement on the alerts topic",
            )
            page = (await web.get("/")).text

            await until(lambda: township.snapshot("/status"), what="a status message")
            shown_everywhere = [
                page,
                (await web.get(f"/devices/{OXIMETER_ID}")).text,
                (await web.get("/api/status")).text,
                (await web.get("/api/devices")).text,
                (await web.get("/api/alerts")).text,
                json.dumps([payload for _, payload, _ in township.snapshot()]),
            ]
    for text in shown_everywhere:
        assert KEY not in text
    online = [p for _, p, _ in township.snapshot("/status") if p["state"] == "online"]
    (proxy,) = online[-1]["bluetooth"]["proxies"]
    assert (proxy["name"], proxy["state"]) == ("east", "disconnected")
    for payload in online:
        assert_contract("vitals/v1/testtown/gw-test/status", payload)
        assert_exactly(Status, payload)


@pytest.mark.asyncio
async def test_a_proxy_hearing_the_ward_is_shown_connected_and_the_oximeter_via_it(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with (
        ward() as radio,
        SimulatedProxy(noise_key=KEY, hci_spec=radio.hci_spec, port=0, slots=2) as proxy,
    ):
        path = write_config(
            tmp_path,
            mosquitto.port,
            adapter="none",
            devices=BOUND_OXIMETER,
            extra=proxy_table(proxy.port),
        )
        async with running(path, Clocks()) as service:

            def oximeter_link() -> str:
                (device,) = service.device_records()
                return str(device["link"])

            await until(lambda: oximeter_link() == "connected", what="the oximeter via east")
            await until(lambda: east(service)["devices"] == 1, what="east holding it")
            assert service.sessions.radio_of(OXIMETER) == "east"
            async with signed_in(service) as web:
                page = (await web.get("/")).text
                proxies = page.split('id="proxies"', 1)[1]
                assert ZH("connected") in proxies
                assert (
                    ZH("%(free)s / %(limit)s connection slots free") % {"free": 1, "limit": 2}
                    in proxies
                )
                assert ZH("devices connected through it: %(n)s") % {"n": 1} in proxies
                assert ZH("heard %(when)s") % {"when": ZH("just now")} in proxies
                assert "<code>" not in proxies.split("</section>")[0]  # no error to show
                device = (await web.get(f"/devices/{OXIMETER_ID}")).text
                assert ZH("via %(radio)s") % {"radio": "east"} in device
                english = (await web.get("/", headers={"Accept-Language": "en"})).text
                assert "via east" in english and "1 / 2 connection slots free" in english
                assert KEY not in page + device + english
