"""The technician's page in Debian's Chromium, as a technician uses it on a phone: sign
in (and the rate limit), a refused stale form, an alert arriving live and acknowledged,
readings arriving live, the connection-lost banner, the language switch, no sideways
scrolling at 360 px, nothing fetched from elsewhere, no page mixing two languages,
binding a simulated oximeter and watching its first readings; and the screenshots of
every screen (`test_screenshots`)."""

from __future__ import annotations

import asyncio
import math
import os
import re
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from playwright.async_api import expect

from drivers.measurement import Measurement, Metric, Site
from gateway.model import ClockState
from tests.browser.conftest import (
    DESKTOP,
    DEVICE_ID,
    DOOR,
    OXIMETER,
    PASSWORD,
    PHONE,
    SUBJECT,
    Gateway,
    OpenTab,
    StartGateway,
    Tab,
    sign_in,
    signed_in_page,
    zh,
)
from tests.e2e.test_ble_to_broker import Simulator
from tests.gateway.helpers import DEVICE, PORT_PATH, until


def message_pattern(message: str) -> re.Pattern[str]:
    """A catalogue message with its `%(name)s` values as any text."""
    parts = re.split(r"%\(\w+\)s", message)
    return re.compile(".+".join(re.escape(part) for part in parts))


# --- login ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_before_a_password_is_set_the_page_only_says_how_to_set_one(
    start_gateway: StartGateway, open_tab: OpenTab
) -> None:
    gateway = await start_gateway(password=None)
    tab = await open_tab()
    page = tab.page
    for path in ("/", f"/subjects/{SUBJECT}", "/login", "/commission"):
        response = await page.goto(gateway.url(path))
        assert response is not None and response.status == 503
        await expect(page.locator("h1")).to_have_text(zh("Set a password first"))
        await expect(page.locator("main code")).to_contain_text("bedside-gateway set-password")
        # Nothing else: no bed, no device, no way in.
        text = await page.locator("body").inner_text()
        assert SUBJECT not in text and "cms50" not in text
        assert await page.locator("form, nav.tabs").count() == 0


@pytest.mark.asyncio
async def test_signing_in_opens_the_overview_and_signing_out_closes_it(
    gateway: Gateway, open_tab: OpenTab
) -> None:
    tab = await open_tab()
    page = tab.page
    await page.goto(gateway.url(f"/subjects/{SUBJECT}"))
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await expect(page.locator("h1")).to_have_text(zh("Sign in"))
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("form[action='/login'] button").click()
    # Back where the technician was going.
    await expect(page).to_have_url(gateway.url(f"/subjects/{SUBJECT}"))
    await page.locator("nav.tabs a[href='/']").click()
    await expect(page.locator("#alerts h2")).to_contain_text(zh("Active alerts"))
    await page.get_by_role("button", name=zh("Sign out")).click()
    await expect(page).to_have_url(gateway.url("/login"))
    await page.goto(gateway.url("/"))
    await expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    assert SUBJECT not in await page.locator("body").inner_text()


@pytest.mark.asyncio
async def test_signing_in_works_with_the_sign_in_page_open_twice(
    gateway: Gateway, open_tab: OpenTab
) -> None:
    """A second look at the sign-in page (another tab; or the browser asking for
    /favicon.ico, which behind the login is the sign-in page) leaves the first form
    good."""
    tab = await open_tab()
    first = tab.page
    await first.goto(gateway.url("/login"))
    second = await tab.context.new_page()
    await second.goto(gateway.url("/login"))
    await first.locator("input[name=password]").fill(PASSWORD)
    await first.locator("form[action='/login'] button").click()
    await expect(first).to_have_url(gateway.url("/"))


@pytest.mark.asyncio
async def test_an_open_page_left_idle_goes_to_the_sign_in_by_itself(
    gateway: Gateway, open_tab: OpenTab
) -> None:
    """Its event stream does not keep the login open: past web.session_idle_s (900 s)
    without a request, the open page shows the sign-in."""
    tab = await open_tab()
    await sign_in(tab, gateway)
    await expect(tab.page.locator("body")).to_have_attribute("data-live", "connected")
    gateway.clocks.advance(901)
    await expect(tab.page.locator("h1")).to_have_text(zh("Sign in"))
    assert SUBJECT not in await tab.page.locator("body").inner_text()


