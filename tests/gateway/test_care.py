"""Subjects, bindings, isolations and acknowledgements change at run time through the
one service API: validated as the configuration is, audited, applied without a
restart, published to the township; and the rules' timers survive a restart."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.measurement import Measurement, Metric
from gateway.broker import Mosquitto
from gateway.care import Channel, Conflict, Invalid, NotFound
from gateway.service import GatewayService
from tests.conftest import Subscriber, write_config
from tests.gateway.helpers import DEVICE, PORT_PATH, Clocks, running, until

DEVICE_ID = "cms50-usb-absent-cms50"
SUBJECTS = """
[[subjects]]
code = "bed-9"
risk_grade = "green"
"""


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def config_path(tmp_path: Path, port: int, subjects: str = SUBJECTS) -> Path:
    return write_config(tmp_path, port, devices=DEVICE, extra=subjects)


def spo2(service: GatewayService, clocks: Clocks, values: list[float]) -> None:
    """One SpO2 sample a second from the unplugged CMS50 (bound to bed-9)."""
    for value in values:
        clocks.advance(1)
        service.pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, value)])


async def audit(service: GatewayService, prefix: str = "") -> list[dict[str, Any]]:
    return await service.store.call(service.store.store.audit_trail, 100, prefix)


def latest(server: Subscriber, suffix: str) -> Any:
    messages = server.snapshot(suffix)
    return messages[-1][1] if messages else None


@pytest.mark.asyncio
async def test_subjects_are_seeded_from_the_configuration_once_then_the_store_counts(
    tmp_path: Path,
    mosquitto: Mosquitto,
    clocks: Clocks,
    subscriber_factory: Callable[[int], Subscriber],
) -> None:
    server = subscriber_factory(mosquitto.port)
    path = config_path(tmp_path, mosquitto.port, SUBJECTS.replace("green", "red"))
    async with running(path, clocks) as service:
        (created,) = await audit(service, "subject.")
        assert created["action"] == "subject.created"
        assert created["detail"]["channel"] == "config" and created["detail"]["old"] is None
        await service.care.set_subject("bed-9", risk_grade="yellow", channel=Channel.WEB)
    # The file still says red; the grade changed at run time is the one kept.
    async with running(path, clocks) as service:
        (entry,) = service.care.subjects_payload()
        assert entry["risk_grade"] == "yellow"
        assert [a["action"] for a in await audit(service, "subject.")] == [
            "subject.changed",
            "subject.created",
        ]
        await until(
            lambda: (
                (latest(server, "/subjects") or {}).get("subjects", [{}])[0].get("risk_grade")
                == "yellow"
            ),
            what="the retained subjects with the stored grade",
        )


@pytest.mark.asyncio
async def test_a_change_is_audited_and_the_rules_apply_it_without_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, clocks: Clocks
) -> None:
    async with running(config_path(tmp_path, mosquitto.port), clocks) as service:
        changed = await service.care.set_subject(
            "bed-9", risk_grade="red", channel=Channel.MQTT, by="doctor-3"
        )
        assert changed.risk_grade.value == "red"
        (entry,) = await audit(service, "subject.changed")
        assert entry["detail"]["old"]["risk_grade"] == "green"
        assert entry["detail"]["new"]["risk_grade"] == "red"
        assert entry["detail"]["channel"] == "mqtt" and entry["detail"]["by"] == "doctor-3"
        # Red's profile: a desaturation alerts after 10 s, not the default 15 s.
        start = clocks.wall
        spo2(service, clocks, [90] * 12)
        await until(lambda: service.care.open_alerts(), what="the low_spo2 alert")
        (alert,) = service.care.open_alerts()
        assert alert.raised_at - start == timedelta(seconds=11)  # first low sample at +1 s


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"risk_grade": "purple"}, "risk_grade"),
        ({"schedule": [{"name": "morning", "start": "10:00", "end": "06:00"}]}, "end"),
        ({"thresholds": {"low_spo2": {"persist_s": 999}}}, "low_spo2.persist_s"),
        ({"thresholds": {"nonsense": {"x": 1}}}, "'nonsense' is not a rule"),
        ({"by": "Zhang San"}, "never a name"),
    ],
)
async def test_a_bad_change_is_refused_naming_the_key_and_changes_nothing(
    tmp_path: Path, mosquitto: Mosquitto, clocks: Clocks, change: dict[str, Any], message: str
) -> None:
    async with running(config_path(tmp_path, mosquitto.port), clocks) as service:
        before = (service.care.subjects_payload(), await audit(service))
        with pytest.raises(Invalid, match=message):
            await service.care.set_subject("bed-9", channel=Channel.WEB, **change)
        assert (service.care.subjects_payload(), await audit(service)) == before


@pytest.mark.asyncio
async def test_an_isolation_starts_ends_and_runs_out_and_the_township_is_told(
    tmp_path: Path,
    mosquitto: Mosquitto,
    clocks: Clocks,
    subscriber_factory: Callable[[int], Subscriber],
) -> None:
    server = subscriber_factory(mosquitto.port)

    def isolated() -> Any:
        subjects = (latest(server, "/subjects") or {}).get("subjects", [])
        return subjects[0]["isolated"] if subjects else None

    async with running(config_path(tmp_path, mosquitto.port), clocks) as service:
        care = service.care
        with pytest.raises(Conflict):
            await care.end_isolation("bed-9", channel=Channel.WEB)
        with pytest.raises(NotFound):
            await care.end_isolation("bed-404", channel=Channel.WEB)
        subject = await care.start_isolation("bed-9", days=1, channel=Channel.MQTT, by="grid-7")
        assert subject.isolation is not None and subject.isolation.end == clocks.wall + timedelta(
            days=1
        )
        await until(lambda: isolated() is True, what="subjects: isolated")
        with pytest.raises(Conflict, match="isolated already"):
            await care.start_isolation("bed-9", channel=Channel.MQTT)
        clocks.advance(86_400)  # the day passes: the housekeeping tick sees it ran out
        await until(lambda: isolated() is False, what="subjects: the isolation over")
        # A new one, ended early by hand.
        await care.start_isolation("bed-9", channel=Channel.MQTT)
        await until(lambda: isolated() is True, what="isolated again")
        clocks.advance(3600)
        ended = await care.end_isolation("bed-9", channel=Channel.WEB, by="doctor-3")
        assert ended.isolation is not None and ended.isolation.end == clocks.wall
        await until(lambda: isolated() is False, what="ended early")
        actions = [a["action"] for a in await audit(service, "isolation.")]
        assert actions == ["isolation.ended", "isolation.started", "isolation.started"]


@pytest.mark.asyncio
async def test_a_device_bound_to_another_subject_sends_its_next_readings_for_it(
    tmp_path: Path,
    mosquitto: Mosquitto,
    clocks: Clocks,
    subscriber_factory: Callable[[int], Subscriber],
) -> None:
    server = subscriber_factory(mosquitto.port)
    async with running(config_path(tmp_path, mosquitto.port), clocks) as service:
        with pytest.raises(NotFound):
            await service.care.bind("plx-000000000000", "bed-10", channel=Channel.WEB)
        with pytest.raises(Invalid, match="never a name"):
            await service.care.bind(DEVICE_ID, "Li Si", channel=Channel.WEB)
        await service.care.bind(DEVICE_ID, "bed-10", channel=Channel.WEB, by="tech-1")
        spo2(service, clocks, [97])
        await until(lambda: server.readings(), what="the reading")
        assert [r["subject"] for r in server.readings()] == ["bed-10"]
        await until(
            lambda: (
                (latest(server, "/devices") or {"devices": [{}]})["devices"][0].get("subject")
                == "bed-10"
            ),
            what="devices showing the new binding",
        )
        (entry,) = await audit(service, "binding.changed")
        assert entry["detail"]["old"]["subject"] == "bed-9"
        assert entry["detail"]["new"]["subject"] == "bed-10"
    # The binding is the store's now: a restart keeps it.
    async with running(config_path(tmp_path, mosquitto.port), clocks) as service:
        assert service.devices.records()[0]["subject"] == "bed-10"


@pytest.mark.asyncio
async def test_an_acknowledged_alert_stays_active_until_it_clears_and_the_next_episode_is_new(
    tmp_path: Path,
    mosquitto: Mosquitto,
    clocks: Clocks,
    subscriber_factory: Callable[[int], Subscriber],
) -> None:
    server = subscriber_factory(mosquitto.port)
    async with running(config_path(tmp_path, mosquitto.port), clocks) as service:
        care = service.care
        spo2(service, clocks, [91] * 17)
        await until(lambda: server.alerts(), what="low_spo2 raised")
        alert_id = server.alerts()[0]["id"]
        with pytest.raises(NotFound):
            await care.acknowledge("low_spo2:bed-9:0", "doctor-3", channel=Channel.MQTT)
        with pytest.raises(Invalid):
            await care.acknowledge(alert_id, "Dr Wang", channel=Channel.MQTT)
        event = await care.acknowledge(alert_id, "doctor-3", channel=Channel.MQTT)
        assert event["state"] == "acknowledged" and event["acknowledged_by"] == "doctor-3"
        with pytest.raises(Conflict, match="doctor-3"):
            await care.acknowledge(alert_id, "doctor-4", channel=Channel.MQTT)
        await until(
            lambda: (
                [a["acknowledged_by"] for a in latest(server, "/alerts/active")["alerts"]]
                == ["doctor-3"]
            ),
            what="alerts/active showing the acknowledgement",
        )
        spo2(service, clocks, [86])  # worse: the escalation is news again
        spo2(service, clocks, [97] * 62)
        await until(lambda: server.alerts()[-1]["state"] == "cleared", what="cleared")
        states = [(a["state"], a["severity"], a["acknowledged_by"]) for a in server.alerts()]
        assert states == [
            ("raised", "high", None),
            ("acknowledged", "high", "doctor-3"),
            ("updated", "critical", None),
            ("cleared", "critical", None),
        ]
        assert {a["id"] for a in server.alerts()} == {alert_id}
        await until(lambda: latest(server, "/alerts/active")["alerts"] == [], what="none active")
        spo2(service, clocks, [91] * 17)
        await until(lambda: len(server.alerts()) == 5, what="a second episode")
        assert server.alerts()[-1]["state"] == "raised" and server.alerts()[-1]["id"] != alert_id
        (entry,) = await audit(service, "alert.acknowledged")
        assert entry["detail"]["what"] == alert_id and entry["detail"]["channel"] == "mqtt"


@pytest.mark.asyncio
async def test_a_restart_in_the_middle_of_a_breach_keeps_its_timer(
    tmp_path: Path, mosquitto: Mosquitto, clocks: Clocks
) -> None:
    """Ten seconds of a desaturation, a restart of two seconds, then five more: raised at
    15 s of breach, as without the restart (it was 26 s: the timer started again)."""
    path = config_path(tmp_path, mosquitto.port)
    async with running(path, clocks) as service:
        spo2(service, clocks, [90] * 10)
        first_low = clocks.wall - timedelta(seconds=9)
        await until(lambda: service.pipeline.counters.get("readings_accepted") == 10, what="10")
    clocks.advance(2)
    clocks.mono = 5.0  # a reboot: the monotonic clock starts again
    async with running(path, clocks) as service:
        spo2(service, clocks, [90] * 20)
        await until(lambda: service.care.open_alerts(), what="low_spo2 raised")
        (alert,) = service.care.open_alerts()
        assert alert.raised_at - first_low == timedelta(seconds=15)
