"""Pages rendered on the gateway: Jinja2 templates (`templates/`), one environment per
language with its catalogue installed, every value escaped. A request sent by the
page's own script for a live update names the parts it will take (`X-Live-Parts`, the
ids of `data-live` elements): a page may leave the others' costly parts out.

Jinja2 is loaded with the first page rendered, not with the service: a gateway whose
page nobody opens never holds it in memory (over 1 MB; issue 12)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from functools import cache
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from drivers.measurement import UNITS
from gateway.web import labels, views
from gateway.web.i18n import LANGUAGE_COOKIE, LANGUAGE_NAMES, Speech, negotiate, translations

if TYPE_CHECKING:
    from jinja2 import Environment


@cache
def _environment(locale: str) -> Environment:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("gateway.web", "templates"),
        autoescape=select_autoescape(default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bars"] = views.signal_bars
    env.filters["number"] = views.number
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return env


def wants_part(request: Request, part: str) -> bool:
    """Whether the response's part `part` will be shown: always on a page load."""
    parts = request.headers.get("x-live-parts")
    return parts is None or part in parts.split()


def request_locale(request: Request) -> str:
    return negotiate(request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language"))


class Renderer:
    """Renders a template for a request, in its language and the gateway's zone."""

    def __init__(self, zone: tzinfo, gateway_id: str, *, secure: bool) -> None:
        self.zone = zone
        self.gateway_id = gateway_id
        self.secure = secure

    def speech(self, request: Request, now: datetime | None = None) -> Speech:
        return Speech(request_locale(request), self.zone, now or datetime.now(UTC))

    def page(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any] | None = None,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        locale = request_locale(request)
        session = getattr(request.state, "session", None)
        html = (
            _environment(locale)
            .get_template(template)
            .render(
                {
                    "request": request,
                    "path": request.url.path,
                    "locale": locale,
                    "html_lang": locale.replace("_", "-"),
                    "languages": LANGUAGE_NAMES,
                    "labels": labels,
                    "views": views,
                    "units": UNITS,
                    "translate": translations(locale).gettext,
                    "say": Speech(locale, self.zone, datetime.now(UTC)),
                    "gateway_id": self.gateway_id,
                    "csrf": session.csrf if session is not None else "",
                    "signed_in": session is not None,
                    **(context or {}),
                }
            )
        )
        response = HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Language"] = locale.replace("_", "-")
        return response

    def translate(self, request: Request, message: str) -> str:
        return translations(request_locale(request)).gettext(message)