@pytest.mark.asyncio
async def test_a_wrong_password_is_told_and_five_lock_the_login_for_a_while(
    gateway: Gateway, open_tab: OpenTab
) -> None:
    tab = await open_tab()
    page = tab.page
    await page.goto(gateway.url("/login"))
    alert = page.get_by_role("alert")
    for _attempt in range(4):
        await page.locator("input[name=password]").fill("not-the-password")
        await page.locator("form[action='/login'] button").click()
        await expect(alert).to_have_text(zh("Wrong password."))
    await page.locator("input[name=password]").fill("not-the-password")
    await page.locator("form[action='/login'] button").click()
    locked = message_pattern(zh("Too many wrong passwords. Try again in %(s)s seconds."))
    await expect(alert).to_have_text(locked)
    seconds = int(re.findall(r"\d+", await alert.inner_text())[0])
    assert seconds == 300  # web.login_lockout_s; the gateway's clock stands still here
    # While locked, even the right password does not open the page.
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("form[action='/login'] button").click()
    await expect(alert).to_have_text(locked)
    # Once the lockout has passed, it does.
    gateway.clocks.advance(300)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("form[action='/login'] button").click()
    await expect(page).to_have_url(gateway.url("/"))


# --- forms and alerts -------------------------------------------------------------


async def low_spo2_alert(gateway: Gateway) -> str:
    """A desaturation of bed-9 held past the rule's 15 s: its low SpO2 alert's id."""
    gateway.spo2(*[91] * 17)
    await until(lambda: gateway.service.care.open_alerts(), what="low SpO2 raised")
    (alert,) = gateway.service.care.open_alerts()
    return alert.id


@pytest.mark.asyncio
async def test_a_form_with_a_tampered_csrf_token_is_refused_and_changes_nothing(
    gateway: Gateway, open_tab: OpenTab
) -> None:
    alert_id = await low_spo2_alert(gateway)
    page = await signed_in_page(open_tab, gateway)
    card = page.locator(f"[data-alert='{alert_id}']")
    await card.locator("input[name=by]").fill("doctor-07")
    await card.locator("input[name=csrf]").evaluate("input => { input.value = 'forged' }")
    async with page.expect_response(f"**/alerts/{alert_id}/ack") as posted:
        await card.get_by_role("button", name=zh("Acknowledge")).click()
    assert (await posted.value).status == 403
    await expect(page.get_by_role("alert")).to_have_text(
        zh("This form is out of date and was not saved. Reload the page and try again.")
    )
    (alert,) = gateway.service.care.open_alerts()
    assert alert.id == alert_id and alert.acknowledged_by is None
    # Back on the overview the alert still asks to be acknowledged.
    await page.get_by_role("link", name=zh("Overview")).first.click()
    await expect(page.locator(f"[data-alert='{alert_id}'] form")).to_be_visible()


@pytest.mark.asyncio
async def test_an_alert_arrives_on_the_open_overview_and_is_acknowledged_with_a_role_code(
    gateway: Gateway, open_tab: OpenTab
) -> None:
    page = await signed_in_page(open_tab, gateway)
    await expect(page.locator("#alerts .count")).to_have_text("0")
    await page.evaluate("window.notReloaded = true")
    alert_id = await low_spo2_alert(gateway)
    card = page.locator(f"[data-alert='{alert_id}']")
    await expect(card).to_contain_text(zh("Low SpO2"))
    await expect(card).to_contain_text(SUBJECT)
    await expect(page.locator("#alerts .count")).to_have_text("1")
    assert await page.evaluate("window.notReloaded") is True  # it came over /events
    await card.locator("input[name=by]").fill("doctor-07")
    await card.get_by_role("button", name=zh("Acknowledge")).click()
    acknowledged = message_pattern(zh("Acknowledged by %(who)s, %(when)s"))
    await expect(page.locator(f"[data-alert='{alert_id}'] .ok")).to_have_text(acknowledged)
    await expect(page.locator(f"[data-alert='{alert_id}'] .ok")).to_contain_text("doctor-07")
    (alert,) = gateway.service.care.open_alerts()
    assert alert.acknowledged_by == "doctor-07"
    # A name is not a role code: refused with the reason, nothing changed.
    gateway.spo2(*[97] * 62)  # recovered: the alert clears
    await until(lambda: not gateway.service.care.open_alerts(), what="cleared")
    second = await low_spo2_alert(gateway)
    card = page.locator(f"[data-alert='{second}']")
    await card.locator("input[name=by]").fill("Dr Wang")
    await card.get_by_role("button", name=zh("Acknowledge")).click()
    await expect(page.get_by_role("alert")).to_have_text(
        zh("A role code is letters, digits, - _ . (never a name)")
    )
    assert gateway.service.care.open_alerts()[0].acknowledged_by is None


