"""Builders for readings, a device that is never plugged in, and waiting in tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from drivers.measurement import Measurement, Metric, Quality, Site
from gateway.config import Config, load_config, parse_config
from gateway.model import Alert, AlertKind, AlertState, ClockState, Instant, Reading, Severity
from gateway.rules.engine import RuleEngine
from gateway.subjects import SubjectDirectory
from gateway.web.auth import PasswordFile

if TYPE_CHECKING:
    from gateway.service import GatewayService

T0 = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)


def rules_config(**sections: Any) -> Config:
    """A configuration with the given sections (`subjects=[...]`, `rules={...}`,
    `devices=[...]`, `gateway={"timezone": ...}`) over a minimal one."""
    gateway = {
        "id": "gw-test",
        "township": "t",
        "data_dir": "/nonexistent",
        **sections.pop("gateway", {}),
    }
    return parse_config({"gateway": gateway, **sections}, Path("/nonexistent"))


def rules_engine(**sections: Any) -> RuleEngine:
    """The gateway's rules as `rules_config(**sections)` configures them."""
    config = rules_config(**sections)
    return RuleEngine.configured(config.rules, SubjectDirectory.from_config(config))


def at(seconds: float) -> Instant:
    """The tick `seconds` after T0, on the clock `reading(at_s=...)` uses."""
    wall = T0 + timedelta(seconds=seconds)
    return Instant(wall, wall.timestamp())


#: A configured CMS50 whose port never appears: in-process tests hand the pipeline
#: measurements "from" it directly.
PORT_PATH = "/dev/serial/by-id/usb-absent-cms50"
DEVICE = f'[[devices]]\nkind = "cms50"\nport = "{PORT_PATH}"\nsubject = "bed-9"\n'


def reading(
    seq: int,
    metric: Metric = Metric.SPO2,
    value: float = 97,
    at_s: float = 0.0,
    quality: frozenset[Quality] = frozenset(),
    site: Site | None = None,
    device: str = "plx-f00000000002",
    subject: str | None = "bed-1",
) -> Reading:
    return Reading(
        seq=seq,
        id=f"gw-test-{seq}",
        device=device,
        subject=subject,
        measurement=Measurement(metric, value, quality, site),
        received_at=T0 + timedelta(seconds=at_s),
        clock=ClockState.SYNCED,
    )


def low_spo2_alert(n: int = 1) -> Alert:
    """A raised low-SpO2 alert of bed-1, numbered `n`."""
    return Alert(
        id=f"low_spo2:bed-1:{n}",
        kind=AlertKind.LOW_SPO2,
        subject="bed-1",
        device="plx-f00000000002",
        severity=Severity.HIGH,
        state=AlertState.RAISED,
        raised_at=T0,
        updated_at=T0,
        value=88,
        threshold=90,
    )


async def until(predicate: Callable[[], object], within_s: float = 20.0, what: str = "") -> None:
    try:
        async with asyncio.timeout(within_s):
            while not predicate():  # noqa: ASYNC110 - state set by broker threads
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_s} s waiting for {what}") from None


@dataclass
class Clocks:
    """The service's wall clock and duration clock, moved by the test only."""

    wall: datetime = T0
    mono: float = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


@contextlib.asynccontextmanager
async def running(path: Path, clocks: Clocks) -> AsyncIterator[GatewayService]:
    """A gateway of the config file `path`, started on the test's clocks."""
    from gateway.service import GatewayService

    service = GatewayService(load_config(path), now=clocks.now, monotonic=clocks.monotonic)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


#: The page's password in the tests.
PASSWORD = "correct horse battery"


@contextlib.asynccontextmanager
async def signed_in(service: GatewayService, **client: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the service's page, signed in as a technician would be: the
    password set (if it is not yet), the login form fetched and posted."""
    set_password(service.config.password_path)
    async with httpx.AsyncClient(base_url=service.web_url, **client) as web:
        form = await web.get("/login")
        answer = await web.post("/login", data=login_form(form.text))
        assert answer.status_code == 303, answer.text
        yield web


@contextlib.contextmanager
def signed_in_client(base_url: str, password_path: Path) -> Iterator[httpx.Client]:
    """`signed_in` for a gateway in a process of its own (`GatewayProcess`)."""
    set_password(password_path)
    with httpx.Client(base_url=base_url, timeout=10) as web:
        answer = web.post("/login", data=login_form(web.get("/login").text))
        assert answer.status_code == 303, answer.text
        yield web


class PageApi:
    """The JSON API of a gateway in a process of its own, signed in (again after the
    gateway restarted: logins do not survive it)."""

    def __init__(self, config: Path) -> None:
        self._password_path = load_config(config).password_path
        set_password(self._password_path)
        self._web: httpx.Client | None = None

    def get(self, url: str) -> Any:
        """The JSON of `url` (the page's address + `api/...`); raises httpx errors."""
        base = url.split("/api/", 1)[0]
        for _attempt in range(2):
            if self._web is None or str(self._web.base_url).rstrip("/") != base:
                self.close()
                self._web = httpx.Client(base_url=base, timeout=5)
                answer = self._web.post("/login", data=login_form(self._web.get("/login").text))
                assert answer.status_code == 303, answer.text
            answer = self._web.get(url)
            if answer.status_code != 401:
                answer.raise_for_status()
                return answer.json()
            self.close()
        raise AssertionError(f"{url}: still not signed in")

    def close(self) -> None:
        if self._web is not None:
            self._web.close()
            self._web = None


def set_password(path: Path) -> None:
    passwords = PasswordFile(path)
    if not passwords.is_set():
        passwords.set(PASSWORD)


def login_form(page: str) -> dict[str, str]:
    """The login form of `page` filled in with the tests' password."""
    token = re.search(r'name="login_token" value="([^"]+)"', page)
    assert token is not None, page
    return {"password": PASSWORD, "login_token": token[1], "next": "/"}


def form_token(page: str) -> str:
    """The CSRF token of a signed-in page's forms."""
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None, page
    return token[1]
