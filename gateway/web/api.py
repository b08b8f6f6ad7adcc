"""The JSON API (`/api/...`, shown at `/api/docs`), behind the page's login. Handlers
only read state the service already holds (or ask the store thread), so a slow browser
never holds up collection."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, HTTPException, Path, Query

from gateway.care import CareError, NotFound
from gateway.config import CODE
from gateway.contract.models import AlertEvent, Device, LedgerDay, SubjectEntry
from gateway.web.models import ReadingRecord, Status


class StatusSource(Protocol):
    """What the page needs from the running service."""

    def health(self) -> dict[str, Any]: ...

    def device_records(self) -> list[dict[str, Any]]: ...

    async def active_alerts(self) -> list[dict[str, Any]]: ...

    async def recent_readings(self, limit: int, device: str | None) -> list[dict[str, Any]]: ...

    def subjects(self) -> list[dict[str, Any]]: ...

    async def ledger(self, subject: str, first: date, last: date) -> list[dict[str, Any]]:
        """Raises `NotFound` for an unknown subject, `CareError` for a bad range."""
        ...


def api_router(source: StatusSource) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/status", response_model=Status)
    async def status() -> dict[str, Any]:
        return {
            **source.health(),
            "devices": source.device_records(),
            "active_alerts": await source.active_alerts(),
        }

    @router.get("/devices", response_model=list[Device])
    async def devices() -> list[dict[str, Any]]:
        return source.device_records()

    @router.get("/alerts", response_model=list[AlertEvent])
    async def alerts() -> list[dict[str, Any]]:
        return await source.active_alerts()

    @router.get("/readings", response_model=list[ReadingRecord])
    async def readings(
        limit: int = Query(50, ge=1, le=1000), device: str | None = Query(None, max_length=80)
    ) -> list[dict[str, Any]]:
        if device is not None and device not in {d["id"] for d in source.device_records()}:
            raise HTTPException(status_code=404, detail=f"no device {device!r} is configured")
        return await source.recent_readings(limit, device)

    @router.get("/subjects", response_model=list[SubjectEntry])
    async def subjects() -> list[dict[str, Any]]:
        return source.subjects()

    @router.get("/subjects/{code}/ledger", response_model=list[LedgerDay])
    async def ledger(
        code: Annotated[str, Path(pattern=CODE.pattern)],
        first: Annotated[date, Query(alias="from")],
        last: Annotated[date, Query(alias="to")],
    ) -> list[dict[str, Any]]:
        """The subject's ledger from `from` to `to` (local dates, at most 31 days): the
        days completed as kept, the days in progress as they stand."""
        try:
            return await source.ledger(code, first, last)
        except NotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except CareError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None

    return router