# --- live -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_reading_appears_on_the_open_device_page_without_a_reload(
    gateway: Gateway, open_tab: OpenTab
) -> None:
    page = await signed_in_page(open_tab, gateway)
    await page.goto(gateway.url(f"/devices/{DEVICE_ID}"))
    await expect(page.locator("#readings")).to_contain_text(zh("No reading yet"))
    await page.evaluate("window.notReloaded = true")
    gateway.spo2(93)
    await expect(page.locator("#readings li").first).to_contain_text("93")
    await expect(page.locator("#device")).to_contain_text("93")
    gateway.spo2(95)
    await expect(page.locator("#readings li")).to_have_count(2)
    await expect(page.locator("#readings li").first).to_contain_text("95")
    assert await page.evaluate("window.notReloaded") is True


@pytest.mark.asyncio
async def test_a_lost_connection_is_shown_and_the_page_recovers_by_itself(
    gateway: Gateway, open_tab: OpenTab
) -> None:
    """The phone's network goes for a moment (the browser is put offline): a change the
    page cannot fetch shows the banner; back online, the next change is shown and the
    banner goes."""
    page = await signed_in_page(open_tab, gateway)
    await page.goto(gateway.url(f"/devices/{DEVICE_ID}"))
    banner = page.locator("#offline")
    await expect(page.locator("body")).to_have_attribute("data-live", "connected")
    await expect(banner).to_be_hidden()
    await page.context.set_offline(True)
    gateway.spo2(94)
    await expect(banner).to_be_visible()
    await expect(banner).to_have_text(zh("Connection to the gateway lost: reconnecting…"))
    await page.context.set_offline(False)
    gateway.spo2(96)
    await expect(page.locator("#readings li")).to_have_count(2)
    await expect(page.locator("#readings li").first).to_contain_text("96")
    await expect(banner).to_be_hidden()


@pytest.mark.asyncio
async def test_an_open_page_does_not_keep_the_gateway_from_stopping(
    start_gateway: StartGateway, open_tab: OpenTab
) -> None:
    """`systemctl stop` with a technician's page open: the gateway stops (within
    systemd's patience), the page says the connection is lost, and once the gateway is
    back the page comes back by itself (to the sign-in: sessions are kept in memory)."""
    gateway = await start_gateway()
    page = await signed_in_page(open_tab, gateway)
    await expect(page.locator("body")).to_have_attribute("data-live", "connected")
    stopping = asyncio.create_task(gateway.stop())
    done, _pending = await asyncio.wait([stopping], timeout=20)
    if not done:
        await page.context.close()  # the page's event stream closed, the stop ends
        await stopping
        pytest.fail("the gateway did not stop while a page was open")
    await expect(page.locator("#offline")).to_be_visible()
    await start_gateway(again=gateway)
    await expect(page.locator("h1")).to_have_text(zh("Sign in"), timeout=30_000)


