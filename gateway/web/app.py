"""The technician's page as one ASGI app: the host check (`hosts.py`), the login gate
(`login.py`), the pages (`pages.py`), the JSON API (`api.py`), `/metrics` and the
page's own script and style (`static/`: nothing is fetched from elsewhere)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from gateway.web.api import api_router
from gateway.web.auth import LoginLimiter, PasswordFile, SessionBook
from gateway.web.hosts import AllowedHosts
from gateway.web.login import CsrfRefused, Gate, login_router
from gateway.web.metrics import metrics_router
from gateway.web.pages import page_router
from gateway.web.render import Renderer

if TYPE_CHECKING:
    from gateway.service import GatewayService

#: The page runs its own script and style only, is never framed, and sends no referrer
#: elsewhere. The charts are inline SVG (presentation attributes, no style attribute).
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
#: /api/docs: Swagger UI (served by the gateway, from swagger-ui-bundle) starts from an
#: inline script and inline styles.
_DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
    " script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
)


def _own_command() -> str:
    """This installation's `bedside-gateway` (on a Pi, in the service's venv: not on
    root's PATH), as the page tells how to set a password."""
    beside = Path(sys.executable).with_name("bedside-gateway")
    return str(beside) if beside.is_file() else "bedside-gateway"


def create_app(service: GatewayService) -> FastAPI:
    config = service.config
    web = config.web
    renderer = Renderer(
        service.directory.timezone, config.gateway.id, secure=web.tls_cert is not None
    )
    source = config.source
    command = f"sudo {_own_command()} set-password" + (f" --config {source}" if source else "")
    gate = Gate(
        PasswordFile(config.password_path),
        SessionBook(web.session_idle_s, service.monotonic),
        LoginLimiter(web.login_attempts, web.login_lockout_s, service.monotonic),
        renderer,
        setup_command=command,
    )
    app = FastAPI(title="Bedside gateway", docs_url=None, redoc_url=None)
    app.middleware("http")(gate)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response: Response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        if request.url.path == "/api/docs":  # Swagger UI starts from an inline script
            response.headers["Content-Security-Policy"] = _DOCS_POLICY
        return response

    app.add_middleware(AllowedHosts, names=web.allowed_hosts)

    @app.exception_handler(HTTPException)
    async def page_errors(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or exc.status_code not in (403, 404):
            return await http_exception_handler(request, exc)
        template = "csrf.html" if isinstance(exc, CsrfRefused) else "not_found.html"
        return renderer.page(request, template, status_code=exc.status_code)

    app.mount(
        "/static",
        StaticFiles(directory=str(resources.files("gateway.web").joinpath("static"))),
        name="static",
    )
    app.include_router(login_router(gate))
    app.include_router(page_router(service, gate, renderer))
    app.include_router(api_router(service))
    app.include_router(metrics_router(service, web.metrics_token_file))

    app.mount("/api/docs/assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/api/docs", include_in_schema=False)
    async def api_docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Bedside gateway API",
            swagger_js_url="/api/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/api/docs/assets/swagger-ui.css",
            swagger_favicon_url="/api/docs/assets/favicon-32x32.png",
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
