"""Whatever a form posts, the page answers with a page (a change saved, or a message
saying what was refused), never a server error, and a refused form changes nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.broker import Mosquitto
from gateway.config import load_config
from gateway.service import GatewayService
from gateway.web.auth import PasswordFile
from tests.conftest import write_config
from tests.gateway.helpers import DEVICE, PASSWORD, form_token

SUBJECTS = '[[subjects]]\ncode = "bed-9"\n'
ROUTES = [
    "/subjects/bed-9/grade",
    "/subjects/bed-9/isolation/start",
    "/subjects/bed-9/isolation/end",
    "/alerts/low_spo2:bed-9:1/ack",
    "/commission/F0:00:00:00:00:09",
    "/devices/cms50-usb-absent-cms50/replace/F0:00:00:00:00:09",
]
FIELDS = ["risk_grade", "start", "days", "by", "kind", "subject", "new_subject", "site", "key"]
text = st.one_of(
    st.sampled_from(["", "red", "14", "0", "-1", "2026-12-01", "bed-1", "hts", "axillary"]),
    st.text(max_size=80),
)


class RunningGateway:
    """A gateway on a loop of its own thread, for a test that is not async."""

    def __init__(self, config: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.service = GatewayService(load_config(config))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.service.start())

    def call(self, awaitable: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(awaitable, self.loop).result(60)

    def audit(self) -> list[dict[str, Any]]:
        store = self.service.store
        return self.call(store.call(store.store.audit_trail, 1000, ""))

    def close(self) -> None:
        self.call(self.service.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def gateway(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[RunningGateway]:
    running = RunningGateway(write_config(tmp_path, mosquitto.port, devices=DEVICE, extra=SUBJECTS))
    PasswordFile(running.service.config.password_path).set(PASSWORD)
    yield running
    running.close()


@pytest.fixture
def web(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.service.web_url, timeout=30) as client:
        form = client.get("/login").text
        token = form.split('name="login_token" value="', 1)[1].split('"', 1)[0]
        client.post("/login", data={"password": PASSWORD, "login_token": token})
        yield client


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    route=st.sampled_from(ROUTES),
    form=st.dictionaries(st.sampled_from(FIELDS), text, max_size=6),
    with_token=st.booleans(),
)
def test_any_form_gets_a_page_and_a_refused_one_changes_nothing(
    gateway: RunningGateway,
    web: httpx.Client,
    route: str,
    form: dict[str, str],
    with_token: bool,
) -> None:
    csrf = form_token(web.get("/subjects/bed-9").text)
    before = gateway.audit()
    answer = web.post(route, data={**form, **({"csrf": csrf} if with_token else {})})
    assert answer.status_code in (303, 403, 404, 422), answer.text[:500]
    if answer.status_code != 303:
        assert gateway.audit() == before
        assert 'role="alert"' in answer.text or answer.status_code == 404
    if not with_token:
        assert answer.status_code == 403