# --- languages ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_language_switch_turns_the_page_english_and_the_choice_is_kept(
    gateway: Gateway, open_tab: OpenTab
) -> None:
    page = await signed_in_page(open_tab, gateway)
    await page.goto(gateway.url(f"/subjects/{SUBJECT}"))
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(page.locator("#alerts h2")).to_contain_text(zh("Active alerts"))
    await page.locator("nav.lang").get_by_role("link", name="English").click()
    await expect(page).to_have_url(gateway.url(f"/subjects/{SUBJECT}"))  # the same page
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.locator("#alerts h2")).to_contain_text("Active alerts")
    await page.locator("nav.tabs").get_by_role("link", name="Add a device").click()
    await page.get_by_role("link", name="Overview").click()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.locator("#devices h2")).to_have_text("Devices")
    await page.locator("nav.lang").get_by_role("link", name="中文").click()
    await expect(page.locator("#devices h2")).to_have_text(zh("Devices"))


@pytest.mark.parametrize(
    ("locale", "lang", "heading"),
    [("en-US", "en", "Sign in"), ("fr-FR", "zh-CN", zh("Sign in"))],
    ids=["english-browser", "other-language-browser"],
)
@pytest.mark.asyncio
async def test_the_browser_language_chooses_english_else_the_page_is_chinese(
    gateway: Gateway, open_tab: OpenTab, locale: str, lang: str, heading: str
) -> None:
    tab = await open_tab(locale=locale)
    await tab.page.goto(gateway.url("/"))
    await expect(tab.page.locator("html")).to_have_attribute("lang", lang)
    await expect(tab.page.locator("h1")).to_have_text(heading)


# --- every page: phone width, nothing from elsewhere, one language -----------------


#: The signed-in pages, one of each kind.
PAGES = (
    "/",
    f"/subjects/{SUBJECT}",
    f"/devices/{DEVICE_ID}",
    f"/devices/{DEVICE_ID}/test",
    "/commission",
    f"/commission/{OXIMETER}",
)

#: What the page shows as it is in every language: product and protocol names, units.
NAMES = ("BTHome", "BerryMed", "USB", "dBm")
#: A word with a digit in it is a code, an id, an address or a model ("bed-3",
#: "doctor-07" as a placeholder, "SpO2", "PC-60FW"): data, never a sentence.
CODE_LIKE = re.compile(r"[\w.:-]*\d[\w.:-]*")


@pytest_asyncio.fixture
async def ward_gateway(ward: Simulator, start_gateway: StartGateway) -> Gateway:
    """A gateway with bed-9's oximeter (an active low SpO2 alert) and the simulated
    oximeter and door sensor of `ward` nearby, unbound."""
    gateway = await start_gateway(adapter=ward.adapter)
    await low_spo2_alert(gateway)
    return gateway


async def visit(tab: Tab, gateway: Gateway, path: str) -> None:
    """Opens a signed-in page, and waits for what it shows to be there."""
    response = await tab.page.goto(gateway.url(path))
    assert response is not None and response.status == 200, (path, response)
    if path == "/commission":  # the nearby list fills as the devices are heard
        await expect(tab.page.locator(f"[data-address='{OXIMETER}']")).to_be_visible()
    await expect(tab.page.locator("body")).to_have_attribute("data-live", "connected")


async def every_page(tab: Tab, gateway: Gateway) -> AsyncIterator[str]:
    """The sign-in page, then each of `PAGES` signed in: each path once it is shown."""
    await tab.page.goto(gateway.url("/login"))
    yield "/login"
    await sign_in(tab, gateway)
    for path in PAGES:
        await visit(tab, gateway, path)
        yield path


@pytest.mark.asyncio
async def test_no_page_scrolls_sideways_on_a_360_px_phone(
    ward_gateway: Gateway, open_tab: OpenTab
) -> None:
    for locale in ("zh-CN", "en-US"):
        tab = await open_tab(locale=locale, viewport=PHONE)
        wide = {}
        async for path in every_page(tab, ward_gateway):
            scroll, screen = await tab.page.evaluate(
                "() => [document.documentElement.scrollWidth, window.innerWidth]"
            )
            if scroll > screen:
                wide[path] = scroll
        assert not wide, f"{locale}: pages wider than the 360 px screen: {wide}"


