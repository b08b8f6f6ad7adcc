"""The technician's page over real HTTP (a real uvicorn in a real gateway): the login
in front of everything, CSRF, the host check, the language, forms that change care
through the service API and forms that are refused with a message and change nothing,
and the live-update stream. The same page in a real browser: tests/browser/."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.measurement import Measurement, Metric
from gateway.broker import Mosquitto
from gateway.service import GatewayService
from gateway.web.auth import PasswordFile
from gateway.web.i18n import translations
from tests.conftest import write_config
from tests.gateway.helpers import (
    DEVICE,
    PASSWORD,
    PORT_PATH,
    Clocks,
    form_token,
    running,
    signed_in,
    until,
)

SUBJECTS = '[[subjects]]\ncode = "bed-9"\nrisk_grade = "green"\n'
ZH = translations("zh_CN").gettext
NAMELESS = "A role code is letters, digits, - _ . (never a name)"


def started(
    tmp_path: Path, port: int, clocks: Clocks | None = None
) -> AbstractAsyncContextManager[GatewayService]:
    path = write_config(tmp_path, port, devices=DEVICE, extra=SUBJECTS)
    return running(path, clocks or Clocks())


async def audit(service: GatewayService) -> list[dict[str, Any]]:
    return await service.store.call(service.store.store.audit_trail, 100, "")


async def login_token(web: httpx.AsyncClient) -> str:
    page = await web.get("/login")
    return page.text.split('name="login_token" value="', 1)[1].split('"', 1)[0]


@pytest.mark.asyncio
async def test_until_a_password_is_set_the_page_says_how_and_shows_nothing_else(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with started(tmp_path, mosquitto.port) as service:
        async with httpx.AsyncClient(base_url=service.web_url) as web:
            for path in ("/", "/subjects/bed-9", "/login", "/commission"):
                page = await web.get(path)
                assert page.status_code == 503
                assert ZH("Set a password first") in page.text
                assert "bedside-gateway set-password --config" in page.text
                shown = page.text.split("<main>", 1)[1]  # (the language links keep the path)
                assert "bed-9" not in shown and "cms50" not in shown
            for path in ("/api/status", "/api/subjects", "/openapi.json"):
                answer = await web.get(path)
                assert answer.status_code == 503 and "set-password" in answer.json()["detail"]
            assert (await web.get("/api/docs")).status_code == 503
            assert (await web.get("/healthz")).json() == {"status": "ok"}


@pytest.mark.asyncio
async def test_every_page_and_api_route_needs_the_login(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with started(tmp_path, mosquitto.port) as service:
        PasswordFile(service.config.password_path).set(PASSWORD)
        async with httpx.AsyncClient(base_url=service.web_url) as web:
            for path in ("/", "/subjects/bed-9", "/devices/cms50-usb-absent-cms50", "/commission"):
                page = await web.get(path)
                assert page.status_code == 303
                assert page.headers["location"].startswith("/login?next=")
                assert "bed-9" not in page.text
            for path in ("/api/status", "/api/readings", "/openapi.json", "/events"):
                assert (await web.get(path)).status_code == 401, path
            docs = await web.get("/api/docs")  # a page: to the login, as the others
            assert docs.status_code == 303 and docs.headers["location"].startswith("/login")
            posted = await web.post("/subjects/bed-9/grade", data={"risk_grade": "red"})
            assert posted.status_code == 303 and posted.headers["location"].startswith("/login")
        assert service.subjects()[0]["risk_grade"] == "green"


@pytest.mark.asyncio
async def test_login_wrong_password_rate_limit_idle_timeout_and_logout(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    clocks = Clocks()
    async with started(tmp_path, mosquitto.port, clocks) as service:
        web_config = service.config.web
        PasswordFile(service.config.password_path).set(PASSWORD)
        async with httpx.AsyncClient(base_url=service.web_url) as web:
            token = await login_token(web)
            wrong = await web.post("/login", data={"password": "nope", "login_token": token})
            assert wrong.status_code == 401 and ZH("Wrong password.") in wrong.text
            forged = await web.post("/login", data={"password": PASSWORD, "login_token": "x"})
            assert forged.status_code == 403 and "bg_session" not in web.cookies
            for _ in range(web_config.login_attempts - 1):
                token = await login_token(web)
                answer = await web.post("/login", data={"password": "no", "login_token": token})
            assert answer.status_code == 429
            seconds = int(answer.headers["Retry-After"])
            assert 0 < seconds <= web_config.login_lockout_s + 1
            told = ZH("Too many wrong passwords. Try again in %(s)s seconds.") % {"s": seconds}
            assert told in answer.text
            # Even the right password waits out the lock...
            token = await login_token(web)
            locked = await web.post("/login", data={"password": PASSWORD, "login_token": token})
            assert locked.status_code == 429 and "bg_session" not in web.cookies
            clocks.advance(web_config.login_lockout_s + 1)  # ...and no longer
            token = await login_token(web)
            opened = await web.post("/login", data={"password": PASSWORD, "login_token": token})
            assert opened.status_code == 303
            cookie = opened.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            page = await web.get("/")
            assert page.status_code == 200 and "bed-9" in page.text
            logout = await web.post("/logout", data={"csrf": form_token(page.text)})
            assert logout.status_code == 303 and logout.headers["location"] == "/login"
            assert (await web.get("/")).status_code == 303
        async with signed_in(service) as web:
            assert (await web.get("/")).status_code == 200
            clocks.advance(web_config.session_idle_s + 1)  # left idle: signed out
            assert (await web.get("/")).status_code == 303


@pytest.mark.asyncio
async def test_the_page_answers_only_to_its_host_names(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with started(tmp_path, mosquitto.port) as service:
        async with httpx.AsyncClient(base_url=service.web_url) as web:
            rebound = await web.get("/healthz", headers={"Host": "evil.example"})
            assert rebound.status_code == 400 and "web.allowed_hosts" in rebound.text
            assert (await web.get("/healthz", headers={"Host": "localhost:8080"})).is_success


@pytest.mark.asyncio
async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with started(tmp_path, mosquitto.port) as service, signed_in(service) as web:
        before = await audit(service)
        for token in ("", "not-the-token"):
            refused = await web.post(
                "/subjects/bed-9/grade", data={"risk_grade": "red", "csrf": token}
            )
            assert refused.status_code == 403
            stale = "This form is out of date and was not saved. Reload the page and try again."
            assert ZH(stale) in refused.text
        assert service.subjects()[0]["risk_grade"] == "green"
        assert await audit(service) == before
        page = await web.get("/subjects/bed-9")
        saved = await web.post(
            "/subjects/bed-9/grade",
            data={"risk_grade": "red", "by": "tech-01", "csrf": form_token(page.text)},
        )
        assert saved.status_code == 303
        assert service.subjects()[0]["risk_grade"] == "red"
        (entry, *_) = await audit(service)
        assert entry["detail"]["channel"] == "web" and entry["detail"]["by"] == "tech-01"


@pytest.mark.asyncio
async def test_malformed_forms_get_a_clear_message_and_change_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with started(tmp_path, mosquitto.port) as service, signed_in(service) as web:
        csrf = form_token((await web.get("/subjects/bed-9")).text)
        before = await audit(service)
        cases = [
            ("/subjects/bed-9/isolation/start", {"days": "abc"}, ZH("isolation days")),
            ("/subjects/bed-9/isolation/start", {"days": "0"}, ZH("isolation days")),
            ("/subjects/bed-9/isolation/start", {"start": "2026-13-40"}, ZH("isolation start")),
            ("/subjects/bed-9/grade", {"risk_grade": "purple"}, ZH("risk grade")),
            ("/subjects/bed-9/grade", {"risk_grade": "red", "by": "Dr Wang"}, ZH(NAMELESS)),
        ]
        for path, form, said in cases:
            answer = await web.post(path, data={**form, "csrf": csrf})
            assert answer.status_code == 422, (path, form)
            assert said in answer.text, (path, form)
            assert 'role="alert"' in answer.text
        assert (await web.post("/subjects/bed-404/grade", data={"csrf": csrf})).status_code == 404
        assert await audit(service) == before
        (subject,) = service.subjects()
        assert subject["risk_grade"] == "green" and subject["isolation"] is None


@pytest.mark.asyncio
async def test_an_alert_is_acknowledged_from_the_page_with_a_role_code(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    clocks = Clocks()
    async with (
        started(tmp_path, mosquitto.port, clocks) as service,
        signed_in(service, headers={"Accept-Language": "en"}) as web,
    ):
        for value in [91] * 17:
            clocks.advance(1)
            service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, value)])
        await until(lambda: service.care.open_alerts(), what="low_spo2 raised")
        (alert,) = service.care.open_alerts()
        page = await web.get("/")
        assert "Low SpO2" in page.text and f"/alerts/{alert.id}/ack" in page.text
        csrf = form_token(page.text)
        nameless = await web.post(f"/alerts/{alert.id}/ack", data={"csrf": csrf, "by": ""})
        assert nameless.status_code == 422 and "A role code is needed" in nameless.text
        done = await web.post(
            f"/alerts/{alert.id}/ack", data={"csrf": csrf, "by": "doctor-07", "back": "/"}
        )
        assert done.status_code == 303
        assert service.care.open_alerts()[0].acknowledged_by == "doctor-07"
        page = await web.get("/")
        assert "Acknowledged by doctor-07" in page.text
        again = await web.post(f"/alerts/{alert.id}/ack", data={"csrf": csrf, "by": "doctor-08"})
        assert again.status_code == 422
        assert service.care.open_alerts()[0].acknowledged_by == "doctor-07"


@pytest.mark.asyncio
async def test_chinese_first_english_by_the_browser_or_the_switch(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with started(tmp_path, mosquitto.port) as service, signed_in(service) as web:
        chinese = await web.get("/")
        assert '<html lang="zh-CN">' in chinese.text and ZH("Overview") in chinese.text
        english = await web.get("/", headers={"Accept-Language": "en-GB,en;q=0.8"})
        assert '<html lang="en">' in english.text and "Overview" in english.text
        switched = await web.get("/language", params={"to": "en", "next": "/subjects/bed-9"})
        assert switched.status_code == 303 and switched.headers["location"] == "/subjects/bed-9"
        assert "Daily ledger" in (await web.get("/subjects/bed-9")).text
        away = await web.get("/language", params={"to": "zh_CN", "next": "https://evil.example"})
        assert away.headers["location"] == "/"


@pytest.mark.asyncio
async def test_the_event_stream_tells_the_page_a_reading_arrived(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with started(tmp_path, mosquitto.port) as service, signed_in(service) as web:
        async with web.stream("GET", "/events") as events:
            lines = events.aiter_lines()
            assert await anext(lines) == "event: hello"
            await until(lambda: service.live.listeners == 1, what="the page listening")
            service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 97)])

            async def changed() -> str:
                async for line in lines:
                    if line.startswith("data: ") and "readings" in line:
                        return line
                raise AssertionError("stream ended")

            assert "readings" in await asyncio.wait_for(changed(), 10)


@pytest.mark.asyncio
async def test_a_new_password_on_the_running_gateway_ends_the_open_logins(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with started(tmp_path, mosquitto.port) as service, signed_in(service) as web:
        assert (await web.get("/")).status_code == 200
        PasswordFile(service.config.password_path).set("another long password")
        assert (await web.get("/")).status_code == 303


@pytest.mark.asyncio
async def test_the_api_docs_come_from_the_gateway_itself(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with started(tmp_path, mosquitto.port) as service, signed_in(service) as web:
        docs = await web.get("/api/docs")
        assert docs.status_code == 200 and "/api/docs/assets/swagger-ui-bundle.js" in docs.text
        assert "cdn" not in docs.text.lower()
        asset = await web.get("/api/docs/assets/swagger-ui-bundle.js")
        assert asset.status_code == 200 and len(asset.content) > 100_000
        assert (await web.get("/openapi.json")).json()["paths"]["/api/status"]


@pytest.mark.asyncio
async def test_an_open_page_left_alone_still_signs_out_and_its_stream_ends(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The page's own live updates are no sign of a person: they keep neither the login
    nor its event stream open."""
    clocks = Clocks()
    async with started(tmp_path, mosquitto.port, clocks) as service, signed_in(service) as web:
        idle_s = service.config.web.session_idle_s
        assert (await web.get("/")).status_code == 200
        clocks.advance(idle_s - 1)
        live = await web.get("/", headers={"X-Live-Parts": "alerts devices"})
        assert live.status_code == 200
        clocks.advance(2)  # idle_s + 1 after the person's last request
        assert (await web.get("/", headers={"X-Live-Parts": "alerts"})).status_code == 303
    (tmp_path / "again").mkdir()
    async with (
        started(tmp_path / "again", mosquitto.port, clocks) as service,
        signed_in(service) as web,
    ):
        csrf = form_token((await web.get("/")).text)
        async with web.stream("GET", "/events") as events:
            lines = events.aiter_lines()
            assert await anext(lines) == "event: hello"
            await until(lambda: service.live.listeners == 1, what="the page listening")
            assert (await web.post("/logout", data={"csrf": csrf})).status_code == 303
            service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 97)])

            async def told() -> list[str]:
                return [line async for line in lines if line.startswith("event:")]

            assert await asyncio.wait_for(told(), 10) == ["event: signed-out"]
        await until(lambda: service.live.listeners == 0, what="the stream closed")
