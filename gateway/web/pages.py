"""The technician's pages: the overview, a subject (grade, isolation, ledger, charts,
alerts), a device (live values, unbind, replace), commissioning (nearby -> bind ->
live test), and the live-update stream. Every change goes through the care service
(`gateway/care.py`) with the `web` channel: validated, audited, applied without a
restart. A refused form is shown again with a message in the page's language, and
nothing is changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from sse_starlette.sse import EventSourceResponse
from starlette.datastructures import FormData

from drivers.kinds import KINDS, DeviceKind, KeyUse
from drivers.measurement import Metric, Site
from gateway.care import CareError, Channel, Conflict, Invalid, NotFound
from gateway.commissioning import KeyProblem, KeyRefused, takes_role
from gateway.config import CODE
from gateway.model import DoorRole, RiskGrade
from gateway.web import views
from gateway.web.charts import ChartLabels, temperature_chart, vitals_chart
from gateway.web.labels import N_
from gateway.web.login import Gate, local_path
from gateway.web.render import Renderer, wants_part

if TYPE_CHECKING:
    from gateway.service import GatewayService

#: How far back the vitals chart looks, and the temperature chart without an isolation.
_VITALS_SPAN = timedelta(hours=1)
_TEMPERATURE_SPAN = timedelta(days=14)
_CHART_POINTS = 360
#: How often an open event stream checks that its login is still open, and tells the
#: page it is alive when nothing changed (static/live.js: a stream silent three times
#: as long is shown as lost).
_STREAM_CHECK_S = 10.0


class FormRefused(Exception):
    """A form the care service (or the page) refused: the message id to show, its field."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


#: What a door sensor's key refused against its advertisement means, for the technician.
_KEY_PROBLEMS = {
    KeyProblem.NOT_HEARD: N_(
        "Nothing heard from this sensor yet: bring it close, open and close the door,"
        " then try again."
    ),
    KeyProblem.WRONG: N_("This key does not decrypt what the sensor sends: check the key."),
    KeyProblem.UNENCRYPTED: N_("This sensor sends without encryption: leave the key empty."),
    KeyProblem.UNREADABLE: N_("What this sensor sends cannot be read, with or without this key."),
}


def refusal(error: CareError | FormRefused) -> FormRefused:
    """What to tell the technician, in their language, of a refused change: the field
    it names (the care service's errors start with the key) and why, by kind."""
    if isinstance(error, FormRefused):
        return error
    if isinstance(error, KeyRefused):
        return FormRefused(_KEY_PROBLEMS[error.problem], "key")
    field = str(error).split(":", 1)[0] if isinstance(error, Invalid) else ""
    if isinstance(error, Invalid):
        return FormRefused(N_("This value is not accepted: %(field)s"), field)
    if isinstance(error, Conflict):
        return FormRefused(N_("Not saved: it is already so, or another device holds it"))
    return FormRefused(N_("Not found: it may have been removed meanwhile"))