@pytest.mark.asyncio
async def test_every_request_of_every_page_goes_to_the_gateway(
    ward_gateway: Gateway, open_tab: OpenTab
) -> None:
    """Works with no internet: no CDN, no font, no script from elsewhere; and the page
    runs as the gateway's content security policy allows it (no console error)."""
    tab = await open_tab()
    shown = [path async for path in every_page(tab, ward_gateway)]
    origin = ward_gateway.origin
    assert [url for url in tab.requests if not url.startswith(origin + "/")] == []
    asked = {url.removeprefix(origin) for url in tab.requests}
    assert asked >= {"/static/app.css", "/static/live.js", "/events", *shown}
    assert tab.errors == []


#: What the page shows as it is in every language: product and protocol names, units.
NAMES = ("BTHome", "BerryMed", "USB", "dBm")
#: A word with a digit in it is a code, an id, an address or a model ("bed-3",
#: "doctor-07" as a placeholder, "SpO2", "PC-60FW"): data, never a sentence.
CODE_LIKE = re.compile(r"[\w.:-]*\d[\w.:-]*", re.ASCII)
HAN = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")


async def shown_text(tab: Tab) -> str:
    """What the page says: its title, its visible text (a select's options too) and
    its aria-labels, titles, placeholders and alt texts."""
    text: str = await tab.page.evaluate(
        """() => [document.title, document.body.innerText, ...[...document.querySelectorAll(
               "[aria-label], [title], [placeholder], [alt]")].flatMap(el =>
               ["aria-label", "title", "placeholder", "alt"].map(a => el.getAttribute(a) || ""))
           ].join("\\n")"""
    )
    return text


def latin_words(text: str, data: tuple[str, ...]) -> set[str]:
    """The runs of two or more Latin letters left once `data`, `NAMES` and every word
    with a digit in it are taken out."""
    for value in sorted([*data, *NAMES], key=len, reverse=True):
        text = text.replace(value, " ")
    return set(re.findall(r"[A-Za-z]{2,}", CODE_LIKE.sub(" ", text)))


@pytest.mark.asyncio
async def test_no_page_mixes_the_two_languages(ward_gateway: Gateway, open_tab: OpenTab) -> None:
    """In Chinese, what is left in Latin letters is data (codes, ids, addresses, the
    names the devices send) and product names and units; in English there is no Han
    character but the language switch's "中文"."""
    # The gateway's id, the simulated devices' names, the switch's "English".
    data = ("gw-test", "Sim Oximeter", "Sim DW", "English")
    mixed: dict[str, object] = {}
    tab = await open_tab(locale="zh-CN")
    async for path in every_page(tab, ward_gateway):
        if words := latin_words(await shown_text(tab), data):
            mixed[f"zh-CN {path}"] = sorted(words)
    tab = await open_tab(locale="en-US")
    async for path in every_page(tab, ward_gateway):
        if han := HAN.findall((await shown_text(tab)).replace("中文", "")):
            mixed[f"en {path}"] = "".join(han)
    assert not mixed, f"text in the other language: {mixed}"


# --- commissioning ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_nearby_oximeter_is_bound_to_a_new_bed_and_its_readings_arrive(
    ward: Simulator, start_gateway: StartGateway, open_tab: OpenTab
) -> None:
    gateway = await start_gateway(adapter=ward.adapter)
    page = await signed_in_page(open_tab, gateway)
    await page.locator("nav.tabs").get_by_role("link", name=zh("Add a device")).click()
    candidate = page.locator(f"#nearby [data-address='{OXIMETER}']")
    looks_like = message_pattern(zh("Looks like: %(kind)s"))
    await expect(candidate).to_contain_text(looks_like)
    await expect(candidate).to_contain_text(zh("Bluetooth pulse oximeter"))
    await candidate.click()
    await expect(page.locator("h1")).to_have_text(zh("Bind a device"))
    await expect(page.locator("select[name=kind] option:checked")).to_have_text(
        zh("Bluetooth pulse oximeter")
    )
    await page.locator("input[name=new_subject]").fill("bed-3")
    await page.locator("input[name=by]").fill("tech-01")
    await page.get_by_role("button", name=zh("Bind and test")).click()
    await expect(page).to_have_url(gateway.url("/devices/plx-f00000000002/test"))
    await expect(page.locator("#device")).to_contain_text("bed-3")
    # The first readings arrive as the oximeter sends them, without a reload.
    await expect(page.locator("#readings li", has_text=zh("SpO2")).first).to_be_visible()
    await expect(page.locator("#device")).to_contain_text(zh("connected"))
    (record,) = [d for d in gateway.service.device_records() if d["id"] == "plx-f00000000002"]
    assert record["subject"] == "bed-3"
    await page.get_by_role("link", name=zh("Done")).click()
    await expect(page).to_have_url(gateway.url("/subjects/bed-3"))
    await expect(page.locator("#devices")).to_contain_text("plx-f00000000002")
    # Bound, it is no longer offered nearby.
    await page.goto(gateway.url("/commission"))
    await expect(page.locator(f"[data-address='{DOOR}']")).to_be_visible()
    await expect(page.locator(f"[data-address='{OXIMETER}']")).to_have_count(0)


