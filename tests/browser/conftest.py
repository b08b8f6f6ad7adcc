"""The technician's page in a real browser: Debian's Chromium (`/usr/bin/chromium`, which
`make test` installs with apt) driven by Playwright's async API, never a browser that
Playwright downloads; against a gateway running in the test's process (its page served
by a real uvicorn, a real mosquitto, a real SQLite store) with its page password set.

Nothing is skipped: on a machine without Chromium these tests fail, saying how to
install it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from drivers.measurement import Measurement, Metric
from gateway.broker import Mosquitto
from gateway.clock import kernel_clock_state
from gateway.config import load_config
from gateway.model import ClockState
from gateway.service import GatewayService
from gateway.web.auth import PasswordFile
from gateway.web.i18n import translations
from tests.conftest import write_config
from tests.e2e.test_ble_to_broker import Simulator
from tests.gateway.helpers import DEVICE, PORT_PATH, Clocks

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "night-shift-ward-3"
SUBJECT = "bed-9"
#: The CMS50 of `DEVICE` (its port never appears: the tests hand its readings to the
#: pipeline), bound to `SUBJECT`.
DEVICE_ID = "cms50-usb-absent-cms50"
SUBJECTS = f'[[subjects]]\ncode = "{SUBJECT}"\nrisk_grade = "green"\n'
ZONE = 'timezone = "Asia/Shanghai"'
#: How long a page has to show what it should, in ms: live changes arrive within a
#: second; the rest is room for a slow machine.
WAIT_MS = 15_000
#: What the simulated ward (`ward`) has on the air, none of it bound.
OXIMETER = "F0:00:00:00:00:02"
DOOR = "F0:00:00:00:00:11"
PHONE: ViewportSize = {"width": 360, "height": 740}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}

expect.set_options(timeout=WAIT_MS)


def zh(message: str) -> str:
    """A message of the page as the Chinese catalogue has it."""
    return translations("zh_CN").gettext(message)


@dataclass
class Gateway:
    """A running gateway, the clocks its readings are stamped with, its page's origin."""

    service: GatewayService
    clocks: Clocks
    stopped: bool = False

    @property
    def origin(self) -> str:
        return self.service.web_url.rstrip("/")

    def url(self, path: str = "/") -> str:
        return self.origin + path

    def spo2(self, *values: float) -> None:
        """SpO2 samples from the CMS50, one a second on the gateway's clocks."""
        for value in values:
            self.clocks.advance(1)
            self.service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, value)])

    async def stop(self) -> None:
        self.stopped = True
        await self.service.stop()


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def start_gateway(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[StartGateway]:
    """Starts a gateway (each stopped at the end): `start(adapter=, devices=, extra=,
    password=, clock_state=, wall=)`; `password=None` leaves it unset. The clocks start
    at `wall`, by default two minutes behind the real time, so that the samples a test
    adds (a second each) stay in the past.
    `start(again=gateway)`: a new service over a stopped one's configuration and store,
    on the same port (a restart)."""
    running: list[Gateway] = []

    async def start(
        *,
        adapter: str = "bluez",
        devices: str = DEVICE,
        extra: str = SUBJECTS,
        password: str | None = PASSWORD,
        again: Gateway | None = None,
        clock_state: Callable[[], ClockState] = kernel_clock_state,
        wall: datetime | None = None,
    ) -> Gateway:
        if again is not None:
            config, clocks = again.service.config, again.clocks
        else:
            path = write_config(
                tmp_path,
                mosquitto.port,
                adapter=adapter,
                devices=devices,
                extra=extra,
                gateway_extra=ZONE,
            )
            config = load_config(path)
            clocks = Clocks(wall=wall or datetime.now(UTC) - timedelta(minutes=2))
            if password is not None:
                PasswordFile(config.password_path).set(password)
        service = GatewayService(
            config, now=clocks.now, monotonic=clocks.monotonic, clock_state=clock_state
        )
        await service.start()
        gateway = Gateway(service, clocks)
        running.append(gateway)
        return gateway

    yield start
    for gateway in reversed(running):
        if not gateway.stopped:
            await gateway.stop()


@pytest_asyncio.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    """A gateway with one bed (`SUBJECT`) and its oximeter (`DEVICE_ID`), password set."""
    return await start_gateway()


@pytest.fixture
def ward() -> Iterator[Simulator]:
    """Simulated devices on a virtual Bluetooth radio, in their own process
    (firmware_sim, docs/ble-simulation.md section 1.2): a Bluetooth pulse oximeter
    (`OXIMETER`) and an encrypted BTHome door sensor (`DOOR`). A gateway reaches them
    with `start_gateway(adapter=ward.adapter)`; request `ward` before `start_gateway`,
    so that the gateway stops first."""
    simulator = Simulator("--only", "--plx", OXIMETER, "--door", "bthome-encrypted")
    yield simulator
    simulator.stop()


@pytest.fixture
def chromium() -> Path:
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: the browser tests run Debian's chromium"
        " (`make test` installs it; or: sudo apt-get install -y chromium)"
    )
    return CHROMIUM


@pytest_asyncio.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # Chromium's sandbox cannot start as root (a CI container).
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = await playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Tab:
    """A page in its own browser context (its own cookies), and what it asked for."""

    context: BrowserContext
    page: Page
    #: Every URL the context requested (pages, script, style, fetches, the event stream).
    requests: list[str] = field(default_factory=list)
    #: Console errors and uncaught exceptions (a refused script or style shows here).
    errors: list[str] = field(default_factory=list)


OpenTab = Callable[..., Awaitable[Tab]]


@pytest_asyncio.fixture
async def open_tab(browser: Browser) -> AsyncIterator[OpenTab]:
    """Opens a tab: `open_tab(locale="zh-CN", viewport=PHONE)`; the locale is what the
    browser sends as its Accept-Language."""
    contexts: list[BrowserContext] = []

    async def open_(locale: str = "zh-CN", viewport: ViewportSize = PHONE) -> Tab:
        context = await browser.new_context(locale=locale, viewport=viewport)
        contexts.append(context)
        tab = Tab(context, await context.new_page())
        context.on("request", lambda request: tab.requests.append(request.url))
        tab.page.on(
            "console", lambda msg: tab.errors.append(msg.text) if msg.type == "error" else None
        )
        tab.page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
        return tab

    yield open_
    for context in contexts:
        await context.close()


async def signed_in_page(open_tab: OpenTab, gateway: Gateway) -> Page:
    """A new tab, signed in, on the overview."""
    tab = await open_tab()
    await sign_in(tab, gateway)
    return tab.page


async def sign_in(tab: Tab, gateway: Gateway, password: str = PASSWORD) -> None:
    """Through the login form, to the overview."""
    page = tab.page
    await page.goto(gateway.url("/login"))
    await page.locator("input[name=password]").fill(password)
    await page.locator("form[action='/login'] button").click()
    await expect(page).to_have_url(gateway.url("/"))