def page_router(service: GatewayService, gate: Gate, render: Renderer) -> APIRouter:
    router = APIRouter()
    live = service.live

    def role_code(form: FormData, request: Request, *, required: bool = False) -> str | None:
        """The role code the change is made under ('doctor-07'), remembered in the session
        so the next form offers it."""
        value = str(form.get("by", "")).strip()
        if not value:
            if required:
                raise FormRefused(N_("A role code is needed"), "by")
            return None
        if not CODE.fullmatch(value):
            raise FormRefused(N_("A role code is letters, digits, - _ . (never a name)"), "by")
        request.state.session.role_code = value
        return value

    def context(request: Request, **values: Any) -> dict[str, Any]:
        session = request.state.session
        health = service.health()
        bluetooth_used = any(KINDS[d["kind"]].bluetooth for d in service.device_records())
        light, reasons = views.traffic_light(
            health, datetime.now(UTC), bluetooth_used=bluetooth_used
        )
        return {
            "light": light,
            "reasons": reasons,
            "health": health,
            # Which radio serves a Bluetooth device (the device cards, with proxies).
            "radio_of": service.sessions.radio_of,
            "role_code": session.role_code or "",
            **values,
        }

    def refused_page(request: Request, exc: CareError | FormRefused, back: str) -> Response:
        return render.page(
            request,
            "refused.html",
            context(request, error=refusal(exc), back=back),
            status_code=404 if isinstance(exc, NotFound) else 422,
        )

    async def subject_or_404(code: str) -> dict[str, Any]:
        subject = next((s for s in service.subjects() if s["code"] == code), None)
        if subject is None:
            raise HTTPException(404, "subject")
        return subject

    def device_or_404(device_id: str) -> dict[str, Any]:
        device = next((d for d in service.device_records() if d["id"] == device_id), None)
        if device is None:
            raise HTTPException(404, "device")
        return device

    @router.get("/")
    async def overview(request: Request) -> Response:
        return render.page(
            request,
            "overview.html",
            context(
                request,
                alerts=views.most_urgent_first(await service.active_alerts()),
                devices=service.device_records(),
                subjects=service.subjects(),
                isolations={
                    s["code"]: views.isolation_view(s, render.zone, datetime.now(UTC))
                    for s in service.subjects()
                },
            ),
        )

    # --- subjects -----------------------------------------------------------------

    async def subject_page(
        request: Request, code: str, *, error: FormRefused | None = None
    ) -> Response:
        subject = await subject_or_404(code)
        now = datetime.now(UTC)
        say = render.speech(request, now)
        isolation = views.isolation_view(subject, render.zone, now)
        first, last = views.ledger_range(render.zone, now)
        ledger = await service.ledger(code, first, last)
        # Two store queries: only on a page load, or when the page asks for them.
        charts = (
            await _charts(service, render, request, code, subject, now)
            if wants_part(request, "charts")
            else {"vitals": "", "temperature": ""}
        )
        return render.page(
            request,
            "subject.html",
            context(
                request,
                subject=subject,
                isolation=isolation,
                ledger=list(reversed(ledger)),
                alerts=views.most_urgent_first(
                    views.for_subject(await service.active_alerts(), code)
                ),
                devices=views.for_subject(service.device_records(), code),
                grades=list(RiskGrade),
                today=now.astimezone(render.zone).date().isoformat(),
                charts=charts,
                error=error,
                say=say,
            ),
            status_code=422 if error else 200,
        )

    @router.get("/subjects/{code}")
    async def subject(request: Request, code: str) -> Response:
        return await subject_page(request, code)

    async def change_subject(request: Request, code: str, action: str) -> Response:
        form = await gate.checked_form(request)
        await subject_or_404(code)
        try:
            by = role_code(form, request)
            if action == "grade":
                grade = str(form.get("risk_grade", ""))
                if grade not in {g.value for g in RiskGrade}:
                    raise FormRefused(N_("This value is not accepted: %(field)s"), "risk_grade")
                await service.care.set_subject(code, risk_grade=grade, channel=Channel.WEB, by=by)
            elif action == "start":
                start, days = _isolation_fields(form, render)
                await service.care.start_isolation(
                    code, start=start, days=days, channel=Channel.WEB, by=by
                )
            else:
                await service.care.end_isolation(code, channel=Channel.WEB, by=by)
        except (CareError, FormRefused) as exc:
            return await subject_page(request, code, error=refusal(exc))
        return RedirectResponse(f"/subjects/{code}", status_code=303)

    @router.post("/subjects/{code}/grade")
    async def set_grade(request: Request, code: str) -> Response:
        return await change_subject(request, code, "grade")

    @router.post("/subjects/{code}/isolation/start")
    async def start_isolation(request: Request, code: str) -> Response:
        return await change_subject(request, code, "start")

    @router.post("/subjects/{code}/isolation/end")
    async def end_isolation(request: Request, code: str) -> Response:
        return await change_subject(request, code, "end")

    @router.post("/alerts/{alert_id}/ack")
    async def acknowledge(request: Request, alert_id: str) -> Response:
        form = await gate.checked_form(request)
        back = str(form.get("back", "/"))
        try:
            by = role_code(form, request, required=True)
            assert by is not None
            await service.care.acknowledge(alert_id, by, channel=Channel.WEB)
        except (CareError, FormRefused) as exc:
            return refused_page(request, exc, local_path(back))
        return RedirectResponse(local_path(back), status_code=303)

    # --- devices ------------------------------------------------------------------

    async def device_page(request: Request, device_id: str, template: str) -> Response:
        record = device_or_404(device_id)
        readings = await service.recent_readings(10, device_id)
        return render.page(request, template, context(request, device=record, readings=readings))

    @router.get("/devices/{device_id}")
    async def device(request: Request, device_id: str) -> Response:
        return await device_page(request, device_id, "device.html")

    @router.get("/devices/{device_id}/test")
    async def device_test(request: Request, device_id: str) -> Response:
        """The live test view after binding: the first readings as they arrive."""
        return await device_page(request, device_id, "device_test.html")

    @router.post("/devices/{device_id}/unbind")
    async def unbind(request: Request, device_id: str) -> Response:
        form = await gate.checked_form(request)
        device_or_404(device_id)
        try:
            by = role_code(form, request)
            await service.care.unbind_device(device_id, channel=Channel.WEB, by=by)
        except (CareError, FormRefused) as exc:
            return refused_page(request, exc, f"/devices/{device_id}")
        return RedirectResponse("/", status_code=303)

    # --- commissioning --------------------------------------------------------------

    async def nearby_page(request: Request, template: str, **values: Any) -> Response:
        await service.sessions.discover()
        return render.page(
            request,
            template,
            context(
                request,
                nearby=service.commissioning.nearby(),
                bluetooth=service.sessions.adapter_health(),
                **values,
            ),
        )

    @router.get("/commission")
    async def commission(request: Request) -> Response:
        return await nearby_page(request, "commission.html")

    @router.get("/devices/{device_id}/replace")
    async def replace_choice(request: Request, device_id: str) -> Response:
        return await nearby_page(request, "commission.html", replacing=device_or_404(device_id))

    async def bind_page(
        request: Request,
        address: str,
        *,
        replacing: dict[str, Any] | None = None,
        error: FormRefused | None = None,
        form: FormData | None = None,
    ) -> Response:
        await service.sessions.discover()
        candidate = next(
            (c for c in service.commissioning.nearby() if c.address == address.upper()), None
        )
        if candidate is None:
            raise HTTPException(404, "nearby")
        # The fields follow the kind chosen (the form's, or the switch's), else the guess.
        posted = form.get("kind") if form is not None else None
        chosen = str(posted or request.query_params.get("kind") or "")
        kind = KINDS.get(chosen) or KINDS[candidate.kind]
        return render.page(
            request,
            "bind.html",
            context(
                request,
                candidate=candidate,
                kind=kind,
                asks=_BindAsks.of(kind),
                kinds=KINDS,
                subjects=service.subjects(),
                sites=list(Site),
                roles=list(DoorRole),
                replacing=replacing,
                error=error,
                form=form or {},
            ),
            status_code=422 if error else 200,
        )

    @router.get("/commission/{address}")
    async def bind_form(request: Request, address: str) -> Response:
        return await bind_page(request, address)

    @router.get("/devices/{device_id}/replace/{address}")
    async def replace_form(request: Request, device_id: str, address: str) -> Response:
        return await bind_page(request, address, replacing=device_or_404(device_id))

    async def bind_posted(
        request: Request, address: str, replacing: dict[str, Any] | None
    ) -> Response:
        form = await gate.checked_form(request)
        try:
            by = role_code(form, request)
            fields = _device_fields(form, address, replacing)
            if replacing is not None:
                record = await service.commissioning.replace(replacing["id"], fields, by=by)
            else:
                record = await service.commissioning.bind(fields, by=by)
        except (CareError, FormRefused) as exc:
            return await bind_page(
                request, address, replacing=replacing, error=refusal(exc), form=form
            )
        return RedirectResponse(f"/devices/{record['id']}/test", status_code=303)

    @router.post("/commission/{address}")
    async def bind(request: Request, address: str) -> Response:
        return await bind_posted(request, address, None)

    @router.post("/devices/{device_id}/replace/{address}")
    async def replace(request: Request, device_id: str, address: str) -> Response:
        return await bind_posted(request, address, device_or_404(device_id))

    # --- live updates ----------------------------------------------------------------

    @router.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        """Server-sent events: `changed` with the topics that moved (see live.py)."""

        session = request.state.session

        async def stream() -> AsyncIterator[dict[str, str]]:
            yield {"event": "hello", "data": "{}"}
            async for topics in live.changes(quiet_s=_STREAM_CHECK_S):
                if await request.is_disconnected():
                    return
                if not gate.still_open(session):  # logged out, idle, a new password
                    yield {"event": "signed-out", "data": "{}"}
                    return
                if topics:
                    yield {"event": "changed", "data": " ".join(topics)}
                else:  # seen by the page's script (a ping is not): the link is alive
                    yield {"event": "alive", "data": "{}"}

        return EventSourceResponse(stream())

    return router