@pytest.mark.asyncio
async def test_a_door_sensor_with_a_wrong_key_is_refused_and_not_bound(
    ward: Simulator, start_gateway: StartGateway, open_tab: OpenTab
) -> None:
    gateway = await start_gateway(adapter=ward.adapter)
    page = await signed_in_page(open_tab, gateway)
    await page.goto(gateway.url("/commission"))
    await page.locator(f"[data-address='{DOOR}']").click()
    await page.locator("input[name=new_subject]").fill("bed-4")
    await page.locator("input[name=key]").fill("00" * 16)
    await page.get_by_role("button", name=zh("Bind and test")).click()
    await expect(page.get_by_role("alert")).to_have_text(
        zh("This key does not decrypt what the sensor sends: check the key.")
    )
    await expect(page.locator("input[name=new_subject]")).to_have_value("bed-4")
    assert [d["id"] for d in gateway.service.device_records()] == [DEVICE_ID]


# --- screenshots --------------------------------------------------------------------

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
THERMOMETER = "F0:00:00:00:00:31"  # bound, and not on the simulated radio
SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Screen name -> page, shot before the simulated oximeter is bound.
BEFORE_BINDING = {
    "overview": "/",
    "subject": f"/subjects/{SUBJECT}",
    "commission": "/commission",
    "bind": f"/commission/{OXIMETER}",
}
#: A picture's width and language, as its name says them -> the browser's.
SIZES = {"360": PHONE, "1280": DESKTOP}
LANGUAGES = {"zh-CN": "zh-CN", "en": "en-US"}


def move_to(gateway: Gateway, at: datetime) -> None:
    gateway.clocks.advance((at - gateway.clocks.wall).total_seconds())


async def accepted(gateway: Gateway, count: int) -> None:
    counters = gateway.service.pipeline.counters
    await until(lambda: counters.get("readings_accepted") == count, what=f"{count} readings")


async def ward_scene(ward: Simulator, start_gateway: StartGateway) -> Gateway:
    """Bed-9 on day 7 of 14 of its isolation, its temperature taken morning and
    evening, an hour of oximetry ending in a desaturation (a low SpO2 alert), and the
    simulated oximeter and door sensor nearby; the gateway's clock synchronised."""
    end = datetime.now(UTC) - timedelta(seconds=30)
    first_day = end.astimezone(SHANGHAI).date() - timedelta(days=6)
    subjects = (
        f'[[subjects]]\ncode = "{SUBJECT}"\nrisk_grade = "yellow"\n'
        f"isolation_start = {first_day.isoformat()}\nisolation_days = 14\n"
    )
    thermometer = (
        f'[[devices]]\nkind = "hts"\naddress = "{THERMOMETER}"\n'
        f'subject = "{SUBJECT}"\nsite = "axillary"\n'
    )
    start = datetime.combine(first_day, time(7, 0), SHANGHAI)
    gateway = await start_gateway(
        adapter=ward.adapter,
        devices=DEVICE + thermometer,
        extra=subjects,
        clock_state=lambda: ClockState.SYNCED,
        wall=start.astimezone(UTC),
    )
    count = 0
    for day in range(7):
        for hour, minute in ((7, 42), (19, 36)):
            at = datetime.combine(first_day + timedelta(days=day), time(hour, minute), SHANGHAI)
            if at > end - timedelta(hours=1, minutes=5):
                break
            move_to(gateway, at)
            value = round(36.5 + 0.3 * math.sin(day * 1.7 + hour), 1)
            temperature = Measurement(Metric.BODY_TEMPERATURE, value, site=Site.AXILLARY)
            gateway.service.pipeline.on_measurements(THERMOMETER, [temperature])
            count += 1
            await accepted(gateway, count)  # each in its window before the next
    move_to(gateway, end - timedelta(hours=1))
    for step in range(354):
        gateway.clocks.advance(10)
        spo2 = round(97 + 1.2 * math.sin(step / 9))
        pulse = round(76 + 6 * math.sin(step / 23))
        gateway.service.pipeline.on_measurements(
            PORT_PATH, [Measurement(Metric.SPO2, spo2), Measurement(Metric.PULSE_RATE, pulse)]
        )
        count += 2
    await accepted(gateway, count)
    await low_spo2_alert(gateway)
    return gateway


async def shoot(tab: Tab, into: Path, name: str) -> Path:
    """The whole page, once it is checked not to scroll sideways."""
    fits = "() => document.documentElement.scrollWidth <= window.innerWidth"
    assert await tab.page.evaluate(fits), f"{name} is wider than the screen"
    path = into / f"{name}.png"
    await tab.page.screenshot(path=path, full_page=True)
    return path


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where `test_screenshots` puts its pictures: docs/screenshots with
    DOCS_SCREENSHOTS=1 (a Chinese font checked for first), else the test's directory."""
    if os.environ.get("DOCS_SCREENSHOTS") != "1":
        return tmp_path
    families = subprocess.run(
        ["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=True
    ).stdout
    assert families.strip(), "no Chinese font: sudo apt-get install -y fonts-noto-cjk"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.mark.asyncio
async def test_screenshots(
    ward: Simulator, start_gateway: StartGateway, open_tab: OpenTab, screenshots: Path
) -> None:
    """Every screen (login, overview with an alert, a subject's charts and ledger, the
    nearby list, the bind form, a bound oximeter's test view) at phone and desktop
    width in both languages, each checked for sideways scrolling. The pictures go to
    the test's own directory; with DOCS_SCREENSHOTS=1 into docs/screenshots
    (`<screen>-<width>-<lang>.png`), where the docs show them: regenerate them with
    `DOCS_SCREENSHOTS=1 .venv/bin/pytest tests/browser -k screenshots` after changing
    the page (the Chinese text needs fonts-noto-cjk, which `make test` installs)."""
    gateway = await ward_scene(ward, start_gateway)
    shots: list[Path] = []
    tabs: dict[str, Tab] = {}  # by "<width>-<lang>"
    for lang, locale in LANGUAGES.items():
        for width, viewport in SIZES.items():
            tab = tabs[f"{width}-{lang}"] = await open_tab(locale=locale, viewport=viewport)
            await tab.page.goto(gateway.url("/login"))
            shots.append(await shoot(tab, screenshots, f"login-{width}-{lang}"))
            await sign_in(tab, gateway)
            for screen, path in BEFORE_BINDING.items():
                await visit(tab, gateway, path)
                shots.append(await shoot(tab, screenshots, f"{screen}-{width}-{lang}"))
    binding = tabs["360-zh-CN"].page
    await binding.goto(gateway.url(f"/commission/{OXIMETER}"))
    await binding.locator("input[name=new_subject]").fill("bed-3")
    await binding.get_by_role("button", name=zh("Bind and test")).click()
    test_view = "/devices/plx-f00000000002/test"
    await expect(binding).to_have_url(gateway.url(test_view))
    for size_and_lang, tab in tabs.items():
        await visit(tab, gateway, test_view)
        spo2 = re.compile(f"SpO2|{zh('SpO2')}")
        await expect(tab.page.locator("#readings li", has_text=spo2).first).to_be_visible()
        shots.append(await shoot(tab, screenshots, f"device-test-{size_and_lang}"))
    assert len(shots) == 6 * 2 * 2 and all(shot.stat().st_size > 10_000 for shot in shots)