def _isolation_fields(form: FormData, render: Renderer) -> tuple[datetime | None, int]:
    """The start (a local date, taken at the current time of day for today) and days."""
    try:
        days = int(str(form.get("days", "14")))
    except ValueError:
        raise FormRefused(N_("This value is not accepted: %(field)s"), "isolation_days") from None
    text = str(form.get("start", "")).strip()
    if not text:
        return None, days
    try:
        start = date.fromisoformat(text)
    except ValueError:
        raise FormRefused(N_("This value is not accepted: %(field)s"), "isolation_start") from None
    today = datetime.now(UTC).astimezone(render.zone).date()
    if start == today:
        return None, days
    return datetime(start.year, start.month, start.day, tzinfo=render.zone), days


@dataclass(frozen=True, slots=True)
class _BindAsks:
    """What the bind form asks for a kind: a site (a thermometer), a door role and a key
    (door sensors: none, optional, required), whether it is worn all the time (an
    oximeter: then a silence is alerted)."""

    site: bool
    role: bool
    key: KeyUse
    worn: bool

    @classmethod
    def of(cls, kind: DeviceKind) -> _BindAsks:
        role = takes_role(kind)
        return cls(kind.has_site, role, kind.key, not (kind.has_site or role))


#: An oximeter worn all the time reports every second: silent for
#: `rules.device_silent.missed_reports` of these (and `min_silence_s`), it alerts.
_WORN_REPORT_INTERVAL_S = 5


def _device_fields(
    form: FormData, address: str, replacing: dict[str, Any] | None
) -> dict[str, Any]:
    """One `[[devices]]` entry from the bind form (checked by the care service). Fields
    left at "as before" (empty) when replacing are carried over from the old device."""
    kind = str(form.get("kind", ""))
    if kind not in KINDS:
        raise FormRefused(N_("This value is not accepted: %(field)s"), "kind")
    fields: dict[str, Any] = {"kind": kind, "address": address.upper()}
    if form.get("worn") and _BindAsks.of(KINDS[kind]).worn:
        fields["report_interval_s"] = _WORN_REPORT_INTERVAL_S
    subject = str(form.get("subject") or form.get("new_subject") or "").strip()
    if replacing is not None:
        subject = subject or (replacing.get("subject") or "")
    if subject:
        fields["subject"] = subject
    for key in ("site", "role", "key"):
        value = str(form.get(key, "")).strip()
        if value:
            fields[key] = value
    return fields


async def _charts(
    service: GatewayService,
    render: Renderer,
    request: Request,
    code: str,
    subject: dict[str, Any],
    now: datetime,
) -> dict[str, str]:
    """The subject page's two pictures, as inline SVG."""

    def _(message: str) -> str:
        return render.translate(request, message)

    vitals_start = now - _VITALS_SPAN
    vitals = await service.store.call(
        service.store.store.subject_series,
        code,
        [Metric.SPO2.value, Metric.PULSE_RATE.value],
        vitals_start,
        now,
        _CHART_POINTS,
    )
    isolation = subject.get("isolation")
    if isolation:
        start = datetime.fromisoformat(isolation["start"])
        end = min(datetime.fromisoformat(isolation["end"]), now)
    else:
        start, end = now - _TEMPERATURE_SPAN, now
    temperatures = await service.store.call(
        service.store.store.subject_series,
        code,
        [Metric.BODY_TEMPERATURE.value],
        start,
        now,
        _CHART_POINTS,
    )
    fever_line = service.directory.params("fever", code, service.config.rules.fever).lines[
        Site.AXILLARY
    ]
    return {
        "vitals": vitals_chart(
            [(datetime.fromisoformat(at), metric, value) for at, metric, value, _site in vitals],
            start=vitals_start,
            end=now,
            tz=render.zone,
            labels=ChartLabels(
                title=_(N_("SpO2 and pulse, last hour")),
                no_data=_(N_("No reading in the last hour")),
                spo2=_(N_("SpO2 %")),
                pulse=_(N_("Pulse /min")),
            ),
        ),
        "temperature": temperature_chart(
            [(datetime.fromisoformat(at), value) for at, _metric, value, _site in temperatures],
            start=start,
            end=max(end, now),
            tz=render.zone,
            fever_line=fever_line,
            labels=ChartLabels(
                title=_(N_("Temperature")),
                no_data=_(N_("No temperature yet")),
                temperature=_(N_("Temperature °C")),
                fever_line=_(N_("Fever line %(line)s °C")) % {"line": fever_line},
            ),
        ),
    }
